"""A lead's timeline: every inbound message and event, touch, tag, course, score event, stage change and
outbound message, in order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot.leads.masking import mask
from bot.leads.scoring import label
from models.audit import AuditEntry
from models.campaigns import Course, CourseAttendance, CourseRegistration
from models.deliveries import Delivery
from models.handoff import Handoff, HandoffStatus
from models.inbox import InboundEvent
from models.leads import Lead, LeadTag, LeadTouch
from models.scoring import ScoreEvent, StageChange


@dataclass(frozen=True)
class TimelineItem:
    """One thing that happened to a lead."""

    at: datetime
    kind: str  # inbound | touch | tag | course | score | stage | handoff | outbound | audit
    summary: str


def _inbound_summary(row: InboundEvent) -> str:
    p = row.payload
    if "text" in p and isinstance(p["text"], dict):
        return f"customer: {mask(str(p['text'].get('content', '')))}"
    if "event" in p and isinstance(p["event"], dict):
        return f"kf event {p['event'].get('event_type', '')}"
    return f"{row.kind} {p.get('ChangeType', '')}".strip()


def _handoff_items(handoff: Handoff) -> list[TimelineItem]:
    """Offered (or escalated), then how it ended, then how the conversation moved."""
    who = handoff.manager_userid
    verb = "escalated to supervisor" if handoff.escalated else "offered to"
    due = f", answer due {handoff.due_at:%Y-%m-%d %H:%M}Z" if handoff.due_at is not None else ""
    items = [
        TimelineItem(
            handoff.offered_at,
            "handoff",
            f"handoff #{handoff.id} {verb} {who} (attempt {handoff.attempt}){due}: {handoff.reason}",
        )
    ]
    ended = handoff.responded_at or handoff.closed_at
    if handoff.status == HandoffStatus.ACCEPTED or (
        handoff.status == HandoffStatus.CLOSED and handoff.responded_at
    ):
        assert handoff.responded_at is not None
        items.append(
            TimelineItem(handoff.responded_at, "handoff", f"handoff #{handoff.id} accepted by {who}")
        )
    if handoff.status == HandoffStatus.DECLINED and ended is not None:
        items.append(
            TimelineItem(ended, "handoff", f"handoff #{handoff.id} declined by {who}: {handoff.note}")
        )
    if handoff.status == HandoffStatus.TIMED_OUT and handoff.closed_at is not None:
        items.append(
            TimelineItem(handoff.closed_at, "handoff", f"handoff #{handoff.id} timed out: {handoff.note}")
        )
    if handoff.status in (HandoffStatus.CLOSED, HandoffStatus.CANCELLED) and handoff.closed_at is not None:
        summary = f"handoff #{handoff.id} {handoff.status}: {handoff.note}"
        items.append(TimelineItem(handoff.closed_at, "handoff", summary))
    if handoff.channel_action and handoff.responded_at is not None:
        detail = f" ({handoff.channel_detail})" if handoff.channel_detail else ""
        summary = f"handoff #{handoff.id} {handoff.channel_action}: {handoff.channel_status}{detail}"
        items.append(TimelineItem(handoff.responded_at, "handoff", summary))
    return items


def timeline(session: Session, external_user_id: str, limit: int = 500) -> list[TimelineItem]:
    """Everything recorded about one customer, oldest first (phone numbers and ids masked)."""
    items: list[TimelineItem] = []
    for event in session.scalars(
        select(InboundEvent)
        .where(InboundEvent.subject == external_user_id)
        .order_by(InboundEvent.id)
        .limit(limit)
    ):
        items.append(TimelineItem(event.received_at, "inbound", _inbound_summary(event)))
    lead = session.scalars(select(Lead).where(Lead.external_user_id == external_user_id)).first()
    if lead is not None:
        for touch in session.scalars(select(LeadTouch).where(LeadTouch.lead_id == lead.id)):
            how = f"via {touch.source}" + (
                f" code {touch.code}" if touch.code else f" (raw {touch.raw_state or '-'})"
            )
            items.append(TimelineItem(touch.at, "touch", f"arrived {how}, member {touch.member or '-'}"))
        for tag in session.scalars(select(LeadTag).where(LeadTag.lead_id == lead.id)):
            state = (
                "in WeCom"
                if tag.wecom_synced
                else (f"not in WeCom: {tag.sync_error}" if tag.sync_error else "local")
            )
            items.append(TimelineItem(tag.created_at, "tag", f"{tag.name} ({state})"))
        for reg, course in session.execute(
            select(CourseRegistration, Course)
            .join(Course, Course.id == CourseRegistration.course_id)
            .where(CourseRegistration.lead_id == lead.id)
        ):
            summary = f"registered for course {course.key} 《{course.title}》 via {reg.channel}"
            items.append(TimelineItem(reg.registered_at, "course", summary))
        for seen, course in session.execute(
            select(CourseAttendance, Course)
            .join(Course, Course.id == CourseAttendance.course_id)
            .where(CourseAttendance.lead_id == lead.id)
        ):
            summary = f"attended course {course.key} 《{course.title}》 for {seen.minutes} min"
            items.append(TimelineItem(course.starts_at, "course", summary))
        for scored in session.scalars(select(ScoreEvent).where(ScoreEvent.lead_id == lead.id)):
            summary = f"+{scored.points} {label(scored.kind, scored.detail)} ({scored.kind})"
            items.append(TimelineItem(scored.at, "score", summary))
        for handoff in session.scalars(select(Handoff).where(Handoff.lead_id == lead.id)):
            items.extend(_handoff_items(handoff))
        for change in session.scalars(select(StageChange).where(StageChange.lead_id == lead.id)):
            summary = f"stage {change.from_stage} → {change.to_stage} by {change.actor}: {change.reason}"
            items.append(TimelineItem(change.at, "stage", summary))
    for d in session.scalars(
        select(Delivery).where(Delivery.recipient == external_user_id).order_by(Delivery.id).limit(limit)
    ):
        outcome = d.status + (f" {d.errcode}" if d.errcode else "")
        items.append(
            TimelineItem(
                d.created_at, "outbound", f"{d.script_key} v{d.script_version} [{outcome}]: {d.text}"
            )
        )
    targets = [f"lead:{external_user_id}", f"contact:{external_user_id}"]
    for entry in session.scalars(
        select(AuditEntry)
        .where(or_(*(AuditEntry.target == t for t in targets)))
        .order_by(AuditEntry.id)
        .limit(limit)
    ):
        items.append(TimelineItem(entry.at, "audit", f"{entry.action} by {entry.actor}"))
    return sorted(items, key=lambda i: i.at)
