"""Mass-send tasks (企业群发): create each task once, remind its member, reconcile each customer's outcome.

A task moves queued → created → sent (or cancelled / failed); each of its recipients is a
`mass_template` delivery. Until the task is created they are `queued` (an opt-out still cancels
them); from the moment the create call may go out they are `sending`, tagged with the task
(`locked_by = "mass:<id>"`, no lease of their own), and stay so until WeCom reports a final result
for them. The ordinary delivery dispatcher never touches `mass_template` rows.

Exactly once: WeCom offers no idempotency key for add_msg_template, and a create whose answer was
lost cannot be matched to a mass message reliably (get_groupmsg_list_v2 omits the creator of
API-created messages, and every member's task of one run has the same text). So a create that may
have reached WeCom without an answer (a timeout, a dropped connection, a process that died with the
lease held) is never repeated: the task and its recipients become `unknown` and operators are
alerted; `resolve_unknown` records what a person found in WeCom.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session
from urllib3.exceptions import NewConnectionError
from wechatpy.exceptions import WeChatClientException

from bot import metrics
from bot.campaigns.controls import run_hold, sending_stopped
from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database
from bot.delivery.dispatcher import API_BURST, API_RATE_PER_S
from bot.delivery.outbox import OUTBOX_CHANNEL, enqueue, message_identity
from bot.trading_calendar import SHANGHAI
from bot.wecom.client import GroupMsgSendResult, GroupMsgTaskStatus, WeComClient
from bot.wecom.errors import ErrorKind, WeComAPIError
from bot.worker import backoff_delay
from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.campaigns import Campaign, CampaignRun, MassTask, MassTaskStatus, RunRecipient
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.leads import Lead, Member
from scripts_library import ledger
from scripts_library.catalogue import NotSendable, policy_from_settings
from scripts_library.rendering import RenderError

log = logging.getLogger("wecom_bot.masssend")

MASS_CHANNEL = "mass"  # coordinator channel: the planner wakes the mass-send dispatcher on it
REMINDER_SCRIPT = "mass_task_reminder"
# MassTaskStatus has no value for "the create call may or may not have reached WeCom".
TASK_UNKNOWN = MassTaskStatus.UNKNOWN
MAX_RECIPIENTS = 10_000  # customers per add_msg_template call (WECOM.md §6.1)
NOBODY_SENDABLE = 41048
STILL_DISPATCHING = 41063
# get_groupmsg_task / get_groupmsg_send_result statuses (WECOM.md §6.2).
MEMBER_SENT = 2
RESULT_UNSENT, RESULT_SENT, RESULT_NOT_FRIEND, RESULT_OVER_QUOTA = 0, 1, 2, 3
CREATE_API = "externalcontact/add_msg_template"
CHECK_API = "externalcontact/get_groupmsg_task"

FAIL_LIST_REASON = "WeCom could not target this customer through the sending member (fail_list)"
NOT_FRIEND_REASON = "not a friend: the customer and the member are no longer connected"
OVER_QUOTA_REASON = "customer reached the monthly mass-message limit"
NOT_INCLUDED_REASON = "the member sent the mass message without this customer"
OPTED_OUT_REASON = "customer opted out"
UNREACHABLE_REASON = "customer no longer connected to any member"
DEADLINE_REASON = "deadline passed before the task was created"
UNKNOWN_REASON = "the create call may have reached WeCom but its answer was lost; not repeated"


@dataclass(frozen=True)
class MassSendOptions:
    """Timing of mass-send tasks: leases, reconciliation backoff, reminders and the expiry horizon."""

    lease_s: float = 120.0  # covers one task's create or check round (API calls included)
    batch_size: int = 10
    poll_s: float = 5.0  # safety-net poll of run_forever when nobody wakes it
    poll_first_s: float = 60.0  # first result check after creation, doubling up to poll_max_s
    poll_max_s: float = 1800.0
    hold_s: float = 60.0  # re-check of a task held by a paused campaign
    max_create_attempts: int = 5
    remind_after_s: float = 3600.0  # remind_groupmsg_send when still unsent this long after planning
    remind_every_s: float = 8 * 3600.0
    max_reminders: int = 3  # in total per task: never above WeCom's 3 per mass message per 24 h
    expire_after_s: float = 3 * 86400.0  # unsent this long after planning: cancelled, recipients expired
    results_grace_s: float = 3600.0  # after the member sent, how long an unsent (0) result may still change
    reminder_link: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> MassSendOptions:
        """The options a deployment configured in its `[campaigns]` section (defaults elsewhere)."""
        c = settings.campaigns
        return cls(
            remind_after_s=c.mass_remind_after_s,
            max_reminders=c.mass_reminders_max,
            expire_after_s=c.mass_expire_after_s,
        )


@dataclass(frozen=True)
class MassOutcome:
    """What one round did to one task: the action and the task's status afterwards."""

    task_id: int
    action: str  # create | check
    status: str  # a MassTaskStatus, "unknown", or held | retry | lost-lease
    detail: str = ""


