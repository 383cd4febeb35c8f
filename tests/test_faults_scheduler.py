"""Scheduler leader killed with SIGKILL: the standby takes over after the lock TTL; the run happens once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.services import Services
from models.campaigns import Campaign, CampaignRun, CampaignStatus, ScheduleKind
from tests.fault_processes import bot_env, bot_process, sigkill, wait_while_running

LOCK_TTL_S = 2.0
LEADING = "now the leader"


def add_once_campaign(services: Services, run_at: datetime) -> int:
    """An active campaign with a single occurrence at `run_at`; its id."""
    created = run_at - timedelta(minutes=5)
    with services.db.transaction() as session:
        row = Campaign(
            key="fault-once",
            name="campaign fault-once",
            kind="morning_report",
            script_key="morning",
            schedule_kind=ScheduleKind.ONCE,
            run_at=run_at,
            audience={},
            status=CampaignStatus.ACTIVE,
            created_by="tests",
            created_at=created,
            updated_at=created,
        )
        session.add(row)
        session.flush()
        return row.id


def runs_of(services: Services, campaign_id: int) -> list[tuple[datetime, str]]:
    """(occurrence, created_by) of every run of the campaign."""
    with services.db.read() as session:
        rows = session.execute(
            select(CampaignRun.occurrence, CampaignRun.created_by).where(
                CampaignRun.campaign_id == campaign_id
            )
        )
        return [(occurrence, created_by) for occurrence, created_by in rows]


@pytest.mark.slow
def test_standby_takes_over_from_a_killed_leader_and_the_occurrence_runs_once(
    services: Services, tmp_path: Path
) -> None:
    if not services.settings.redis.url:
        pytest.skip("needs Redis (TEST_REDIS_URL): scheduler replicas find their leader through it")
    env = bot_env(
        services,
        BOT_SCHEDULER__LOCK_TTL_S=str(LOCK_TTL_S),
        BOT_SCHEDULER__RENEW_S="0.5",
        BOT_SCHEDULER__RECONCILE_S="0.5",
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    # Both replicas start together (a process start-up is the slow part); the lock picks the leader.
    with (
        bot_process(["scheduler"], env, logs[0]) as first,
        bot_process(["scheduler"], env, logs[1]) as second,
    ):
        replicas = [(first, logs[0]), (second, logs[1])]

        def started_and_one_leads() -> bool:
            texts = [log.read_text() for _, log in replicas]
            return all("standing by" in text for text in texts) and any(LEADING in text for text in texts)

        for proc, log in replicas:
            wait_while_running(proc, started_and_one_leads, 20, log)
        (leader, leader_log), (standby, standby_log) = sorted(
            replicas, key=lambda replica: LEADING not in replica[1].read_text()
        )
        run_at = (datetime.now(UTC) + timedelta(seconds=LOCK_TTL_S + 4)).replace(microsecond=0)
        campaign_id = add_once_campaign(services, run_at)
        job = f"campaign:{campaign_id}"
        wait_while_running(leader, lambda: job in leader_log.read_text(), 10, leader_log)
        assert LEADING not in standby_log.read_text()
        sigkill(leader)  # before the occurrence: the job it scheduled dies with it

        wait_while_running(standby, lambda: LEADING in standby_log.read_text(), LOCK_TTL_S + 10, standby_log)
        wait_while_running(standby, lambda: bool(runs_of(services, campaign_id)), 20, standby_log)
        # Give a late duplicate every chance to appear before counting.
        wait_while_running(
            standby, lambda: datetime.now(UTC) > run_at + timedelta(seconds=2), 10, standby_log
        )
        runs = runs_of(services, campaign_id)
    assert len(runs) == 1
    occurrence, created_by = runs[0]
    assert occurrence.replace(tzinfo=UTC) == run_at
    assert f":{standby.pid}:" in created_by
