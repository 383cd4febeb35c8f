"""The lead brief a manager sees: source, hook code, score and why, courses, last messages (masked)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.leads.masking import mask
from bot.leads.scoring import CUSTOMER_MESSAGE_KINDS, ScoreItem, score
from models.campaigns import Course, CourseAttendance
from models.handoff import AccountManager, Handoff
from models.inbox import InboundEvent
from models.leads import PLATFORM_NAMES, Lead, Platform
from scripts_library.compliance import lint

MAX_REASONS = 4
MAX_MESSAGE_CHARS = 60
# Stands in for a customer message the linter would not let through in a staff message.
WITHHELD = "（一条消息含敏感内容，请在会话中查看）"


@dataclass(frozen=True)
class Brief:
    """Everything the manager needs to decide, already masked and shortened."""

    display_name: str
    platform: str
    hook_code: str
    score: int
    threshold: int
    reasons: tuple[str, ...]
    qualified_because: str
    courses: tuple[str, ...]
    last_messages: tuple[str, ...]


def platform_name(platform: str | None) -> str:
    """The platform as managers know it (小红书, 抖音…)."""
    if not platform:
        return "未知渠道"
    try:
        return PLATFORM_NAMES[Platform(platform)]
    except ValueError:
        return platform


def brief_name(lead: Lead) -> str:
    """The lead's name as shown to staff (digits masked)."""
    return mask(lead.display_name) or "未命名客户"


def _message_text(event: InboundEvent) -> str:
    text = event.payload.get("text")
    if isinstance(text, dict) and text.get("content"):
        return str(text["content"])
    return f"[{event.payload.get('msgtype') or '非文字消息'}]"


def _quotable(text: str) -> str:
    """The message masked and shortened, or withheld when it would trip the compliance lint."""
    shown = mask(text.strip())
    if len(shown) > MAX_MESSAGE_CHARS:
        shown = shown[: MAX_MESSAGE_CHARS - 1] + "…"
    return shown if lint(shown).verdict == "pass" else WITHHELD


def last_messages(session: Session, lead: Lead, count: int) -> tuple[str, ...]:
    """The lead's latest `count` messages, oldest first, masked; risky ones withheld."""
    if count <= 0:
        return ()
    rows = session.scalars(
        select(InboundEvent)
        .where(InboundEvent.subject == lead.external_user_id, InboundEvent.kind.in_(CUSTOMER_MESSAGE_KINDS))
        .order_by(InboundEvent.received_at.desc(), InboundEvent.id.desc())
        .limit(count)
    ).all()
    return tuple(_quotable(_message_text(row)) for row in reversed(rows))


def courses_attended(session: Session, lead: Lead) -> tuple[str, ...]:
    """《title》 N 分钟 for every course the lead watched, earliest first."""
    rows = session.execute(
        select(Course.title, CourseAttendance.minutes)
        .join(Course, Course.id == CourseAttendance.course_id)
        .where(CourseAttendance.lead_id == lead.id, CourseAttendance.minutes > 0)
        .order_by(Course.starts_at)
    )
    return tuple(f"《{title}》{minutes}分钟" for title, minutes in rows)


def reason_line(item: ScoreItem) -> str:
    """One scored fact in the manager's words, e.g. 订阅早报 +10（由 20 衰减；已达上限 30）."""
    notes = []
    if item.was_decayed:
        notes.append(f"由 {item.awarded} 衰减")
    if item.was_capped:
        notes.append(f"已达上限 {item.cap}")
    return f"{item.label} +{item.points}" + (f"（{'；'.join(notes)}）" if notes else "")


def build(session: Session, lead: Lead, reason: str, settings: Settings, now: datetime) -> Brief:
    """Assemble the brief of a lead as of `now`."""
    current = score(session, lead, now, settings=settings.scoring)
    return Brief(
        display_name=brief_name(lead),
        platform=platform_name(lead.platform),
        hook_code=lead.hook_code or "无",
        score=current.total,
        threshold=current.threshold,
        reasons=tuple(reason_line(item) for item in current.ranked()[:MAX_REASONS]),
        qualified_because=reason,
        courses=courses_attended(session, lead),
        last_messages=last_messages(session, lead, settings.handoff.brief_messages),
    )


def script_values(
    brief: Brief, manager: AccountManager, handoff: Handoff, settings: Settings, lead_stage: str
) -> dict[str, dict[str, Any]]:
    """The values the approved `handoff_brief` script is rendered with."""
    compliance = settings.compliance
    return {
        "firm": {"name": compliance.firm_name, "opt_out": compliance.opt_out_instruction},
        "manager": {"name": manager.name},
        "handoff": {"id": str(handoff.id), "sla_minutes": str(settings.handoff.sla_minutes)},
        "lead": {
            "display_name": brief.display_name,
            "platform": brief.platform,
            "hook_code": brief.hook_code,
            "score": str(brief.score),
            "score_reasons": "；".join((brief.qualified_because, *brief.reasons)),
            "last_messages": " / ".join(brief.last_messages) or "（暂无）",
            "stage": lead_stage,
        },
    }