@dataclass(frozen=True)
class _ToCreate:
    """A task leased for creation, with the recipients handed to WeCom."""

    task_id: int
    sender: str
    text: str
    external_userids: list[str]


@dataclass(frozen=True)
class _ToCheck:
    """A created task leased for a check."""

    task_id: int
    msgid: str
    sender: str
    reminders: int
    attempts: int
    created_at: datetime


@dataclass
class _Seen:
    """What WeCom said about a created task in one check."""

    members: list[GroupMsgTaskStatus]
    results: list[GroupMsgSendResult]
    final: bool  # past the horizon: whatever is unsent now stays unsent
    reminded: bool = False
    note: str = ""


def recipients_of(task_id: int) -> ColumnElement[bool]:
    """The deliveries that are one task's recipients (through the run-recipient index, not a scan)."""
    return and_(
        Delivery.id.in_(select(RunRecipient.delivery_id).where(RunRecipient.mass_task_id == task_id)),
        Delivery.channel == Channel.MASS_TEMPLATE,
    )


def task_marker(task_id: int) -> str:
    """The `locked_by` of a task's recipients once they are handed to WeCom."""
    return f"mass:{task_id}"


def _from_unix(value: int | None, default: datetime) -> datetime:
    return default if value is None else datetime.fromtimestamp(value, UTC)


def _not_created(exc: WeComAPIError) -> bool:
    """Whether a failed create certainly made no mass message (so it may be tried again)."""
    if exc.api != CREATE_API:
        return True  # the token fetch failed: the create was never sent
    cause = exc.__cause__
    if isinstance(cause, WeChatClientException):
        return cause.errcode is not None  # WeCom answered with an errcode; an HTTP error may hide one
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.ConnectionError):
        # A refused connection carries urllib3's NewConnectionError: no byte of the request left.
        reason = getattr(cause.args[0], "reason", None) if cause.args else None
        return isinstance(reason, NewConnectionError)
    if cause is None:
        return exc.kind is not ErrorKind.TRANSIENT  # raised before any request (e.g. no secret)
    return False


