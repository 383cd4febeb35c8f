"""The campaign scheduler: occurrences, leader election, jobs reconciled from rows, one run per occurrence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.config import ConfigError, Settings, load_settings
from bot.coordination import Coordinator, Lock, MemoryCoordinator
from bot.db import Database
from bot.runtime import EmbeddedRuntime
from bot.scheduler import Leadership, NotLeader, SchedulerService, default_planner
from bot.scheduler.occurrences import (
    Schedule,
    ScheduleError,
    is_occurrence,
    next_occurrence,
    occurrences_between,
    parse_time_of_day,
)
from bot.scheduler.service import MISSED_ALERT_KIND, PAUSED_REASON
from bot.services import Services
from bot.trading_calendar import Override, TradingCalendar, add_override, exchange_data
from models.alerts import Alert
from models.calendar import OverrideKind
from models.campaigns import Campaign, CampaignRun, CampaignStatus, Course, RunStatus, ScheduleKind

SH = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parent.parent


def sh(text: str) -> datetime:
    """An Asia/Shanghai wall-clock time as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=SH).astimezone(UTC)


def d(text: str) -> date:
    return date.fromisoformat(text)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


class Clock:
    """A controlled clock the service reads instead of the real one."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakePlanner:
    """Stands in for the planner: records the runs it is handed; may fail, or mark them planned."""

    def __init__(self, fail: bool = False, db: Database | None = None) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.db = db

    def __call__(self, run_id: int) -> None:
        self.calls.append(run_id)
        if self.fail:
            raise RuntimeError("planner exploded")
        if self.db is not None:
            with self.db.transaction() as session:
                run = session.get(CampaignRun, run_id)
                assert run is not None
                run.status = RunStatus.PLANNED


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return TradingCalendar(exchange_data())


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Scheduler settings with short lock timings so takeovers happen within a second."""
    return settings.replace(
        scheduler={
            "lock_ttl_s": 0.6,
            "renew_s": 0.1,
            "reconcile_s": 0.2,
            "misfire_grace_s": 600,
            "lookback_h": 24,
        }
    )


@pytest.fixture
def make_service(
    fast: Settings, db: Database, coordinator: Coordinator
) -> Iterator[Callable[..., SchedulerService]]:
    made: list[SchedulerService] = []

    def make(
        name: str,
        plan: Callable[[int], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        run_jobs: bool = False,
        coord: Coordinator | None = None,
        settings: Settings | None = None,
    ) -> SchedulerService:
        service = SchedulerService(
            settings or fast,
            db,
            coord or coordinator,
            plan or FakePlanner(),
            instance_id=name,
            clock=clock or (lambda: datetime.now(UTC)),
            run_jobs=run_jobs,
        )
        made.append(service)
        return service

    yield make
    for service in made:
        service.stop()
        service.shutdown()


def add_campaign(
    db: Database,
    key: str,
    schedule_kind: str = ScheduleKind.TRADING_DAYS,
    *,
    time_of_day: str | None = "08:30",
    run_at: datetime | None = None,
    course_id: int | None = None,
    offset_minutes: int | None = None,
    status: str = CampaignStatus.ACTIVE,
    created_at: datetime | None = None,
) -> int:
    created = created_at or sh("2026-09-01 12:00")
    with db.transaction() as session:
        row = Campaign(
            key=key,
            name=f"campaign {key}",
            kind="morning_report",
            script_key="morning",
            schedule_kind=schedule_kind,
            time_of_day=time_of_day if schedule_kind in ("trading_days", "daily") else None,
            run_at=run_at,
            course_id=course_id,
            offset_minutes=offset_minutes,
            audience={},
            status=status,
            created_by="tests",
            created_at=created,
            updated_at=created,
        )
        session.add(row)
        session.flush()
        return row.id


def update_campaign(db: Database, campaign_id: int, at: datetime, **changes: Any) -> None:
    with db.transaction() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = at


def add_course(db: Database, key: str, starts_at: datetime) -> int:
    with db.transaction() as session:
        row = Course(
            key=key,
            title="价值投资入门",
            speaker_name="张老师",
            speaker_sac_no="S0000000000001",
            starts_at=starts_at,
            link="https://work.weixin.qq.com/live/1",
            created_by="tests",
        )
        session.add(row)
        session.flush()
        return row.id


def add_run(
    db: Database,
    campaign_id: int,
    occurrence: datetime,
    created_at: datetime,
    status: str = RunStatus.PLANNED,
) -> int:
    with db.transaction() as session:
        row = CampaignRun(
            campaign_id=campaign_id,
            occurrence=occurrence,
            status=status,
            created_by="earlier",
            created_at=created_at,
        )
        session.add(row)
        session.flush()
        return row.id


def runs(db: Database, campaign_id: int | None = None) -> list[CampaignRun]:
    with db.read() as session:
        stmt = select(CampaignRun).order_by(CampaignRun.occurrence)
        if campaign_id is not None:
            stmt = stmt.where(CampaignRun.campaign_id == campaign_id)
        return list(session.scalars(stmt))


def alerts(db: Database) -> list[Alert]:
    with db.read() as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)))


