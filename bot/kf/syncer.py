"""Pulls kf messages with sync_msg into the inbox: one account at a time, cursor saved per page."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database
from bot.ingest import WAKE_CHANNEL as INBOX_CHANNEL
from bot.kf import KF_WAKE_CHANNEL
from bot.wecom.client import WeComClient
from bot.wecom.errors import WeComAPIError
from bot.wecom.events import KF_MARKER, parse_kf_message
from bot.worker import backoff_delay
from models.base import utcnow
from models.bulk import conflict_insert
from models.inbox import InboundEvent
from models.kf import KfCursor

log = logging.getLogger("wecom_bot.kf.syncer")

TOKEN_EXPIRED = 95007
MAX_PAGES_PER_CLAIM = 50
PAGE_LIMIT = 1000
LEASE_S = 60.0
POLL_S = 30.0


@dataclass(frozen=True)
class Claim:
    """One kf account leased for a pull, with what the pull starts from."""

    open_kfid: str
    cursor: str
    token: str
    requested_at: datetime | None


@dataclass(frozen=True)
class SyncOutcome:
    """What one pull of one account did."""

    open_kfid: str
    status: str  # done | more | failed | lost-lease
    pages: int = 0
    stored: int = 0
    seen: int = 0
    error: str | None = None


def insert_pulled(session: Session, corp_id: str, open_kfid: str, message: dict[str, Any]) -> bool:
    """Store one pulled message as an inbox event unless it is already there; return whether it was new."""
    payload = {**message, KF_MARKER: corp_id}
    payload.setdefault("open_kfid", open_kfid)
    event = parse_kf_message(payload)
    table = cast(Table, InboundEvent.__table__)
    stmt = (
        conflict_insert(session, table)
        .values(
            dedupe_key=event.dedupe_key,
            kind=event.kind,
            corp_id=corp_id,
            subject=event.subject,
            payload=payload,
            raw_xml=json.dumps(message, ensure_ascii=False),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(table.c.id)
    )
    return session.execute(stmt).first() is not None


class KfSyncer:
    """Claims kf accounts with a pending pull and follows sync_msg pages until has_more is 0."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        client: WeComClient,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        max_pages: int = MAX_PAGES_PER_CLAIM,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.settings = settings
        self.db = db
        self.coordinator = coordinator
        self.client = client
        self.worker_id = worker_id or f"kf-sync:{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.max_pages = max_pages
        self.page_limit = page_limit

    def claim(self) -> Claim | None:
        """Lease one account with a pending pull; a conditional update makes two syncers never share one."""
        now = self.clock()
        t = KfCursor
        free = or_(t.lease_until.is_(None), t.lease_until < now)
        with self.db.transaction() as session:
            stmt = select(t.open_kfid).where(t.requested_at.is_not(None), free).order_by(t.requested_at)
            candidates = list(session.scalars(stmt.limit(5).with_for_update(skip_locked=True)))
            for open_kfid in candidates:
                taken = session.execute(
                    update(t)
                    .where(t.open_kfid == open_kfid, t.requested_at.is_not(None), free)
                    .values(locked_by=self.worker_id, lease_until=now + timedelta(seconds=LEASE_S))
                )
                if getattr(taken, "rowcount", 0) == 1:
                    row = session.get(t, open_kfid)
                    assert row is not None
                    return Claim(open_kfid, row.cursor, row.token, row.requested_at)
        return None

    def pull(self, claim: Claim) -> SyncOutcome:
        """Follow the account's pages; each page's messages and next cursor commit together."""
        cursor, token = claim.cursor, claim.token
        pages = stored = seen = 0
        has_more = True
        while has_more and pages < self.max_pages:
            body: dict[str, Any] = {"cursor": cursor, "limit": self.page_limit, "open_kfid": claim.open_kfid}
            if token:
                body["token"] = token
            try:
                result = self.client.post("kf/sync_msg", body, app="kf")
            except WeComAPIError as exc:
                if exc.errcode == TOKEN_EXPIRED and token:
                    log.info("kf %s: callback token expired; pulling without it", claim.open_kfid)
                    token = ""
                    continue
                return self._fail(claim, f"{exc.errcode}: {exc.errmsg}", pages, stored, seen)
            pages += 1
            messages = [m for m in result.get("msg_list") or [] if isinstance(m, dict)]
            cursor = str(result.get("next_cursor") or cursor)
            has_more = bool(result.get("has_more"))
            new = self._save_page(claim, messages, cursor, token)
            if new is None:
                return SyncOutcome(claim.open_kfid, "lost-lease", pages, stored, seen)
            stored, seen = stored + new, seen + len(messages)
            if new:
                self.coordinator.wake(INBOX_CHANNEL)
        return self._finish(claim, token, done=not has_more, pages=pages, stored=stored, seen=seen)

    def _owned(self, session: Session, open_kfid: str) -> KfCursor | None:
        row = session.get(KfCursor, open_kfid, with_for_update=True)
        return row if row is not None and row.locked_by == self.worker_id else None

    def _save_page(self, claim: Claim, messages: list[dict[str, Any]], cursor: str, token: str) -> int | None:
        now = self.clock()
        with self.db.transaction() as session:
            row = self._owned(session, claim.open_kfid)
            if row is None:
                return None
            new = sum(
                insert_pulled(session, self.settings.wecom.corp_id, claim.open_kfid, m) for m in messages
            )
            row.cursor = cursor
            row.pulled += len(messages)
            row.lease_until = now + timedelta(seconds=LEASE_S)
            if not token and row.token == claim.token:
                row.token = ""  # expired: later pulls go without it until a callback brings a new one
        return new

    def _finish(
        self, claim: Claim, token: str, *, done: bool, pages: int, stored: int, seen: int
    ) -> SyncOutcome:
        now = self.clock()
        with self.db.transaction() as session:
            row = self._owned(session, claim.open_kfid)
            if row is None:
                return SyncOutcome(claim.open_kfid, "lost-lease", pages, stored, seen)
            # A callback that arrived during the pull moved requested_at: pull once more.
            if done and row.requested_at == claim.requested_at:
                row.requested_at = None
            row.locked_by, row.lease_until = None, None
            row.last_synced_at, row.failures, row.last_error = now, 0, None
            again = row.requested_at is not None
        if again:
            self.coordinator.wake(KF_WAKE_CHANNEL)
        return SyncOutcome(claim.open_kfid, "done" if done else "more", pages, stored, seen)

    def _fail(self, claim: Claim, error: str, pages: int, stored: int, seen: int) -> SyncOutcome:
        now = self.clock()
        log.warning("kf %s: sync_msg failed: %s", claim.open_kfid, error)
        with self.db.transaction() as session:
            row = self._owned(session, claim.open_kfid)
            if row is None:
                return SyncOutcome(claim.open_kfid, "lost-lease", pages, stored, seen, error)
            row.failures += 1
            row.last_error = error[:2000]
            row.locked_by = None
            delay = backoff_delay(
                row.failures, self.settings.worker.backoff_base_s, self.settings.worker.backoff_max_s
            )
            row.lease_until = now + timedelta(seconds=delay)  # not claimable before then
        return SyncOutcome(claim.open_kfid, "failed", pages, stored, seen, error)

    def run_once(self) -> list[SyncOutcome]:
        """Pull every account that has a pending sync and is free now."""
        outcomes: list[SyncOutcome] = []
        while (claim := self.claim()) is not None:
            outcomes.append(self.pull(claim))
        return outcomes

    def drain(self, max_rounds: int = 20) -> list[SyncOutcome]:
        """Pull until nothing is pending (commands and tests)."""
        outcomes: list[SyncOutcome] = []
        for _ in range(max_rounds):
            batch = self.run_once()
            if not batch:
                break
            outcomes.extend(batch)
        return outcomes

    def pending(self) -> int:
        """How many accounts wait for a pull (for health checks and tests)."""
        with self.db.transaction() as session:
            stmt = select(KfCursor.open_kfid).where(and_(KfCursor.requested_at.is_not(None)))
            return len(list(session.scalars(stmt)))

    def run_forever(self, stop: threading.Event) -> None:
        """Pull when woken on channel "kf", and every POLL_S seconds as a safety net."""
        log.info("kf syncer %s started", self.worker_id)
        try:
            self.coordinator.wait(KF_WAKE_CHANNEL, 0)  # subscribe before the first round
        except Exception:
            log.exception("kf wake-up channel unavailable; polling")
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("kf sync round failed")
            waited = 0.0
            while not stop.is_set() and waited < POLL_S:
                try:
                    if self.coordinator.wait(KF_WAKE_CHANNEL, 0.5):
                        break
                except Exception:
                    stop.wait(0.5)
                waited += 0.5
        log.info("kf syncer %s stopped", self.worker_id)
