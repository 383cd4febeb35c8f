"""Outbox and dispatcher: approved text only, one row per purpose, honest outcomes, no silent loss."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot.delivery import dispatcher as dispatcher_module
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.delivery.outbox import enqueue
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.alerts import Alert
from models.base import utcnow
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.ledger import LedgerEntry
from scripts_library import ledger
from scripts_library.catalogue import NotSendable
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import POLICY, approved

REMINDER = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"


def values(name: str = "张三") -> dict[str, dict[str, str]]:
    return {"manager": {"name": name}, "task": {"title": "确认早报群发", "due": "08:30", "link": ""}}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


@pytest.fixture
def wired(services: Services, sim: Simulator) -> Services:
    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"]}
    )
    with services.db.transaction() as session:
        approved(session, "staff_reminder", "staff_reminder", REMINDER)
    return services


def queue(services: Services, purpose: str, recipient: str = "zhangsan", **kw: object) -> Delivery:
    with services.db.transaction() as session:
        return enqueue(
            session, purpose_key=purpose, channel=Channel.APP_MESSAGE, recipient=recipient,
            script_key="staff_reminder", values=kw.pop("vals", values()), policy=POLICY, **kw,  # type: ignore[arg-type]
        )  # fmt: skip


def dispatcher(services: Services, **kw: object) -> DeliveryDispatcher:
    return DeliveryDispatcher(services.settings, services.db, services.coordinator, services.client, **kw)  # type: ignore[arg-type]


def row(services: Services, delivery_id: int) -> Delivery:
    with services.db.transaction() as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        return found


def test_queued_message_is_sent_once_and_ledgered(wired: Services, sim: Simulator) -> None:
    d = queue(wired, "reminder:1")
    assert d.status == DeliveryStatus.QUEUED and d.ledger_seq is not None
    assert queue(wired, "reminder:1").id == d.id  # same purpose, same row
    outcomes = dispatcher(wired).drain()
    assert [(o.delivery_id, o.status) for o in outcomes] == [(d.id, "sent")]
    assert [m.payload["text"]["content"] for m in sim.messages_to("zhangsan")] == [d.text]
    sent = row(wired, d.id)
    assert sent.wecom_id and sent.sent_at is not None
    with wired.db.transaction() as session:
        entries = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
        assert [(e.entry_type, e.outcome) for e in entries] == [("message", "queued"), ("outcome", "sent")]
        assert entries[0].rendered_text == d.text and entries[1].wecom_id == sent.wecom_id
        assert ledger.verify(session).ok
    assert dispatcher(wired).drain() == []


def test_unapproved_script_cannot_be_queued(wired: Services) -> None:
    with pytest.raises(NotSendable), wired.db.transaction() as session:
        enqueue(
            session, purpose_key="x", channel=Channel.APP_MESSAGE, recipient="zhangsan",
            script_key="staff_reminder_unknown", values=values(), policy=POLICY,
        )  # fmt: skip


def test_hostile_value_is_blocked_not_sent_and_alerted(wired: Services, sim: Simulator) -> None:
    d = queue(wired, "reminder:hostile", vals=values("稳赚不赔内幕消息"))
    assert d.status == DeliveryStatus.BLOCKED and d.ledger_seq is None
    assert dispatcher(wired).drain() == []
    assert sim.api_calls("message/send") == 0
    with wired.db.transaction() as session:
        assert session.scalars(select(Alert.kind)).all() == ["send.blocked"]


def test_permanent_error_is_recorded_and_not_retried(wired: Services, sim: Simulator) -> None:
    d = queue(wired, "reminder:ghost", recipient="nobody_here")
    outcomes = dispatcher(wired).drain()
    assert [(o.status, o.errcode) for o in outcomes] == [("failed", 81013)]
    assert row(wired, d.id).error and sim.api_calls("message/send") == 1


def test_transient_and_rate_limit_errors_are_retried_later(wired: Services, sim: Simulator) -> None:
    d = queue(wired, "reminder:flaky")
    sim.inject_fault("message/send", -1, times=1)
    now = utcnow()
    send = dispatcher(wired, clock=lambda: now)
    assert [o.status for o in send.run_once()] == ["queued"]
    assert row(wired, d.id).next_attempt_at > now
    assert send.run_once() == []  # backing off
    later = now + timedelta(seconds=30)
    sim.inject_fault("message/send", 45009, times=1)
    assert [o.status for o in dispatcher(wired, clock=lambda: later).run_once()] == ["queued"]
    assert row(wired, d.id).next_attempt_at >= later + timedelta(seconds=59)
    much_later = later + timedelta(seconds=61)
    assert [o.status for o in dispatcher(wired, clock=lambda: much_later).run_once()] == ["sent"]


def test_expired_deadline_is_not_sent(wired: Services, sim: Simulator) -> None:
    d = queue(wired, "reminder:late", deadline=utcnow() - timedelta(seconds=1))
    assert [o.status for o in dispatcher(wired).drain()] == ["expired"]
    assert sim.api_calls("message/send") == 0 and row(wired, d.id).status == DeliveryStatus.EXPIRED


def test_sender_that_died_mid_call_is_flagged_never_resent(wired: Services, sim: Simulator) -> None:
    d = queue(wired, "reminder:crash")
    now = utcnow()
    assert dispatcher(wired, worker_id="dead", clock=lambda: now).claim() == [d.id]
    later = now + timedelta(seconds=wired.settings.worker.lease_s + 1)
    assert dispatcher(wired, clock=lambda: later).drain() == []
    assert row(wired, d.id).status == DeliveryStatus.UNKNOWN
    assert sim.api_calls("message/send") == 0
    with wired.db.transaction() as session:
        assert session.scalars(select(Alert.kind)).all() == ["delivery.unknown"]


def test_member_is_never_pushed_past_wecoms_silent_drop_limit(wired: Services, sim: Simulator) -> None:
    for i in range(26):
        queue(wired, f"reminder:burst:{i}")
    statuses = [o.status for o in dispatcher(wired).drain(max_batches=3)]
    assert statuses.count("sent") == 20 and statuses.count("queued") == 6
    assert len(sim.messages_to("zhangsan")) == 20 and not sim.dropped_app_messages


def test_opt_out_between_queueing_and_sending_is_honoured(wired: Services, sim: Simulator) -> None:
    from models.leads import Lead

    body = "{{ lead.display_name }}您好，消息已收到。{{ firm.opt_out }}"
    with wired.db.transaction() as session:
        approved(session, "fallback", "fallback", body)
        session.add(Lead(external_user_id="wmOPT"))
        d = enqueue(
            session, purpose_key="kf:reply:1", channel=Channel.KF_TEXT, recipient="wmOPT",
            script_key="fallback",
            values={"lead": {"display_name": ""}, "firm": {"name": "示例证券", "opt_out": "回复TD退订"}},
            policy=POLICY, params={"open_kfid": "wkSIM"},
        )  # fmt: skip
        assert d.status == DeliveryStatus.QUEUED
    with wired.db.transaction() as session:
        lead = session.scalars(select(Lead).where(Lead.external_user_id == "wmOPT")).one()
        lead.opted_out = True
    outcomes = dispatcher(wired).drain()
    assert [o.status for o in outcomes] == ["cancelled"]
    assert sim.api_calls("kf/send_msg") == 0
    with wired.db.transaction() as session:
        outcome = session.scalars(select(LedgerEntry).where(LedgerEntry.entry_type == "outcome")).one()
        assert (outcome.outcome, outcome.detail) == ("cancelled", "customer opted out")


def test_outcomes_whose_recording_fails_once_are_recorded_on_the_next_try(
    wired: Services, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deadlock victim or a dropped connection while recording: WeCom's answer is known, so the
    # finisher tries again rather than letting the lease lapse into `unknown`.
    monkeypatch.setattr(dispatcher_module, "FINISH_RETRY_S", (0.01, 0.01))
    d = queue(wired, "reminder:flaky")
    sender = dispatcher(wired)
    real = sender._finish
    failures = [OperationalError("UPDATE deliveries", {}, Exception("deadlock detected"))] * 2

    def flaky(results: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(results)

    monkeypatch.setattr(sender, "_finish", flaky)
    claimed = [row(wired, delivery_id) for delivery_id in sender.claim()]
    assert [c.id for c in claimed] == [d.id]
    sender.send_claimed(claimed, wait=False)
    assert sender.flush(timeout_s=10)
    assert failures == [] and row(wired, d.id).status == DeliveryStatus.SENT
    assert len(sim.messages_to("zhangsan")) == 1
