"""The base the corp's feature mixins build on: clock, lock, callback outbox, members and customers.

`SimulatedCorp` implements the clock and endpoint registration; the mixins (contacts, kf) only
declare what they use here, so each feature module stays readable on its own.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.wecom.simulator.api import ApiCall, ApiError, Handler, SimulationError
from bot.wecom.simulator.config import SimulatorConfig


@dataclass(frozen=True)
class Outgoing:
    """A callback waiting for delivery: its plaintext XML and whether the envelope names the app."""

    xml: str
    with_agent_id: bool


@dataclass
class Customer:
    """A WeChat user known to the corp (one id space for customer contact and kf)."""

    external_userid: str
    name: str
    avatar: str
    type: int = 1
    gender: int = 0
    unionid: str = ""
    corp_name: str = ""


def new_id(prefix: str, length: int = 32) -> str:
    """A random id in WeCom's style: a fixed prefix, then URL-safe characters."""
    body = secrets.token_urlsafe(length)
    return (prefix + body.replace("-", "A").replace("_", "B"))[:length]


class CorpParts:
    """State and helpers shared by the feature mixins; `SimulatedCorp` provides the clock and dispatch."""

    config: SimulatorConfig
    _lock: threading.RLock
    _users: dict[str, str]

    def now(self) -> float:
        """The simulator's monotonic clock (implemented by SimulatedCorp)."""
        raise NotImplementedError

    def wall_time(self) -> float:
        """Unix time as the simulated corp sees it (implemented by SimulatedCorp)."""
        raise NotImplementedError

    def register(
        self,
        api: str,
        handler: Handler,
        *,
        methods: tuple[str, ...] = ("POST",),
        needs_token: bool = True,
        metered: bool = True,
    ) -> None:
        """Add an endpoint (implemented by SimulatedCorp)."""
        raise NotImplementedError

    # ---- callbacks ----------------------------------------------------------------------------

    def _init_parts(self) -> None:
        self._outbox: deque[Outgoing] = deque()
        self._emitted: list[str] = []
        self._deliver_lock = threading.Lock()
        self._customers: dict[str, Customer] = {}
        self._cursors: dict[str, tuple[str, Any]] = {}

    def _emit(self, xml: str, *, with_agent_id: bool = True) -> None:
        # Called with the lock held; `_flush` delivers once the lock is released, so a bot that
        # calls the API while handling the callback never waits on the simulator's own lock.
        self._outbox.append(Outgoing(xml, with_agent_id))
        self._emitted.append(xml)

    def _flush(self) -> None:
        """Deliver queued callbacks in order; whoever holds the delivery lock drains the queue."""
        while True:
            if not self._deliver_lock.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        item = self._outbox.popleft()
                    self._deliver(item)
            finally:
                self._deliver_lock.release()
            with self._lock:
                if not self._outbox:
                    return

    def _deliver(self, item: Outgoing) -> None:
        """Deliver one callback; the in-memory corp only records it (see `emitted_callbacks`)."""

    @property
    def emitted_callbacks(self) -> list[str]:
        """The plaintext XML of every callback the simulated clients caused, oldest first."""
        with self._lock:
            return list(self._emitted)

    # ---- members, customers, permissions -----------------------------------------------------

    def _member(self, userid: str) -> str | None:
        return self._users.get(userid.lower())

    def _member_or_fail(self, userid: str) -> str:
        member = self._member(userid)
        if member is None:
            raise SimulationError(f"{userid!r} is not a member of the simulated corp")
        return member

    def _inactive(self, userid: str) -> bool:
        return userid.lower() in {u.lower() for u in self.config.inactive_users}

    def _customer(self, external_userid: str | None, **profile: Any) -> Customer:
        if external_userid is None:
            external_userid = new_id("wm")
        customer = self._customers.get(external_userid)
        if customer is None:
            name = str(profile.pop("name", None) or "微信用户")
            avatar = f"http://wx.qlogo.cn/mmhead/{secrets.token_hex(16)}/0"
            customer = Customer(external_userid, name, avatar, **profile)
            self._customers[external_userid] = customer
        return customer

    @staticmethod
    def _require_app(call: ApiCall, allowed: Sequence[str]) -> str:
        app = call.app or ""
        if app not in allowed:
            raise ApiError(48002, f"app {app!r} is not allowed to call {call.api}")
        return app

    # ---- opaque cursors ---------------------------------------------------------------------------

    def _new_cursor(self, kind: str, position: Any) -> str:
        cursor = secrets.token_urlsafe(18)
        self._cursors[cursor] = (kind, position)
        return cursor

    def _read_cursor(self, kind: str, cursor: str) -> Any:
        entry = self._cursors.get(cursor)
        if entry is None or entry[0] != kind:
            # 50100 is the global "分页查询的游标无效" (invalid paging cursor).
            raise ApiError(50100, "cursor is invalid")
        return entry[1]
