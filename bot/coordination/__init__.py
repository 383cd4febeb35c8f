"""Cross-process coordination: dedupe fast path, locks, rate limits, wake-ups and a shared cache.

Redis backs it when `[redis] url` is set; otherwise an in-process implementation serves the
embedded single-process deployment. Both honour the same small interface.
"""

from __future__ import annotations

from bot.coordination.base import Coordinator, Lock
from bot.coordination.memory import MemoryCoordinator


def make_coordinator(redis_url: str, namespace: str = "wecom-bot") -> Coordinator:
    """Return the Redis coordinator when a URL is configured, else the in-process one."""
    if redis_url:
        from bot.coordination.redis import RedisCoordinator

        return RedisCoordinator(redis_url, namespace=namespace)
    return MemoryCoordinator()


__all__ = ["Coordinator", "Lock", "MemoryCoordinator", "make_coordinator"]
