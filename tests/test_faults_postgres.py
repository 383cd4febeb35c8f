"""PostgreSQL crashed under callbacks: the refused ones are retried; all are stored and welcomed once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database, migrate
from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.simulator import Simulator
from models.inbox import EventStatus, InboundEvent
from tests.fault_corp import (
    count_rows,
    post_callback,
    scan_customers,
    simulator_config,
    wait_until,
    welcomes_per_customer,
    wire_to_simulator,
)
from tests.fault_servers import PrivatePostgres, private_postgres, real_servers_pass

PER_PHASE = 10


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(simulator_config()) as s:
        yield s


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    real_servers_pass()
    with private_postgres() as pg:
        yield pg


@pytest.fixture
def private(settings: Settings, coordinator: Coordinator, server: PrivatePostgres) -> Iterator[Services]:
    """Services over a migrated database on the private server (Redis is the test namespace)."""
    on_private = settings.replace(database={"url": server.url, "pool_size": 5})
    db = Database(on_private.database)
    migrate(db.engine)
    yield Services(on_private, db=db, coordinator=coordinator)
    db.dispose()


@pytest.mark.slow
def test_callbacks_refused_during_a_database_crash_are_stored_and_welcomed_once_after_it(
    private: Services, server: PrivatePostgres, sim: Simulator
) -> None:
    wire_to_simulator(private, sim)
    with EmbeddedRuntime(private, workers=2) as runtime:
        url = f"{runtime.url}/wecom/callback"
        before, before_xml = scan_customers(private, sim, PER_PHASE, prefix="wmPGA")
        assert [post_callback(url, xml) for xml in before_xml] == [200] * PER_PHASE
        assert wait_until(lambda: len(welcomes_per_customer(sim)) == PER_PHASE, timeout_s=15)

        during, during_xml = scan_customers(private, sim, PER_PHASE, prefix="wmPGB")
        server.stop("immediate")  # a crash: open connections die, nothing is flushed cleanly
        refused = [post_callback(url, xml) for xml in during_xml]
        # Not acknowledged, so WeCom keeps the callback and retries it.
        assert all(status is None or status >= 500 for status in refused), refused
        server.start()

        # WeCom's retries of the refused callbacks, then new adds, on the same running runtime.
        for xml in during_xml:
            assert sim.send_callback(url, xml, retries=3, retry_interval_s=0.5).delivered
        after, after_xml = scan_customers(private, sim, PER_PHASE, prefix="wmPGC")
        for xml in after_xml:
            assert sim.send_callback(url, xml, retries=3, retry_interval_s=0.5).delivered

        everyone = before + during + after
        assert wait_until(lambda: len(welcomes_per_customer(sim)) == len(everyone), timeout_s=20)
        done = InboundEvent.status == EventStatus.DONE
        assert wait_until(lambda: count_rows(private, InboundEvent, done) == len(everyone), timeout_s=10)

    assert welcomes_per_customer(sim) == dict.fromkeys(everyone, 1)
    with private.db.read() as session:
        subjects = Counter(session.scalars(select(InboundEvent.subject)).all())
    assert subjects == dict.fromkeys(everyone, 1)  # every add stored once, none lost
