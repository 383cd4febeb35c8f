"""Claims stored events, runs their handler in one transaction, retries with backoff, dead-letters."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update

from bot import logs, metrics
from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database
from bot.delivery.outbox import Claim
from bot.ingest import WAKE_CHANNEL
from bot.routing import Dispatcher, HandlerContext
from bot.routing.router import Route
from bot.wecom.events import Event, parse_event
from models.base import utcnow
from models.inbox import EventStatus, InboundEvent

if TYPE_CHECKING:
    from bot.delivery.dispatcher import DeliveryDispatcher

log = logging.getLogger("wecom_bot.worker")
_STOP_CHECK_S = 0.5


@dataclass(frozen=True)
class Outcome:
    """The result of processing one claimed event."""

    event_id: int
    status: str
    handler: str | None = None
    error: str | None = None
    # The route that took the event, or failed on it (for metrics): "none" when nothing matched.
    route: str = field(default="none", compare=False)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter in [delay/2, delay], capped at `max_s`."""
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(delay / 2, delay)


class Worker:
    """One worker loop; several may run against one database (claims never overlap)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        dispatcher: Dispatcher,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        sender: DeliveryDispatcher | None = None,
    ) -> None:
        """`sender`, when given, sends the messages an event queues right after its commit."""
        self.sender = sender
        self.settings = settings
        self.cfg = settings.worker
        self.db = db
        self.coordinator = coordinator
        self.dispatcher = dispatcher
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"
        self.clock = clock

    def claim(self, limit: int | None = None) -> list[int]:
        """Lease up to `limit` due events (pending and due, or processing with an expired lease)."""
        return [event_id for event_id, _payload in self._claim(limit)]

    def _claim(self, limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
        now = self.clock()
        limit = limit or self.cfg.batch_size
        t = InboundEvent
        due = or_(
            and_(t.status == EventStatus.PENDING, t.next_attempt_at <= now),
            and_(t.status == EventStatus.PROCESSING, t.lease_until < now),
        )
        with self.db.transaction() as session:
            stmt = (
                select(t.id, t.payload)
                .where(due)
                .order_by(t.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claimed = [(row.id, row.payload) for row in session.execute(stmt)]
            if claimed:
                session.execute(
                    update(t)
                    .where(t.id.in_([event_id for event_id, _payload in claimed]))
                    .values(
                        status=EventStatus.PROCESSING,
                        locked_by=self.worker_id,
                        lease_until=now + timedelta(seconds=self.cfg.lease_s),
                        attempts=t.attempts + 1,
                    )
                )
        return claimed

    def _delivery_claim(self, now: datetime) -> Claim | None:
        if self.sender is None:
            return None
        return Claim(self.sender.worker_id, now + timedelta(seconds=self.cfg.lease_s))

    def _after_commit(self, contexts: Sequence[HandlerContext]) -> None:
        channels = set().union(*(ctx.wake_after_commit for ctx in contexts))
        for channel in channels:
            self.coordinator.wake(channel)
        rows = [row for ctx in contexts for row in ctx.send_after_commit]
        if rows and self.sender is not None:
            self.sender.send_claimed(rows, wait=False)

    def process(self, event_id: int, event: Event | None = None) -> Outcome:
        """Run the handler for one claimed event; its effects and the status commit together."""
        started = time.perf_counter()
        with logs.event_context(event_id):
            outcome = self._process(event_id, event)
        metrics.handler_time(outcome.route, outcome.status, time.perf_counter() - started, "single")
        metrics.events_handled(outcome.route, outcome.status)
        return outcome

    def _route_name(self, event: Event | None) -> str:
        if event is None:
            return "unparsed"
        route = self.dispatcher.match(event)
        return route.name if route is not None else "none"

    def _process(self, event_id: int, event: Event | None) -> Outcome:
        try:
            with self.db.transaction() as session:
                row = session.get(InboundEvent, event_id, with_for_update=True)
                if row is None or row.status != EventStatus.PROCESSING or row.locked_by != self.worker_id:
                    return Outcome(event_id, "lost-lease")
                now = self.clock()
                if event is None:
                    event = parse_event(row.payload)
                ctx = HandlerContext(
                    session=session,
                    settings=self.settings,
                    now=now,
                    event_id=event_id,
                    received_at=row.received_at,
                    claim=self._delivery_claim(now),
                )
                handler = self.dispatcher.dispatch(event, ctx)
                row.status = EventStatus.DONE if handler else EventStatus.IGNORED
                row.handled_by = handler
                row.processed_at = now
                row.lease_until = None
                row.last_error = None
                outcome = Outcome(event_id, row.status, handler, route=handler or "none")
        except Exception as exc:
            log.exception("event %s failed", event_id)
            failure = self._record_failure(event_id, f"{type(exc).__name__}: {exc}"[:2000])
            return dataclasses.replace(failure, route=self._route_name(event))
        self._after_commit([ctx])
        return outcome

    def process_batch(self, route: Route, items: Sequence[tuple[int, Event]]) -> list[Outcome] | None:
        """Run a batch route on several claimed events in one transaction; None if it failed.

        On failure nothing of the batch is kept and the caller processes the events one by one,
        so one bad event cannot hold back the others.
        """
        ids = [event_id for event_id, _event in items]
        started = time.perf_counter()
        with logs.event_context(ids):
            outcomes = self._process_batch(route, items, ids)
        # A failed batch is timed here; its events are counted when they are processed one by one.
        elapsed = time.perf_counter() - started
        metrics.handler_time(route.name, "failed" if outcomes is None else EventStatus.DONE, elapsed, "batch")
        for outcome in outcomes or ():
            metrics.events_handled(route.name, outcome.status)
        return outcomes

    def _process_batch(
        self, route: Route, items: Sequence[tuple[int, Event]], ids: list[int]
    ) -> list[Outcome] | None:
        try:
            with self.db.transaction() as session:
                stmt = select(InboundEvent).where(InboundEvent.id.in_(ids)).with_for_update()
                rows = {row.id: row for row in session.scalars(stmt)}
                now = self.clock()
                claim = self._delivery_claim(now)
                live = [
                    (rows[event_id], event)
                    for event_id, event in items
                    if event_id in rows
                    and rows[event_id].status == EventStatus.PROCESSING
                    and rows[event_id].locked_by == self.worker_id
                ]
                contexts = [
                    HandlerContext(session, self.settings, now, row.id, row.received_at, claim=claim)
                    for row, _event in live
                ]
                name = route.name
                if live:  # every event may have been taken over since the claim
                    self.dispatcher.dispatch_batch(
                        route, [(event, ctx) for (_row, event), ctx in zip(live, contexts, strict=True)]
                    )
                for row, _event in live:
                    row.status, row.handled_by, row.processed_at = EventStatus.DONE, name, now
                    row.lease_until, row.last_error = None, None
        except Exception:
            log.warning("batch of %d events failed; processing them one by one", len(ids), exc_info=True)
            return None
        self._after_commit(contexts)
        done = {row.id for row, _event in live}
        return [
            Outcome(
                event_id,
                EventStatus.DONE if event_id in done else "lost-lease",
                name if event_id in done else None,
                route=name,
            )
            for event_id in ids
        ]

    def _record_failure(self, event_id: int, error: str) -> Outcome:
        now = self.clock()
        with self.db.transaction() as session:
            row = session.get(InboundEvent, event_id, with_for_update=True)
            if row is None or row.locked_by != self.worker_id or row.status != EventStatus.PROCESSING:
                return Outcome(event_id, "lost-lease", error=error)
            row.last_error = error
            row.lease_until = None
            if row.attempts >= self.cfg.max_attempts:
                row.status = EventStatus.DEAD
                log.error("event %s dead-lettered after %s attempts: %s", event_id, row.attempts, error)
            else:
                row.status = EventStatus.PENDING
                delay = backoff_delay(row.attempts, self.cfg.backoff_base_s, self.cfg.backoff_max_s)
                row.next_attempt_at = now + timedelta(seconds=delay)
            return Outcome(event_id, row.status, error=error)

    def run_once(self) -> list[Outcome]:
        """Claim one batch and process it; return what happened to each event.

        Events whose route takes batches are handled together, in one transaction per route;
        the rest one by one, in the order they arrived.
        """
        outcomes: list[Outcome] = []
        batches: dict[str, tuple[Route, list[tuple[int, Event]]]] = {}
        singles: list[tuple[int, Event | None]] = []
        for event_id, payload in self._claim():
            try:
                event = parse_event(payload)
            except Exception:  # reported by process(), which parses again
                singles.append((event_id, None))
                continue
            route = self.dispatcher.match(event)
            if route is not None and route.batched:
                batches.setdefault(route.name, (route, []))[1].append((event_id, event))
            else:
                singles.append((event_id, event))
        for route, items in batches.values():
            done = self.process_batch(route, items) if len(items) > 1 else None
            if done is None:
                singles.extend(items)
            else:
                outcomes.extend(done)
        outcomes.extend(
            self.process(event_id, event) for event_id, event in sorted(singles, key=lambda i: i[0])
        )
        return outcomes

    def drain(self, max_batches: int = 1000) -> list[Outcome]:
        """Process until nothing is due, and wait for the messages it sent (used by commands and tests)."""
        outcomes: list[Outcome] = []
        for _ in range(max_batches):
            batch = self.run_once()
            if not batch:
                break
            outcomes.extend(batch)
        if self.sender is not None:
            self.sender.flush()
        return outcomes

    def run_forever(self, stop: threading.Event) -> None:
        """Process events as they arrive: woken at once on ingest, with a slow poll as a safety net."""
        log.info("worker %s started", self.worker_id)
        from bot.campaigns.previews import start_runner  # campaign dry runs: one runner per process

        start_runner(self.settings, self.db, self.coordinator, stop)
        try:
            self.coordinator.wait(WAKE_CHANNEL, 0)  # subscribe before the first claim
        except Exception:
            log.exception("wake-up channel unavailable; polling")
        while not stop.is_set():
            try:
                batch = self.run_once()
            except Exception:
                log.exception("claim failed; retrying shortly")
                stop.wait(1.0)
                continue
            if len(batch) < self.cfg.batch_size:
                self._idle(stop)
        log.info("worker %s stopped", self.worker_id)

    def _idle(self, stop: threading.Event) -> None:
        """Wait for a wake-up, at most idle_poll_s, in short slices so a stop is noticed promptly."""
        deadline = time.monotonic() + self.cfg.idle_poll_s
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            try:
                if self.coordinator.wait(WAKE_CHANNEL, min(remaining, _STOP_CHECK_S)):
                    return
            except Exception:
                log.exception("wake-up channel failed; polling")
                stop.wait(min(remaining, _STOP_CHECK_S))


def replay(db: Database, event_id: int, actor: str, now: datetime | None = None) -> bool:
    """Put a dead-lettered (or ignored) event back in the queue; return whether it was replayable."""
    now = now or utcnow()
    from models.audit import AuditEntry

    with db.transaction() as session:
        row = session.get(InboundEvent, event_id, with_for_update=True)
        if row is None or row.status not in (EventStatus.DEAD, EventStatus.IGNORED):
            return False
        previous = row.status
        row.status = EventStatus.PENDING
        row.attempts = 0
        row.next_attempt_at = now
        row.locked_by = None
        session.add(
            AuditEntry(
                at=now,
                actor=actor,
                action="event.replay",
                target=f"event:{event_id}",
                detail={"from": previous},
            )
        )
    return True
