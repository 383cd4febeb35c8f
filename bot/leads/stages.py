"""Lead stages: new → engaged → nurtured → qualified → handed_off → accepted → converted, plus lost and
opted_out from anywhere; only allowed transitions happen, each recorded as a StageChange and audited."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.audit import AuditEntry
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.leads import Lead
from models.scoring import StageChange


class Stage(enum.StrEnum):
    """Where a lead is on its way from first contact to a converted customer."""

    NEW = "new"
    ENGAGED = "engaged"
    NURTURED = "nurtured"
    QUALIFIED = "qualified"
    HANDED_OFF = "handed_off"
    ACCEPTED = "accepted"
    CONVERTED = "converted"
    LOST = "lost"
    OPTED_OUT = "opted_out"


# Reachable from every other stage.
ANYWHERE = frozenset({Stage.LOST, Stage.OPTED_OUT})

# Forward moves may skip nurture steps (a new lead asking "怎么开户" is qualified at once);
# a declined or timed-out handoff goes back to qualified; lost and opted-out leads can come back.
_FORWARD: dict[Stage, frozenset[Stage]] = {
    Stage.NEW: frozenset({Stage.ENGAGED, Stage.NURTURED, Stage.QUALIFIED}),
    Stage.ENGAGED: frozenset({Stage.NURTURED, Stage.QUALIFIED}),
    Stage.NURTURED: frozenset({Stage.QUALIFIED}),
    Stage.QUALIFIED: frozenset({Stage.HANDED_OFF}),
    Stage.HANDED_OFF: frozenset({Stage.ACCEPTED, Stage.QUALIFIED}),
    Stage.ACCEPTED: frozenset({Stage.CONVERTED}),
    Stage.CONVERTED: frozenset(),
    Stage.LOST: frozenset({Stage.ENGAGED, Stage.NURTURED}),
    Stage.OPTED_OUT: frozenset({Stage.ENGAGED}),
}

# Leaving for one of these ends the lead's open handoff and frees the manager's slot.
ENDS_HANDOFF = frozenset({Stage.CONVERTED, Stage.LOST, Stage.OPTED_OUT})

ALLOWED: dict[Stage, frozenset[Stage]] = {
    stage: frozenset(targets | (ANYWHERE - {stage})) for stage, targets in _FORWARD.items()
}


class StageError(ValueError):
    """A stage change that is not allowed (or names an unknown stage); nothing was changed."""


def _stage(value: str, what: str) -> Stage:
    try:
        return Stage(value)
    except ValueError:
        known = ", ".join(s.value for s in Stage)
        raise StageError(f"unknown {what} stage {value!r} (known: {known})") from None


def allowed(from_stage: str, to_stage: str) -> bool:
    """Whether a lead may move between these two stages."""
    try:
        return Stage(to_stage) in ALLOWED[Stage(from_stage)]
    except ValueError:
        return False


def transition(
    session: Session,
    lead: Lead,
    to: str,
    actor: str,
    reason: str,
    now: datetime,
    *,
    code: str | None = None,
    params: dict[str, Any] | None = None,
) -> StageChange:
    """Move the lead to `to` if allowed, recording a StageChange and an audit entry; else StageError.

    `reason` is the English (or free) text; the bot's own reasons also name their `code` and `params`
    so the console can word them in the reader's language.
    """
    current = _stage(lead.stage, "current")
    target = _stage(to, "target")
    if current == target:
        raise StageError(f"lead {lead.id} is already {current.value}")
    if target not in ALLOWED[current]:
        options = ", ".join(sorted(s.value for s in ALLOWED[current])) or "none"
        raise StageError(
            f"lead {lead.id} cannot move from {current.value} to {target.value} (allowed: {options})"
        )
    lead.stage = target.value
    lead.updated_at = now
    change = StageChange(
        lead_id=lead.id,
        from_stage=current.value,
        to_stage=target.value,
        at=now,
        actor=actor,
        reason=reason,
        reason_code=code,
        reason_params=params if code else None,
    )
    session.add(change)
    if target in ENDS_HANDOFF:
        _end_open_handoff(session, lead, target, now)
    session.add(
        AuditEntry(
            at=now,
            actor=actor,
            action="lead.stage",
            target=f"lead:{lead.external_user_id}",
            detail={"from": current.value, "to": target.value, "reason": reason},
        )
    )
    session.flush()
    return change


def _end_open_handoff(session: Session, lead: Lead, target: Stage, now: datetime) -> None:
    """Close (accepted) or cancel (still offered) the lead's open handoff and give the slot back."""
    stmt = select(Handoff).where(Handoff.open_lead_id == lead.id).with_for_update()
    handoff = session.scalars(stmt).first()
    if handoff is None:
        return
    accepted = handoff.status == HandoffStatus.ACCEPTED
    handoff.status = HandoffStatus.CLOSED if accepted else HandoffStatus.CANCELLED
    handoff.open_lead_id, handoff.due_at, handoff.closed_at = None, None, now
    handoff.note = f"lead {target.value}"
    handoff.note_code, handoff.note_params = "lead_ended", {"stage": target.value}
    m = AccountManager
    session.execute(
        update(m)
        .where(m.userid == handoff.manager_userid, m.open_count > 0)
        .values(open_count=m.open_count - 1)
        .execution_options(synchronize_session=False)
    )
