"""Lead scoring: facts about a lead become ScoreEvents once each; the score decays, is capped per kind,
is explained item by item, and a lead that reaches the threshold or shows a buying intent is qualified."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from bot.config import ScoringSettings
from bot.leads.stages import Stage, transition
from models.audit import AuditEntry
from models.bulk import conflict_insert
from models.campaigns import Course, CourseAttendance, CourseRegistration
from models.inbox import InboundEvent
from models.kf import IntentSignal
from models.leads import PLATFORM_NAMES, Lead, Platform
from models.scoring import ScoreEvent, ScoreKind, StageChange

FIRM_TZ = ZoneInfo("Asia/Shanghai")
# Inbound kf events that are the customer speaking (text or anything else they sent).
CUSTOMER_MESSAGE_KINDS = ("kf_text", "kf_customer_message")
# Stages from which scoring may qualify a lead; later stages belong to the handoff.
QUALIFIABLE = frozenset({Stage.NEW, Stage.ENGAGED, Stage.NURTURED})
ACTOR = "scoring"


class ScoringError(ValueError):
    """A score event that cannot be recorded (unknown kind or fit detail); nothing was changed."""


@dataclass(frozen=True)
class ScoreItem:
    """One scored fact as it counts now: awarded points, after decay, after the kind's cap, and why.

    `why` words it in English for the CLI and the manager's brief; the console words it from
    `label`, the points and `cap` (decayed when `decayed` != `awarded`, capped when `points` < `decayed`).
    """

    kind: str
    detail: str
    at: datetime
    awarded: int
    decayed: int
    points: int
    why: str
    label: str = ""
    cap: int = 0

    @property
    def was_decayed(self) -> bool:
        """Whether decay took points off the award."""
        return self.decayed != self.awarded

    @property
    def was_capped(self) -> bool:
        """Whether the kind's cap left this fact fewer points than it has after decay."""
        return self.points < self.decayed


@dataclass(frozen=True)
class Score:
    """A lead's score at one moment: total = fit + engagement, with every item explained."""

    total: int
    fit: int
    engagement: int
    threshold: int
    items: tuple[ScoreItem, ...]
    intents: tuple[tuple[str, str], ...]  # (intent, keyword) the lead has shown, oldest first

    def ranked(self) -> list[ScoreItem]:
        """The scored facts, biggest contribution first (newest first among equals)."""
        return sorted(self.items, key=lambda i: (-i.points, -i.at.timestamp()))

    def explain(self) -> list[str]:
        """The reasons behind the total, biggest contribution first."""
        return [item.why for item in self.ranked()]


@dataclass(frozen=True)
class Evaluation:
    """What evaluate() found: the score, why the lead qualifies (if it does) and the stage change made."""

    score: Score
    reason: str | None
    change: StageChange | None


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def decayed(points: int, at: datetime, now: datetime, half_life_days: float) -> float:
    """Points left of an award made at `at`, halving every half_life_days (0 = no decay)."""
    age_days = (now - at).total_seconds() / 86400
    if half_life_days <= 0 or age_days <= 0:
        return float(points)
    return points * 0.5 ** (age_days / half_life_days)


def _fit_label(detail: str) -> str:
    what, _, value = detail.partition(":")
    if what == "platform":
        try:
            return f"来自{PLATFORM_NAMES[Platform(value)]}"
        except ValueError:
            return f"来自{value}"
    if what == "experience":
        return f"投资经验「{value}」"
    return detail


def label(kind: str, detail: str) -> str:
    """What a score event means, in the words shown to account managers."""
    labels: dict[str, str] = {
        ScoreKind.SUBSCRIBED: "订阅早报",
        ScoreKind.REPLIED: f"{detail} 发来消息",
        ScoreKind.REGISTERED: f"报名直播课「{detail}」",
        ScoreKind.ATTENDED: f"观看直播课「{detail}」",
        ScoreKind.CLICKED: f"点击「{detail}」",
        ScoreKind.INTENT: f"询问「{detail}」",
    }
    return _fit_label(detail) if kind == ScoreKind.FIT else labels.get(kind, detail)


