"""Shanghai Stock Exchange trading days: packaged exchange data, operator overrides, weekday fallback.

Days are Asia/Shanghai calendar dates. Overrides always win. Inside the span the packaged exchange
data covers, the exchange's sessions decide; outside it (typically after the data's last year) the
calendar falls back to Monday-Friday, and every answer says which of the three it came from.
"""

from __future__ import annotations

import enum
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.audit import AuditEntry
from models.base import utcnow
from models.calendar import CalendarOverride, OverrideKind

EXCHANGE = "XSHG"
SHANGHAI = ZoneInfo("Asia/Shanghai")
# `wecom-bot doctor` warns when fewer days than this remain of exchange data.
COVERAGE_WARN_DAYS = 30
# No real calendar goes this long without a trading day; past it the overrides must be wrong.
MAX_SEARCH_DAYS = 366
MAX_REASON_LENGTH = 256


class CalendarError(ValueError):
    """An override cannot be added or removed as asked."""


class DaySource(enum.StrEnum):
    """Where an answer about a day came from."""

    EXCHANGE = "exchange"  # the packaged exchange data
    OVERRIDE = "override"  # an operator's override
    FALLBACK = "fallback"  # weekdays, outside the exchange data's coverage


@dataclass(frozen=True)
class DayStatus:
    """Whether a day trades, and on whose word."""

    day: date
    trading: bool
    source: DaySource
    reason: str = ""  # the override's reason when source is OVERRIDE


@dataclass(frozen=True)
class ExchangeData:
    """The exchange's sessions as plain dates, and the span the data covers."""

    sessions: frozenset[date]
    coverage_start: date
    coverage_end: date


_exchange_lock = threading.Lock()
_exchange_data: ExchangeData | None = None


def _load_exchange_data() -> ExchangeData:
    # The library's import and construction take around a second and, with recent pandas, emit
    # deprecation warnings from inside the library that are not ours to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import exchange_calendars as xc

        factory = type(xc.get_calendar(EXCHANGE))
        bound = factory.bound_max()
        # Ask for everything the data covers, not the library's default of one year from today.
        calendar = xc.get_calendar(EXCHANGE, end=bound) if bound is not None else xc.get_calendar(EXCHANGE)
        sessions = frozenset(ts.date() for ts in calendar.sessions)
        start = calendar.first_session.date()
        end = bound.date() if bound is not None else calendar.last_session.date()
    return ExchangeData(sessions=sessions, coverage_start=start, coverage_end=end)


def exchange_data() -> ExchangeData:
    """The exchange sessions, loaded once per process on first use (thread-safe)."""
    global _exchange_data
    data = _exchange_data
    if data is None:
        with _exchange_lock:
            data = _exchange_data
            if data is None:
                data = _exchange_data = _load_exchange_data()
    return data


def shanghai_today(now: datetime) -> date:
    """The Asia/Shanghai calendar date at the aware instant `now`."""
    if now.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware (UTC) datetime")
    return now.astimezone(SHANGHAI).date()


@dataclass(frozen=True)
class Override:
    """An operator's ruling on one day, detached from the database session."""

    day: date
    kind: OverrideKind
    reason: str
    created_by: str