def run_due(service: SchedulerService, now: datetime) -> list[str]:
    """Run every job due at `now` in this thread, earliest first, as APScheduler would; return their ids."""
    scheduler = service.scheduler
    assert scheduler is not None
    ran: list[str] = []
    for _ in range(50):
        due = sorted(
            (job for job in scheduler.get_jobs() if job.next_run_time <= now),
            key=lambda j: (j.next_run_time, j.id),
        )
        if not due:
            return ran
        job = due[0]
        scheduler.remove_job(job.id)  # a date job leaves the store when it fires
        job.func(*job.args)
        ran.append(job.id)
    raise AssertionError(f"jobs keep coming due: {ran}")


# --- occurrences -----------------------------------------------------------------------------------


def test_trading_day_occurrences_skip_weekends_and_the_national_day_holiday(
    calendar: TradingCalendar,
) -> None:
    schedule = Schedule(ScheduleKind.TRADING_DAYS, time_of_day=parse_time_of_day("08:30"))
    found = occurrences_between(schedule, sh("2026-09-26 00:00"), sh("2026-10-13 00:00"), calendar)
    assert found == [
        sh("2026-09-28 08:30"),
        sh("2026-09-29 08:30"),
        sh("2026-09-30 08:30"),
        sh("2026-10-08 08:30"),
        sh("2026-10-09 08:30"),
        sh("2026-10-12 08:30"),
    ]
    assert all(at.tzinfo is UTC and (at.hour, at.minute) == (0, 30) for at in found)
    assert next_occurrence(schedule, sh("2026-09-30 08:30:01"), calendar) == sh("2026-10-08 08:30")


def test_occurrences_stay_at_the_same_utc_time_across_other_zones_daylight_saving_changes() -> None:
    # The US moves its clocks on 2026-03-08 and Europe on 2026-03-29; Shanghai never does.
    schedule = Schedule(ScheduleKind.DAILY, time_of_day=parse_time_of_day("08:30"))
    found = occurrences_between(schedule, sh("2026-03-01 00:00"), sh("2026-04-01 00:00"))
    assert len(found) == 31
    assert {(at.hour, at.minute) for at in found} == {(0, 30)}
    assert found[0] == datetime(2026, 3, 1, 0, 30, tzinfo=UTC)


def test_a_trading_day_is_judged_by_its_shanghai_date_not_its_utc_date(calendar: TradingCalendar) -> None:
    # 00:15 on 2026-10-08 in Shanghai is 16:15 UTC on 2026-10-07, a holiday; 10-08 trades.
    schedule = Schedule(ScheduleKind.TRADING_DAYS, time_of_day=parse_time_of_day("00:15"))
    first = next_occurrence(schedule, sh("2026-10-01 00:00"), calendar)
    assert first == datetime(2026, 10, 7, 16, 15, tzinfo=UTC) == sh("2026-10-08 00:15")


def test_operator_overrides_close_and_open_days() -> None:
    overrides = [
        Override(d("2026-10-09"), OverrideKind.CLOSED, "typhoon", "ops"),
        Override(d("2026-10-10"), OverrideKind.OPEN, "make-up Saturday", "ops"),
    ]
    cal = TradingCalendar(exchange_data(), overrides)
    schedule = Schedule(ScheduleKind.TRADING_DAYS, time_of_day=parse_time_of_day("08:30"))
    found = occurrences_between(schedule, sh("2026-10-08 00:00"), sh("2026-10-13 00:00"), cal)
    assert found == [sh("2026-10-08 08:30"), sh("2026-10-10 08:30"), sh("2026-10-12 08:30")]
    assert not is_occurrence(schedule, sh("2026-10-09 08:30"), cal)
    assert is_occurrence(schedule, sh("2026-10-10 08:30"), cal)


