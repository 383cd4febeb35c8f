"""Sends queued deliveries through the WeCom API: rate-limited, outside any database transaction."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update

from bot import metrics
from bot.campaigns.controls import CAMPAIGN_HOLD_S, KillSwitch, run_hold
from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database
from bot.delivery.outbox import OUTBOX_CHANNEL, message_identity
from bot.wecom.client import WeComClient
from bot.wecom.errors import ErrorKind, WeComAPIError
from bot.worker import backoff_delay
from models.alerts import Alert
from models.base import utcnow
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.leads import Lead
from scripts_library import ledger

log = logging.getLogger("wecom_bot.dispatcher")

# Per corp per API WeCom allows 10,000 calls a minute. Any 60 s window of this bucket holds at most
# burst + 60 × rate = 9,000 calls, across all replicas, and a burst of adds is not throttled.
API_RATE_PER_S = 100.0
API_BURST = 3000
# Per member WeCom silently drops app messages beyond 30 a minute: never get near it.
MEMBER_RATE_PER_S = 20 / 60
MEMBER_BURST = 20
MAX_TRANSIENT_ATTEMPTS = 5
FINISH_BATCH = 100  # outcomes recorded per transaction by the finisher
# Pauses between attempts to record a batch of outcomes; far shorter than a lease.
FINISH_RETRY_S = (0.2, 1.0, 3.0)
KILL_SWITCH_RETRY_S = 5.0
RATE_LIMITER_RETRY_S = 5.0  # coordination (Redis) unreachable: try again shortly
OPT_OUT_CONFIRMATION = "unsubscribe_confirm"


@dataclass(frozen=True)
class Route:
    """Which API and which app's secret a channel uses."""

    api: str
    app: str


ROUTES = {
    Channel.CONTACT_WELCOME: Route("externalcontact/send_welcome_msg", "contact"),
    Channel.KF_WELCOME: Route("kf/send_msg_on_event", "kf"),
    Channel.KF_TEXT: Route("kf/send_msg", "kf"),
    Channel.APP_MESSAGE: Route("message/send", "agent"),
}


def build_request(row: Delivery, agent_id: int) -> dict[str, Any]:
    """The JSON body for the channel's API, from the delivery row."""
    text = {"content": row.text}
    p = row.params
    if row.channel == Channel.CONTACT_WELCOME:
        return {"welcome_code": p["welcome_code"], "text": text}
    if row.channel == Channel.KF_WELCOME:
        return {"code": p["code"], "msgid": f"d{row.id}", "msgtype": "text", "text": text}
    if row.channel == Channel.KF_TEXT:
        return {
            "touser": row.recipient,
            "open_kfid": p["open_kfid"],
            "msgid": f"d{row.id}",
            "msgtype": "text",
            "text": text,
        }
    if row.channel == Channel.APP_MESSAGE:
        if "template_card" in p:
            card = p["template_card"]
            return {
                "touser": row.recipient,
                "agentid": agent_id,
                "msgtype": "template_card",
                "template_card": card,
            }
        return {"touser": row.recipient, "agentid": agent_id, "msgtype": "text", "text": text}
    raise ValueError(f"unknown channel {row.channel!r}")


def customer_refusal(session: Any, row: Delivery) -> str | None:
    """Why a customer message must not go out now (opted out, or no member connected), if so.

    Checked at send time as well as when queued, so an opt-out between the two is honoured.
    """
    if row.channel == Channel.APP_MESSAGE:
        return None
    lead = session.scalars(select(Lead).where(Lead.external_user_id == row.recipient)).first()
    if lead is None:
        return None
    if lead.opted_out and row.script_key != OPT_OUT_CONFIRMATION:
        return "customer opted out"
    if not lead.reachable and row.channel == Channel.CONTACT_WELCOME:
        return "customer removed the member"
    return None


@dataclass(frozen=True)
class _Result:
    """What one attempt came to, before it is recorded."""

    row: Delivery
    status: str
    retry_in: float | None = None
    wecom_id: str = ""
    errcode: int | None = None
    error: str | None = None
    count_attempt: bool = True
    response_code: str | None = None


@dataclass(frozen=True)
class SendOutcome:
    """What happened to one claimed delivery."""

    delivery_id: int
    status: str
    errcode: int | None = None


