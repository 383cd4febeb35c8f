"""Concurrent assignment with real threads and transactions: no lead offered twice, no capacity exceeded."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from bot.config import Settings
from bot.db import Database
from bot.delivery.outbox import enqueue
from bot.handoff.flow import Desk, offer
from models.deliveries import Delivery
from models.handoff import AccountManager, Handoff
from models.leads import Lead
from scripts_library.catalogue import policy_from_settings
from tests.test_handoff_flow import NOW, lead, load_default, manager, says

WORKERS = 8


def _prepare(db: Database, leads: int, capacities: dict[str, int]) -> list[int]:
    with db.transaction() as session:
        load_default(session, "handoff_brief")
        for userid, capacity in capacities.items():
            manager(session, userid, capacity=capacity)
        ids = []
        for n in range(leads):
            row = lead(session, f"wm{n}", stage="qualified")
            says(session, row, "开户", NOW, n, intent=("open_account", "开户"))
            ids.append(row.id)
    return ids


def _offer_in_own_transaction(db: Database, settings: Settings, lead_id: int) -> int | None:
    policy = policy_from_settings(settings.compliance)
    with db.transaction() as session:

        def queue(**kwargs: Any) -> Delivery:
            return enqueue(session, policy=policy, now=NOW, **kwargs)

        row = session.get(Lead, lead_id)
        assert row is not None
        handoff = offer(Desk(session, settings, NOW, queue), row, "意向「开户」")
        return handoff.id if handoff is not None else None


def _race(jobs: list[Callable[[], int | None]]) -> list[int | None]:
    """Run the jobs on WORKERS threads that start together; re-raise any error."""
    barrier = threading.Barrier(WORKERS)
    results: list[int | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = list(jobs)

    def run() -> None:
        barrier.wait()
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop()
            try:
                outcome = job()
            except BaseException as exc:  # reported to the test below
                errors.append(exc)
                return
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def test_concurrent_offers_never_exceed_a_capacity(db: Database, settings: Settings) -> None:
    capacities = {"a": 3, "b": 2, "c": 4}
    lead_ids = _prepare(db, 16, capacities)
    results = _race(
        [lambda lead_id=lead_id: _offer_in_own_transaction(db, settings, lead_id) for lead_id in lead_ids]
    )
    offered = [r for r in results if r is not None]
    assert len(results) == 16 and len(offered) == sum(capacities.values())
    with db.read() as session:
        per_manager = Counter(session.scalars(select(Handoff.manager_userid)))
        counts = {m.userid: m.open_count for m in session.scalars(select(AccountManager))}
        leads_with_offers = session.scalar(select(func.count(func.distinct(Handoff.lead_id))))
    assert dict(per_manager) == capacities == counts
    assert leads_with_offers == len(offered)


def test_one_lead_raced_by_many_workers_is_offered_once(db: Database, settings: Settings) -> None:
    [lead_id] = _prepare(db, 1, {"a": 5, "b": 5})
    results = _race([lambda: _offer_in_own_transaction(db, settings, lead_id) for _ in range(WORKERS)])
    assert len([r for r in results if r is not None]) == 1
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Handoff)) == 1
        assert sum(m.open_count for m in session.scalars(select(AccountManager))) == 1
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1
