"""A simulated WeCom corp sends real encrypted callbacks over HTTP to the embedded runtime."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig, external_contact_event
from models.contacts import ContactRelation, RelationStatus
from models.inbox import EventStatus, InboundEvent
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    config = SimulatorConfig(corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY)
    with Simulator(config) as sim:
        yield sim


@pytest.fixture
def runtime(services: Services) -> Iterator[EmbeddedRuntime]:
    with EmbeddedRuntime(services, workers=2) as rt:
        yield rt


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def relation_status(services: Services, external: str) -> str | None:
    with services.db.transaction() as session:
        return session.scalar(
            select(ContactRelation.status).where(ContactRelation.external_user_id == external)
        )


def test_url_verification_over_http(simulator: Simulator, runtime: EmbeddedRuntime) -> None:
    result = simulator.verify_url(f"{runtime.url}/wecom/callback")
    assert result.ok, result


def test_customer_add_then_delete_flows_through_to_the_relation(
    simulator: Simulator, runtime: EmbeddedRuntime, services: Services
) -> None:
    url = f"{runtime.url}/wecom/callback"
    add = external_contact_event(
        "add_external_contact",
        "zhangsan",
        "wmCUST1",
        corp_id=TEST_CORP_ID,
        state="XHS888",
        welcome_code="WC1",
    )
    result = simulator.send_callback(url, add, retry_interval_s=0, duplicate=True)
    assert result.delivered and result.status_codes[0] == 200
    assert wait_until(lambda: relation_status(services, "wmCUST1") == RelationStatus.ACTIVE)

    removed = external_contact_event("del_follow_user", "zhangsan", "wmCUST1", corp_id=TEST_CORP_ID)
    assert simulator.send_callback(url, removed, retry_interval_s=0).delivered
    assert wait_until(lambda: relation_status(services, "wmCUST1") == RelationStatus.REMOVED_BY_CUSTOMER)
    with services.db.transaction() as session:
        statuses = session.execute(
            select(InboundEvent.status, func.count()).group_by(InboundEvent.status)
        ).all()
    assert dict(statuses) == {EventStatus.DONE: 2}  # the duplicate delivery was absorbed


def test_welcome_path_latency_under_a_burst(
    simulator: Simulator, runtime: EmbeddedRuntime, services: Services
) -> None:
    url = f"{runtime.url}/wecom/callback"
    started = time.monotonic()
    for i in range(50):
        xml = external_contact_event(
            "add_external_contact",
            "lisi",
            f"wmBURST{i}",
            corp_id=TEST_CORP_ID,
            state="DY001",
            welcome_code=f"W{i}",
        )
        assert simulator.send_callback(url, xml, retry_interval_s=0).delivered

    def all_done() -> bool:
        with services.db.transaction() as session:
            done = session.scalar(
                select(func.count()).select_from(InboundEvent).where(InboundEvent.status == EventStatus.DONE)
            )
        return done == 50

    assert wait_until(all_done, timeout=20)
    # Far inside WeCom's 20 s welcome window even on a 2-core machine running everything.
    assert time.monotonic() - started < 20
