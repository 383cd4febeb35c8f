"""Redis stopped and started under a running `wecom-bot worker`: it recovers by itself, no send doubled."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.delivery.outbox import enqueue
from bot.services import Services
from bot.wecom.simulator import Simulator
from models.alerts import Alert
from models.deliveries import Channel, Delivery, DeliveryStatus
from tests.fault_corp import simulator_config
from tests.fault_processes import bot_env, bot_process, wait_while_running
from tests.fault_servers import private_redis, real_servers_pass
from tests.scripts_fixtures import POLICY, approved

REMINDER = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"
MEMBERS = [f"r{i:02d}" for i in range(15)]
LEASE_S = 5  # the shortest lease the settings allow
OUTAGE_S = 3.0  # several dispatch rounds and wake-up waits
VALUES = {"manager": {"name": "张三"}, "task": {"title": "确认早报群发", "due": "08:30", "link": ""}}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(dataclasses.replace(simulator_config(), users=MEMBERS)) as s:
        yield s


def queue_reminders(services: Services, members: list[str]) -> None:
    """One approved staff reminder for each of `members`."""
    with services.db.transaction() as session:
        for member in members:
            enqueue(
                session,
                purpose_key=f"fault:redis:{member}",
                channel=Channel.APP_MESSAGE,
                recipient=member,
                script_key="staff_reminder",
                values=VALUES,
                policy=POLICY,
            )


@dataclass(frozen=True)
class Outage:
    """What a Redis outage under a running worker left behind."""

    statuses: dict[str, str]  # member -> status of their reminder
    received: Counter[str]  # member -> reminders WeCom accepted for them
    worker_survived: bool


def ride_out_an_outage(services: Services, sim: Simulator, tmp_path: Path) -> Outage:
    """Send 5 reminders, stop Redis, queue 5, start Redis (empty), queue 5; wait for all to settle."""
    first, during, after = MEMBERS[:5], MEMBERS[5:10], MEMBERS[10:]
    with services.db.transaction() as session:
        approved(session, "staff_reminder", "staff_reminder", REMINDER)
    with private_redis(tmp_path) as server:
        env = bot_env(services, sim, BOT_REDIS__URL=server.url, BOT_WORKER__LEASE_S=str(LEASE_S))
        log_path = tmp_path / "worker.log"
        with bot_process(["worker"], env, log_path) as worker:
            queue_reminders(services, first)
            wait_while_running(worker, lambda: settled(services) == 5, 20, log_path)

            server.stop()
            queue_reminders(services, during)
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, log_path.read_text()
            server.start()  # same port, empty: no rate-limit buckets, no cached token, no locks

            queue_reminders(services, after)
            # A reminder leased during the outage settles once its lease lapses.
            wait_while_running(worker, lambda: settled(services) == len(MEMBERS), LEASE_S + 20, log_path)
            survived = worker.poll() is None
    with services.db.read() as session:
        by_member = {
            member: status for member, status in session.execute(select(Delivery.recipient, Delivery.status))
        }
    received = Counter(member for m in sim.sent_app_messages for member in m.delivered_to)
    return Outage(by_member, received, survived)


def settled(services: Services) -> int:
    """How many reminders have a final status (sent, or unknown and flagged to an operator)."""
    with services.db.read() as session:
        return len(
            session.scalars(
                select(Delivery.id).where(Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.UNKNOWN]))
            ).all()
        )


# An outage takes a worker start, a Redis restart and a lapsed lease (about 15 s): one run checks all.
@pytest.mark.slow
def test_a_redis_outage_never_doubles_a_send_and_what_was_queued_during_it_is_sent_once_it_ends(
    services: Services, sim: Simulator, tmp_path: Path
) -> None:
    real_servers_pass()
    outage = ride_out_an_outage(services, sim, tmp_path)
    assert outage.worker_survived  # it recovered by itself, with no restart
    assert max(outage.received.values()) == 1
    # Sent before the outage, queued during it, queued after it: each sent once, none flagged.
    assert outage.statuses == dict.fromkeys(MEMBERS, DeliveryStatus.SENT)
    assert outage.received == dict.fromkeys(MEMBERS, 1)
    with services.db.read() as session:
        alerts = session.scalars(select(Alert.kind)).all()
    assert "delivery.unknown" not in alerts
