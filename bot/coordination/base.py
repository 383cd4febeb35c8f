"""The coordination interface shared by the Redis and in-process implementations."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Lock(ABC):
    """A named lock with an expiry that its holder renews; lost when the holder dies."""

    @abstractmethod
    def acquire(self) -> bool:
        """Try once to take the lock; return whether this holder now owns it."""

    @abstractmethod
    def renew(self) -> bool:
        """Extend the expiry; return False when the lock was lost to someone else."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up if this holder still owns it."""


class Coordinator(ABC):
    """Small shared-state services the web, worker and scheduler processes agree through."""

    name: str = "abstract"

    @abstractmethod
    def seen(self, key: str) -> bool:
        """Return True when `key` was remembered recently (dedupe fast path, never authoritative)."""

    @abstractmethod
    def remember(self, key: str, ttl_s: int) -> None:
        """Remember `key` for `ttl_s` seconds."""

    @abstractmethod
    def wake(self, channel: str) -> None:
        """Wake every process waiting on `channel`."""

    @abstractmethod
    def wait(self, channel: str, timeout_s: float) -> bool:
        """Block until `channel` is woken or the timeout passes; return whether it was woken."""

    @abstractmethod
    def lock(self, name: str, ttl_s: float) -> Lock:
        """Return a lock object for `name` with expiry `ttl_s` (not yet acquired)."""

    @abstractmethod
    def take_token(self, bucket: str, rate_per_s: float, capacity: int) -> float:
        """Take one token from a shared token bucket; return 0 when granted, else seconds to wait."""

    def take_tokens(self, bucket: str, rate_per_s: float, capacity: int, count: int) -> tuple[int, float]:
        """Take up to `count` tokens at once; return how many were granted and, if fewer, seconds to wait.

        This default takes them one by one; the implementations take a batch atomically.
        """
        for granted in range(count):
            wait = self.take_token(bucket, rate_per_s, capacity)
            if wait > 0:
                return granted, wait
        return count, 0.0

    @abstractmethod
    def cache_get(self, key: str) -> str | None:
        """Return a cached string value, or None."""

    @abstractmethod
    def cache_set(self, key: str, value: str, ttl_s: int) -> None:
        """Cache a string value for `ttl_s` seconds."""

    @abstractmethod
    def cache_delete(self, key: str) -> None:
        """Drop a cached value."""

    @abstractmethod
    def ping(self) -> None:
        """Raise when the backing service cannot be reached."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held by the coordinator."""
