"""Data-review queries over a date range: funnels, daily adds, script results, risk words, handoff speed.

Every function runs one GROUP BY query (plus at most a small lookup and a fold in Python) and works on
SQLite and PostgreSQL. Days and weeks are Shanghai days: the firm's time zone has no daylight saving, so a UTC
time plus eight hours gives its Shanghai calendar day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    exists,
    extract,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from bot.kf.risk import weekly_frequency
from bot.leads.stages import Stage
from models.audit import AuditEntry
from models.campaigns import CourseRegistration
from models.handoff import Handoff, HandoffStatus
from models.leads import Lead
from models.scoring import StageChange
from models.scripts import Script, ScriptVersion
from models.variants import ScriptVariant
from scripts_library.performance import script_performance

SHANGHAI = ZoneInfo("Asia/Shanghai")
SHANGHAI_OFFSET_HOURS = 8
MAX_RANGE_DAYS = 366

FUNNEL_STEPS = ("added", "engaged", "subscribed", "registered", "qualified", "accepted", "converted")

# How far along the stage path a stage is; a lead that reached a later stage passed the earlier ones
# (forward moves may skip steps: a new lead asking how to open an account is qualified at once).
_STAGE_RANK = {
    Stage.ENGAGED: 1,
    Stage.NURTURED: 1,
    Stage.QUALIFIED: 2,
    Stage.HANDED_OFF: 2,
    Stage.ACCEPTED: 3,
    Stage.CONVERTED: 4,
}


class RangeError(ValueError):
    """A date range that cannot be reported on (unparsable, reversed or too long)."""


@dataclass(frozen=True)
class DateRange:
    """Shanghai calendar days from `start` to `end`, both included."""

    start: date
    end: date

    @property
    def utc_start(self) -> datetime:
        """The first instant of `start` in Shanghai, as UTC."""
        return datetime.combine(self.start, time(), SHANGHAI).astimezone(UTC)

    @property
    def utc_end(self) -> datetime:
        """The first instant after `end` in Shanghai, as UTC (exclusive bound)."""
        return datetime.combine(self.end + timedelta(days=1), time(), SHANGHAI).astimezone(UTC)

    def days(self) -> list[date]:
        """Every day of the range in order."""
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]


def this_month(now: datetime) -> DateRange:
    """The Shanghai calendar month containing `now`, up to its last day."""
    today = now.astimezone(SHANGHAI).date()
    first = today.replace(day=1)
    next_first = (first + timedelta(days=32)).replace(day=1)
    return DateRange(first, next_first - timedelta(days=1))


def parse_range(start: str | None, end: str | None, now: datetime) -> DateRange:
    """The range named by two YYYY-MM-DD strings; either missing takes this month's bound."""
    default = this_month(now)
    try:
        first = date.fromisoformat(start) if start else default.start
        last = date.fromisoformat(end) if end else default.end
    except ValueError:
        raise RangeError("dates must be written YYYY-MM-DD") from None
    if last < first:
        raise RangeError("the end date is before the start date")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise RangeError(f"a range may cover at most {MAX_RANGE_DAYS} days")
    return DateRange(first, last)


@dataclass(frozen=True)
class FunnelRow:
    """Leads added in the range under one platform (and hook code) and how many reached each step."""

    platform: str
    hook_code: str
    added: int
    engaged: int
    subscribed: int
    registered: int
    qualified: int
    accepted: int
    converted: int

    @property
    def conversion_rate(self) -> float:
        """Converted leads per lead added (0 when none were added)."""
        return self.converted / self.added if self.added else 0.0


@dataclass(frozen=True)
class DailyAdds:
    """Leads added on one Shanghai day from one platform."""

    day: date
    platform: str
    added: int


@dataclass(frozen=True)
class ScriptResult:
    """What the messages of one script version sent in the range led to."""

    script_key: str
    version: int
    variant: str  # A/B arms the version was, e.g. "#1 B"; "" if it never was one
    sent: int
    delivered: int
    replied: int
    registered: int
    qualified: int


