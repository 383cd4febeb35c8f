"""A lead's timeline: every inbound message and event, touch, tag, course, score event, stage change and
outbound message, in order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
from models.scripts import Script, ScriptVersion
from models.variants import ScriptVariant, VariantAssignment

# The English wording of every timeline line, by a stable code. The CLI prints these; the console
# shows its own translation of each code with the same named values.
TEXTS: dict[str, str] = {
    "inbound.text": "customer: {text}",
    "inbound.kf_event": "kf event {event}",
    "inbound.event": "{kind} {change}",
    "inbound.other": "{kind}",
    "touch.code": "arrived via {source} code {code}, member {member}",
    "touch.raw": "arrived via {source} (raw {raw}), member {member}",
    "tag.synced": "{tag} (in WeCom)",
    "tag.failed": "{tag} (not in WeCom: {error})",
    "tag.local": "{tag} (local)",
    "course.registered": "registered for course {course} 《{title}》 via {channel}",
    "course.attended": "attended course {course} 《{title}》 for {minutes} min",
    "score": "+{points} {label} ({kind})",
    "handoff.offered": "handoff #{id} offered to {manager} (attempt {attempt}): {reason}",
    "handoff.offered_due": (
        "handoff #{id} offered to {manager} (attempt {attempt}), answer due {due:%Y-%m-%d %H:%M}Z: {reason}"
    ),
    "handoff.escalated": "handoff #{id} escalated to supervisor {manager} (attempt {attempt}): {reason}",
    "handoff.escalated_due": (
        "handoff #{id} escalated to supervisor {manager} (attempt {attempt}),"
        " answer due {due:%Y-%m-%d %H:%M}Z: {reason}"
    ),
    "handoff.accepted": "handoff #{id} accepted by {manager}",
    "handoff.declined": "handoff #{id} declined by {manager}: {note}",
    "handoff.timed_out": "handoff #{id} timed out: {note}",
    "handoff.closed": "handoff #{id} closed: {note}",
    "handoff.cancelled": "handoff #{id} cancelled: {note}",
    "handoff.channel": "handoff #{id} {action}: {status}",
    "handoff.channel_detail": "handoff #{id} {action}: {status} ({detail})",
    "stage": "stage {from_stage} → {to_stage} by {actor}: {reason}",
    "outbound": "{script} v{version} [{status}]: {text}",
    "outbound.error": "{script} v{version} [{status} {errcode}]: {text}",
    "audit": "{action} by {actor}",
    "variant": "A/B test #{experiment} of {script}: assigned variant {label} (v{version})",
}


@dataclass(frozen=True)
class TimelineItem:
    """One thing that happened to a lead: a code from TEXTS and the values its wording names."""

    at: datetime
    kind: str  # inbound | touch | tag | course | score | stage | handoff | variant | outbound | audit
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The line in English (CLI, logs)."""
        return TEXTS[self.code].format(**self.params)


def _inbound_item(row: InboundEvent) -> TimelineItem:
    p = row.payload
    if "text" in p and isinstance(p["text"], dict):
        return TimelineItem(
            row.received_at, "inbound", "inbound.text", {"text": mask(str(p["text"].get("content", "")))}
        )
    if "event" in p and isinstance(p["event"], dict):
        return TimelineItem(
            row.received_at, "inbound", "inbound.kf_event", {"event": str(p["event"].get("event_type", ""))}
        )
    change = str(p.get("ChangeType", ""))
    if change:
        return TimelineItem(row.received_at, "inbound", "inbound.event", {"kind": row.kind, "change": change})
    return TimelineItem(row.received_at, "inbound", "inbound.other", {"kind": row.kind})