def test_days_past_the_exchange_data_fall_back_to_weekdays(calendar: TradingCalendar) -> None:
    assert calendar.coverage_end == d("2026-12-31")
    schedule = Schedule(ScheduleKind.TRADING_DAYS, time_of_day=parse_time_of_day("08:30"))
    found = occurrences_between(schedule, sh("2026-12-31 00:00"), sh("2027-01-09 00:00"), calendar)
    # 2027-01-01 is a Friday: outside the data, the weekday fallback counts it.
    assert [at.astimezone(SH).date() for at in found] == [
        d("2026-12-31"),
        d("2027-01-01"),
        d("2027-01-04"),
        d("2027-01-05"),
        d("2027-01-06"),
        d("2027-01-07"),
        d("2027-01-08"),
    ]


def test_daily_schedules_include_weekends_and_holidays() -> None:
    schedule = Schedule(ScheduleKind.DAILY, time_of_day=parse_time_of_day("21:05"))
    found = occurrences_between(schedule, sh("2026-10-01 00:00"), sh("2026-10-08 00:00"))
    assert found == [sh(f"2026-10-0{i} 21:05") for i in range(1, 8)]


def test_once_and_course_schedules_occur_exactly_once() -> None:
    once = Schedule(ScheduleKind.ONCE, run_at=sh("2026-10-20 10:00"))
    assert occurrences_between(once, sh("2026-10-01 00:00"), sh("2026-11-01 00:00")) == [
        sh("2026-10-20 10:00")
    ]
    assert next_occurrence(once, sh("2026-10-20 10:00:01")) is None
    reminder = Schedule(ScheduleKind.COURSE, course_starts_at=sh("2026-10-20 20:00"), offset_minutes=-60)
    assert next_occurrence(reminder, sh("2026-10-01 00:00")) == sh("2026-10-20 19:00")
    assert occurrences_between(reminder, sh("2026-10-20 19:00"), sh("2026-10-20 19:00")) == []


def test_a_calendar_without_trading_days_ends_the_search_instead_of_looping() -> None:
    class Closed:
        def is_trading_day(self, day: date) -> bool:
            return False

    schedule = Schedule(ScheduleKind.TRADING_DAYS, time_of_day=parse_time_of_day("08:30"))
    assert next_occurrence(schedule, sh("2026-10-01 00:00"), Closed()) is None


@pytest.mark.parametrize("text", ["8:30", "24:00", "08:60", "", "08:30:00", "ab:cd"])
def test_malformed_time_of_day_is_refused(text: str) -> None:
    with pytest.raises(ScheduleError, match="time_of_day"):
        parse_time_of_day(text)


def test_schedules_missing_their_fields_are_refused() -> None:
    with pytest.raises(ScheduleError, match="run_at"):
        Schedule(ScheduleKind.ONCE)
    with pytest.raises(ScheduleError, match="naive"):
        Schedule(ScheduleKind.ONCE, run_at=datetime(2026, 10, 20, 10, 0))
    with pytest.raises(ScheduleError, match="time_of_day"):
        Schedule(ScheduleKind.DAILY)
    with pytest.raises(ScheduleError, match="calendar"):
        next_occurrence(
            Schedule(ScheduleKind.TRADING_DAYS, time_of_day=parse_time_of_day("08:30")),
            sh("2026-10-01 00:00"),
        )
    campaign = Campaign(schedule_kind="course", course_id=7, offset_minutes=-60)
    with pytest.raises(ScheduleError, match="course is missing"):
        Schedule.of(campaign, None)
    with pytest.raises(ScheduleError, match="unknown"):
        Schedule.of(Campaign(schedule_kind="weekly"))


# --- settings ---------------------------------------------------------------------------------------


