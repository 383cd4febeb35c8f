"""The welcome fast path: adds handled in batches, each welcome sent by the worker right after commit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

import handlers.contacts
from bot.delivery import dispatcher as dispatcher_module
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.leads.hookcodes import create_code, provision_contact_way
from bot.services import Services
from bot.wecom.events import parse_event
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.worker import Worker
from handlers import build_dispatcher
from models.alerts import Alert
from models.base import utcnow
from models.deliveries import Delivery, DeliveryStatus
from models.inbox import EventStatus, InboundEvent
from models.leads import Lead, LeadTag, LeadTouch, Member
from models.ledger import LedgerEntry
from scripts_library import ledger
from tests.callbacks import contact_event, envelope, params_of
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved, ensure_people

WELCOME = (
    "{{ lead.display_name }}您好，欢迎从{{ hook.platform_name }}来到{{ firm.name }}，我是{{ manager.name }}。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


@pytest.fixture
def ready(services: Services, sim: Simulator) -> Services:
    """A bot wired to the simulator, with an approved Xiaohongshu welcome and code XHS888's QR."""
    secrets = sim.config.secrets
    services.settings = services.settings.replace(
        wecom={
            "api_base_url": sim.base_url,
            "agent_secret": secrets["agent"],
            "contact_secret": secrets["contact"],
        }
    )
    with services.db.transaction() as session:
        ensure_people(session)
        approved(session, "welcome_xiaohongshu", "welcome", WELCOME)
        session.add(Member(userid="zhangsan", name="张经理"))
        create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia")
    provision_contact_way(services.db, services.client, "XHS888")
    return services


def config_id(services: Services) -> str:
    from models.leads import HookCode

    with services.db.read() as session:
        code = session.scalars(select(HookCode).where(HookCode.code == "XHS888")).one()
        assert code.contact_way_config_id
        return code.contact_way_config_id


def store(services: Services, xmls: Sequence[str]) -> None:
    """Store callbacks as the webhook does (verified, decrypted, persisted)."""
    assert services.ingestor is not None
    for xml in xmls:
        query, body = envelope(xml)
        p = params_of(query)
        services.ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)


def scans(services: Services, sim: Simulator, count: int, prefix: str = "wmFAST") -> list[str]:
    """`count` customers scan the QR; their add callbacks are stored; returns their ids."""
    target = config_id(services)
    before = len(sim.emitted_callbacks)
    ids = [f"{prefix}{i:03d}" for i in range(count)]
    for ext in ids:
        sim.customer_scans(target, ext)
    store(services, sim.emitted_callbacks[before:])
    return ids


def worker(services: Services, sender: DeliveryDispatcher | None = None, **kw: Any) -> Worker:
    return Worker(
        services.settings, services.db, services.coordinator, build_dispatcher(), sender=sender, **kw
    )


def sender_of(services: Services, **kw: Any) -> DeliveryDispatcher:
    return DeliveryDispatcher(services.settings, services.db, services.coordinator, services.client, **kw)


def count(services: Services, model: type[Any], *where: Any) -> int:
    with services.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_worker_sends_each_welcome_right_after_its_commit(ready: Services, sim: Simulator) -> None:
    ids = scans(ready, sim, 12)
    outcomes = worker(ready, sender_of(ready)).drain()
    assert [o.status for o in outcomes] == ["done"] * 12
    # No dispatcher ran: the worker itself sent every welcome once, with the approved text.
    assert sorted(w.external_userid for w in sim.welcomes) == ids
    assert all("欢迎从小红书来到" in w.text for w in sim.welcomes)
    with ready.db.read() as session:
        rows = session.scalars(select(Delivery)).all()
        assert {r.status for r in rows} == {DeliveryStatus.SENT}
        assert all(r.sent_at is not None and r.attempts == 1 for r in rows)
        outcomes_in_ledger = session.scalars(
            select(LedgerEntry.outcome).where(LedgerEntry.entry_type == "outcome")
        ).all()
        assert outcomes_in_ledger == ["sent"] * 12
        assert ledger.verify(session).ok


def test_burst_of_adds_is_recorded_with_a_few_statements_per_batch(ready: Services, sim: Simulator) -> None:
    ids = scans(ready, sim, 20)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(ready.db.engine, "before_cursor_execute", record)
    try:
        outcomes = worker(ready).run_once()  # no sender: welcomes wait in the outbox
    finally:
        sa.event.remove(ready.db.engine, "before_cursor_execute", record)
    assert [o.status for o in outcomes] == ["done"] * 20
    # One claim, then one transaction for all 20 adds: its reads and updates do not grow with the
    # batch, and on PostgreSQL the rows of each table go in one multi-row INSERT.
    reads_and_updates = [s for s in statements if not s.lstrip().startswith("INSERT")]
    assert len(reads_and_updates) <= 16, reads_and_updates
    if ready.db.is_postgres:
        assert len(statements) < 30, statements
    with ready.db.read() as session:
        leads = session.scalars(select(Lead).order_by(Lead.external_user_id)).all()
        assert [lead.external_user_id for lead in leads] == ids
        assert {(lead.platform, lead.hook_code, lead.owner_userid) for lead in leads} == {
            ("xiaohongshu", "XHS888", "zhangsan")
        }
    assert count(ready, LeadTouch) == 20
    assert count(ready, LeadTag) == 40
    assert count(ready, Delivery, Delivery.status == DeliveryStatus.QUEUED) == 20


