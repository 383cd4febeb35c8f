"""Redis-backed coordination shared by every web, worker and scheduler replica."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from bot.coordination.base import Coordinator, Lock

# Atomic token bucket: KEYS[1]=bucket, ARGV=rate, capacity, now. Returns wait in ms (0 = granted).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 't', tokens, 'u', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return wait
"""
# The same bucket, taking up to ARGV[4] tokens in one call (a batch of sends). Returns {granted, wait ms}.
_TOKEN_BUCKET_N = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - updated) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < want then wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 't', tokens, 'u', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {granted, wait}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _RedisLock(Lock):
    def __init__(self, client: redis.Redis, key: str, ttl_s: float) -> None:
        self._client = client
        self._key = key
        self._ttl_ms = int(ttl_s * 1000)
        self._token = uuid.uuid4().hex

    def acquire(self) -> bool:
        if self._client.set(self._key, self._token, nx=True, px=self._ttl_ms):
            return True
        return self._client.get(self._key) == self._token

    def renew(self) -> bool:
        return bool(self._client.eval(_RENEW, 1, self._key, self._token, self._ttl_ms))

    def release(self) -> None:
        self._client.eval(_RELEASE, 1, self._key, self._token)


class RedisCoordinator(Coordinator):
    """Coordination through one Redis server; keys live under a namespace prefix."""

    name = "redis"

    def __init__(self, url: str, namespace: str = "wecom-bot") -> None:
        self._client: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        self._ns = namespace
        self._bucket = self._client.register_script(_TOKEN_BUCKET)
        self._bucket_n = self._client.register_script(_TOKEN_BUCKET_N)
        self._pubsubs: dict[str, Any] = {}

    def _key(self, *parts: str) -> str:
        return ":".join((self._ns, *parts))

    def seen(self, key: str) -> bool:
        return bool(self._client.exists(self._key("seen", key)))

    def remember(self, key: str, ttl_s: int) -> None:
        self._client.set(self._key("seen", key), "1", ex=ttl_s)

    def wake(self, channel: str) -> None:
        self._client.publish(self._key("wake", channel), "1")

    def wait(self, channel: str, timeout_s: float) -> bool:
        pubsub = self._pubsubs.get(channel)
        if pubsub is None:
            pubsub = self._subscribe(channel)
        deadline = time.monotonic() + timeout_s
        woken = False
        while True:
            remaining = deadline - time.monotonic()
            message = pubsub.get_message(timeout=max(0.0, remaining) if not woken else 0.0)
            if message is None:
                return woken
            if message.get("type") == "message":
                woken = True  # keep draining so one wake-up is not counted twice

    def _subscribe(self, channel: str) -> Any:
        """Subscribe and wait for Redis to confirm, so a wake-up published right after is not missed."""
        pubsub = self._client.pubsub()
        pubsub.subscribe(self._key("wake", channel))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "subscribe":
                break
        self._pubsubs[channel] = pubsub
        return pubsub

    def lock(self, name: str, ttl_s: float) -> Lock:
        return _RedisLock(self._client, self._key("lock", name), ttl_s)

    def take_token(self, bucket: str, rate_per_s: float, capacity: int) -> float:
        wait_ms = int(
            self._bucket(keys=[self._key("bucket", bucket)], args=[rate_per_s, capacity, time.time()])
        )
        return wait_ms / 1000.0

    def take_tokens(self, bucket: str, rate_per_s: float, capacity: int, count: int) -> tuple[int, float]:
        granted, wait_ms = self._bucket_n(
            keys=[self._key("bucket", bucket)], args=[rate_per_s, capacity, time.time(), count]
        )
        return int(granted), int(wait_ms) / 1000.0

    def cache_get(self, key: str) -> str | None:
        value = self._client.get(self._key("cache", key))
        return None if value is None else str(value)

    def cache_set(self, key: str, value: str, ttl_s: int) -> None:
        self._client.set(self._key("cache", key), value, ex=ttl_s)

    def cache_delete(self, key: str) -> None:
        self._client.delete(self._key("cache", key))

    def ping(self) -> None:
        self._client.ping()

    def close(self) -> None:
        for pubsub in self._pubsubs.values():
            pubsub.close()
        self._pubsubs.clear()
        self._client.close()
