"""Both coordination implementations honour the same contract."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from bot.coordination import Coordinator, MemoryCoordinator, make_coordinator


# The Redis contract runs in the PostgreSQL + Redis pass, where TEST_REDIS_URL is set.
@pytest.fixture(params=["memory"] + (["redis"] if os.environ.get("TEST_REDIS_URL") else []))
def coord(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Coordinator]:
    if request.param == "memory":
        c: Coordinator = MemoryCoordinator()
    else:
        c = make_coordinator(redis_url, namespace=f"t-{uuid.uuid4().hex[:8]}")
    yield c
    c.close()


def test_remember_and_seen(coord: Coordinator) -> None:
    assert not coord.seen("k")
    coord.remember("k", 60)
    assert coord.seen("k")


def test_lock_is_exclusive_renewable_and_expires(coord: Coordinator) -> None:
    a, b = coord.lock("leader", 0.3), coord.lock("leader", 0.3)
    assert a.acquire() and not b.acquire()
    assert a.renew()
    time.sleep(0.4)
    assert b.acquire()  # a's lease expired
    assert not a.renew()
    a.release()  # releasing a lock one no longer owns leaves the owner alone
    assert not a.acquire()
    b.release()
    assert a.acquire()


def test_token_bucket_grants_capacity_then_asks_to_wait(coord: Coordinator) -> None:
    grants = [coord.take_token("api", rate_per_s=10, capacity=3) for _ in range(4)]
    assert grants[:3] == [0, 0, 0]
    assert 0 < grants[3] <= 0.1 + 0.01


def test_cache_roundtrip(coord: Coordinator) -> None:
    assert coord.cache_get("token") is None
    coord.cache_set("token", "abc", 60)
    assert coord.cache_get("token") == "abc"
    coord.cache_delete("token")
    assert coord.cache_get("token") is None


def test_wake_reaches_a_waiter_and_is_not_lost_when_early(coord: Coordinator) -> None:
    coord.wait("ch", 0)  # subscribe
    coord.wake("ch")
    assert coord.wait("ch", 2.0)  # a wake-up sent before waiting is kept
    woke = threading.Event()

    def waiter() -> None:
        if coord.wait("ch", 5.0):
            woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    coord.wake("ch")
    thread.join(5)
    assert woke.is_set()
    assert not coord.wait("ch", 0.05)


def test_ping(coord: Coordinator) -> None:
    coord.ping()
