"""A `wecom-bot worker` killed with SIGKILL while sending: leased messages are flagged, never resent."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.delivery.outbox import enqueue
from bot.services import Services
from bot.wecom.simulator import Simulator
from models.alerts import Alert
from models.deliveries import Channel, Delivery, DeliveryStatus
from tests.fault_corp import count_rows, simulator_config
from tests.fault_processes import bot_env, bot_process, sigkill, wait_while_running
from tests.scripts_fixtures import POLICY, approved

REMINDER = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"
MEMBERS = [f"m{i:02d}" for i in range(25)]  # more than one claim (20 rows): some are never leased
CLAIM_SIZE = 20
LEASE_S = 5  # the shortest lease the settings allow
SEND_LATENCY_S = 1.5


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(dataclasses.replace(simulator_config(), users=MEMBERS)) as s:
        yield s


def queue_reminders(services: Services) -> list[int]:
    """One approved staff reminder per member, queued in member order; their ids."""
    with services.db.transaction() as session:
        approved(session, "staff_reminder", "staff_reminder", REMINDER)
        rows = [
            enqueue(
                session,
                purpose_key=f"fault:reminder:{member}",
                channel=Channel.APP_MESSAGE,
                recipient=member,
                script_key="staff_reminder",
                values={
                    "manager": {"name": "张三"},
                    "task": {"title": "确认早报群发", "due": "08:30", "link": ""},
                },
                policy=POLICY,
            )
            for member in MEMBERS
        ]
        ids = [row.id for row in rows]
    assert len(set(ids)) == len(MEMBERS)
    return ids


def statuses(services: Services) -> dict[str, str]:
    """Each member's reminder status."""
    with services.db.read() as session:
        return {
            recipient: status
            for recipient, status in session.execute(select(Delivery.recipient, Delivery.status))
        }


@pytest.mark.slow
def test_worker_killed_while_sending_never_resends_and_a_new_worker_sends_the_rest(
    services: Services, sim: Simulator, tmp_path: Path
) -> None:
    queue_reminders(services)
    env = bot_env(services, sim, BOT_WORKER__LEASE_S=str(LEASE_S))
    args = ["worker", "--threads", "1", "--dispatchers", "1"]
    sim.set_latency("message/send", SEND_LATENCY_S)  # each call is in flight long enough to be cut short

    doomed_log = tmp_path / "doomed.log"
    with bot_process(args, env, doomed_log) as doomed:
        wait_while_running(doomed, lambda: DeliveryStatus.SENT in statuses(services).values(), 30, doomed_log)
        sigkill(doomed)  # one reminder recorded as sent, the next in WeCom's hands, the rest leased
    sim.set_latency("message/send", 0)

    after_kill = Counter(statuses(services).values())
    assert after_kill == {
        DeliveryStatus.SENT: 1,
        DeliveryStatus.SENDING: CLAIM_SIZE - 1,
        DeliveryStatus.QUEUED: len(MEMBERS) - CLAIM_SIZE,
    }
    leased = {m for m, s in statuses(services).items() if s == DeliveryStatus.SENDING}

    settled = {DeliveryStatus.SENT: 1 + len(MEMBERS) - CLAIM_SIZE, DeliveryStatus.UNKNOWN: CLAIM_SIZE - 1}
    successor_log = tmp_path / "successor.log"
    with bot_process(args, env, successor_log) as successor:
        wait_while_running(
            successor, lambda: Counter(statuses(services).values()) == settled, LEASE_S + 15, successor_log
        )

    received = Counter(member for m in sim.sent_app_messages for member in m.delivered_to)
    assert max(received.values()) == 1  # no member was sent the reminder twice
    final = statuses(services)
    assert {m for m, s in final.items() if s == DeliveryStatus.UNKNOWN} == leased
    assert all(received[m] == 1 for m, s in final.items() if s == DeliveryStatus.SENT)
    # At most the call cut short reached WeCom; the leased rows never attempted were not sent.
    assert sum(received[m] for m in leased) <= 1
    with services.db.read() as session:
        alerted = session.scalars(select(Alert.detail).where(Alert.kind == "delivery.unknown")).all()
        unknown_ids = session.scalars(
            select(Delivery.id).where(Delivery.status == DeliveryStatus.UNKNOWN)
        ).all()
    assert sorted(d["delivery"] for d in alerted) == sorted(unknown_ids)
    assert count_rows(services, Delivery, Delivery.attempts > 1) == 0
