"""Leader election over the coordinator's expiring lock: one scheduler acts, the others stand by.

The holder renews the lock every `renew_s`; the lock expires `ttl_s` after the last renewal, so a
standby that keeps trying takes over at most about `ttl_s + renew_s` after the leader dies. The
leader counts its own lease from the moment it *sent* each renewal (taking the lock includes one),
which is no later than the moment the lock service restarted the expiry clock; it stops acting as
leader once that local lease (less a tenth of the TTL for clock-rate differences between hosts)
runs out, or at once when a renewal fails, so it never acts on a lock that may already belong to
someone else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bot.coordination.base import Coordinator

log = logging.getLogger("wecom_bot.scheduler.leader")

LOCK_NAME = "scheduler"


class Leadership:
    """One candidate's claim on a named leader lock: try_lead, renew periodically, release on stop."""

    def __init__(
        self,
        coordinator: Coordinator,
        ttl_s: float,
        name: str = LOCK_NAME,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s: must be positive")
        self.name = name
        self.ttl_s = ttl_s
        self._lock = coordinator.lock(name, ttl_s)
        self._monotonic = monotonic
        self._mutex = threading.Lock()
        self._holding = False  # we believe the lock is ours
        self._lease_until = 0.0  # local deadline, monotonic seconds

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads now: it holds the lock and its local lease has not run out."""
        return self._holding and self._monotonic() < self._lease_until

    def _grant(self, sent_at: float) -> None:
        self._holding = True
        self._lease_until = sent_at + self.ttl_s * 0.9

    def try_lead(self) -> bool:
        """Try once to take the lock; return whether this candidate now leads."""
        with self._mutex:
            if self.is_leader:
                return True
            try:
                if not self._lock.acquire():
                    return False
                # A lock still ours from before (say, after a failed renewal) keeps its old expiry:
                # renew it so the lease below is measured against an expiry set from now on.
                sent_at = self._monotonic()
                renewed = self._lock.renew()
            except Exception as exc:
                log.warning("leader lock %r: could not be tried: %s", self.name, exc)
                return False
            if renewed:
                self._grant(sent_at)
            return renewed

    def renew(self) -> bool:
        """Extend the lease; on any failure stop leading at once and return False."""
        with self._mutex:
            if not self._holding:
                return False
            if not self.is_leader:
                self._step_down("lease ran out before it was renewed")
                return False
            sent_at = self._monotonic()
            try:
                renewed = self._lock.renew()
            except Exception as exc:
                self._step_down(f"renewal failed: {exc}")
                return False
            if not renewed:
                self._step_down("lock taken by another scheduler")
                return False
            self._grant(sent_at)
            return True

    def release(self) -> None:
        """Give leadership up so a standby can take over without waiting for the lock to expire."""
        with self._mutex:
            if self._holding:
                self._holding = False
                self._lease_until = 0.0
                self._release_quietly()

    def _step_down(self, why: str) -> None:
        self._holding = False
        self._lease_until = 0.0
        log.warning("leader lock %r: stepping down: %s", self.name, why)
        self._release_quietly()

    def _release_quietly(self) -> None:
        try:
            self._lock.release()
        except Exception as exc:  # the lock expires on its own
            log.warning("leader lock %r: could not be released (it will expire): %s", self.name, exc)
