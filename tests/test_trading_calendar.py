"""Trading days: real XSHG exchange data, operator overrides winning, weekday fallback past coverage."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import bot.doctor
import bot.trading_calendar as tc
from bot.accounts import create_user
from bot.cli import main
from bot.db import Database
from bot.doctor import _check_trading_calendar, run_checks
from bot.services import Services
from bot.trading_calendar import (
    COVERAGE_WARN_DAYS,
    CalendarError,
    DaySource,
    TradingCalendar,
    add_override,
    exchange_data,
    remove_override,
    shanghai_today,
)
from models.audit import AuditEntry
from models.calendar import CalendarOverride


def d(text: str) -> date:
    return date.fromisoformat(text)


def load(db: Database) -> TradingCalendar:
    with db.read() as session:
        return TradingCalendar.load(session)


def counts(db: Database) -> tuple[int, int]:
    with db.read() as session:
        overrides = session.scalar(select(func.count()).select_from(CalendarOverride))
        audits = session.scalar(select(func.count()).select_from(AuditEntry))
    return overrides or 0, audits or 0


@pytest.fixture
def cal() -> TradingCalendar:
    return TradingCalendar(exchange_data())


# --- exchange data -------------------------------------------------------------------------------


def test_coverage_end_is_the_last_day_the_library_records() -> None:
    from exchange_calendars.exchange_calendar_xshg import XSHGExchangeCalendar

    bound = XSHGExchangeCalendar.bound_max()
    data = exchange_data()
    assert data.coverage_end == bound.date()
    assert (data.coverage_end.month, data.coverage_end.day) == (12, 31)
    assert data.coverage_start < data.coverage_end - timedelta(days=365)
    assert exchange_data() is data  # loaded once per process


def test_national_day_week_is_closed_and_trading_resumes_after(cal: TradingCalendar) -> None:
    for offset in range(7):
        status = cal.status(d("2026-10-01") + timedelta(days=offset))
        assert (status.trading, status.source) == (False, DaySource.EXCHANGE)
    assert cal.is_trading_day(d("2026-09-30"))
    assert cal.is_trading_day(d("2026-10-08")) and cal.is_trading_day(d("2026-10-09"))
    assert cal.next_trading_day(d("2026-09-30")).day == d("2026-10-08")
    assert cal.trading_days(d("2026-09-28"), d("2026-10-12")) == [
        d("2026-09-28"),
        d("2026-09-29"),
        d("2026-09-30"),
        d("2026-10-08"),
        d("2026-10-09"),
        d("2026-10-12"),
    ]


def test_weekday_holidays_and_weekends_are_closed(cal: TradingCalendar) -> None:
    assert d("2026-09-25").weekday() == 4 and not cal.is_trading_day(d("2026-09-25"))  # Mid-Autumn
    assert d("2026-06-19").weekday() == 4 and not cal.is_trading_day(d("2026-06-19"))  # Dragon Boat
    assert cal.is_trading_day(d("2026-09-24"))
    # 2026-02-14 is a Saturday the country works to make up Spring Festival; the exchange stays shut.
    for weekend in ("2026-02-14", "2026-10-10", "2026-10-11", "2026-12-26"):
        assert not cal.is_trading_day(d(weekend))
    assert cal.next_trading_day(d("2026-12-25")).day == d("2026-12-28")


def test_past_coverage_the_calendar_falls_back_to_weekdays_and_says_so(cal: TradingCalendar) -> None:
    end = cal.coverage_end
    assert cal.status(end).source == DaySource.EXCHANGE
    monday, saturday = d("2027-03-01"), d("2027-03-06")
    assert monday.weekday() == 0 and saturday.weekday() == 5
    assert cal.status(monday).trading and cal.status(monday).source == DaySource.FALLBACK
    assert not cal.status(saturday).trading and cal.status(saturday).source == DaySource.FALLBACK
    first_after = cal.next_trading_day(end)
    assert first_after.day > end and first_after.source == DaySource.FALLBACK
    assert cal.trading_days(d("2027-03-01"), d("2027-03-07")) == [
        d("2027-03-0" + str(n)) for n in range(1, 6)
    ]


def test_coverage_left_counts_days_after_today_and_stops_at_zero(cal: TradingCalendar) -> None:
    end = cal.coverage_end
    assert cal.days_of_coverage_left(end - timedelta(days=COVERAGE_WARN_DAYS)) == COVERAGE_WARN_DAYS
    assert cal.days_of_coverage_left(end) == 0
    assert cal.days_of_coverage_left(end + timedelta(days=40)) == 0


def test_shanghai_today_is_the_date_eight_hours_ahead_of_utc() -> None:
    assert shanghai_today(datetime(2026, 11, 24, 15, 59, tzinfo=UTC)) == d("2026-11-24")
    assert shanghai_today(datetime(2026, 11, 24, 16, 0, tzinfo=UTC)) == d("2026-11-25")
    with pytest.raises(ValueError, match="naive"):
        shanghai_today(datetime(2026, 11, 24, 16, 0))


def test_exchange_data_loads_once_when_many_threads_ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tc._load_exchange_data
    calls: list[int] = []
    gate = threading.Barrier(8)

    def counting() -> tc.ExchangeData:
        calls.append(1)
        return real()

    monkeypatch.setattr(tc, "_exchange_data", None)
    monkeypatch.setattr(tc, "_load_exchange_data", counting)
    seen: list[tc.ExchangeData] = []

    def ask() -> None:
        gate.wait()
        seen.append(exchange_data())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(seen) == 8 and all(s is seen[0] for s in seen)


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_of_both_kinds_win_over_exchange_data_and_are_audited(db: Database) -> None:
    with db.transaction() as session:
        add_override(session, d("2026-10-09"), "closed", "typhoon closure", "ops")
        add_override(session, d("2026-10-10"), "open", "make-up trading day", "ops")
    cal = load(db)
    closed, opened = cal.status(d("2026-10-09")), cal.status(d("2026-10-10"))
    assert (closed.trading, closed.source, closed.reason) == (False, DaySource.OVERRIDE, "typhoon closure")
    assert (opened.trading, opened.source) == (True, DaySource.OVERRIDE)
    assert cal.trading_days(d("2026-10-08"), d("2026-10-12")) == [
        d("2026-10-08"),
        d("2026-10-10"),
        d("2026-10-12"),
    ]
    assert cal.next_trading_day(d("2026-10-08")).day == d("2026-10-10")
    with db.read() as session:
        audits = [
            (a.action, a.target, a.actor) for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]
    assert audits == [
        ("calendar.override.add", "calendar:2026-10-09", "ops"),
        ("calendar.override.add", "calendar:2026-10-10", "ops"),
    ]


def test_overrides_apply_past_coverage_too(db: Database) -> None:
    new_year, saturday = d("2027-01-01"), d("2027-02-20")
    with db.transaction() as session:
        add_override(session, new_year, "closed", "New Year's Day", "ops")
        add_override(session, saturday, "open", "make-up trading day", "ops")
    cal = load(db)
    assert cal.next_trading_day(d("2026-12-31")).day == d("2027-01-04")
    assert cal.next_trading_day(d("2026-12-31")).source == DaySource.FALLBACK
    assert cal.status(new_year).source == DaySource.OVERRIDE and not cal.is_trading_day(new_year)
    assert cal.is_trading_day(saturday) and cal.status(saturday).source == DaySource.OVERRIDE


def test_removing_an_override_restores_the_exchange_answer(db: Database) -> None:
    with db.transaction() as session:
        add_override(session, d("2026-10-09"), "closed", "typhoon closure", "ops")
    with db.transaction() as session:
        remove_override(session, d("2026-10-09"), "lead")
    status = load(db).status(d("2026-10-09"))
    assert (status.trading, status.source) == (True, DaySource.EXCHANGE)
    with db.read() as session:
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert last is not None and (last.action, last.actor) == ("calendar.override.remove", "lead")
    assert last.detail["kind"] == "closed" and last.detail["created_by"] == "ops"
    assert counts(db) == (0, 2)


@pytest.mark.parametrize(
    ("day", "kind", "reason", "message"),
    [
        ("2026-10-09", "closed", "again", "already has a 'closed' override"),
        ("2026-10-12", "open", "it trades", "already a trading day"),
        ("2026-10-01", "closed", "it is shut", "already closed"),
        ("2027-03-06", "closed", "a Saturday past coverage", "already closed (fallback"),
        ("2027-03-01", "open", "a Monday past coverage", "already a trading day (fallback"),
        ("2026-10-12", "closed", "   ", "reason"),
        ("2026-10-12", "halfday", "x", "kind"),
        ("2026-10-12", "closed", "x" * 257, "at most 256"),
    ],
)
def test_invalid_overrides_are_refused_and_change_nothing(
    db: Database, day: str, kind: str, reason: str, message: str
) -> None:
    with db.transaction() as session:
        add_override(session, d("2026-10-09"), "closed", "typhoon closure", "ops")
    before = counts(db)
    with pytest.raises(CalendarError, match=message.replace("(", r"\(")), db.transaction() as session:
        add_override(session, d(day), kind, reason, "ops")
    assert counts(db) == before
    assert load(db).status(d("2026-10-09")).reason == "typhoon closure"


def test_removing_a_missing_override_is_refused(db: Database) -> None:
    with pytest.raises(CalendarError, match="2026-10-09 has no override"), db.transaction() as session:
        remove_override(session, d("2026-10-09"), "ops")
    assert counts(db) == (0, 0)


# --- doctor --------------------------------------------------------------------------------------


def test_doctor_warns_once_fewer_than_threshold_days_of_exchange_data_remain() -> None:
    end = exchange_data().coverage_end
    ok = _check_trading_calendar(end - timedelta(days=COVERAGE_WARN_DAYS))
    assert ok.verdict == "ok" and f"{COVERAGE_WARN_DAYS} days left" in ok.detail
    warn = _check_trading_calendar(end - timedelta(days=COVERAGE_WARN_DAYS - 1))
    assert warn.verdict == "warn" and f"{COVERAGE_WARN_DAYS - 1} days left" in warn.detail
    assert f"after {end} the calendar falls back to weekdays" in warn.detail
    assert _check_trading_calendar(end + timedelta(days=10)).verdict == "warn"


def test_doctor_runs_the_calendar_check_on_the_shanghai_date(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(bot.doctor, "_check_wecom_token", lambda _settings: [])
    end = exchange_data().coverage_end
    # 16:00 UTC the day before is already the Shanghai date 30 days before the end: exactly no warning.
    eve = datetime.combine(end - timedelta(days=COVERAGE_WARN_DAYS + 1), datetime.min.time(), UTC)
    monkeypatch.setattr(bot.doctor, "utcnow", lambda: eve.replace(hour=16))
    by_name = {r.name: r for r in run_checks(None)}
    assert by_name["calendar"].verdict == "ok"
    monkeypatch.setattr(bot.doctor, "utcnow", lambda: eve.replace(hour=16) + timedelta(days=1))
    by_name = {r.name: r for r in run_checks(None)}
    assert by_name["calendar"].verdict == "warn"


# --- command line --------------------------------------------------------------------------------


def invoke(runner: CliRunner, env: dict[str, str], *args: str) -> Any:
    return runner.invoke(main, ["calendar", *args], env=env)


def test_status_shows_coverage_and_next_trading_days_with_sources(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    end = exchange_data().coverage_end
    result = invoke(runner, env, "status", "--today", "2026-09-29")
    assert result.exit_code == 0, result.output
    assert f"XSHG {exchange_data().coverage_start} .. {end}" in result.output
    assert f"days of coverage left: {(end - d('2026-09-29')).days}" in result.output
    assert "warning" not in result.output
    lines = result.output.splitlines()
    upcoming = lines[lines.index("next 10 trading days:") + 1 :]
    assert len(upcoming) == 10
    assert upcoming[0].split()[0] == "2026-09-30" and upcoming[1].split()[0] == "2026-10-08"
    assert all("XSHG exchange data" in line for line in upcoming)

    result = invoke(runner, env, "status", "--today", str(end - timedelta(days=3)))
    assert result.exit_code == 0, result.output
    assert f"warning: after {end} the calendar falls back to weekdays" in result.output
    assert f"fallback: weekday rule, no XSHG exchange data after {end}" in result.output


def test_check_names_the_verdict_and_its_source(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    result = invoke(runner, env, "check", "2026-10-01")
    assert result.exit_code == 0 and "2026-10-01 Thu  closed   XSHG exchange data" in result.output
    result = invoke(runner, env, "check", "2027-03-01")
    assert result.exit_code == 0 and "trading  fallback" in result.output
    result = invoke(runner, env, "check", "2026-13-01")
    assert result.exit_code == 2 and "not a date" in result.output


def test_overrides_add_list_remove_from_the_command_line(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    with services.db.transaction() as session:
        create_user(session, "ops.li", "operator", "a-long-password")
    add = ["overrides", "add", "2026-10-09", "--closed", "--reason", "typhoon closure"]
    result = invoke(runner, env, *add, "--actor", "nobody")
    assert result.exit_code == 1 and "no active account named 'nobody'" in result.output
    result = invoke(runner, env, "overrides", "add", "2026-10-09", "--reason", "x", "--actor", "ops.li")
    assert result.exit_code == 2 and "--closed or --open" in result.output
    assert counts(services.db) == (0, 1)  # only the account's creation

    result = invoke(runner, env, *add, "--actor", "ops.li")
    assert result.exit_code == 0 and "2026-10-09 overridden as closed" in result.output
    result = invoke(runner, env, *add, "--actor", "ops.li")
    assert result.exit_code == 1 and "already has a 'closed' override" in result.output
    result = invoke(
        runner, env, "overrides", "add", "2026-10-10", "--open", "--reason", "make-up", "--as", "ops.li"
    )
    assert result.exit_code == 0, result.output

    result = invoke(runner, env, "overrides", "list")
    lines = result.output.splitlines()
    assert lines[0].startswith("2026-10-09 Fri  closed  typhoon closure  (by ops.li")
    assert lines[1].startswith("2026-10-10 Sat  open    make-up")
    result = invoke(runner, env, "check", "2026-10-09")
    assert "closed   override: typhoon closure" in result.output

    result = invoke(runner, env, "overrides", "remove", "2026-10-09", "--actor", "ops.li")
    assert result.exit_code == 0 and "override on 2026-10-09 removed" in result.output
    result = invoke(runner, env, "overrides", "remove", "2026-10-09", "--actor", "ops.li")
    assert result.exit_code == 1 and "has no override" in result.output
    assert "trading  XSHG exchange data" in invoke(runner, env, "check", "2026-10-09").output
    assert counts(services.db) == (1, 4)


def test_overrides_list_says_when_there_are_none(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    result = invoke(runner, env, "overrides", "list")
    assert result.exit_code == 0 and result.output.strip() == "no overrides"