def test_one_failing_add_does_not_hold_back_the_rest_of_its_batch(
    ready: Services, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = scans(ready, sim, 5)
    real = handlers.contacts.record_arrivals

    def fails_for_one(session: Any, arrivals: Any, now: Any) -> Any:
        if any(a.external_user_id == ids[2] for a in arrivals):
            raise RuntimeError("this customer's record is broken")
        return real(session, arrivals, now)

    monkeypatch.setattr(handlers.contacts, "record_arrivals", fails_for_one)
    sender = sender_of(ready)
    outcomes = {o.event_id: o.status for o in worker(ready, sender).run_once()}
    assert sender.flush()
    assert sorted(outcomes.values()) == ["done", "done", "done", "done", "pending"]
    assert sorted(w.external_userid for w in sim.welcomes) == [ids[0], ids[1], ids[3], ids[4]]
    with ready.db.read() as session:
        failed = session.scalars(select(InboundEvent).where(InboundEvent.status == EventStatus.PENDING)).one()
        assert "this customer's record is broken" in (failed.last_error or "")
        assert session.scalar(select(func.count()).select_from(Lead)) == 4


def test_retried_add_in_the_same_batch_is_welcomed_once(ready: Services, sim: Simulator) -> None:
    ids = scans(ready, sim, 3)
    # The same add twice with different event times: two stored events, one welcome code.
    store(
        ready,
        [
            contact_event(external_user_id="wmDUP", welcome_code="WDUP", create_time=1700000000 + i)
            for i in range(2)
        ],
    )
    assert [o.status for o in worker(ready).run_once()] == ["done"] * 5
    assert count(ready, Delivery, Delivery.recipient == "wmDUP") == 1
    assert count(ready, Delivery) == len(ids) + 1


def test_welcome_leased_to_a_sender_that_died_is_flagged_not_resent(ready: Services, sim: Simulator) -> None:
    class DiesAfterCommit(DeliveryDispatcher):
        def send_claimed(self, rows: Any, wait: bool = True) -> Any:
            return []  # the process is gone before it calls WeCom

    scans(ready, sim, 2)
    worker(ready, DiesAfterCommit(ready.settings, ready.db, ready.coordinator, ready.client)).drain()
    assert count(ready, Delivery, Delivery.status == DeliveryStatus.SENDING) == 2
    later = utcnow() + timedelta(seconds=ready.settings.worker.lease_s + 1)
    assert sender_of(ready, clock=lambda: later).drain() == []
    assert sim.welcomes == []
    assert count(ready, Delivery, Delivery.status == DeliveryStatus.UNKNOWN) == 2
    assert count(ready, Alert, Alert.kind == "delivery.unknown") == 2


def test_batch_whose_events_were_all_taken_over_does_nothing(ready: Services, sim: Simulator) -> None:
    scans(ready, sim, 2)
    w = worker(ready)
    claimed = w._claim()
    with ready.db.transaction() as session:
        for row in session.scalars(select(InboundEvent)):
            row.locked_by = "another-worker"  # its lease expired and another worker took it
    route = w.dispatcher.match(parse_event(claimed[0][1]))
    assert route is not None
    items = [(event_id, parse_event(payload)) for event_id, payload in claimed]
    assert [o.status for o in w.process_batch(route, items) or []] == ["lost-lease", "lost-lease"]
    assert count(ready, Lead) == 0


def test_a_batch_of_welcomes_takes_its_rate_limit_tokens_in_one_call(
    ready: Services, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = scans(ready, sim, 12)
    coordinator = ready.coordinator
    batched: list[tuple[str, int]] = []
    single: list[str] = []
    take_tokens, take_token = coordinator.take_tokens, coordinator.take_token

    def many(bucket: str, rate: float, capacity: int, count: int) -> tuple[int, float]:
        batched.append((bucket, count))
        return take_tokens(bucket, rate, capacity, count)

    def one(bucket: str, rate: float, capacity: int) -> float:
        single.append(bucket)
        return take_token(bucket, rate, capacity)

    monkeypatch.setattr(coordinator, "take_tokens", many)
    monkeypatch.setattr(coordinator, "take_token", one)
    worker(ready, sender_of(ready)).drain()
    assert sorted(w.external_userid for w in sim.welcomes) == ids
    assert batched == [("wecom-api:externalcontact/send_welcome_msg", 12)] and single == []


def test_welcomes_beyond_the_tokens_left_wait_for_the_bucket_without_spending_an_attempt(
    ready: Services, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "API_RATE_PER_S", 0.01)  # one token per 100 s
    monkeypatch.setattr(dispatcher_module, "API_BURST", 5)
    scans(ready, sim, 8)
    worker(ready, sender_of(ready)).drain()
    assert len(sim.welcomes) == 5
    with ready.db.read() as session:
        rows = session.scalars(select(Delivery)).all()
    assert sorted(r.status for r in rows) == [DeliveryStatus.QUEUED] * 3 + [DeliveryStatus.SENT] * 5
    waiting = [r for r in rows if r.status == DeliveryStatus.QUEUED]
    assert all(r.attempts == 0 and r.next_attempt_at > r.created_at + timedelta(seconds=50) for r in waiting)


def test_token_bucket_grants_a_batch_up_to_what_it_holds(services: Services) -> None:
    bucket = services.coordinator
    assert bucket.take_tokens("batch-test", 0.001, 5, 3) == (3, 0.0)
    granted, wait = bucket.take_tokens("batch-test", 0.001, 5, 4)
    assert granted == 2 and 900 < wait <= 1000  # the next token is 1,000 s away at 0.001/s
    assert bucket.take_token("batch-test", 0.001, 5) > 900
