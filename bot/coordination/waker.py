"""Coalesces wake-ups: under a burst one publish per short window instead of one per event."""

from __future__ import annotations

import contextlib
import threading
import time

from bot.coordination.base import Coordinator


class CoalescingWaker:
    """Publishes a wake-up at most once per `window_s`, always including a trailing one.

    A worker woken by the first publish of a burst drains what is committed by then; the trailing
    publish after the window covers everything committed later, so no event waits for a poll.
    """

    def __init__(self, coordinator: Coordinator, channel: str, window_s: float = 0.002) -> None:
        self._coordinator = coordinator
        self._channel = channel
        self._window_s = window_s
        self._requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def wake(self) -> None:
        """Ask for a wake-up; returns at once."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:  # started lazily: nothing runs at import or app creation
                    thread = threading.Thread(target=self._run, name=f"waker-{self._channel}", daemon=True)
                    thread.start()
                    self._thread = thread
        self._requested.set()

    def _run(self) -> None:
        while True:
            self._requested.wait()
            self._requested.clear()
            # A lost wake-up only delays work until the workers' next poll.
            with contextlib.suppress(Exception):
                self._coordinator.wake(self._channel)
            time.sleep(self._window_s)  # the coalescing window