def test_scheduler_settings_have_defaults_env_overrides_and_validation() -> None:
    s = load_settings(environ={})
    assert (s.scheduler.lock_ttl_s, s.scheduler.renew_s, s.scheduler.reconcile_s) == (30.0, 10.0, 30.0)
    assert (s.scheduler.misfire_grace_s, s.scheduler.lookback_h) == (600, 24)
    s = load_settings(environ={"BOT_SCHEDULER__LOCK_TTL_S": "12", "BOT_SCHEDULER__RENEW_S": "4"})
    assert (s.scheduler.lock_ttl_s, s.scheduler.renew_s) == (12.0, 4.0)
    for bad, message in [
        ({"renew_s": 20}, "renew_s"),
        ({"lock_ttl_s": 0}, "lock_ttl_s"),
        ({"reconcile_s": 0}, "reconcile_s"),
        ({"misfire_grace_s": -1}, "misfire_grace_s"),
        ({"lookback_h": 0}, "lookback_h"),
        ({"misfire_grace_s": 7200, "lookback_h": 1}, "lookback_h"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Settings().replace(scheduler=bad)
    example = load_settings(ROOT / "config.example.toml", environ={})
    assert example.scheduler == Settings().scheduler


# --- leadership -------------------------------------------------------------------------------------


def test_one_candidate_leads_and_a_standby_takes_over_once_the_lock_expires(coordinator: Coordinator) -> None:
    a, b = Leadership(coordinator, 0.4), Leadership(coordinator, 0.4)
    assert a.try_lead() and a.is_leader
    assert not b.try_lead() and not b.is_leader
    assert a.renew()
    time.sleep(0.45)  # a dies: no renewal within the TTL
    assert not a.is_leader  # it stopped acting before its lock expired
    assert b.try_lead() and b.is_leader
    assert not a.renew() and not a.is_leader
    assert b.renew()


def test_released_leadership_is_taken_over_at_once(coordinator: Coordinator) -> None:
    a, b = Leadership(coordinator, 30), Leadership(coordinator, 30)
    assert a.try_lead()
    assert not b.try_lead()
    a.release()
    assert not a.is_leader
    assert b.try_lead()


class FakeLock(Lock):
    def __init__(self) -> None:
        self.renewals: list[bool | Exception] = []
        self.released = 0

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        outcome = self.renewals.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def release(self) -> None:
        self.released += 1


class FakeCoordinator(MemoryCoordinator):
    def __init__(self, lock: FakeLock) -> None:
        super().__init__()
        self.fake = lock

    def lock(self, name: str, ttl_s: float) -> Lock:
        return self.fake


@pytest.mark.parametrize("outcome", [False, ConnectionError("redis went away")])
def test_a_failed_renewal_stops_leading_at_once(outcome: bool | Exception) -> None:
    lock = FakeLock()
    lock.renewals = [True, True, outcome]
    leader = Leadership(FakeCoordinator(lock), 30)
    assert leader.try_lead()
    assert leader.renew() and leader.is_leader
    assert not leader.renew()
    assert not leader.is_leader
    assert lock.released == 1  # handed back at once when still ours
    assert not leader.renew()  # no longer holding: nothing to renew


def test_a_lock_found_still_ours_is_renewed_before_leading_on_it() -> None:
    # Taking the lock may find it still ours from before, with its old expiry; leading starts
    # only once a renewal has set a fresh one.
    lock = FakeLock()
    lock.renewals = [False, True]
    leader = Leadership(FakeCoordinator(lock), 30)
    assert not leader.try_lead() and not leader.is_leader
    assert leader.try_lead() and leader.is_leader
    assert lock.renewals == []


def test_the_leader_counts_its_lease_from_when_it_asked_and_stops_before_the_lock_can_expire() -> None:
    now = [100.0]
    lock = FakeLock()
    lock.renewals = [True, True]
    leader = Leadership(FakeCoordinator(lock), 10, monotonic=lambda: now[0])
    assert leader.try_lead()
    now[0] = 108.9
    assert leader.is_leader
    assert leader.renew()  # asked at 108.9: the lease now runs to 117.9
    now[0] = 117.8
    assert leader.is_leader
    now[0] = 117.9  # 9 s after asking, before the 10 s lock could have expired
    assert not leader.is_leader
    assert not leader.renew()  # too late to renew: it steps down without asking
    assert lock.renewals == [] and lock.released == 1


# --- reconciliation ---------------------------------------------------------------------------------


def test_reconcile_adds_replaces_and_removes_jobs_as_campaign_rows_change(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 07:00"))
    made = sh("2026-10-09 06:00")
    report_id = add_campaign(db, "morning", created_at=made)
    once_id = add_campaign(db, "announce", ScheduleKind.ONCE, run_at=sh("2026-10-20 10:00"), created_at=made)
    later_id = add_campaign(
        db, "later", ScheduleKind.DAILY, time_of_day="12:00", status=CampaignStatus.ARCHIVED, created_at=made
    )
    course = add_course(db, "intro", sh("2026-10-20 20:00"))
    reminder_id = add_campaign(
        db, "remind", ScheduleKind.COURSE, course_id=course, offset_minutes=-60, created_at=made
    )
    service = make_service("a", clock=clock)
    with pytest.raises(NotLeader):
        service.reconcile()
    assert service.tick()

    first = service.reconcile()
    assert not first.changed  # the tick already reconciled
    assert service.jobs() == {
        f"campaign:{report_id}": sh("2026-10-09 08:30"),
        f"campaign:{once_id}": sh("2026-10-20 10:00"),
        f"campaign:{reminder_id}": sh("2026-10-20 19:00"),
    }

    clock.now = sh("2026-10-09 07:05")
    update_campaign(db, report_id, clock.now, time_of_day="09:00")
    update_campaign(db, once_id, clock.now, status=CampaignStatus.ARCHIVED)
    update_campaign(db, later_id, clock.now, status=CampaignStatus.ACTIVE)
    update_campaign(db, reminder_id, clock.now, status=CampaignStatus.PAUSED)  # paused keeps its schedule
    report = service.reconcile()
    assert report.added == [f"campaign:{later_id}"]
    assert report.replaced == [f"campaign:{report_id}"]
    assert report.removed == [f"campaign:{once_id}"]
    assert service.jobs() == {
        f"campaign:{report_id}": sh("2026-10-09 09:00"),
        f"campaign:{later_id}": sh("2026-10-09 12:00"),
        f"campaign:{reminder_id}": sh("2026-10-20 19:00"),
    }
    with db.transaction() as session:
        row = session.get(Course, course)
        assert row is not None
        row.starts_at = sh("2026-10-21 20:00")  # the course moved: so does its reminder
    assert service.reconcile().replaced == [f"campaign:{reminder_id}"]
    assert service.jobs()[f"campaign:{reminder_id}"] == sh("2026-10-21 19:00")


def test_a_campaign_with_a_broken_schedule_is_left_unscheduled(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 07:00"))
    broken = add_campaign(db, "broken", ScheduleKind.DAILY, time_of_day="25:00")
    fine = add_campaign(db, "fine", ScheduleKind.DAILY)
    service = make_service("a", clock=clock)
    assert service.tick()
    assert set(service.jobs()) == {f"campaign:{fine}"}
    assert f"campaign:{broken}" not in service.jobs()


def test_a_campaign_created_after_todays_time_starts_tomorrow_without_a_missed_run(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 09:00"))
    campaign = add_campaign(db, "new", ScheduleKind.DAILY, created_at=sh("2026-10-09 08:45"))
    service = make_service("a", clock=clock)
    assert service.tick()
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-10 08:30")}
    assert run_due(service, clock.now) == []
    assert runs(db) == [] and alerts(db) == []


def test_the_holiday_week_gets_no_run_and_the_next_job_is_after_it(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-09-30 08:30:02"))
    campaign = add_campaign(db, "morning")
    planner = FakePlanner()
    service = make_service("a", plan=planner, clock=clock)
    assert service.tick()
    ran = run_due(service, clock.now)
    assert ran == [f"campaign:{campaign}", f"plan:{runs(db)[0].id}"]
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-08 08:30")}
    clock.now = sh("2026-10-07 23:00")
    service.reconcile()
    assert run_due(service, clock.now) == []
    assert [r.occurrence for r in runs(db)] == [sh("2026-09-30 08:30")]


# --- firing -----------------------------------------------------------------------------------------


def test_a_fired_occurrence_creates_one_run_hands_it_to_the_planner_and_schedules_the_next(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 08:30:01"))
    campaign = add_campaign(db, "morning")
    planner = FakePlanner()
    service = make_service("sched-a", plan=planner, clock=clock)
    assert service.tick()
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-09 08:30")}
    ran = run_due(service, clock.now)
    [run] = runs(db)
    assert ran == [f"campaign:{campaign}", f"plan:{run.id}"]
    assert (run.campaign_id, run.occurrence, run.status, run.created_by) == (
        campaign,
        sh("2026-10-09 08:30"),
        RunStatus.PENDING,
        "sched-a",
    )
    assert run.reason is None
    assert planner.calls == [run.id]
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-12 08:30")}  # Friday → Monday
    assert alerts(db) == []


def test_two_schedulers_firing_the_same_occurrence_create_exactly_one_run(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    now = sh("2026-10-09 08:30:01")
    campaign = add_campaign(db, "morning")
    a, b = make_service("a", clock=Clock(now)), make_service("b", clock=Clock(now))
    first = a.fire(campaign, sh("2026-10-09 08:30"))
    again = b.fire(campaign, sh("2026-10-09 08:30"))
    assert first is not None and again is not None
    assert first.created and not again.created
    assert again.run_id == first.run_id and again.status == RunStatus.PENDING
    assert [r.created_by for r in runs(db)] == ["a"]


def test_concurrent_fires_of_one_occurrence_race_to_a_single_run(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    now = sh("2026-10-12 08:30:01")
    campaign = add_campaign(db, "morning")
    services = [make_service(f"s{i}", clock=Clock(now)) for i in range(4)]
    barrier = threading.Barrier(len(services))
    results: list[Any] = []

    def fire(service: SchedulerService) -> None:
        barrier.wait()
        results.append(service.fire(campaign, sh("2026-10-12 08:30")))

    threads = [threading.Thread(target=fire, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 4
    assert sum(r.created for r in results) == 1
    assert len({r.run_id for r in results}) == 1
    assert len(runs(db)) == 1


def test_an_occurrence_found_late_within_the_grace_runs_late(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 08:39:59"))  # 9 min 59 s late; grace is 600 s
    campaign = add_campaign(db, "morning")
    planner = FakePlanner()
    service = make_service("a", plan=planner, clock=clock)
    assert service.tick()
    run_due(service, clock.now)
    [run] = runs(db)
    assert (run.occurrence, run.status, run.reason) == (sh("2026-10-09 08:30"), RunStatus.PENDING, None)
    assert planner.calls == [run.id]
    assert alerts(db) == []
    assert campaign == run.campaign_id


def test_an_occurrence_found_beyond_the_grace_is_recorded_as_missed_with_an_alert_and_never_run(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 08:40:01"))
    campaign = add_campaign(db, "morning")
    planner = FakePlanner()
    service = make_service("a", plan=planner, clock=clock)
    assert service.tick()
    assert run_due(service, clock.now) == [f"campaign:{campaign}"]
    [run] = runs(db)
    assert run.status == RunStatus.SKIPPED
    assert run.reason == "missed: scheduler was not running at 2026-10-09 08:30 Asia/Shanghai"
    [alert] = alerts(db)
    assert (alert.kind, alert.audience, alert.acknowledged) == (MISSED_ALERT_KIND, "operator", False)
    assert alert.detail["run_id"] == run.id and alert.detail["campaign_key"] == "morning"
    assert "2026-10-09 08:30" in alert.message and "Nothing was sent" in alert.message
    assert planner.calls == []
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-12 08:30")}
    # Found again (a second scheduler, a restart): still one run, one alert, nothing planned.
    again = make_service("b", clock=clock).fire(campaign, sh("2026-10-09 08:30"))
    assert again is not None and not again.created
    assert len(runs(db)) == 1 and len(alerts(db)) == 1 and planner.calls == []
    assert service.sweep_pending() == []


def test_a_new_leader_catches_up_missed_occurrences_within_the_lookback_one_by_one(
    make_service: Callable[..., SchedulerService], db: Database, fast: Settings
) -> None:
    settings = fast.replace(scheduler={"lookback_h": 48, "misfire_grace_s": 3600})
    clock = Clock(sh("2026-10-09 09:00"))
    campaign = add_campaign(db, "morning", ScheduleKind.DAILY)
    add_run(db, campaign, sh("2026-10-05 08:30"), created_at=sh("2026-10-05 08:30"))
    planner = FakePlanner()
    service = make_service("a", plan=planner, clock=clock, settings=settings)
    assert service.tick()
    # Down since 10-05; the look-back reaches 10-07 09:00, so 10-06 and 10-07 08:30 are not revisited.
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-08 08:30")}
    run_due(service, clock.now)
    by_day = {r.occurrence: (r.status, r.created_by) for r in runs(db, campaign)}
    assert by_day == {
        sh("2026-10-05 08:30"): (RunStatus.PLANNED, "earlier"),
        sh("2026-10-08 08:30"): (RunStatus.SKIPPED, "a"),  # 24.5 h late
        sh("2026-10-09 08:30"): (RunStatus.PENDING, "a"),  # 30 min late, within the grace
    }
    assert [a.detail["occurrence"] for a in alerts(db)] == [sh("2026-10-08 08:30").isoformat()]
    assert len(planner.calls) == 1
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-10 08:30")}


def test_paused_campaigns_record_their_occurrences_as_skipped_and_plan_nothing(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 08:30:01"))
    campaign = add_campaign(db, "morning", status=CampaignStatus.PAUSED)
    planner = FakePlanner()
    service = make_service("a", plan=planner, clock=clock)
    assert service.tick()
    run_due(service, clock.now)
    [run] = runs(db)
    assert (run.status, run.reason) == (RunStatus.SKIPPED, PAUSED_REASON)
    assert planner.calls == [] and alerts(db) == []
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-12 08:30")}


def test_an_occurrence_closed_by_an_override_after_it_was_queued_is_not_run(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 07:00"))
    campaign = add_campaign(db, "morning", created_at=sh("2026-10-09 06:00"))
    service = make_service("a", clock=clock)
    assert service.tick()
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-09 08:30")}
    with db.transaction() as session:
        add_override(session, d("2026-10-09"), "closed", "exchange notice 2026-12", "ops", now=clock.now)
    clock.now = sh("2026-10-09 08:30")
    assert run_due(service, clock.now) == [f"campaign:{campaign}"]
    assert runs(db) == []
    assert service.jobs() == {f"campaign:{campaign}": sh("2026-10-12 08:30")}


def test_a_standby_never_fires_and_keeps_no_jobs(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 08:30:01"))
    campaign = add_campaign(db, "morning")
    leader, standby = make_service("a", clock=clock), make_service("b", clock=clock)
    assert leader.tick()
    assert not standby.tick()
    assert standby.jobs() == {} and standby.scheduler is None
    assert standby.run_occurrence(campaign, sh("2026-10-09 08:30")) is None
    assert runs(db) == []


# --- pending runs -----------------------------------------------------------------------------------


def test_a_pending_run_left_unplanned_is_handed_to_the_planner_again_with_backoff(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    clock = Clock(sh("2026-10-09 08:40"))
    campaign = add_campaign(db, "morning", ScheduleKind.DAILY, time_of_day="08:30")
    other = add_campaign(db, "evening", ScheduleKind.DAILY, time_of_day="20:00")
    stale = add_run(db, campaign, sh("2026-10-09 08:30"), sh("2026-10-09 08:30"), RunStatus.PENDING)
    fresh = add_run(db, other, sh("2026-10-09 08:39:59"), sh("2026-10-09 08:39:59.8"), RunStatus.PENDING)
    ancient = add_run(db, other, sh("2026-10-07 20:00"), sh("2026-10-07 20:00"), RunStatus.PENDING)
    add_run(db, other, sh("2026-10-08 20:00"), sh("2026-10-08 20:00"), RunStatus.PLANNED)
    planner = FakePlanner(fail=True)
    service = make_service("a", plan=planner, clock=clock)
    assert service.tick()  # reconciles and sweeps
    assert service.jobs()[f"plan:{stale}"] == clock.now
    assert f"plan:{fresh}" not in service.jobs()  # its creator may be planning it now
    assert f"plan:{ancient}" not in service.jobs()  # beyond the look-back
    run_due(service, clock.now)
    assert planner.calls == [stale]  # it failed: the run stays pending
    assert service.sweep_pending() == []  # backing off
    clock.now += timedelta(seconds=1)
    assert service.sweep_pending() == [stale, fresh]
    planner.fail = False
    run_due(service, clock.now)
    assert planner.calls == [stale, stale, fresh]


def test_the_default_planner_plans_the_run_and_wakes_the_senders(
    monkeypatch: pytest.MonkeyPatch, db: Database, settings: Settings, coordinator: Coordinator
) -> None:
    import bot.campaigns.planner

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        bot.campaigns.planner, "plan_run", lambda *args, **kwargs: calls.append((*args, kwargs))
    )
    default_planner(db, settings, coordinator)(41)
    assert calls == [(db, settings, 41, {"coordinator": coordinator})]


# --- live schedulers (real clock, real APScheduler threads) -----------------------------------------


def test_of_two_live_schedulers_only_the_leader_fires_and_one_run_is_created(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    campaign = add_campaign(db, "flash", ScheduleKind.ONCE, run_at=datetime.now(UTC) + timedelta(seconds=0.5))
    planners = {"a": FakePlanner(db=db), "b": FakePlanner(db=db)}
    a = make_service("a", plan=planners["a"], run_jobs=True).start()
    b = make_service("b", plan=planners["b"], run_jobs=True).start()
    assert wait_until(lambda: planners["a"].calls or planners["b"].calls)
    [run] = runs(db, campaign)
    leader = a if a.is_leader else b
    assert not (a.is_leader and b.is_leader)
    assert run.created_by == leader.instance_id
    assert planners[leader.instance_id].calls == [run.id]
    time.sleep(0.3)  # a few more rounds: nothing more happens
    assert len(runs(db)) == 1 and planners["a"].calls + planners["b"].calls == [run.id]


def test_two_leaders_with_separate_locks_still_create_one_run(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    # Two `run` processes without Redis each lead on their own; the run's unique key still holds.
    campaign = add_campaign(db, "flash", ScheduleKind.ONCE, run_at=datetime.now(UTC) + timedelta(seconds=0.5))
    planner = FakePlanner(db=db)
    a = make_service("a", plan=planner, run_jobs=True, coord=MemoryCoordinator()).start()
    b = make_service("b", plan=planner, run_jobs=True, coord=MemoryCoordinator()).start()
    assert wait_until(lambda: a.is_leader and b.is_leader)
    assert wait_until(lambda: planner.calls)
    time.sleep(0.3)
    [run] = runs(db, campaign)
    assert planner.calls == [run.id]


def test_when_the_leader_dies_the_standby_takes_over_and_fires_the_next_occurrence(
    make_service: Callable[..., SchedulerService], db: Database
) -> None:
    start = datetime.now(UTC)
    first = add_campaign(db, "first", ScheduleKind.ONCE, run_at=start + timedelta(seconds=0.2))
    second = add_campaign(db, "second", ScheduleKind.ONCE, run_at=start + timedelta(seconds=0.9))
    plan_a, plan_b = FakePlanner(db=db), FakePlanner(db=db)
    a = make_service("a", plan=plan_a, run_jobs=True)
    assert a.tick()  # a leads, then dies: it never renews again (its jobs still sit in its scheduler)
    b = make_service("b", plan=plan_b, run_jobs=True).start()
    assert wait_until(lambda: plan_a.calls)
    [run_a] = runs(db, first)
    assert (run_a.created_by, plan_a.calls) == ("a", [run_a.id])
    assert wait_until(lambda: plan_b.calls)
    [run_b] = runs(db, second)
    assert (run_b.created_by, plan_b.calls) == ("b", [run_b.id])
    assert b.is_leader and not a.is_leader
    assert plan_a.calls == [run_a.id] and len(runs(db)) == 2


def test_a_leader_that_stops_hands_over_at_once(
    make_service: Callable[..., SchedulerService], db: Database, coordinator: Coordinator
) -> None:
    a = make_service("a", run_jobs=True).start()
    assert wait_until(lambda: a.is_leader, timeout=2)
    b = make_service("b", run_jobs=True).start()
    time.sleep(0.15)
    assert not b.is_leader
    stopped = time.monotonic()
    a.stop()
    assert not a.is_leader and a.scheduler is None
    assert wait_until(lambda: b.is_leader, timeout=2)
    assert time.monotonic() - stopped < 0.5  # well before the 0.6 s lock would have expired


def test_the_embedded_runtime_runs_a_scheduler_that_releases_leadership_on_stop(
    services: Services, coordinator: Coordinator
) -> None:
    with EmbeddedRuntime(services) as runtime:
        assert wait_until(lambda: runtime.scheduler.is_leader, timeout=5)
        assert not Leadership(coordinator, 30).try_lead()
    assert not runtime.scheduler.is_leader
    assert Leadership(coordinator, 30).try_lead()


def test_the_scheduler_command_leads_until_sigterm_and_then_releases(
    env: dict[str, str], db: Database, coordinator: Coordinator, settings: Settings, tmp_path: Path
) -> None:
    proc_env = {**os.environ, **env, "BOT_SCHEDULER__LOCK_TTL_S": "2", "BOT_SCHEDULER__RENEW_S": "0.2"}
    log_path = tmp_path / "scheduler.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from bot.cli import main; main()", "--log-level", "info", "scheduler"],
            cwd=ROOT,
            env=proc_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_until(lambda: "now the leader" in log_path.read_text(), timeout=20), (
                log_path.read_text()
            )
            probe = Leadership(coordinator, 30)
            if settings.redis.url:  # only Redis is shared with another process
                assert not probe.try_lead()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert "released leadership" in output
    assert probe.try_lead()
