"""Account managers: validation, working hours, and the `wecom-bot managers` commands."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.db import Database
from bot.handoff.managers import ManagerError, ManagerFields, add_manager, parse_days, update_manager, working
from bot.services import Services
from models.audit import AuditEntry
from models.handoff import AccountManager
from tests.scripts_fixtures import ensure_people

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai


def _manager(**kw: str) -> AccountManager:
    values = {"work_days": "12345", "work_start": "09:00", "work_end": "18:00"} | kw
    return AccountManager(userid="x", name="X", **values)


def test_working_hours_are_judged_in_firm_time() -> None:
    day = _manager()
    assert working(day, NOW)
    assert not working(day, datetime(2026, 11, 24, 10, 0, tzinfo=UTC))  # 18:00 Shanghai: the end is exclusive
    assert not working(day, datetime(2026, 11, 29, 2, 0, tzinfo=UTC))  # Sunday
    night = _manager(work_days="5", work_start="22:00", work_end="02:00")
    assert working(night, datetime(2026, 11, 27, 15, 0, tzinfo=UTC))  # Friday 23:00
    assert working(night, datetime(2026, 11, 27, 17, 0, tzinfo=UTC))  # Saturday 01:00, Friday's shift
    assert not working(night, datetime(2026, 11, 28, 17, 0, tzinfo=UTC))  # Sunday 01:00


def test_working_days_accept_ranges_and_lists() -> None:
    assert parse_days("1-5") == "12345" and parse_days("1,3，5") == "135" and parse_days("6-7") == "67"
    for bad in ("", "0-4", "5-1", "mon"):
        with pytest.raises(ManagerError):
            parse_days(bad)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (ManagerFields(name="李经理", licensed=True), "adviser's SAC number"),
        (ManagerFields(name="李经理", licensed=True, sac_number="A0570516010001"), "adviser's SAC number"),
        (ManagerFields(name="李经理", sac_number="S12345"), "one capital letter and 13 digits"),
        (ManagerFields(name="李经理", capacity=-1), "capacity"),
        (ManagerFields(name="李经理", work_start="9点"), "HH:MM"),
        (ManagerFields(name="李经理", work_start="09:00", work_end="09:00"), "must differ"),
        (ManagerFields(name="李经理", platforms=("tiktok",)), "unknown tiktok"),
        (ManagerFields(name="李经理", supervisor="nobody"), "no account manager 'nobody'"),
        (ManagerFields(name=" "), "name"),
    ],
)
def test_bad_manager_fields_are_refused_and_change_nothing(
    db: Database, fields: ManagerFields, message: str
) -> None:
    with db.sessions() as session:
        with pytest.raises(ManagerError, match=message):
            add_manager(session, "lisi", fields, actor="admin", now=NOW)
        session.rollback()
        assert session.scalars(select(AccountManager)).all() == []


def test_licence_sac_number_is_normalized_and_supervision_loops_are_refused(db: Database) -> None:
    with db.sessions() as session:
        boss = add_manager(session, "boss", ManagerFields(name="王总"), actor="admin", now=NOW)
        lisi = add_manager(
            session,
            "lisi",
            ManagerFields(name="李经理", licensed=True, sac_number="ｓ0570516010001", supervisor="boss"),
            actor="admin",
            now=NOW,
        )
        assert lisi.sac_number == "S0570516010001" and lisi.supervisor_userid == "boss"
        with pytest.raises(ManagerError, match="supervision loop"):
            update_manager(session, "boss", ManagerFields(supervisor="lisi"), actor="admin", now=NOW)
        assert boss.supervisor_userid is None
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == ["manager.add", "manager.add"]


def test_managers_commands(runner: CliRunner, env: dict[str, str], services: Services) -> None:
    with services.db.transaction() as session:
        ensure_people(session)  # olivia is an operator, chen a compliance reviewer
    add = ["managers", "add", "lisi", "--name", "李经理", "--sac", "S0570516010001", "--licensed"]
    result = runner.invoke(
        main, [*add, "--capacity", "5", "--days", "1-5", "--platform", "zhihu", "--as", "olivia"], env=env
    )
    assert result.exit_code == 0, result.output
    assert (
        "licensed S0570516010001" in result.output
        and "open 0/5" in result.output
        and "zhihu" in result.output
    )
    refused = runner.invoke(main, [*add, "--as", "chen"], env=env)
    assert refused.exit_code != 0 and "may not manage account managers" in refused.output
    duplicate = runner.invoke(main, [*add, "--as", "olivia"], env=env)
    assert duplicate.exit_code != 0 and "exists" in duplicate.output
    bad = runner.invoke(
        main, ["managers", "add", "wangwu", "--name", "王", "--licensed", "--as", "olivia"], env=env
    )
    assert bad.exit_code != 0 and "SAC number" in bad.output

    updated = runner.invoke(
        main, ["managers", "update", "lisi", "--all-platforms", "--start", "8:30", "--as", "olivia"], env=env
    )
    assert updated.exit_code == 0, updated.output
    assert "08:30-18:00" in updated.output and "all platforms" in updated.output
    assert runner.invoke(main, ["managers", "disable", "lisi", "--as", "olivia"], env=env).exit_code == 0
    listed = runner.invoke(main, ["managers", "list"], env=env)
    assert "no account managers" in listed.output
    listed_all = runner.invoke(main, ["managers", "list", "--all"], env=env)
    assert "lisi" in listed_all.output and "DISABLED" in listed_all.output
    enabled = runner.invoke(main, ["managers", "update", "lisi", "--enable", "--as", "olivia"], env=env)
    assert enabled.exit_code == 0 and "DISABLED" not in enabled.output