@dataclass(frozen=True)
class WeeklyRisk:
    """Risk-word hits of one category in inbound customer messages of one ISO week."""

    week: date  # the Monday
    category: str
    hits: int

    @property
    def iso_week(self) -> str:
        """The week as ISO 8601 writes it, e.g. 2026-W45."""
        year, number, _ = self.week.isocalendar()
        return f"{year}-W{number:02d}"


@dataclass(frozen=True)
class HandoffSpeed:
    """Handoffs offered in the range for leads of one platform and how fast managers accepted them."""

    platform: str
    offered: int
    accepted: int
    timed_out: int
    avg_minutes_to_accept: float | None
    max_minutes_to_accept: float | None


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _shanghai_day(session: Session, column: Any) -> ColumnElement[Any]:
    """The Shanghai calendar day of a stored UTC time, in SQL."""
    if _dialect(session) == "sqlite":
        return func.date(column, literal_column(f"'+{SHANGHAI_OFFSET_HOURS} hours'"))
    return func.date(column + literal_column(f"interval '{SHANGHAI_OFFSET_HOURS} hours'"))


def _minutes_between(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    """Minutes from `earlier` to `later`, in SQL."""
    if _dialect(session) == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 1440.0
    return extract("epoch", later - earlier) / 60.0


def _as_date(value: Any) -> date:
    # SQLite returns the day as text, PostgreSQL as a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _or_blank(column: Any) -> ColumnElement[Any]:
    # A literal, not a bound parameter: PostgreSQL binds parameters server-side, and would not see
    # `coalesce(x, $1)` in the select list and `coalesce(x, $2)` in GROUP BY as the same expression.
    return func.coalesce(column, literal_column("''"))


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _in_range(column: Any, period: DateRange) -> ColumnElement[bool]:
    return and_(column >= period.utc_start, column < period.utc_end)


def _funnel(session: Session, period: DateRange, by_code: bool) -> list[FunnelRow]:
    stages = union_all(
        select(StageChange.lead_id.label("lead_id"), StageChange.to_stage.label("stage")),
        select(Lead.id.label("lead_id"), Lead.stage.label("stage")),
    ).subquery()
    rank = case(*((stages.c.stage == stage.value, n) for stage, n in _STAGE_RANK.items()), else_=0)
    reached = select(stages.c.lead_id, func.max(rank).label("rank")).group_by(stages.c.lead_id).subquery()
    consented = exists().where(
        AuditEntry.action == "lead.subscribe",
        AuditEntry.target == literal_column("'lead:'", String) + Lead.external_user_id,
    )
    registered = exists().where(CourseRegistration.lead_id == Lead.id)
    platform = _or_blank(Lead.platform)
    code = _or_blank(Lead.hook_code) if by_code else literal_column("''")
    stmt = (
        select(
            platform,
            code,
            func.count(Lead.id),
            _count_if(reached.c.rank >= 1),
            _count_if(or_(Lead.subscribed.is_(True), consented)),
            _count_if(registered),
            _count_if(reached.c.rank >= 2),
            _count_if(reached.c.rank >= 3),
            _count_if(reached.c.rank >= 4),
        )
        .join(reached, reached.c.lead_id == Lead.id)
        .where(_in_range(Lead.created_at, period))
        .group_by(*((platform, code) if by_code else (platform,)))
    )
    rows = [FunnelRow(str(p), str(c), *(int(n) for n in counts)) for p, c, *counts in session.execute(stmt)]
    return sorted(rows, key=lambda r: (-r.conversion_rate, -r.added, r.platform, r.hook_code))


def funnel_by_platform(session: Session, period: DateRange) -> list[FunnelRow]:
    """Leads added in the range per platform and how many reached each funnel step, best converting first.

    Engaged, qualified, accepted and converted count leads whose stage history or current stage reached
    that step or a later one; subscribed counts leads subscribed now or who ever gave consent;
    registered counts leads with a course registration. Leads without a platform have platform "".
    """
    return _funnel(session, period, by_code=False)


def funnel_by_hook_code(session: Session, period: DateRange) -> list[FunnelRow]:
    """The same funnel per hook code (with its platform), best converting first."""
    return _funnel(session, period, by_code=True)


def daily_adds(session: Session, period: DateRange) -> list[DailyAdds]:
    """Leads added per Shanghai day per platform, by day then platform (days without adds are absent)."""
    day = _shanghai_day(session, Lead.created_at)
    platform = _or_blank(Lead.platform)
    stmt = (
        select(day, platform, func.count(Lead.id))
        .where(_in_range(Lead.created_at, period))
        .group_by(day, platform)
    )
    rows = [DailyAdds(_as_date(d), str(p), int(n)) for d, p, n in session.execute(stmt)]
    return sorted(rows, key=lambda r: (r.day, r.platform))


def script_results(session: Session, period: DateRange) -> list[ScriptResult]:
    """Per script key and version (A/B variants included), customer messages of the range and what followed.

    sent: messages created in the range that passed the compliance gate and were queued for WeCom.
    delivered: those WeCom accepted. replied: delivered messages whose recipient wrote to us within 48
    hours after. registered / qualified: delivered messages whose recipient later (before the range
    ends) registered for a course / reached the qualified stage or beyond. One customer who got several
    messages counts under each of them. A version that was an arm of an A/B test names its test and arm.
    """
    rows = script_performance(session, period.utc_start, period.utc_end)
    arms: dict[tuple[str, int], list[str]] = {}
    if rows:
        stmt = (
            select(Script.key, ScriptVersion.number, ScriptVariant.experiment_id, ScriptVariant.label)
            .join(ScriptVersion, ScriptVersion.id == ScriptVariant.version_id)
            .join(Script, Script.id == ScriptVersion.script_id)
            .where(Script.key.in_({r.script_key for r in rows}))
            .order_by(ScriptVariant.experiment_id)
        )
        for key, number, experiment, arm in session.execute(stmt):
            arms.setdefault((str(key), int(number)), []).append(f"#{experiment} {arm}")
    return [
        ScriptResult(
            r.script_key,
            r.version,
            ", ".join(arms.get((r.script_key, r.version), [])),
            r.sent,
            r.delivered,
            r.replied,
            r.registered,
            r.qualified,
        )
        for r in rows
    ]


def weekly_risk(session: Session, period: DateRange) -> list[WeeklyRisk]:
    """Risk-word hits on the range's days per ISO week and category, by week then category."""
    totals = weekly_frequency(session, period.start, period.end)
    return [WeeklyRisk(week, category, hits) for (week, category), hits in sorted(totals.items())]


def handoff_speed(session: Session, period: DateRange) -> list[HandoffSpeed]:
    """Handoff offers made in the range per lead platform: accepted, timed out, minutes to accept."""
    was_accepted = Handoff.status.in_((HandoffStatus.ACCEPTED, HandoffStatus.CLOSED))
    minutes = case(
        (
            and_(was_accepted, Handoff.responded_at.is_not(None)),
            _minutes_between(session, Handoff.responded_at, Handoff.offered_at),
        ),
        else_=None,
    )
    platform = _or_blank(Lead.platform)
    stmt = (
        select(
            platform,
            func.count(Handoff.id),
            _count_if(was_accepted),
            _count_if(Handoff.status == HandoffStatus.TIMED_OUT),
            func.avg(minutes),
            func.max(minutes),
        )
        .join(Lead, Lead.id == Handoff.lead_id)
        .where(_in_range(Handoff.offered_at, period))
        .group_by(platform)
        .order_by(platform)
    )
    return [
        HandoffSpeed(
            str(p),
            int(offered),
            int(accepted),
            int(timed_out),
            None if avg is None else round(float(avg), 1),
            None if slowest is None else round(float(slowest), 1),
        )
        for p, offered, accepted, timed_out, avg, slowest in session.execute(stmt)
    ]
