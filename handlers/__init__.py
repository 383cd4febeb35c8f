"""Behaviour, one module per feature. The order below is the order handlers are tried."""

from __future__ import annotations

from bot.routing import Dispatcher, Router
from bot.routing.router import ErrorHook


def routers() -> list[Router]:
    """Return every feature router in priority order (imported lazily: no work at import time)."""
    from handlers import contacts, handoff, kf

    # handoff comes first: its transfer_fail handler also records what contacts would.
    return [handoff.router, contacts.router, kf.router]


def build_dispatcher(on_error: ErrorHook | None = None) -> Dispatcher:
    """Build the dispatcher used by workers."""
    return Dispatcher(routers(), on_error=on_error)
