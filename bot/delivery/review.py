"""Messages the final-text lint held for review: a compliance reviewer releases or discards them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.delivery.outbox import record_in_ledger
from models.audit import AuditEntry
from models.base import utcnow
from models.deliveries import Delivery, DeliveryStatus
from models.users import Role
from scripts_library.catalogue import PermissionDenied, WorkflowError, actor


def held(session: Session, limit: int = 100) -> list[Delivery]:
    """Held deliveries, oldest first."""
    stmt = select(Delivery).where(Delivery.status == DeliveryStatus.HELD).order_by(Delivery.id).limit(limit)
    return list(session.scalars(stmt))


def _take(session: Session, delivery_id: int, username: str) -> Delivery:
    user = actor(session, username)
    if user.role != Role.COMPLIANCE:
        raise PermissionDenied(f"{username} ({user.role}) is not a compliance reviewer")
    row = session.get(Delivery, delivery_id, with_for_update=True)
    if row is None or row.status != DeliveryStatus.HELD:
        raise WorkflowError(f"delivery {delivery_id} is not held for review")
    return row


def release(session: Session, delivery_id: int, username: str) -> Delivery:
    """Send a held message after review: it is queued and enters the send ledger."""
    row = _take(session, delivery_id, username)
    now = utcnow()
    if row.deadline is not None and now >= row.deadline:
        row.status, row.error = DeliveryStatus.EXPIRED, "review finished after the sending deadline"
    else:
        row.status, row.next_attempt_at = DeliveryStatus.QUEUED, now
        record_in_ledger(session, row, now)
    session.add(
        AuditEntry(
            at=now,
            actor=username,
            action="delivery.release",
            target=f"delivery:{row.id}",
            detail={"to": row.status},
        )
    )
    return row


def discard(session: Session, delivery_id: int, username: str, reason: str) -> Delivery:
    """Refuse a held message; it is never sent."""
    if not reason.strip():
        raise WorkflowError("discarding needs a reason")
    row = _take(session, delivery_id, username)
    row.status, row.error = DeliveryStatus.CANCELLED, f"discarded in review: {reason}"
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=username,
            action="delivery.discard",
            target=f"delivery:{row.id}",
            detail={"reason": reason},
        )
    )
    return row
