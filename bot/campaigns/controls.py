"""Operator controls over sending: the global kill switch and campaign pauses, honoured before each send."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.db import Database
from models.audit import AuditEntry
from models.base import utcnow
from models.campaigns import Campaign, CampaignRun, CampaignStatus, Switch

SENDING = "sending"  # the kill switch: on = nothing is sent to anyone
MAX_REASON_LENGTH = 512
# How long a process may act on a remembered answer: the switch stops sends within this delay.
SWITCH_CACHE_S = 1.0
# How long a message of a paused campaign waits before it is looked at again.
CAMPAIGN_HOLD_S = 60.0


class ControlError(ValueError):
    """A control cannot be changed as asked; the message says why.

    `code` names the refusal and `params` the values its message mentions, so the console can say it
    in the reader's language; the English message stays for the CLI and logs.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class SwitchState:
    """A switch as last set: on or off, why, by whom and when (never set = off)."""

    key: str
    on: bool
    reason: str = ""
    changed_by: str = ""
    changed_at: datetime | None = None
    changed: bool = False  # whether the call that returned this state changed it


def _state(row: Switch | None, key: str, changed: bool = False) -> SwitchState:
    if row is None:
        return SwitchState(key, False)
    return SwitchState(key, row.on, row.reason, row.changed_by, row.changed_at, changed)


def switch_state(session: Session, key: str = SENDING) -> SwitchState:
    """The switch's current state; a switch never set is off."""
    return _state(session.get(Switch, key), key)


def sending_stopped(session: Session) -> bool:
    """Whether the global kill switch is on (checked before a run is planned and before each claim)."""
    return bool(session.scalar(select(Switch.on).where(Switch.key == SENDING)))


def run_hold(session: Session, run_id: int | None) -> str | None:
    """Why the messages of a campaign run must wait now (its campaign is paused or archived), if so."""
    if run_id is None:
        return None
    status = session.scalar(
        select(Campaign.status)
        .join(CampaignRun, CampaignRun.campaign_id == Campaign.id)
        .where(CampaignRun.id == run_id)
    )
    return None if status in (None, CampaignStatus.ACTIVE) else f"campaign {status}"


def _set(session: Session, on: bool, actor: str, reason: str, now: datetime | None) -> SwitchState:
    actor, reason = actor.strip(), reason.strip()
    if not actor:
        raise ControlError("actor: name who changes the switch", "switch.actor")
    if on and not reason:
        raise ControlError("reason: say why sending is stopped", "switch.reason_missing")
    if len(reason) > MAX_REASON_LENGTH:
        raise ControlError(
            f"reason: at most {MAX_REASON_LENGTH} characters", "switch.reason_length", max=MAX_REASON_LENGTH
        )
    row = session.scalars(select(Switch).where(Switch.key == SENDING).with_for_update()).first()
    if (row.on if row is not None else False) == on:
        return _state(row, SENDING)
    at = now or utcnow()
    if row is None:
        row = Switch(key=SENDING, on=on, reason=reason, changed_by=actor, changed_at=at)
        session.add(row)
    else:
        row.on, row.reason, row.changed_by, row.changed_at = on, reason, actor, at
    action = "sending.stop" if on else "sending.resume"
    session.add(
        AuditEntry(at=at, actor=actor, action=action, target=f"switch:{SENDING}", detail={"reason": reason})
    )
    session.flush()
    return _state(row, SENDING, changed=True)


def stop_sending(session: Session, actor: str, reason: str, now: datetime | None = None) -> SwitchState:
    """Turn the kill switch on: no run is planned and no delivery is claimed until it is turned off."""
    return _set(session, True, actor, reason, now)


def resume_sending(
    session: Session, actor: str, reason: str = "", now: datetime | None = None
) -> SwitchState:
    """Turn the kill switch off; queued deliveries go out again from the next claim round."""
    return _set(session, False, actor, reason, now)


class KillSwitch:
    """The kill switch as a process sees it: read from the database at most once per `ttl` seconds."""

    def __init__(
        self, db: Database, ttl: float = SWITCH_CACHE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.ttl = min(ttl, SWITCH_CACHE_S)
        self.clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._on = False

    def on(self) -> bool:
        """Whether sending is stopped, as of at most `ttl` seconds ago."""
        with self._lock:
            now = self.clock()
            if self._checked_at is None or now - self._checked_at >= self.ttl:
                with self.db.read() as session:
                    self._on = sending_stopped(session)
                self._checked_at = now
            return self._on