def _why(item_label: str, awarded: int, decayed_points: int, points: int, cap: int) -> str:
    notes = []
    if decayed_points != awarded:
        notes.append(f"decayed from {awarded}")
    if points < decayed_points:
        notes.append(f"cap {cap} reached")
    return f"{item_label} +{points}" + (f" ({'; '.join(notes)})" if notes else "")


def compute(events: Iterable[ScoreEvent], settings: ScoringSettings, now: datetime) -> Score:
    """The score as of `now` from recorded events (later events are ignored): pure, no database."""
    by_kind: dict[str, list[ScoreEvent]] = {}
    for event in events:
        if event.at <= now:
            by_kind.setdefault(event.kind, []).append(event)
    items: list[ScoreItem] = []
    for kind, rows in by_kind.items():
        is_fit = kind == ScoreKind.FIT
        cap = settings.cap_fit if is_fit else settings.cap(kind)
        half_life = 0.0 if is_fit else settings.half_life_days
        left = cap
        # Newest facts fill the cap first: they are worth most and say most about the lead now.
        for event in sorted(rows, key=lambda e: (e.at, e.source_ref), reverse=True):
            now_points = _round(decayed(event.points, event.at, now, half_life))
            counted = max(0, min(now_points, left))
            left -= counted
            item_label = label(kind, event.detail)
            why = _why(item_label, event.points, now_points, counted, cap)
            items.append(
                ScoreItem(
                    kind,
                    event.detail,
                    event.at,
                    event.points,
                    now_points,
                    counted,
                    why,
                    label=item_label,
                    cap=cap,
                )
            )
    items.sort(key=lambda i: (i.at, i.kind, i.detail))
    fit = sum(i.points for i in items if i.kind == ScoreKind.FIT)
    engagement = sum(i.points for i in items if i.kind != ScoreKind.FIT)
    intents: list[tuple[str, str]] = []
    for event in sorted(by_kind.get(ScoreKind.INTENT, []), key=lambda e: (e.at, e.source_ref)):
        intent = event.source_ref.partition(":")[0]
        if intent not in (i for i, _ in intents):
            intents.append((intent, event.detail))
    return Score(
        total=fit + engagement,
        fit=fit,
        engagement=engagement,
        threshold=settings.qualify_threshold,
        items=tuple(items),
        intents=tuple(intents),
    )


def qualifies(score: Score, intents: Collection[str]) -> str | None:
    """Why the lead qualifies — an intent from `intents` shown at any time, or the threshold — or None."""
    for intent, keyword in score.intents:
        if intent in intents:
            return f"意向「{keyword}」"
    if score.total >= score.threshold:
        return f"得分 {score.total} ≥ {score.threshold}"
    return None


def _points(kind: str, detail: str, settings: ScoringSettings) -> int:
    try:
        score_kind = ScoreKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ScoreKind)
        raise ScoringError(f"unknown score event kind {kind!r} (known: {known})") from None
    if score_kind != ScoreKind.FIT:
        return settings.points(score_kind.value)
    what, _, value = detail.partition(":")
    if what == "platform":
        return settings.platform_points().get(value, 0)
    if what == "experience":
        return settings.experience_points().get(value, 0)
    raise ScoringError(f"fit detail must be platform:<name> or experience:<level>, got {detail!r}")


def record(
    session: Session,
    lead: Lead,
    kind: str,
    source_ref: str,
    detail: str,
    now: datetime,
    *,
    settings: ScoringSettings,
    at: datetime | None = None,
) -> bool:
    """Score one fact about the lead (at `at`, default now) unless already scored; return whether new."""
    points = _points(kind, detail, settings)
    if not source_ref:
        raise ScoringError("source_ref must name the fact (e.g. course:12), so it scores only once")
    if lead.id is None:
        session.flush()
    table = cast(Table, ScoreEvent.__table__)
    stmt = (
        conflict_insert(session, table)
        .values(
            lead_id=lead.id,
            kind=kind,
            source_ref=source_ref[:128],
            detail=detail[:256],
            points=points,
            at=at or now,
        )
        .on_conflict_do_nothing(index_elements=["lead_id", "kind", "source_ref"])
        .returning(table.c.id)
    )
    return session.execute(stmt).first() is not None