class DeliveryDispatcher:
    """Claims due deliveries, sends each once, and records the outcome with a ledger entry."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        client: WeComClient,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.coordinator = coordinator
        self.client = client
        self.worker_id = worker_id or f"dispatch:{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.kill_switch = KillSwitch(db)
        # API calls for messages leased at queue time run side by side (they wait on the network), and
        # their outcomes are recorded together by one finisher thread.
        self._pool = ThreadPoolExecutor(settings.worker.send_concurrency, thread_name_prefix="send")
        self._results: queue.Queue[_Result] = queue.Queue()
        self._in_flight = 0
        self._in_flight_lock = threading.Condition()
        self._finisher: threading.Thread | None = None
        self._closing = threading.Event()

    def claim(self, limit: int = 20) -> list[int]:
        """Lease due deliveries, most urgent first; a lapsed `sending` lease is flagged, not resent.

        Nothing is claimed while the kill switch is on; mass-send recipients are sent by their task.
        """
        if self.kill_switch.on():
            return []
        now = self.clock()
        t = Delivery
        with self.db.transaction() as session:
            lapsed = list(
                session.scalars(
                    select(t)
                    .where(t.status == DeliveryStatus.SENDING, t.lease_until < now)
                    .with_for_update(skip_locked=True)
                )
            )
            for row in lapsed:
                self._flag_unknown(session, row, now)
            due = and_(
                t.status == DeliveryStatus.QUEUED,
                t.next_attempt_at <= now,
                t.channel != Channel.MASS_TEMPLATE,
            )
            stmt = select(t.id).where(due).order_by(t.priority, t.next_attempt_at, t.id).limit(limit)
            ids = list(session.scalars(stmt.with_for_update(skip_locked=True)))
            if ids:
                session.execute(
                    update(t)
                    .where(t.id.in_(ids))
                    .values(
                        status=DeliveryStatus.SENDING,
                        locked_by=self.worker_id,
                        lease_until=now + timedelta(seconds=self.settings.worker.lease_s),
                        attempts=t.attempts + 1,
                    )
                )
        return ids

    def _flag_unknown(self, session: Any, row: Delivery, now: datetime) -> None:
        # The process died during the API call: WeCom may or may not have delivered it. Sending
        # again could double a customer message, so a person decides.
        row.status = DeliveryStatus.UNKNOWN
        row.error = "sender stopped during the API call; delivery not confirmed"
        row.lease_until = None
        metrics.delivery_outcome(session, row.channel, DeliveryStatus.UNKNOWN)
        session.add(
            Alert(
                raised_at=now,
                kind="delivery.unknown",
                severity="warning",
                audience="operator",
                message=f"delivery {row.id} to {row.recipient} ({row.channel}) may or may not have been sent",
                detail={"delivery": row.id},
            )
        )
        if row.ledger_seq is not None:
            ledger.append_outcome(
                session, row.ledger_seq, "unknown", detail=row.error, now=now, message=message_identity(row)
            )

    def send(self, delivery_id: int) -> SendOutcome:
        """Send one claimed delivery; the API call happens with no transaction open."""
        with self.db.transaction() as session:
            row = session.get(Delivery, delivery_id)
            if row is None or row.status != DeliveryStatus.SENDING or row.locked_by != self.worker_id:
                return SendOutcome(delivery_id, "lost-lease")
            refusal = customer_refusal(session, row)
            now = self.clock()
            late = row.deadline is not None and now >= row.deadline  # expired below, never held
            held = None if refusal or late else run_hold(session, (row.params or {}).get("run_id"))
            if held:  # a paused campaign's message waits, queued, until its campaign is resumed
                row.status, row.locked_by, row.lease_until = DeliveryStatus.QUEUED, None, None
                row.next_attempt_at = now + timedelta(seconds=CAMPAIGN_HOLD_S)
                row.attempts -= 1
                row.error = f"held: {held}"
                metrics.delivery_outcome(session, row.channel, "held")
                return SendOutcome(delivery_id, "held")
            session.expunge(row)
        result = _Result(row, DeliveryStatus.CANCELLED, error=refusal) if refusal else self._attempt(row)
        return self._finish([result])[0]

    def send_claimed(self, rows: Sequence[Delivery], wait: bool = True) -> list[SendOutcome]:
        """Send deliveries this sender leased when they were queued (refusals were checked then).

        The worker that queued them calls this right after its commit, with `wait=False`: the calls
        run on the send pool while the worker goes back to its inbox, and a finisher thread records
        the outcomes in batches. With `wait=True` the outcomes are recorded before returning.
        """
        granted = self._take_api_tokens(rows)
        if wait:
            return self._finish(list(self._pool.map(self._attempt, rows, granted)))
        with self._in_flight_lock:
            self._in_flight += len(rows)
            if self._finisher is None:
                self._finisher = threading.Thread(target=self._finish_loop, name="send-finisher", daemon=True)
                self._finisher.start()
        for row, has_token in zip(rows, granted, strict=True):
            self._pool.submit(self._attempt_later, row, has_token)
        return []

    def _take_api_tokens(self, rows: Sequence[Delivery]) -> list[bool]:
        """Take the API rate limiter's tokens for a batch in one call per API; which rows got one.

        A row without one takes its own in `_attempt` (and waits if the bucket is empty); if the
        limiter cannot be reached, every row finds that out there and is put back in the queue.
        """
        granted = [False] * len(rows)
        if len(rows) < 2:
            return granted
        by_api: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_api.setdefault(ROUTES[Channel(row.channel)].api, []).append(i)
        for api, indexes in by_api.items():
            try:
                count, _wait = self.coordinator.take_tokens(
                    f"wecom-api:{api}", API_RATE_PER_S, API_BURST, len(indexes)
                )
            except Exception as exc:
                log.warning("rate limiter unavailable for a batch of %d: %s", len(indexes), exc)
                continue
            for i in indexes[:count]:
                granted[i] = True
        return granted

    def _attempt_later(self, row: Delivery, has_token: bool) -> None:
        try:
            self._results.put(self._attempt(row, has_token))
        except Exception:
            # Whether WeCom got the call is not known: the lease lapses and a person is asked.
            log.exception("sending delivery %s failed unexpectedly", row.id)
            self._done(1)

    def _finish_loop(self) -> None:
        while not (self._closing.is_set() and self._results.empty()):
            try:
                batch = [self._results.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < FINISH_BATCH:
                try:
                    batch.append(self._results.get_nowait())
                except queue.Empty:
                    break
            try:
                self._record(batch)
            finally:
                self._done(len(batch))

    def _record(self, batch: Sequence[_Result]) -> None:
        """Record a batch of outcomes, trying again after a failure such as a deadlock or a dropped
        connection: WeCom's answers are known here, and a lapsed lease would turn them into `unknown`."""
        for delay in (*FINISH_RETRY_S, None):
            try:
                self._finish(batch)
                return
            except Exception:
                if delay is None:
                    log.exception("recording %d send outcomes failed; their leases will lapse", len(batch))
                    return
                log.warning("recording %d send outcomes failed; trying again in %.1f s", len(batch), delay,
                            exc_info=True)  # fmt: skip
                time.sleep(delay)  # the transaction rolled back: nothing of it was kept

    def _done(self, count: int) -> None:
        with self._in_flight_lock:
            self._in_flight -= count
            self._in_flight_lock.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every send handed over with `wait=False` is recorded; False on timeout."""
        with self._in_flight_lock:
            return self._in_flight_lock.wait_for(lambda: self._in_flight == 0, timeout_s)

    def close(self) -> None:
        """Finish the sends in hand, record them, and stop the send pool."""
        self.flush()
        self._closing.set()
        self._pool.shutdown(wait=True)
        if self._finisher is not None:
            self._finisher.join(timeout=10)

    def _attempt(self, row: Delivery, has_token: bool = False) -> _Result:
        """Check the deadline, the kill switch and the rate limits, then call the API; touches no database.

        `has_token`: the API's rate-limit token was already taken for this row (with its batch).
        """
        if self.kill_switch.on():
            return _Result(row, DeliveryStatus.QUEUED, retry_in=KILL_SWITCH_RETRY_S, count_attempt=False)
        if row.deadline is not None and self.clock() >= row.deadline:
            return _Result(row, DeliveryStatus.EXPIRED, error="deadline passed before sending")
        route = ROUTES[Channel(row.channel)]
        try:
            wait = 0.0
            if not has_token:
                wait = self.coordinator.take_token(f"wecom-api:{route.api}", API_RATE_PER_S, API_BURST)
            if row.channel == Channel.APP_MESSAGE and wait == 0:
                wait = self.coordinator.take_token(
                    f"wecom-member:{row.recipient}", MEMBER_RATE_PER_S, MEMBER_BURST
                )
        except Exception as exc:  # coordination unreachable: WeCom was not called, so waiting is safe
            log.warning("rate limiter unavailable for delivery %s: %s", row.id, exc)
            return _Result(
                row,
                DeliveryStatus.QUEUED,
                retry_in=RATE_LIMITER_RETRY_S,
                count_attempt=False,
                error=f"rate limiter unavailable: {exc}",
            )
        if wait > 0:
            return _Result(row, DeliveryStatus.QUEUED, retry_in=wait, count_attempt=False)
        try:
            result = self.client.post(
                route.api, build_request(row, self.settings.wecom.agent_id), app=route.app
            )
        except WeComAPIError as exc:
            return self._failed(row, exc)
        # A template card's code lets the card be updated later (single use), e.g. after a typed answer.
        code = result.get("response_code")
        return _Result(
            row, DeliveryStatus.SENT, wecom_id=str(result.get("msgid") or ""), response_code=code or None
        )

    def _failed(self, row: Delivery, exc: WeComAPIError) -> _Result:
        error = f"{exc.errcode}: {exc.errmsg}"
        if exc.kind == ErrorKind.RATE_LIMITED:
            retry_in = exc.retry_after_s or 60
            return _Result(row, DeliveryStatus.QUEUED, retry_in=retry_in, errcode=exc.errcode, error=error)
        if exc.retryable and row.attempts < MAX_TRANSIENT_ATTEMPTS:
            delay = backoff_delay(
                row.attempts, self.settings.worker.backoff_base_s, self.settings.worker.backoff_max_s
            )
            return _Result(row, DeliveryStatus.QUEUED, retry_in=delay, errcode=exc.errcode, error=error)
        log.warning("delivery %s failed permanently: %s", row.id, error)
        return _Result(row, DeliveryStatus.FAILED, errcode=exc.errcode, error=error)

    def _finish(self, results: Sequence[_Result]) -> list[SendOutcome]:
        """Record outcomes (and their ledger entries) in one transaction, if the leases still hold.

        The rows are read as columns and written with one UPDATE per shape of change (executemany),
        not loaded as objects: the finisher records a whole batch of sends at a time.
        """
        now = self.clock()
        outcomes: list[SendOutcome] = []
        records: list[ledger.OutcomeRecord] = []
        changes: list[dict[str, Any]] = []
        requeued = False
        t = Delivery
        with self.db.transaction() as session:
            stmt = (
                select(
                    t.id,
                    t.locked_by,
                    t.status,
                    t.channel,
                    t.recipient,
                    t.sender,
                    t.attempts,
                    t.params,
                    t.ledger_seq,
                )
                .where(t.id.in_([r.row.id for r in results]))
                .order_by(t.id)
                .with_for_update()
            )
            current_rows = {row.id: row for row in session.execute(stmt)}
            for r in results:
                current = current_rows.get(r.row.id)
                if (
                    current is None
                    or current.locked_by != self.worker_id
                    or current.status != DeliveryStatus.SENDING
                ):
                    outcomes.append(SendOutcome(r.row.id, "lost-lease"))
                    metrics.delivery_outcome(session, r.row.channel, "lost-lease")
                    continue
                # A message put back in the queue (rate limit, transient error, kill switch) is "requeued".
                requeue = r.status == DeliveryStatus.QUEUED
                metrics.delivery_outcome(session, current.channel, "requeued" if requeue else r.status)
                change: dict[str, Any] = {
                    "id": current.id,
                    "status": r.status,
                    "lease_until": None,
                    "errcode": r.errcode,
                    "error": r.error,
                }
                if not r.count_attempt:
                    change["attempts"] = current.attempts - 1
                if r.retry_in is not None:
                    change["next_attempt_at"] = now + timedelta(seconds=r.retry_in)
                    requeued = True
                if r.status == DeliveryStatus.SENT:
                    change["sent_at"], change["wecom_id"] = now, r.wecom_id
                    if r.response_code:
                        change["params"] = {**(current.params or {}), "response_code": r.response_code}
                changes.append(change)
                if r.status != DeliveryStatus.QUEUED and current.ledger_seq is not None:
                    message = ledger.MessageIdentity(current.recipient, current.sender, current.channel)
                    records.append(
                        ledger.OutcomeRecord(current.ledger_seq, r.status, message, r.wecom_id, r.error or "")
                    )
                outcomes.append(SendOutcome(r.row.id, r.status, r.errcode))
            if changes:  # ORM bulk UPDATE by primary key: rows with the same keys share one statement
                session.execute(update(Delivery), changes)
            ledger.append_outcomes(session, records, now)
        if requeued:
            try:
                self.coordinator.wake(OUTBOX_CHANNEL)  # another sender may take it when it is due
            except Exception as exc:  # senders also poll: a missed wake-up only delays the retry
                log.warning("could not wake the senders: %s", exc)
        return outcomes

    def run_once(self) -> list[SendOutcome]:
        """Claim a batch and send it."""
        return [self.send(delivery_id) for delivery_id in self.claim()]

    def drain(self, max_batches: int = 100) -> list[SendOutcome]:
        """Send until nothing is due (commands and tests)."""
        outcomes: list[SendOutcome] = []
        for _ in range(max_batches):
            batch = self.run_once()
            if not batch:
                break
            outcomes.extend(batch)
        return outcomes

    def run_forever(self, stop: threading.Event) -> None:
        """Send as deliveries are queued; woken at once by handlers, polling once a second otherwise."""
        log.info("dispatcher %s started", self.worker_id)
        while not stop.is_set():
            try:
                sent = self.run_once()
            except Exception:
                log.exception("dispatch round failed")
                stop.wait(1.0)
                continue
            if not sent:
                try:
                    self.coordinator.wait(OUTBOX_CHANNEL, 0.5)
                except Exception:
                    time.sleep(0.5)
        log.info("dispatcher %s stopped", self.worker_id)
