"""In-process coordination for the embedded single-process deployment and for tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict

from bot.coordination.base import Coordinator, Lock

_MAX_REMEMBERED = 100_000


class _MemoryLock(Lock):
    def __init__(self, owner: MemoryCoordinator, name: str, ttl_s: float) -> None:
        self._owner = owner
        self._name = name
        self._ttl = ttl_s
        self._token = uuid.uuid4().hex

    def acquire(self) -> bool:
        with self._owner._mutex:
            holder = self._owner._locks.get(self._name)
            now = time.monotonic()
            if holder is None or holder[1] < now or holder[0] == self._token:
                self._owner._locks[self._name] = (self._token, now + self._ttl)
                return True
            return False

    def renew(self) -> bool:
        with self._owner._mutex:
            holder = self._owner._locks.get(self._name)
            if holder is None or holder[0] != self._token or holder[1] < time.monotonic():
                return False
            self._owner._locks[self._name] = (self._token, time.monotonic() + self._ttl)
            return True

    def release(self) -> None:
        with self._owner._mutex:
            holder = self._owner._locks.get(self._name)
            if holder is not None and holder[0] == self._token:
                del self._owner._locks[self._name]


class MemoryCoordinator(Coordinator):
    """Thread-safe coordination within one process."""

    name = "in-process"

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._conditions: dict[str, threading.Condition] = {}
        self._pending: dict[str, bool] = {}
        self._generations: dict[str, int] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._cache: dict[str, tuple[str, float]] = {}

    def seen(self, key: str) -> bool:
        with self._mutex:
            expiry = self._seen.get(key)
            return expiry is not None and expiry > time.monotonic()

    def remember(self, key: str, ttl_s: int) -> None:
        with self._mutex:
            self._seen[key] = time.monotonic() + ttl_s
            self._seen.move_to_end(key)
            while len(self._seen) > _MAX_REMEMBERED:
                self._seen.popitem(last=False)

    def _condition(self, channel: str) -> threading.Condition:
        with self._mutex:
            cond = self._conditions.get(channel)
            if cond is None:
                cond = self._conditions[channel] = threading.Condition()
                self._pending[channel] = False
                self._generations[channel] = 0
            return cond

    def wake(self, channel: str) -> None:
        cond = self._condition(channel)
        with cond:
            self._pending[channel] = True
            self._generations[channel] += 1
            cond.notify_all()

    def wait(self, channel: str, timeout_s: float) -> bool:
        cond = self._condition(channel)
        with cond:
            # A wake-up that came while nobody waited is kept, so it is never lost between polls;
            # one that comes while several wait wakes them all.
            if self._pending[channel]:
                self._pending[channel] = False
                return True
            start = self._generations[channel]
            woken = cond.wait_for(lambda: self._generations[channel] != start, timeout=timeout_s)
            if woken:
                self._pending[channel] = False
            return woken

    def lock(self, name: str, ttl_s: float) -> Lock:
        return _MemoryLock(self, name, ttl_s)

    def take_token(self, bucket: str, rate_per_s: float, capacity: int) -> float:
        with self._mutex:
            now = time.monotonic()
            tokens, updated = self._buckets.get(bucket, (float(capacity), now))
            tokens = min(float(capacity), tokens + (now - updated) * rate_per_s)
            if tokens >= 1.0:
                self._buckets[bucket] = (tokens - 1.0, now)
                return 0.0
            self._buckets[bucket] = (tokens, now)
            return (1.0 - tokens) / rate_per_s

    def take_tokens(self, bucket: str, rate_per_s: float, capacity: int, count: int) -> tuple[int, float]:
        with self._mutex:
            now = time.monotonic()
            tokens, updated = self._buckets.get(bucket, (float(capacity), now))
            tokens = min(float(capacity), tokens + (now - updated) * rate_per_s)
            granted = max(0, min(count, int(tokens)))
            tokens -= granted
            self._buckets[bucket] = (tokens, now)
            return granted, 0.0 if granted == count else (1.0 - tokens) / rate_per_s

    def cache_get(self, key: str) -> str | None:
        with self._mutex:
            item = self._cache.get(key)
            if item is None or item[1] < time.monotonic():
                return None
            return item[0]

    def cache_set(self, key: str, value: str, ttl_s: int) -> None:
        with self._mutex:
            self._cache[key] = (value, time.monotonic() + ttl_s)

    def cache_delete(self, key: str) -> None:
        with self._mutex:
            self._cache.pop(key, None)

    def ping(self) -> None:
        return None
