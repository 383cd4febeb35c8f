"""When a campaign runs: its occurrences as aware UTC instants, from its schedule and the trading calendar.

Pure functions: no database, no clock. Wall-clock times are Asia/Shanghai (no daylight saving since
1991, but every conversion still goes through the zone database); results are aware UTC datetimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from bot.trading_calendar import MAX_SEARCH_DAYS, SHANGHAI
from models.campaigns import Campaign, Course, ScheduleKind

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleError(ValueError):
    """A campaign's schedule fields do not describe a schedule (missing or malformed values)."""


class DayCalendar(Protocol):
    """What occurrences need from a trading calendar (bot.trading_calendar.TradingCalendar has it)."""

    def is_trading_day(self, day: date) -> bool:
        """Whether the exchange trades on `day` (Shanghai date)."""
        ...


def parse_time_of_day(text: str) -> time:
    """Parse a wall-clock "HH:MM" (00:00-23:59) into a time."""
    match = _TIME_OF_DAY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ScheduleError(f"time_of_day: expected HH:MM between 00:00 and 23:59, got {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ScheduleError(f"{name}: naive datetimes are ambiguous; pass an aware datetime")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """The schedule part of a campaign, detached from the database row."""

    kind: ScheduleKind
    time_of_day: time | None = None  # trading_days, daily (Asia/Shanghai wall clock)
    run_at: datetime | None = None  # once
    course_starts_at: datetime | None = None  # course
    offset_minutes: int = 0  # course: minutes from the start (negative = before)

    def __post_init__(self) -> None:
        if self.kind in (ScheduleKind.TRADING_DAYS, ScheduleKind.DAILY) and self.time_of_day is None:
            raise ScheduleError(f"{self.kind} schedule needs time_of_day")
        if self.kind == ScheduleKind.ONCE:
            if self.run_at is None:
                raise ScheduleError("once schedule needs run_at")
            object.__setattr__(self, "run_at", _aware_utc(self.run_at, "run_at"))
        if self.kind == ScheduleKind.COURSE:
            if self.course_starts_at is None:
                raise ScheduleError("course schedule needs its course's start time")
            object.__setattr__(
                self, "course_starts_at", _aware_utc(self.course_starts_at, "course_starts_at")
            )

    @classmethod
    def of(cls, campaign: Campaign, course: Course | None = None) -> Schedule:
        """The schedule of a campaign row (and its course); ScheduleError if malformed."""
        try:
            kind = ScheduleKind(campaign.schedule_kind)
        except ValueError:
            raise ScheduleError(f"schedule_kind: unknown {campaign.schedule_kind!r}") from None
        if kind in (ScheduleKind.TRADING_DAYS, ScheduleKind.DAILY):
            return cls(kind, time_of_day=parse_time_of_day(campaign.time_of_day or ""))
        if kind == ScheduleKind.ONCE:
            return cls(kind, run_at=campaign.run_at)
        if campaign.course_id is None or course is None or course.id != campaign.course_id:
            raise ScheduleError("course schedule: the campaign's course is missing")
        return cls(kind, course_starts_at=course.starts_at, offset_minutes=int(campaign.offset_minutes or 0))

    @property
    def one_off(self) -> datetime | None:
        """The single instant of a once or course schedule; None for recurring ones."""
        if self.kind == ScheduleKind.ONCE:
            return self.run_at
        if self.kind == ScheduleKind.COURSE:
            assert self.course_starts_at is not None
            return self.course_starts_at + timedelta(minutes=self.offset_minutes)
        return None


def _every_day(day: date) -> bool:
    return True


def iter_occurrences(
    schedule: Schedule, start: datetime, calendar: DayCalendar | None = None
) -> Iterator[datetime]:
    """Occurrences at or after `start`, ascending; stops when no trading day comes within a year."""
    start = _aware_utc(start, "start")
    if schedule.kind in (ScheduleKind.ONCE, ScheduleKind.COURSE):
        single = schedule.one_off
        if single is not None and single >= start:
            yield single
        return
    if schedule.kind == ScheduleKind.TRADING_DAYS:
        if calendar is None:
            raise ScheduleError("trading_days schedule needs a trading calendar")
        counts = calendar.is_trading_day
    else:
        counts = _every_day
    assert schedule.time_of_day is not None
    day = start.astimezone(SHANGHAI).date()
    barren = 0  # consecutive days without an occurrence
    while barren <= MAX_SEARCH_DAYS:
        at = datetime.combine(day, schedule.time_of_day, tzinfo=SHANGHAI).astimezone(UTC)
        if at >= start and counts(day):
            barren = 0
            yield at
        else:
            barren += 1
        day += timedelta(days=1)


def occurrences_between(
    schedule: Schedule, start: datetime, end: datetime, calendar: DayCalendar | None = None
) -> list[datetime]:
    """Occurrences in the half-open window [start, end), ascending."""
    end = _aware_utc(end, "end")
    found = []
    for at in iter_occurrences(schedule, start, calendar):
        if at >= end:
            break
        found.append(at)
    return found


def next_occurrence(
    schedule: Schedule, start: datetime, calendar: DayCalendar | None = None
) -> datetime | None:
    """The first occurrence at or after `start`, or None when there is none."""
    return next(iter_occurrences(schedule, start, calendar), None)


def is_occurrence(schedule: Schedule, at: datetime, calendar: DayCalendar | None = None) -> bool:
    """Whether `at` is exactly one of the schedule's occurrences (it may have changed since it was queued)."""
    return next_occurrence(schedule, at, calendar) == _aware_utc(at, "at")