def _handoff_items(handoff: Handoff) -> list[TimelineItem]:
    """Offered (or escalated), then how it ended, then how the conversation moved."""
    ref = {"id": handoff.id, "manager": handoff.manager_userid}
    offered = {**ref, "attempt": handoff.attempt, "reason": handoff.reason}
    code = "handoff.escalated" if handoff.escalated else "handoff.offered"
    if handoff.due_at is not None:
        code, offered["due"] = f"{code}_due", handoff.due_at
    items = [TimelineItem(handoff.offered_at, "handoff", code, offered)]
    ended = handoff.responded_at or handoff.closed_at
    if handoff.status == HandoffStatus.ACCEPTED or (
        handoff.status == HandoffStatus.CLOSED and handoff.responded_at
    ):
        assert handoff.responded_at is not None
        items.append(TimelineItem(handoff.responded_at, "handoff", "handoff.accepted", ref))
    if handoff.status == HandoffStatus.DECLINED and ended is not None:
        items.append(TimelineItem(ended, "handoff", "handoff.declined", {**ref, "note": handoff.note}))
    if handoff.status == HandoffStatus.TIMED_OUT and handoff.closed_at is not None:
        items.append(
            TimelineItem(handoff.closed_at, "handoff", "handoff.timed_out", {**ref, "note": handoff.note})
        )
    if handoff.status in (HandoffStatus.CLOSED, HandoffStatus.CANCELLED) and handoff.closed_at is not None:
        code = f"handoff.{handoff.status}"
        items.append(TimelineItem(handoff.closed_at, "handoff", code, {**ref, "note": handoff.note}))
    if handoff.channel_action and handoff.responded_at is not None:
        moved = {**ref, "action": handoff.channel_action, "status": handoff.channel_status}
        code = "handoff.channel"
        if handoff.channel_detail:
            code, moved["detail"] = "handoff.channel_detail", handoff.channel_detail
        items.append(TimelineItem(handoff.responded_at, "handoff", code, moved))
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
        items.append(_inbound_item(event))
    lead = session.scalars(select(Lead).where(Lead.external_user_id == external_user_id)).first()
    if lead is not None:
        for touch in session.scalars(select(LeadTouch).where(LeadTouch.lead_id == lead.id)):
            arrival = {"source": touch.source, "member": touch.member or "-"}
            if touch.code:
                items.append(TimelineItem(touch.at, "touch", "touch.code", {**arrival, "code": touch.code}))
            else:
                raw = {**arrival, "raw": touch.raw_state or "-"}
                items.append(TimelineItem(touch.at, "touch", "touch.raw", raw))
        for tag in session.scalars(select(LeadTag).where(LeadTag.lead_id == lead.id)):
            if tag.wecom_synced:
                items.append(TimelineItem(tag.created_at, "tag", "tag.synced", {"tag": tag.name}))
            elif tag.sync_error:
                failed = {"tag": tag.name, "error": tag.sync_error}
                items.append(TimelineItem(tag.created_at, "tag", "tag.failed", failed))
            else:
                items.append(TimelineItem(tag.created_at, "tag", "tag.local", {"tag": tag.name}))
        for reg, course in session.execute(
            select(CourseRegistration, Course)
            .join(Course, Course.id == CourseRegistration.course_id)
            .where(CourseRegistration.lead_id == lead.id)
        ):
            registered = {"course": course.key, "title": course.title, "channel": reg.channel}
            items.append(TimelineItem(reg.registered_at, "course", "course.registered", registered))
        for seen, course in session.execute(
            select(CourseAttendance, Course)
            .join(Course, Course.id == CourseAttendance.course_id)
            .where(CourseAttendance.lead_id == lead.id)
        ):
            attended = {"course": course.key, "title": course.title, "minutes": seen.minutes}
            items.append(TimelineItem(course.starts_at, "course", "course.attended", attended))
        for scored in session.scalars(select(ScoreEvent).where(ScoreEvent.lead_id == lead.id)):
            points = {
                "points": scored.points,
                "label": label(scored.kind, scored.detail),
                "kind": scored.kind,
            }
            items.append(TimelineItem(scored.at, "score", "score", points))
        for handoff in session.scalars(select(Handoff).where(Handoff.lead_id == lead.id)):
            items.extend(_handoff_items(handoff))
        for assigned, arm, number, key in session.execute(
            select(VariantAssignment, ScriptVariant, ScriptVersion.number, Script.key)
            .join(ScriptVariant, ScriptVariant.id == VariantAssignment.variant_id)
            .join(ScriptVersion, ScriptVersion.id == ScriptVariant.version_id)
            .join(Script, Script.id == ScriptVersion.script_id)
            .where(VariantAssignment.lead_id == lead.id)
        ):
            params = {"experiment": arm.experiment_id, "script": key, "label": arm.label, "version": number}
            items.append(TimelineItem(assigned.assigned_at, "variant", "variant", params))
        for change in session.scalars(select(StageChange).where(StageChange.lead_id == lead.id)):
            moved = {
                "from_stage": change.from_stage,
                "to_stage": change.to_stage,
                "actor": change.actor,
                "reason": change.reason,
            }
            items.append(TimelineItem(change.at, "stage", "stage", moved))
    for d in session.scalars(
        select(Delivery).where(Delivery.recipient == external_user_id).order_by(Delivery.id).limit(limit)
    ):
        sent = {"script": d.script_key, "version": d.script_version, "status": d.status, "text": d.text}
        if d.errcode:
            items.append(
                TimelineItem(d.created_at, "outbound", "outbound.error", {**sent, "errcode": d.errcode})
            )
        else:
            items.append(TimelineItem(d.created_at, "outbound", "outbound", sent))
    targets = [f"lead:{external_user_id}", f"contact:{external_user_id}"]
    for entry in session.scalars(
        select(AuditEntry)
        .where(or_(*(AuditEntry.target == t for t in targets)))
        .order_by(AuditEntry.id)
        .limit(limit)
    ):
        items.append(TimelineItem(entry.at, "audit", "audit", {"action": entry.action, "actor": entry.actor}))
    return sorted(items, key=lambda i: i.at)
