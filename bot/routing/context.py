"""What a handler gets besides the event: the caller's session and a few helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from bot.config import Settings
from models.audit import AuditEntry

if TYPE_CHECKING:
    from bot.delivery.outbox import Claim
    from models.deliveries import Delivery


@dataclass
class HandlerContext:
    """Per-event context; handlers write through `session` and never commit it."""

    session: Session
    settings: Settings
    now: datetime
    event_id: int
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("wecom_bot.handlers"))
    wake_after_commit: set[str] = field(default_factory=set)
    # Set when the worker sends this event's messages itself right after commit.
    claim: Claim | None = None
    send_after_commit: list[Delivery] = field(default_factory=list)

    def audit(self, action: str, target: str, actor: str = "bot", **detail: Any) -> None:
        """Record a state change in the audit trail, in the handler's transaction."""
        self.session.add(AuditEntry(**self.audit_row(action, target, actor, **detail)))

    def audit_row(self, action: str, target: str, actor: str = "bot", **detail: Any) -> dict[str, Any]:
        """The audit row `audit` would add, as plain values for a batch's bulk insert."""
        return {
            "at": self.now,
            "actor": actor,
            "action": action,
            "target": target,
            "detail": {"event": self.event_id, **detail},
        }

    def queue(self, **kwargs: Any) -> Delivery:
        """Queue an outbound message in this transaction (see bot.delivery.outbox.enqueue)."""
        from bot.delivery.outbox import OUTBOX_CHANNEL, enqueue
        from scripts_library.catalogue import policy_from_settings

        policy = policy_from_settings(self.settings.compliance)
        delivery = enqueue(self.session, policy=policy, now=self.now, claim=self.claim, **kwargs)
        claim = self.claim
        if claim is not None and (delivery.locked_by, delivery.lease_until) == (
            claim.sender,
            claim.lease_until,
        ):
            self.send_after_commit.append(delivery)  # leased to us in this very transaction
        else:
            self.wake_after_commit.add(OUTBOX_CHANNEL)
        return delivery
