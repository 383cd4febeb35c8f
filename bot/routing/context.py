"""What a handler gets besides the event: the caller's session and a few helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.config import Settings
from models.audit import AuditEntry


@dataclass
class HandlerContext:
    """Per-event context; handlers write through `session` and never commit it."""

    session: Session
    settings: Settings
    now: datetime
    event_id: int
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("wecom_bot.handlers"))

    def audit(self, action: str, target: str, actor: str = "bot", **detail: Any) -> None:
        """Record a state change in the audit trail, in the handler's transaction."""
        self.session.add(
            AuditEntry(
                at=self.now,
                actor=actor,
                action=action,
                target=target,
                detail={"event": self.event_id, **detail},
            )
        )
