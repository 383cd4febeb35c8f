"""Worker: claims, one transaction per event, retries with backoff, dead letters, replay, leases."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.ingest import Ingestor
from bot.routing import Dispatcher, HandlerContext, Router
from bot.services import Services
from bot.wecom.events import Event, TextMessage
from bot.worker import Worker, backoff_delay, replay
from models.audit import AuditEntry
from models.base import utcnow
from models.inbox import EventStatus, InboundEvent
from tests.callbacks import envelope, params_of, text_message


def ingest(services: Services, content: str, msg_id: str) -> int:
    """Store a text message through the real ingest path; return its event id."""
    ingestor = services.ingestor
    assert isinstance(ingestor, Ingestor)
    query, body = envelope(text_message(content, msg_id))
    params = params_of(query)
    result = ingestor.ingest(params["msg_signature"], params["timestamp"], params["nonce"], body)
    assert result.event_id is not None
    return result.event_id


class Clock:
    """A controllable clock for lease and backoff tests."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(seconds=1)  # events stored "now" are due

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def audit_router(fail_times: dict[str, int] | None = None) -> Router:
    """A router whose handler writes an audit row per message, failing the first N times if asked."""
    router = Router("test")
    failures = dict(fail_times or {})

    @router.on(TextMessage)
    def record(event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, TextMessage)
        ctx.audit("test.handled", f"msg:{event.msg_id}")
        if failures.get(event.content, 0) > 0:
            failures[event.content] -= 1
            raise RuntimeError(f"boom {event.content}")

    return router


def effects(services: Services) -> int:
    with services.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "test.handled")
            )
            or 0
        )


def status_of(services: Services, event_id: int) -> InboundEvent:
    with services.db.transaction() as session:
        row = session.get(InboundEvent, event_id)
        assert row is not None
        return row


def make_worker(services: Services, router: Router, clock: Clock | None = None, name: str = "w1") -> Worker:
    return Worker(
        services.settings,
        services.db,
        services.coordinator,
        Dispatcher([router]),
        worker_id=name,
        clock=clock or utcnow,
    )


def test_event_is_handled_once_and_marked_done(services: Services) -> None:
    event_id = ingest(services, "hi", "1")
    outcomes = make_worker(services, audit_router()).drain()
    assert [(o.event_id, o.status, o.handler) for o in outcomes] == [(event_id, "done", "test.record")]
    assert effects(services) == 1
    assert make_worker(services, audit_router()).drain() == []
    assert effects(services) == 1


def test_unmatched_event_is_ignored(services: Services) -> None:
    event_id = ingest(services, "hi", "1")
    outcomes = make_worker(services, Router("empty")).drain()
    assert outcomes[0].status == "ignored"
    assert status_of(services, event_id).status == EventStatus.IGNORED


def test_failure_rolls_back_effects_and_retries_with_backoff(services: Services) -> None:
    clock = Clock()
    event_id = ingest(services, "flaky", "1")
    worker = make_worker(services, audit_router({"flaky": 1}), clock)
    first = worker.run_once()
    assert first[0].status == "pending" and "boom flaky" in (first[0].error or "")
    assert effects(services) == 0  # the handler's write was rolled back with the failure
    row = status_of(services, event_id)
    assert row.attempts == 1 and row.last_error and row.next_attempt_at > clock.now
    assert worker.run_once() == []  # not due yet
    clock.advance(10)
    assert worker.run_once()[0].status == "done"
    assert effects(services) == 1


def test_event_is_dead_lettered_after_max_attempts_and_can_be_replayed(services: Services) -> None:
    clock = Clock()
    event_id = ingest(services, "bad", "1")
    worker = make_worker(services, audit_router({"bad": 3}), clock)
    statuses = []
    for _ in range(5):
        statuses += [o.status for o in worker.run_once()]
        clock.advance(3600)
    assert statuses == ["pending", "pending", "dead"]
    assert status_of(services, event_id).status == EventStatus.DEAD
    assert replay(services.db, event_id, actor="ops", now=clock.now)
    assert not replay(services.db, event_id, actor="ops", now=clock.now)  # already queued
    assert worker.run_once()[0].status == "done"
    assert effects(services) == 1


def test_worker_that_lost_its_lease_does_not_commit(services: Services) -> None:
    clock = Clock()
    event_id = ingest(services, "hi", "1")
    slow = make_worker(services, audit_router(), clock, name="slow")
    assert slow.claim() == [event_id]
    clock.advance(services.settings.worker.lease_s + 1)
    fast = make_worker(services, audit_router(), clock, name="fast")
    assert fast.claim() == [event_id]  # the expired lease is taken over
    assert slow.process(event_id).status == "lost-lease"
    assert fast.process(event_id).status == "done"
    assert effects(services) == 1


def test_concurrent_workers_process_each_event_exactly_once(services: Services) -> None:
    ids = [ingest(services, f"m{i}", str(i)) for i in range(60)]
    router = audit_router()
    workers = [make_worker(services, router, name=f"w{i}") for i in range(4)]
    results: list[list[int]] = [[] for _ in workers]

    def run(index: int) -> None:
        results[index] = [o.event_id for o in workers[index].drain() if o.status == "done"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    processed = sorted(i for r in results for i in r)
    assert processed == sorted(ids)
    assert effects(services) == 60


def test_run_forever_is_woken_at_once_by_ingest(services: Services) -> None:
    settings = services.settings.replace(worker={"idle_poll_s": 30})
    services.settings = settings
    done = threading.Event()
    router = Router("wake")

    @router.on(TextMessage)
    def mark(event: Event, ctx: HandlerContext) -> None:
        done.set()

    worker = Worker(settings, services.db, services.coordinator, Dispatcher([router]), worker_id="sleeper")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    try:
        threading.Event().wait(0.3)  # let it reach its idle wait
        ingest(services, "wake", "1")
        assert done.wait(5), "worker was not woken by the ingest (idle poll is 30 s)"
    finally:
        stop.set()
        services.coordinator.wake("inbox")
        thread.join(timeout=10)


@pytest.mark.parametrize("attempt", [1, 2, 5, 30])
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    delay = backoff_delay(attempt, base_s=2, max_s=600)
    expected = min(600, 2 * 2 ** (attempt - 1))
    assert expected / 2 <= delay <= expected
