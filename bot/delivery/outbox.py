"""Queue approved, rendered, linted messages as delivery rows inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.base import utcnow
from models.deliveries import Delivery, DeliveryStatus
from scripts_library import ledger
from scripts_library.catalogue import MessageBlocked, compose
from scripts_library.compliance import LintPolicy

OUTBOX_CHANNEL = "outbox"


@dataclass(frozen=True)
class Claim:
    """A sender that takes a new delivery straight away, and until when its lease holds."""

    sender: str
    lease_until: datetime


def enqueue(
    session: Session,
    *,
    purpose_key: str,
    channel: str,
    recipient: str,
    script_key: str,
    values: Mapping[str, Mapping[str, Any]],
    policy: LintPolicy,
    sender: str = "",
    params: Mapping[str, Any] | None = None,
    priority: int = 100,
    deadline: datetime | None = None,
    now: datetime | None = None,
    claim: Claim | None = None,
    known_new: bool = False,
    flush: bool = True,
    lead_id: int | None = None,
) -> Delivery:
    """Queue one message for `purpose_key` (idempotent); blocked texts are kept as such, never sent.

    The text comes only from an approved, currently valid script version; the final rendered
    text is linted again here. A pass is queued and written to the send ledger; a review verdict
    is held for a person; a block raises an alert and is recorded with status `blocked`.
    With `claim`, a pass is instead leased to that sender at once (status `sending`), so the
    process that commits it sends it right after, without a round through the queue.
    `known_new` says the caller has already checked that no row has this purpose key; with
    `flush=False` the row is written with the rest of the transaction (a batch becomes one INSERT)
    and has no id until then. `lead_id` names the lead for its A/B arm (else found by `recipient`).
    """
    if not known_new:
        existing = session.scalars(select(Delivery).where(Delivery.purpose_key == purpose_key)).first()
        if existing is not None:
            return existing
    now = now or utcnow()
    row = Delivery(
        purpose_key=purpose_key,
        channel=channel,
        recipient=recipient,
        sender=sender,
        params=dict(params or {}),
        priority=priority,
        deadline=deadline,
        created_at=now,
        next_attempt_at=now,
    )
    try:
        composed = compose(session, script_key, values, policy, at=now, recipient=recipient, lead_id=lead_id)
    except MessageBlocked as exc:
        version = exc.version
        row.script_key, row.script_version, row.approval_id = script_key, version.number, exc.approval.id
        row.content_hash, row.text = version.content_hash, exc.text
        row.lint_verdict, row.lexicon_version = exc.result.verdict, exc.result.lexicon_version
        row.status = DeliveryStatus.BLOCKED
        session.add(row)
        if flush:
            session.flush()
        return row
    row.script_key, row.approval_id = script_key, composed.approval.id
    row.script_version = composed.version.number
    row.content_hash, row.text = composed.version.content_hash, composed.text
    row.lint_verdict, row.lexicon_version = composed.lint.verdict, composed.lint.lexicon_version
    row.status = DeliveryStatus.HELD if composed.held else DeliveryStatus.QUEUED
    session.add(row)
    if row.status == DeliveryStatus.QUEUED:
        record_in_ledger(session, row, now)
        if claim is not None:
            row.status, row.attempts = DeliveryStatus.SENDING, 1
            row.locked_by, row.lease_until = claim.sender, claim.lease_until
    if flush:
        session.flush()
    return row


def record_in_ledger(session: Session, row: Delivery, now: datetime) -> None:
    """Write the message to the send ledger as queued; the dispatcher appends its outcome."""
    entry = ledger.append_message(
        session,
        recipient=row.recipient,
        sender=row.sender,
        channel=row.channel,
        script_key=row.script_key,
        script_version=row.script_version,
        content_hash=row.content_hash,
        approval_id=row.approval_id,
        rendered_text=row.text,
        lint_verdict=row.lint_verdict,
        lexicon_version=row.lexicon_version,
        outcome="queued",
        detail=f"delivery {row.purpose_key}",
        now=now,
    )
    row.ledger_seq = entry.seq


def cancel_pending(session: Session, recipient: str, reason: str, now: datetime) -> int:
    """Cancel what is queued or held for a recipient, recording each cancellation in the ledger."""
    from models.deliveries import DeliveryStatus as Status

    rows = session.scalars(
        select(Delivery).where(
            Delivery.recipient == recipient, Delivery.status.in_([Status.QUEUED, Status.HELD])
        )
    ).all()
    for row in rows:
        row.status, row.error = Status.CANCELLED, reason
        if row.ledger_seq is not None:
            ledger.append_outcome(
                session, row.ledger_seq, "cancelled", detail=reason, now=now, message=message_identity(row)
            )
    return len(rows)


def message_identity(row: Delivery) -> ledger.MessageIdentity:
    """The ledger identity of a delivery's message, for appending its outcomes without a lookup."""
    return ledger.MessageIdentity(row.recipient, row.sender, row.channel)
