"""wecom-bot: WeCom private-domain conversion bot. `bot:create_app()` is the WSGI factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so light commands (lint) and submodules do not pay for importing Flask.
    if name == "create_app":
        from bot.app import create_app

        return create_app
    raise AttributeError(name)
