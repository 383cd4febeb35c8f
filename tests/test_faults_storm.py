"""A storm of retried callbacks: each add delivered five times at once is stored, handled, welcomed once."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.simulator import Simulator
from models.deliveries import Delivery, DeliveryStatus
from models.inbox import EventStatus, InboundEvent
from models.leads import Lead
from models.ledger import LedgerEntry
from tests.fault_corp import (
    count_rows,
    post_callback,
    repeated,
    scan_customers,
    simulator_config,
    wait_until,
    welcomes_per_customer,
    wire_to_simulator,
)

CUSTOMERS = 200
DELIVERIES_EACH = 5


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(simulator_config()) as s:
        yield s


@pytest.mark.slow
def test_storm_of_retried_callbacks_is_stored_handled_and_welcomed_once(
    services: Services, sim: Simulator
) -> None:
    wire_to_simulator(services, sim)
    ids, callbacks = scan_customers(services, sim, CUSTOMERS, prefix="wmSTORM")
    assert len(callbacks) == CUSTOMERS
    deliveries = repeated(callbacks, DELIVERIES_EACH)
    random.Random(8).shuffle(deliveries)

    with EmbeddedRuntime(services, workers=2) as runtime:
        url = f"{runtime.url}/wecom/callback"
        # A generous client timeout: on a loaded machine a few answers may take over 10 s, and a
        # delivery that timed out here would be a flaky failure, not a lost callback.
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = Counter(pool.map(lambda xml: post_callback(url, xml, timeout_s=30), deliveries))
        # Every delivery, first or retry, is acknowledged: WeCom stops retrying.
        assert statuses == {200: CUSTOMERS * DELIVERIES_EACH}
        assert wait_until(lambda: sum(welcomes_per_customer(sim).values()) >= CUSTOMERS, timeout_s=25)
        assert wait_until(
            lambda: count_rows(services, Delivery, Delivery.status == DeliveryStatus.SENT) == CUSTOMERS,
            timeout_s=10,
        )

    assert welcomes_per_customer(sim) == dict.fromkeys(ids, 1)
    with services.db.read() as session:
        events = session.execute(select(InboundEvent.status, InboundEvent.attempts)).all()
        assert len(events) == CUSTOMERS
        assert {(status, attempts) for status, attempts in events} == {(EventStatus.DONE, 1)}
        leads = session.scalars(select(Lead.external_user_id)).all()
        assert sorted(leads) == ids
        recipients = Counter(session.scalars(select(Delivery.recipient)).all())
        assert recipients == dict.fromkeys(ids, 1)
        outcomes = session.scalars(
            select(LedgerEntry.outcome).where(LedgerEntry.entry_type == "outcome")
        ).all()
        assert outcomes == ["sent"] * CUSTOMERS