def _day(at: datetime) -> str:
    return at.astimezone(FIRM_TZ).date().isoformat()


def _first_per_key(rows: Iterable[tuple[str, datetime, str]]) -> dict[str, tuple[datetime, str]]:
    first: dict[str, tuple[datetime, str]] = {}
    for key, at, detail in rows:
        if key not in first or at < first[key][0]:
            first[key] = (at, detail)
    return first


def collect(session: Session, lead: Lead, now: datetime, *, settings: ScoringSettings) -> int:
    """Score the stored facts about the lead (up to `now`) not scored yet; return how many were new."""
    facts: list[tuple[str, str, str, datetime]] = []  # kind, source_ref, detail, at
    ext = lead.external_user_id
    if lead.platform and lead.created_at <= now:
        facts.append((ScoreKind.FIT, "platform", f"platform:{lead.platform}", lead.created_at))
    if lead.subscribed:
        consented = session.scalar(
            select(AuditEntry.at)
            .where(AuditEntry.target == f"lead:{ext}", AuditEntry.action == "lead.subscribe")
            .where(AuditEntry.at <= now)
            .order_by(AuditEntry.at.desc())
            .limit(1)
        )
        facts.append((ScoreKind.SUBSCRIBED, "subscribed", "", consented or min(lead.created_at, now)))
    replies = session.scalars(
        select(InboundEvent.received_at).where(
            InboundEvent.subject == ext,
            InboundEvent.kind.in_(CUSTOMER_MESSAGE_KINDS),
            InboundEvent.received_at <= now,
        )
    )
    for day, (at, _) in _first_per_key((_day(at), at, "") for at in replies).items():
        facts.append((ScoreKind.REPLIED, f"day:{day}", day, at))
    signals = session.execute(
        select(IntentSignal.intent, IntentSignal.keyword, IntentSignal.at).where(
            IntentSignal.external_user_id == ext, IntentSignal.at <= now
        )
    )
    per_day = _first_per_key((f"{intent}:{_day(at)}", at, keyword) for intent, keyword, at in signals)
    for ref, (at, keyword) in per_day.items():
        facts.append((ScoreKind.INTENT, ref, keyword, at))
    for course_id, title, at in session.execute(
        select(CourseRegistration.course_id, Course.title, CourseRegistration.registered_at)
        .join(Course, Course.id == CourseRegistration.course_id)
        .where(CourseRegistration.lead_id == lead.id, CourseRegistration.registered_at <= now)
    ):
        facts.append((ScoreKind.REGISTERED, f"course:{course_id}", title, at))
    for course_id, title, at in session.execute(
        select(CourseAttendance.course_id, Course.title, Course.starts_at)
        .join(Course, Course.id == CourseAttendance.course_id)
        .where(CourseAttendance.lead_id == lead.id, CourseAttendance.minutes > 0, Course.starts_at <= now)
    ):
        facts.append((ScoreKind.ATTENDED, f"course:{course_id}", title, at))
    new = 0
    for kind, ref, detail, at in facts:
        new += record(session, lead, kind, ref, detail, now, settings=settings, at=at)
    return new


def score(session: Session, lead: Lead, now: datetime, *, settings: ScoringSettings) -> Score:
    """The lead's score as of `now` from its recorded events, explained item by item."""
    events = session.scalars(select(ScoreEvent).where(ScoreEvent.lead_id == lead.id, ScoreEvent.at <= now))
    return compute(events, settings, now)


def evaluate(
    session: Session, lead: Lead, now: datetime, *, settings: ScoringSettings, actor: str = ACTOR
) -> Evaluation:
    """Collect and score; a qualifying lead in new/engaged/nurtured (not opted out) becomes qualified."""
    collect(session, lead, now, settings=settings)
    current = score(session, lead, now, settings=settings)
    reason = qualifies(current, settings.instant_intents())
    change = None
    if reason is not None and lead.stage in QUALIFIABLE and not lead.opted_out:
        change = transition(session, lead, Stage.QUALIFIED, actor, reason, now)
    return Evaluation(current, reason, change)