class MassTaskDispatcher:
    """Creates queued mass-send tasks once, reminds their members and reconciles per-customer results."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        client: WeComClient,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        options: MassSendOptions | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.coordinator = coordinator
        self.client = client
        self.worker_id = worker_id or f"mass:{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.options = options or MassSendOptions.from_settings(settings)

    # ---- claiming ----------------------------------------------------------------------------------

    def claim(self, limit: int | None = None) -> list[tuple[int, str]]:
        """Lease due tasks as (id, "create" | "check"); a create whose lease lapsed is never just retried."""
        now = self.clock()
        limit = limit or self.options.batch_size
        t = MassTask
        with self.db.transaction() as session:
            lapsed = session.scalars(
                select(t)
                .where(t.status == MassTaskStatus.QUEUED, t.lease_until < now)
                .with_for_update(skip_locked=True)
            ).all()
            for task in lapsed:
                self._lapsed_create(session, task, now)
            free = or_(t.lease_until.is_(None), t.lease_until < now)
            checks = select(t.id).where(t.status == MassTaskStatus.CREATED, t.next_check_at <= now, free)
            claimed = [
                (task_id, "check")
                for task_id in session.scalars(
                    checks.order_by(t.next_check_at, t.id).limit(limit).with_for_update(skip_locked=True)
                )
            ]
            if not sending_stopped(session):
                creates = select(t.id).where(
                    t.status == MassTaskStatus.QUEUED, t.next_check_at <= now, t.lease_until.is_(None)
                )
                claimed += [
                    (task_id, "create")
                    for task_id in session.scalars(
                        creates.order_by(t.next_check_at, t.id).limit(limit).with_for_update(skip_locked=True)
                    )
                ]
            if claimed:
                session.execute(
                    update(t)
                    .where(t.id.in_([task_id for task_id, _ in claimed]))
                    .values(
                        locked_by=self.worker_id,
                        lease_until=now + timedelta(seconds=self.options.lease_s),
                        attempts=t.attempts + 1,
                    )
                )
        return claimed

    def _holds(self, task: MassTask | None, status: str) -> bool:
        """Whether this dispatcher's lease on the task is still current (checked before any API call)."""
        return (
            self._ours(task, status)
            and task is not None
            and task.lease_until is not None
            and task.lease_until >= self.clock()
        )

    def _ours(self, task: MassTask | None, status: str) -> bool:
        """Whether nobody took the task over since this dispatcher leased it (checked after API calls)."""
        return task is not None and task.status == status and task.locked_by == self.worker_id

    def _lapsed_create(self, session: Session, task: MassTask, now: datetime) -> None:
        handed = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                recipients_of(task.id),
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.locked_by == task_marker(task.id),
            )
        )
        if not handed:
            # The lease lapsed before any recipient was handed over: the create was never sent.
            task.lease_until, task.locked_by = None, None
            return
        self._flag_unknown(session, task, now, "the creating process stopped during the create call")

    def _flag_unknown(self, session: Session, task: MassTask, now: datetime, why: str) -> None:
        # WeCom may hold this mass message already. Creating it again could make the member send
        # it twice (and spend each customer's monthly quota twice), so a person decides.
        task.status, task.error, task.lease_until = TASK_UNKNOWN, f"{why}: {UNKNOWN_REASON}", None
        rows = self._handed(session, task.id, (DeliveryStatus.SENDING,))
        for row in rows:
            self._finish(session, row, DeliveryStatus.UNKNOWN, now, error=task.error)
        session.add(
            Alert(
                raised_at=now,
                kind="mass.unknown",
                severity="warning",
                audience="operator",
                message=(
                    f"mass-send task {task.id} for {task.sender} ({len(rows)} customers) may or may not "
                    "exist in WeCom: check the member's 群发助手 and resolve it"
                ),
                detail={"mass_task": task.id, "sender": task.sender, "recipients": len(rows)},
            )
        )

    # ---- creating ----------------------------------------------------------------------------------

    def create(self, task_id: int) -> MassOutcome:
        """Create one leased task with add_msg_template; the call happens with no transaction open."""
        wait = self.coordinator.take_token(f"wecom-api:{CREATE_API}", API_RATE_PER_S, API_BURST)
        if wait > 0:
            return self._release(task_id, wait, "rate limited", count_attempt=False)
        prepared = self._prepare(task_id)
        if isinstance(prepared, MassOutcome):
            return prepared
        try:
            result = self.client.add_msg_template(
                prepared.external_userids, sender=prepared.sender, text=prepared.text
            )
        except WeComAPIError as exc:
            return self._create_failed(prepared, exc)
        return self._created(prepared, result.msgid, list(result.fail_list))

    def _prepare(self, task_id: int) -> _ToCreate | MassOutcome:
        """Check the switches and each recipient, then hand the rest to WeCom (status sending)."""
        now = self.clock()
        with self.db.transaction() as session:
            task = session.get(MassTask, task_id, with_for_update=True)
            if task is None or not self._holds(task, MassTaskStatus.QUEUED):
                return MassOutcome(task_id, "create", "lost-lease")
            held = "kill switch on" if sending_stopped(session) else run_hold(session, task.run_id)
            if held:
                task.lease_until, task.locked_by = None, None
                task.next_check_at = now + timedelta(seconds=self.options.hold_s)
                task.attempts -= 1
                return MassOutcome(task_id, "create", "held", held)
            rows = session.scalars(
                select(Delivery)
                .where(recipients_of(task_id), Delivery.status == DeliveryStatus.QUEUED)
                .order_by(Delivery.id)
                .with_for_update()  # an opt-out cancelling one of them meanwhile wins
            ).all()
            if now >= task.created_at + timedelta(seconds=self.options.expire_after_s):
                reason = "the task could not be created before it expired"
                for row in rows:
                    self._finish(session, row, DeliveryStatus.EXPIRED, now, error=reason)
                return self._close(
                    session, task, MassTaskStatus.CANCELLED, now, reason, "create", alert="mass.expired"
                )
            refusals = self._refusals(session, [row.recipient for row in rows])
            live: list[Delivery] = []
            for row in rows:
                if row.deadline is not None and now >= row.deadline:
                    self._finish(session, row, DeliveryStatus.EXPIRED, now, error=DEADLINE_REASON)
                elif row.recipient in refusals:
                    self._finish(session, row, DeliveryStatus.CANCELLED, now, error=refusals[row.recipient])
                else:
                    live.append(row)
            if not live:
                return self._close(
                    session, task, MassTaskStatus.CANCELLED, now, "no recipient left to send to", "create"
                )
            if len(live) > MAX_RECIPIENTS:
                reason = f"{len(live)} recipients; WeCom allows at most {MAX_RECIPIENTS} per task"
                for row in live:
                    self._finish(session, row, DeliveryStatus.FAILED, now, error=reason)
                return self._close(
                    session, task, MassTaskStatus.FAILED, now, reason, "create", alert="mass.failed"
                )
            for row in live:
                row.status, row.locked_by, row.lease_until = (
                    DeliveryStatus.SENDING,
                    task_marker(task_id),
                    None,
                )
                row.attempts += 1
            return _ToCreate(task_id, task.sender, task.text, list(dict.fromkeys(r.recipient for r in live)))

    @staticmethod
    def _refusals(session: Session, external_userids: Sequence[str]) -> dict[str, str]:
        """Recipients who must not get the message now, and why (checked again right before creation)."""
        refusals: dict[str, str] = {}
        ids = list(dict.fromkeys(external_userids))
        for start in range(0, len(ids), 1000):
            for ext, opted_out, reachable in session.execute(
                select(Lead.external_user_id, Lead.opted_out, Lead.reachable).where(
                    Lead.external_user_id.in_(ids[start : start + 1000])
                )
            ):
                if opted_out:
                    refusals[ext] = OPTED_OUT_REASON
                elif not reachable:
                    refusals[ext] = UNREACHABLE_REASON
        return refusals

    def _create_failed(self, prepared: _ToCreate, exc: WeComAPIError) -> MassOutcome:
        now = self.clock()
        error = f"{exc.errcode}: {exc.errmsg}"
        with self.db.transaction() as session:
            task = session.get(MassTask, prepared.task_id, with_for_update=True)
            if task is None or not self._ours(task, MassTaskStatus.QUEUED):
                log.error("mass task %s: lease lost while its create failed (%s)", prepared.task_id, error)
                return MassOutcome(prepared.task_id, "create", "lost-lease", error)
            if not _not_created(exc):
                self._flag_unknown(session, task, now, f"create call failed without an answer ({error})")
                return MassOutcome(task.id, "create", TASK_UNKNOWN, error)
            rows = self._handed(session, task.id, (DeliveryStatus.SENDING,))
            limited = exc.kind is ErrorKind.RATE_LIMITED
            if limited or (exc.retryable and task.attempts < self.options.max_create_attempts):
                if limited:
                    delay = exc.retry_after_s or 60.0
                    task.attempts -= 1  # waiting for the limit to lift is no failed attempt
                else:
                    delay = backoff_delay(
                        task.attempts, self.settings.worker.backoff_base_s, self.settings.worker.backoff_max_s
                    )
                for row in rows:
                    row.status, row.locked_by = DeliveryStatus.QUEUED, None
                task.lease_until, task.locked_by, task.error = None, None, error
                task.next_check_at = now + timedelta(seconds=delay)
                return MassOutcome(task.id, "create", "retry", error)
            for row in rows:
                self._finish(session, row, DeliveryStatus.FAILED, now, error=error, errcode=exc.errcode)
            if exc.errcode == NOBODY_SENDABLE:
                error = f"{error} (every recipient over the monthly limit or no longer connected)"
            return self._close(
                session, task, MassTaskStatus.FAILED, now, error, "create", alert="mass.failed"
            )

    def _created(self, prepared: _ToCreate, msgid: str, fail_list: list[str]) -> MassOutcome:
        now = self.clock()
        with self.db.transaction() as session:
            task = session.get(MassTask, prepared.task_id, with_for_update=True)
            if task is not None and self._ours(task, MassTaskStatus.QUEUED):
                self._adopt(session, task, msgid, fail_list, now)
                outcome = MassOutcome(task.id, "create", task.status, msgid)
            elif (
                task is not None
                and task.status == TASK_UNKNOWN
                and task.locked_by == self.worker_id
                and task.msgid is None
            ):
                # Our lease lapsed mid-call and the task was flagged; the answer did come back.
                self._adopt(session, task, msgid, fail_list, now)
                session.add(
                    Alert(
                        raised_at=now,
                        kind="mass.resolved",
                        severity="info",
                        audience="operator",
                        message=f"mass-send task {task.id} flagged unknown was created after all ({msgid})",
                        detail={"mass_task": task.id, "msgid": msgid},
                    )
                )
                outcome = MassOutcome(task.id, "create", task.status, msgid)
            else:
                log.error("mass task %s created as %s after its lease was lost", prepared.task_id, msgid)
                session.add(
                    Alert(
                        raised_at=now,
                        kind="mass.unknown",
                        severity="warning",
                        audience="operator",
                        message=f"mass-send task {prepared.task_id} became {msgid} after its lease lapsed",
                        detail={"mass_task": prepared.task_id, "msgid": msgid},
                    )
                )
                return MassOutcome(prepared.task_id, "create", "lost-lease", msgid)
        self.coordinator.wake(OUTBOX_CHANNEL)  # the member's reminder
        return outcome

    def _adopt(
        self, session: Session, task: MassTask, msgid: str, fail_list: list[str], now: datetime
    ) -> None:
        """Record that WeCom holds the task as `msgid`: fail_list recipients fail, the rest await sending."""
        task.status, task.msgid, task.fail_list = MassTaskStatus.CREATED, msgid, list(fail_list)
        task.lease_until, task.locked_by, task.error = None, None, None
        task.attempts, task.next_check_at = 0, now + timedelta(seconds=self.options.poll_first_s)
        failed, waiting = set(fail_list), 0
        for row in self._handed(session, task.id, (DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN)):
            row.wecom_id = msgid
            if row.recipient in failed:
                self._finish(session, row, DeliveryStatus.FAILED, now, error=FAIL_LIST_REASON)
            else:
                row.status, row.error = DeliveryStatus.SENDING, None
                waiting += 1
        if waiting:
            self._remind_member(session, task, now, waiting)
        else:
            reason = "WeCom could target none of the recipients"
            self._close(session, task, MassTaskStatus.FAILED, now, reason, "create", alert="mass.failed")

    def _remind_member(self, session: Session, task: MassTask, now: datetime, customers: int) -> None:
        """Queue one app message asking the member to confirm the task in 群发助手."""
        name = session.scalar(select(Member.name).where(Member.userid == task.sender)) or task.sender
        campaign = session.scalar(
            select(Campaign.name)
            .join(CampaignRun, CampaignRun.campaign_id == Campaign.id)
            .where(CampaignRun.id == task.run_id)
        )
        title = f"{campaign or task.script_key}（{customers} 位客户）"
        due = (task.created_at + timedelta(seconds=self.options.expire_after_s)).astimezone(SHANGHAI)
        compliance = self.settings.compliance
        values = {
            "firm": {"name": compliance.firm_name, "opt_out": compliance.opt_out_instruction},
            "manager": {"name": name},
            "task": {
                "title": title,
                "due": f"{due.month}月{due.day}日 {due:%H:%M}",
                "link": self.options.reminder_link,
            },
        }
        try:
            enqueue(
                session,
                purpose_key=f"mass_task:{task.id}:member_reminder",
                channel=Channel.APP_MESSAGE,
                recipient=task.sender,
                script_key=REMINDER_SCRIPT,
                values=values,
                policy=policy_from_settings(compliance),
                now=now,
            )
        except (NotSendable, RenderError) as exc:
            # The task exists either way; the member is then only reminded through WeCom itself.
            session.add(
                Alert(
                    raised_at=now,
                    kind="mass.reminder_unsendable",
                    severity="warning",
                    audience="both",
                    message=f"no reminder for mass-send task {task.id} to {task.sender}: {exc}",
                    detail={"mass_task": task.id, "script": REMINDER_SCRIPT},
                )
            )

    # ---- reconciling --------------------------------------------------------------------------------

    def check(self, task_id: int) -> MassOutcome:
        """Read a created task in WeCom, remind or expire it, and record the final per-customer results."""
        now = self.clock()
        with self.db.transaction() as session:
            task = session.get(MassTask, task_id)
            if task is None or not self._holds(task, MassTaskStatus.CREATED) or not task.msgid:
                return MassOutcome(task_id, "check", "lost-lease")
            snap = _ToCheck(task.id, task.msgid, task.sender, task.reminders, task.attempts, task.created_at)
            stopped = sending_stopped(session)
        if self.coordinator.take_token(f"wecom-api:{CHECK_API}", API_RATE_PER_S, API_BURST) > 0:
            return self._reschedule(snap, self.options.poll_first_s, "rate limited")
        try:
            seen = self._look(snap, now, stopped)
        except WeComAPIError as exc:
            return self._check_failed(snap, exc, now)
        return self._record(snap, seen)

    def _look(self, snap: _ToCheck, now: datetime, stopped: bool) -> _Seen:
        """The API calls of one check; no database work except counting a reminder before it is sent."""
        members = self.client.get_groupmsg_task(snap.msgid)
        unsent = [m for m in members if m.status != MEMBER_SENT]
        final = now >= snap.created_at + timedelta(seconds=self.options.expire_after_s)
        note = ""
        if unsent and final:
            # Stop the member from sending it later, then look again: they may have just sent it.
            try:
                self.client.cancel_groupmsg_send(snap.msgid)
            except WeComAPIError as exc:
                if exc.retryable:
                    raise
                note = f"could not cancel in WeCom ({exc.errcode}: {exc.errmsg})"
            members = self.client.get_groupmsg_task(snap.msgid)
            unsent = [m for m in members if m.status != MEMBER_SENT]
        wanted = members if final else [m for m in members if m.status == MEMBER_SENT]
        results = [r for m in wanted for r in self.client.get_groupmsg_send_result(snap.msgid, m.userid)]
        seen = _Seen(members, results, final, note=note)
        if (
            unsent
            and not final
            and not stopped
            and self._remind_due(snap, now)
            and self._count_reminder(snap)
        ):
            try:
                self.client.remind_groupmsg_send(snap.msgid)
                seen.reminded = True
            except WeComAPIError as exc:
                # Counted already: a failed reminder is not repeated beyond the limit either.
                seen.note = f"reminder failed ({exc.errcode}: {exc.errmsg})"
                if exc.kind is ErrorKind.RATE_LIMITED:
                    self._count_reminder(snap, to=self.options.max_reminders)
        return seen

    def _remind_due(self, snap: _ToCheck, now: datetime) -> bool:
        return snap.reminders < self.options.max_reminders and now >= self._next_remind(
            snap.created_at, snap.reminders
        )

    def _next_remind(self, created_at: datetime, reminders: int) -> datetime:
        o = self.options
        return created_at + timedelta(seconds=o.remind_after_s + reminders * o.remind_every_s)

    def _count_reminder(self, snap: _ToCheck, to: int | None = None) -> bool:
        """Count a reminder before sending it, so a crash can never make us exceed WeCom's limit."""
        with self.db.transaction() as session:
            task = session.get(MassTask, snap.task_id, with_for_update=True)
            if task is None or not self._ours(task, MassTaskStatus.CREATED):
                return False
            if to is not None:
                task.reminders = max(task.reminders, to)
                return True
            if task.reminders >= self.options.max_reminders:
                return False
            task.reminders += 1
            return True

    def _check_failed(self, snap: _ToCheck, exc: WeComAPIError, now: datetime) -> MassOutcome:
        error = f"{exc.errcode}: {exc.errmsg}"
        if exc.errcode == STILL_DISPATCHING:
            return self._reschedule(snap, self.options.poll_first_s, error, count=False)
        if exc.kind is ErrorKind.RATE_LIMITED:
            return self._reschedule(snap, exc.retry_after_s or 60.0, error, count=False)
        if exc.retryable:
            return self._reschedule(snap, self._delay(snap.attempts), error)
        past = now >= snap.created_at + timedelta(seconds=self.options.expire_after_s)
        with self.db.transaction() as session:
            task = session.get(MassTask, snap.task_id, with_for_update=True)
            if task is None or not self._ours(task, MassTaskStatus.CREATED):
                return MassOutcome(snap.task_id, "check", "lost-lease", error)
            if past:
                # Outcomes can no longer be read and the horizon has passed: a person looks.
                self._flag_unknown(session, task, now, f"results unreadable ({error})")
                return MassOutcome(task.id, "check", TASK_UNKNOWN, error)
            if task.error != error:
                session.add(
                    Alert(
                        raised_at=now,
                        kind="mass.check_failed",
                        severity="warning",
                        audience="operator",
                        message=f"mass-send task {task.id} ({task.msgid}): results unreadable: {error}",
                        detail={"mass_task": task.id, "errcode": exc.errcode},
                    )
                )
            task.error, task.lease_until, task.locked_by = error, None, None
            task.next_check_at = now + timedelta(seconds=self.options.poll_max_s)
            return MassOutcome(task.id, "check", MassTaskStatus.CREATED, error)

    def _delay(self, attempts: int) -> float:
        o = self.options
        return min(o.poll_max_s, o.poll_first_s * 2 ** max(0, attempts - 1))

    def _reschedule(self, snap: _ToCheck, delay: float, note: str, count: bool = True) -> MassOutcome:
        now = self.clock()
        with self.db.transaction() as session:
            task = session.get(MassTask, snap.task_id, with_for_update=True)
            if task is None or not self._ours(task, MassTaskStatus.CREATED):
                return MassOutcome(snap.task_id, "check", "lost-lease", note)
            task.lease_until, task.locked_by = None, None
            if not count:
                task.attempts -= 1
            task.next_check_at = now + timedelta(seconds=delay)
            return MassOutcome(task.id, "check", "retry", note)

    def _record(self, snap: _ToCheck, seen: _Seen) -> MassOutcome:
        """Record final per-customer results; close the task when nobody is left awaiting the member."""
        now = self.clock()
        grace = timedelta(seconds=self.options.results_grace_s)
        sent_at = {m.userid: _from_unix(m.send_time, now) for m in seen.members if m.status == MEMBER_SENT}
        all_sent = bool(seen.members) and len(sent_at) == len(seen.members)
        settled = seen.final or (all_sent and all(now >= t + grace for t in sent_at.values()))
        with self.db.transaction() as session:
            task = session.get(MassTask, snap.task_id, with_for_update=True)
            if task is None or not self._ours(task, MassTaskStatus.CREATED):
                return MassOutcome(snap.task_id, "check", "lost-lease")
            rows: dict[str, list[Delivery]] = defaultdict(list)
            for row in self._handed(session, task.id, (DeliveryStatus.SENDING,)):
                rows[row.recipient].append(row)
            expired = f"the member did not send it within {self.options.expire_after_s / 3600:g} h"
            for r in seen.results:
                member_sent = r.userid in sent_at
                for row in rows.pop(r.external_userid, ()):
                    if r.status == RESULT_SENT:
                        when = _from_unix(r.send_time, sent_at.get(r.userid, now))
                        self._finish(session, row, DeliveryStatus.SENT, now, sent_at=when)
                    elif r.status == RESULT_NOT_FRIEND:
                        self._finish(session, row, DeliveryStatus.FAILED, now, error=NOT_FRIEND_REASON)
                    elif r.status == RESULT_OVER_QUOTA:
                        self._finish(session, row, DeliveryStatus.FAILED, now, error=OVER_QUOTA_REASON)
                    elif member_sent and (seen.final or now >= sent_at[r.userid] + grace):
                        self._finish(session, row, DeliveryStatus.CANCELLED, now, error=NOT_INCLUDED_REASON)
                    elif seen.final:
                        self._finish(session, row, DeliveryStatus.EXPIRED, now, error=expired)
                    else:
                        rows[r.external_userid].append(row)  # still waiting for the member
            if settled:
                for left in rows.values():
                    for row in left:
                        status = DeliveryStatus.CANCELLED if sent_at else DeliveryStatus.EXPIRED
                        error = NOT_INCLUDED_REASON if sent_at else expired
                        self._finish(session, row, status, now, error=error)
                rows.clear()
            waiting = sum(len(v) for v in rows.values())
            if seen.reminded:
                log.info("mass task %s: reminded %s (%d so far)", task.id, task.sender, task.reminders)
            if waiting == 0:
                if sent_at:
                    return self._close(session, task, MassTaskStatus.SENT, now, seen.note or None, "check")
                reason = f"expired: {expired}" + (f"; {seen.note}" if seen.note else "")
                return self._close(
                    session, task, MassTaskStatus.CANCELLED, now, reason, "check", alert="mass.expired"
                )
            task.error = seen.note or None
            task.lease_until, task.locked_by = None, None
            task.next_check_at = self._next_check(task, now, sent_at, grace)
            return MassOutcome(task.id, "check", MassTaskStatus.CREATED, f"{waiting} awaiting the member")

    def _next_check(
        self, task: MassTask, now: datetime, sent_at: dict[str, datetime], grace: timedelta
    ) -> datetime:
        candidates = [now + timedelta(seconds=self._delay(task.attempts))]
        candidates.append(task.created_at + timedelta(seconds=self.options.expire_after_s))
        if task.reminders < self.options.max_reminders:
            candidates.append(self._next_remind(task.created_at, task.reminders))
        candidates += [t + grace for t in sent_at.values()]
        return min(c for c in candidates if c > now)

    # ---- shared ------------------------------------------------------------------------------------

    @staticmethod
    def _handed(session: Session, task_id: int, statuses: Iterable[str]) -> list[Delivery]:
        return list(
            session.scalars(
                select(Delivery)
                .where(
                    recipients_of(task_id),
                    Delivery.status.in_(list(statuses)),
                    Delivery.locked_by == task_marker(task_id),
                )
                .order_by(Delivery.id)
                .with_for_update()
            )
        )

    @staticmethod
    def _finish(
        session: Session,
        row: Delivery,
        status: str,
        now: datetime,
        error: str | None = None,
        errcode: int | None = None,
        sent_at: datetime | None = None,
    ) -> None:
        """Give one recipient its outcome and append it to the ledger."""
        row.status, row.error, row.errcode, row.lease_until = status, error, errcode, None
        metrics.delivery_outcome(session, row.channel, status)
        if sent_at is not None:
            row.sent_at = sent_at
        if row.ledger_seq is not None:
            ledger.append_outcome(
                session,
                row.ledger_seq,
                status,
                wecom_id=row.wecom_id,
                detail=error or "",
                now=now,
                message=message_identity(row),
            )

    def _close(
        self,
        session: Session,
        task: MassTask,
        status: str,
        now: datetime,
        error: str | None,
        action: str,
        alert: str | None = None,
    ) -> MassOutcome:
        """End a task with `status`; `alert` names the operator alert to raise, if any."""
        task.status, task.error, task.finished_at = status, error, now
        task.lease_until, task.locked_by = None, None
        if alert:
            session.add(
                Alert(
                    raised_at=now,
                    kind=alert,
                    severity="warning",
                    audience="operator",
                    message=f"mass-send task {task.id} for {task.sender} {status}: {error}",
                    detail={"mass_task": task.id, "sender": task.sender, "msgid": task.msgid},
                )
            )
        return MassOutcome(task.id, action, status, error or "")

    def _release(self, task_id: int, delay: float, note: str, count_attempt: bool = True) -> MassOutcome:
        now = self.clock()
        with self.db.transaction() as session:
            task = session.get(MassTask, task_id, with_for_update=True)
            if task is None or task.locked_by != self.worker_id or task.status != MassTaskStatus.QUEUED:
                return MassOutcome(task_id, "create", "lost-lease")
            task.lease_until, task.locked_by = None, None
            task.next_check_at = now + timedelta(seconds=delay)
            if not count_attempt:
                task.attempts -= 1
            return MassOutcome(task_id, "create", "retry", note)

    # ---- operators ---------------------------------------------------------------------------------

    def resolve_unknown(self, task_id: int, msgid: str | None, actor: str) -> MassOutcome:
        """Settle an unknown task: with the msgid found in WeCom reconcile it; without one create it anew."""
        now = self.clock()
        with self.db.transaction() as session:
            task = session.get(MassTask, task_id, with_for_update=True)
            if task is None or task.status != TASK_UNKNOWN:
                raise ValueError(f"mass-send task {task_id} is not unknown; nothing to resolve")
            if task.msgid and msgid != task.msgid:
                raise ValueError(
                    f"mass-send task {task_id} exists in WeCom as {task.msgid}; resolve it with that"
                )
            if msgid:
                task.lease_until = None
                self._adopt(session, task, msgid, list(task.fail_list or []), now)
                status = str(task.status)
            else:
                for row in self._handed(session, task.id, (DeliveryStatus.UNKNOWN,)):
                    row.status, row.locked_by, row.error = DeliveryStatus.QUEUED, None, None
                    if row.ledger_seq is not None:
                        ledger.append_outcome(
                            session,
                            row.ledger_seq,
                            DeliveryStatus.QUEUED,
                            detail=f"re-queued by {actor}: the task was not created in WeCom",
                            now=now,
                            message=message_identity(row),
                        )
                task.status, task.error, task.lease_until, task.locked_by = (
                    MassTaskStatus.QUEUED,
                    None,
                    None,
                    None,
                )
                task.attempts, task.next_check_at = 0, now
                status = MassTaskStatus.QUEUED
            session.add(
                AuditEntry(
                    at=now,
                    actor=actor,
                    action="mass_task.resolve",
                    target=f"mass_task:{task_id}",
                    detail={"msgid": msgid or ""},
                )
            )
        self.coordinator.wake(OUTBOX_CHANNEL if msgid else MASS_CHANNEL)
        return MassOutcome(task_id, "resolve", status, msgid or "")

    # ---- loops -------------------------------------------------------------------------------------

    def run_once(self) -> list[MassOutcome]:
        """Claim a batch of due tasks and create or check each."""
        outcomes: list[MassOutcome] = []
        for task_id, action in self.claim():
            try:
                outcomes.append(self.create(task_id) if action == "create" else self.check(task_id))
            except Exception:
                # The lease lapses: a check is retried, a create that may have gone out is flagged.
                log.exception("mass task %s: %s failed", task_id, action)
        return outcomes

    def drain(self, max_rounds: int = 100) -> list[MassOutcome]:
        """Run rounds until nothing is due (commands and tests)."""
        outcomes: list[MassOutcome] = []
        for _ in range(max_rounds):
            batch = self.run_once()
            if not batch:
                break
            outcomes.extend(batch)
        return outcomes

    def run_forever(self, stop: threading.Event) -> None:
        """Work as tasks are planned (woken on channel "mass") and poll every few seconds otherwise."""
        log.info("mass-send dispatcher %s started", self.worker_id)
        try:
            self.coordinator.wait(MASS_CHANNEL, 0)  # subscribe before the first round
        except Exception:
            log.exception("mass wake-up channel unavailable; polling")
        while not stop.is_set():
            try:
                busy = bool(self.run_once())
            except Exception:
                log.exception("mass-send round failed")
                busy = False
            if busy:
                continue
            waited = 0.0
            while not stop.is_set() and waited < self.options.poll_s:
                try:
                    if self.coordinator.wait(MASS_CHANNEL, 0.5):
                        break
                except Exception:
                    stop.wait(0.5)
                waited += 0.5
        log.info("mass-send dispatcher %s stopped", self.worker_id)