class TradingCalendar:
    """Answers trading-day questions from exchange data plus overrides; lookups are set membership."""

    def __init__(self, data: ExchangeData, overrides: Iterable[Override] = ()) -> None:
        self._data = data
        self._overrides = {o.day: o for o in overrides}

    @classmethod
    def load(cls, session: Session) -> TradingCalendar:
        """Build the calendar from the process's exchange data and the overrides in the database."""
        rows = session.scalars(select(CalendarOverride))
        overrides = [Override(r.day, OverrideKind(r.kind), r.reason, r.created_by) for r in rows]
        return cls(exchange_data(), overrides)

    @property
    def coverage_start(self) -> date:
        """First date the packaged exchange data covers."""
        return self._data.coverage_start

    @property
    def coverage_end(self) -> date:
        """Last date the packaged exchange data covers; later days fall back to weekdays."""
        return self._data.coverage_end

    @property
    def overrides(self) -> list[Override]:
        """Every override, by day."""
        return sorted(self._overrides.values(), key=lambda o: o.day)

    def covered(self, day: date) -> bool:
        """Whether the exchange data covers `day`."""
        return self._data.coverage_start <= day <= self._data.coverage_end

    def days_of_coverage_left(self, today: date) -> int:
        """Days after `today` still covered by exchange data (0 once `today` reaches the end)."""
        return max(0, (self._data.coverage_end - today).days)

    def base_status(self, day: date) -> DayStatus:
        """The day as exchange data or the weekday fallback has it, ignoring overrides."""
        if self.covered(day):
            return DayStatus(day, day in self._data.sessions, DaySource.EXCHANGE)
        return DayStatus(day, day.weekday() < 5, DaySource.FALLBACK)

    def status(self, day: date) -> DayStatus:
        """The day's trading status and where it came from; an override wins."""
        override = self._overrides.get(day)
        if override is not None:
            return DayStatus(day, override.kind == OverrideKind.OPEN, DaySource.OVERRIDE, override.reason)
        return self.base_status(day)

    def is_trading_day(self, day: date) -> bool:
        """Whether the exchange trades on `day` (Shanghai date)."""
        override = self._overrides.get(day)
        if override is not None:
            return override.kind == OverrideKind.OPEN
        if self._data.coverage_start <= day <= self._data.coverage_end:
            return day in self._data.sessions
        return day.weekday() < 5

    def next_trading_day(self, after: date) -> DayStatus:
        """The first trading day strictly after `after`, with its source."""
        day = after
        for _ in range(MAX_SEARCH_DAYS):
            day += timedelta(days=1)
            if self.is_trading_day(day):
                return self.status(day)
        raise LookupError(f"no trading day within {MAX_SEARCH_DAYS} days after {after}: check the overrides")

    def upcoming(self, after: date, count: int) -> list[DayStatus]:
        """The next `count` trading days strictly after `after`, with their sources."""
        days: list[DayStatus] = []
        day = after
        while len(days) < count:
            status = self.next_trading_day(day)
            days.append(status)
            day = status.day
        return days

    def trading_days(self, start: date, end: date) -> list[date]:
        """Trading days from `start` to `end`, both inclusive, in order."""
        days = []
        day = start
        while day <= end:
            if self.is_trading_day(day):
                days.append(day)
            day += timedelta(days=1)
        return days


def get_override(session: Session, day: date) -> CalendarOverride | None:
    """The override stored for `day`, if any."""
    return session.scalars(select(CalendarOverride).where(CalendarOverride.day == day)).first()


def add_override(
    session: Session, day: date, kind: str, reason: str, actor: str, now: datetime | None = None
) -> CalendarOverride:
    """Record an extra closure or a make-up trading day after checking it changes something; audit it."""
    if kind not in OverrideKind.__members__.values():
        raise CalendarError(f"kind: one of {', '.join(OverrideKind)}")
    reason = reason.strip()
    if not reason:
        raise CalendarError("reason: say why the day is overridden (e.g. the exchange notice)")
    if len(reason) > MAX_REASON_LENGTH:
        raise CalendarError(f"reason: at most {MAX_REASON_LENGTH} characters")
    actor = actor.strip()
    if not actor:
        raise CalendarError("actor: name who makes the override")
    existing = get_override(session, day)
    if existing is not None:
        raise CalendarError(
            f"{day} already has a {existing.kind!r} override ({existing.reason}); remove it first"
        )
    base = TradingCalendar(exchange_data()).base_status(day)
    if kind == OverrideKind.OPEN and base.trading:
        raise CalendarError(
            f"{day} is already a trading day ({base.source} data); an 'open' override is moot"
        )
    if kind == OverrideKind.CLOSED and not base.trading:
        raise CalendarError(f"{day} is already closed ({base.source} data); a 'closed' override is moot")
    at = now or utcnow()
    row = CalendarOverride(day=day, kind=kind, reason=reason, created_by=actor, created_at=at)
    session.add(row)
    session.add(
        AuditEntry(
            at=at,
            actor=actor,
            action="calendar.override.add",
            target=f"calendar:{day.isoformat()}",
            detail={"kind": kind, "reason": reason},
        )
    )
    session.flush()
    return row


def remove_override(session: Session, day: date, actor: str, now: datetime | None = None) -> None:
    """Delete the override on `day`, returning it to exchange data or the fallback; audit it."""
    actor = actor.strip()
    if not actor:
        raise CalendarError("actor: name who removes the override")
    row = get_override(session, day)
    if row is None:
        raise CalendarError(f"{day} has no override")
    session.add(
        AuditEntry(
            at=now or utcnow(),
            actor=actor,
            action="calendar.override.remove",
            target=f"calendar:{day.isoformat()}",
            detail={"kind": row.kind, "reason": row.reason, "created_by": row.created_by},
        )
    )
    session.delete(row)
    session.flush()
