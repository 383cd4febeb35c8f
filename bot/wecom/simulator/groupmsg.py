"""Mass sending to customers (企业群发) on the simulated corp: tasks, member confirmation, quotas.

`add_msg_template` only creates one task per sending member; nothing reaches a customer until
that member confirms in the client (`member_confirms_groupmsg`, or automatically after
`groupmsg_auto_confirm_after_s`). Each customer may receive a limited number of mass messages per
period, counted when a member sends, not when the task is created (WECOM.md §6). WeCom raises no
callback for any of this: the bot learns the outcome by polling the task and result APIs.
"""

from __future__ import annotations

import calendar
import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from bot.wecom.simulator.api import (
    JSON,
    ApiCall,
    ApiError,
    SimulationError,
    opt_bool,
    opt_int,
    opt_list,
    opt_str,
    str_list,
)
from bot.wecom.simulator.contacts import ACTIVE, ONE_WAY, ContactsMixin, Relation
from bot.wecom.simulator.parts import CorpParts, new_id

MAX_CUSTOMERS = 10_000
URL_MAX_BYTES = 2048
PAGE_DEFAULT = 500
PAGE_MAX = 1000
REMIND_WINDOW_S = 86400.0
# Quota periods are natural months, weeks and days in China Standard Time.
CHINA_TZ = timezone(timedelta(hours=8))
QUOTA_MODES = ("month_days", "week7", "day1")

# get_groupmsg_task status.
TASK_UNSENT, TASK_SENT = 0, 2
# get_groupmsg_send_result status.
NOT_SENT, SENT, NOT_FRIEND, OVER_QUOTA = 0, 1, 2, 3

# Relations a member still sees (and can target); only ACTIVE ones actually receive the message.
_TARGETABLE = frozenset({ACTIVE, ONE_WAY})


@dataclass
class GroupMsgTask:
    """One member's part of a mass message: the customers it targets and what happened to each."""

    userid: str
    external_userids: list[str]
    status: int = TASK_UNSENT
    send_time: int | None = None
    # external_userid -> send_result status (NOT_SENT until the member sends).
    results: dict[str, int] = field(default_factory=dict)


@dataclass
class GroupMsg:
    """A mass message created through add_msg_template."""

    msgid: str
    sender: str | None
    text: str | None
    attachments: list[JSON]
    create_time: int
    created_at: float
    app: str
    tasks: dict[str, GroupMsgTask]
    fail_list: list[str]
    reminders: list[float] = field(default_factory=list)
    cancelled: bool = False


@dataclass(frozen=True)
class GroupMsgSent:
    """What one member's send did: who received it, who was no longer a friend, who was over quota."""

    msgid: str
    userid: str
    send_time: int
    sent: tuple[str, ...]
    not_friend: tuple[str, ...]
    over_quota: tuple[str, ...]


@dataclass(frozen=True)
class GroupMsgReminder:
    """A remind_groupmsg_send WeCom accepted, and the members whose task was still unsent."""

    msgid: str
    userids: tuple[str, ...]
    at: float


def quota_period(mode: str, wall: float) -> tuple[tuple[int, ...], int]:
    """The quota period holding unix time `wall` (as a comparable key) and its per-customer cap."""
    day = datetime.fromtimestamp(wall, CHINA_TZ).date()
    if mode == "day1":
        return (0, day.toordinal()), 1
    if mode == "week7":
        year, week, _ = day.isocalendar()
        return (1, year, week), 7
    if mode == "month_days":
        return (2, day.year, day.month), calendar.monthrange(day.year, day.month)[1]
    raise ValueError(f"unknown quota mode {mode!r}; expected one of {QUOTA_MODES}")


def _page_limit(data: JSON) -> int:
    limit = opt_int(data, "limit", PAGE_DEFAULT) or PAGE_DEFAULT
    if not 0 < limit <= PAGE_MAX:
        raise ApiError(40058, f"limit must be between 1 and {PAGE_MAX}")
    return limit


def _check_content(data: JSON) -> tuple[str | None, list[JSON]]:
    # The same text and attachment rules as send_welcome_msg, plus the link URL limits.
    text, attachments = ContactsMixin._check_welcome(data)
    for item in attachments:
        if item["msgtype"] == "link":
            opt_str(item["link"], "url", max_bytes=URL_MAX_BYTES)
            opt_str(item["link"], "picurl", max_bytes=URL_MAX_BYTES)
    return text, attachments


def _tag_groups(data: JSON) -> list[set[str]]:
    raw = data.get("tag_filter")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ApiError(40058, "tag_filter must be an object")
    groups: list[set[str]] = []
    for group in opt_list(raw, "group_list"):
        if not isinstance(group, dict):
            raise ApiError(40058, "tag_filter.group_list entries must be objects")
        groups.append(set(str_list(group, "tag_list")))
    return groups


def _matches(rel: Relation, groups: Sequence[set[str]]) -> bool:
    # Assumed semantics (unverified, WECOM.md §6.1): any tag within a group, every group.
    return all(group.intersection(rel.tags) for group in groups)


class GroupMsgMixin(CorpParts):
    """企业群发 endpoints, the per-member tasks, the per-customer quota and the member's confirmation."""

    _relations: dict[tuple[str, str], Relation]

    def _init_groupmsg(self) -> None:
        self._groupmsgs: dict[str, GroupMsg] = {}
        # external_userid -> unix times at which a mass message reached them (any creator).
        self._mass_receipts: dict[str, list[float]] = {}
        self._groupmsg_reminders: list[GroupMsgReminder] = []
        for api, handler in (
            ("externalcontact/add_msg_template", self._add_msg_template),
            ("externalcontact/get_groupmsg_task", self._get_groupmsg_task),
            ("externalcontact/get_groupmsg_send_result", self._get_groupmsg_send_result),
            ("externalcontact/remind_groupmsg_send", self._remind_groupmsg_send),
            ("externalcontact/cancel_groupmsg_send", self._cancel_groupmsg_send),
        ):
            self.register(api, handler)

    # ==== simulated client-side actions =========================================================

    def member_confirms_groupmsg(self, msgid: str, userid: str) -> GroupMsgSent:
        """The member taps send in 群发助手: their task becomes sent and each customer gets a result."""
        with self._lock:
            self._send_due_tasks()
            msg = self._groupmsgs.get(msgid)
            if msg is None:
                raise SimulationError(f"no mass message {msgid!r}")
            member = self._member_or_fail(userid)
            task = msg.tasks.get(member)
            if task is None:
                raise SimulationError(f"{member} has no task in mass message {msgid}")
            if self.now() < msg.created_at + self.config.groupmsg_dispatch_delay_s:
                raise SimulationError("the task has not reached the member yet (still dispatching)")
            if msg.cancelled:
                raise SimulationError("the mass message was cancelled: the member can no longer send it")
            if task.status == TASK_SENT:
                raise SimulationError(f"{member} already sent mass message {msgid}")
            return self._deliver_task(msg.msgid, task, self.wall_time())

    def member_sends_personal_mass(self, userid: str, external_userids: Sequence[str]) -> GroupMsgSent:
        """The member sends their own (member-created) mass message: it uses the customers' quota too."""
        with self._lock:
            self._send_due_tasks()
            member = self._member_or_fail(userid)
            task = GroupMsgTask(member, list(dict.fromkeys(external_userids)))
            return self._deliver_task(new_id("msg", 28), task, self.wall_time())

    # ---- observations -------------------------------------------------------------------------

    def groupmsg(self, msgid: str) -> GroupMsg | None:
        """A copy of the mass message `msgid` as WeCom holds it, or None."""
        with self._lock:
            self._send_due_tasks()
            msg = self._groupmsgs.get(msgid)
            return None if msg is None else copy.deepcopy(msg)

    @property
    def groupmsgs(self) -> list[GroupMsg]:
        """Copies of every mass message created through the API, oldest first."""
        with self._lock:
            self._send_due_tasks()
            return [copy.deepcopy(m) for m in self._groupmsgs.values()]

    @property
    def groupmsg_reminders(self) -> list[GroupMsgReminder]:
        """Every accepted remind_groupmsg_send, oldest first."""
        with self._lock:
            return list(self._groupmsg_reminders)

    def mass_quota_left(self, external_userid: str) -> int:
        """How many more mass messages the customer may receive in the current quota period."""
        with self._lock:
            self._send_due_tasks()
            return self._quota_left(external_userid, self.wall_time())

    # ==== internals ===============================================================================

    def _quota_left(self, external_userid: str, wall: float) -> int:
        mode = self.config.groupmsg_quota_mode
        key, cap = quota_period(mode, wall)
        used = sum(1 for t in self._mass_receipts.get(external_userid, ()) if quota_period(mode, t)[0] == key)
        return max(0, cap - used)

    def _deliver_task(self, msgid: str, task: GroupMsgTask, wall: float) -> GroupMsgSent:
        outcome: dict[int, list[str]] = {SENT: [], NOT_FRIEND: [], OVER_QUOTA: []}
        for external_userid in task.external_userids:
            rel = self._relations.get((task.userid, external_userid))
            if rel is None or rel.status != ACTIVE:
                status = NOT_FRIEND
            elif self._quota_left(external_userid, wall) <= 0:
                status = OVER_QUOTA
            else:
                status = SENT
                self._mass_receipts.setdefault(external_userid, []).append(wall)
            task.results[external_userid] = status
            outcome[status].append(external_userid)
        task.status, task.send_time = TASK_SENT, int(wall)
        return GroupMsgSent(
            msgid,
            task.userid,
            int(wall),
            tuple(outcome[SENT]),
            tuple(outcome[NOT_FRIEND]),
            tuple(outcome[OVER_QUOTA]),
        )

    def _send_due_tasks(self) -> None:
        """Send the tasks members confirm on their own (`groupmsg_auto_confirm_after_s`), in due order."""
        after = self.config.groupmsg_auto_confirm_after_s
        if after is None:
            return
        now = self.now()
        due: list[tuple[float, GroupMsg, GroupMsgTask]] = []
        for msg in self._groupmsgs.values():
            ready_at = msg.created_at + max(after, self.config.groupmsg_dispatch_delay_s)
            if msg.cancelled or now < ready_at:
                continue
            due += [(ready_at, msg, t) for t in msg.tasks.values() if t.status == TASK_UNSENT]
        due.sort(key=lambda item: item[0])
        wall_now = self.wall_time()
        for ready_at, msg, task in due:
            # Quota periods use the moment the member would have sent, not the moment we noticed.
            self._deliver_task(msg.msgid, task, wall_now - (now - ready_at))

    def _owners(self, external_userids: Iterable[str], sender: str | None) -> dict[str, Relation]:
        """The relation each customer would be sent through; customers without one are left out."""
        wanted = set(external_userids)
        candidates: dict[str, list[tuple[int, Relation]]] = {}
        for index, ((userid, external_userid), rel) in enumerate(self._relations.items()):
            if external_userid not in wanted or rel.status not in _TARGETABLE:
                continue
            if sender is not None and userid != sender:
                continue
            candidates.setdefault(external_userid, []).append((index, rel))
        # WeCom sends through the member who last interacted with the customer; the simulator
        # approximates that with "has chatted", then the newest relation.
        return {
            ext: max(rels, key=lambda item: (item[1].chatted, item[1].createtime, item[0]))[1]
            for ext, rels in candidates.items()
        }

    def _groupmsg_of(self, data: JSON) -> GroupMsg:
        msgid = data.get("msgid")
        if msgid is None or msgid == "":
            raise ApiError(41046)
        msg = self._groupmsgs.get(msgid) if isinstance(msgid, str) else None
        if msg is None:
            raise ApiError(41047)
        return msg

    def _check_dispatched(self, msg: GroupMsg) -> None:
        if self.now() < msg.created_at + self.config.groupmsg_dispatch_delay_s:
            raise ApiError(41063)

    # ==== endpoints =================================================================================

    def _add_msg_template(self, call: ApiCall) -> JSON:
        app = self._require_app(call, self.config.contact_apps)
        data = call.json()
        self._send_due_tasks()
        chat_type = opt_str(data, "chat_type") or "single"
        if chat_type == "group":
            raise ApiError(40058, "chat_type group (customer groups) is not simulated")
        if chat_type != "single":
            raise ApiError(40058, "chat_type must be single or group")
        external_userids = str_list(data, "external_userid")
        if len(external_userids) > MAX_CUSTOMERS:
            raise ApiError(40058, f"external_userid allows at most {MAX_CUSTOMERS} customers")
        sender_id = opt_str(data, "sender")
        if not external_userids and not sender_id:
            raise ApiError(40058, "external_userid and sender cannot both be empty")
        sender: str | None = None
        if sender_id:
            sender = self._member(sender_id)
            if sender is None:
                raise ApiError(40003, f"sender {sender_id!r} is not a member")
            if self._inactive(sender):
                raise ApiError(41054, f"sender {sender!r} has not activated WeCom")
        opt_bool(data, "allow_select", False)
        groups = _tag_groups(data)
        text, attachments = _check_content(data)
        if not external_userids:
            # Only the sender given: every customer of the sender.
            external_userids = [
                ext
                for (userid, ext), rel in self._relations.items()
                if userid == sender and rel.status in _TARGETABLE
            ]
        owners = self._owners(external_userids, sender)
        fail_list = [ext for ext in external_userids if ext not in owners]
        tasks: dict[str, GroupMsgTask] = {}
        for ext in external_userids:
            rel = owners.get(ext)
            if rel is None or not _matches(rel, groups):
                continue
            task = tasks.setdefault(rel.userid, GroupMsgTask(rel.userid, []))
            task.external_userids.append(ext)
            task.results[ext] = NOT_SENT
        wall = self.wall_time()
        if not any(
            self._quota_left(ext, wall) > 0 for task in tasks.values() for ext in task.external_userids
        ):
            raise ApiError(41048, "no customer can receive this mass message")
        msg = GroupMsg(
            msgid=new_id("msg", 28),
            sender=sender,
            text=text,
            attachments=attachments,
            create_time=int(wall),
            created_at=self.now(),
            app=app,
            tasks=tasks,
            fail_list=fail_list,
        )
        self._groupmsgs[msg.msgid] = msg
        self._send_due_tasks()
        return {"fail_list": fail_list, "msgid": msg.msgid}

    def _get_groupmsg_task(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        self._send_due_tasks()
        msg = self._groupmsg_of(data)
        self._check_dispatched(msg)
        limit = _page_limit(data)
        kind = f"groupmsg_task:{msg.msgid}"
        cursor = opt_str(data, "cursor")
        offset = self._read_cursor(kind, cursor) if cursor else 0
        tasks = list(msg.tasks.values())
        rows: list[JSON] = []
        for task in tasks[offset : offset + limit]:
            row: JSON = {"userid": task.userid, "status": task.status}
            if task.send_time is not None:
                row["send_time"] = task.send_time
            rows.append(row)
        more = offset + limit < len(tasks)
        return {"next_cursor": self._new_cursor(kind, offset + limit) if more else "", "task_list": rows}

    def _get_groupmsg_send_result(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        self._send_due_tasks()
        msg = self._groupmsg_of(data)
        userid = opt_str(data, "userid")
        if not userid:
            raise ApiError(41009)
        member = self._member(userid)
        if member is None:
            raise ApiError(40003, f"userid {userid!r} is not a member")
        self._check_dispatched(msg)
        limit = _page_limit(data)
        kind = f"groupmsg_result:{msg.msgid}:{member}"
        cursor = opt_str(data, "cursor")
        offset = self._read_cursor(kind, cursor) if cursor else 0
        task = msg.tasks.get(member) or GroupMsgTask(member, [])
        customers = task.external_userids
        rows: list[JSON] = []
        for ext in customers[offset : offset + limit]:
            status = task.results[ext]
            row: JSON = {"external_userid": ext, "userid": member, "status": status}
            if status == SENT and task.send_time is not None:
                row["send_time"] = task.send_time
            rows.append(row)
        more = offset + limit < len(customers)
        return {"next_cursor": self._new_cursor(kind, offset + limit) if more else "", "send_list": rows}

    def _remind_groupmsg_send(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        self._send_due_tasks()
        msg = self._groupmsg_of(data)
        now = self.now()
        msg.reminders = [t for t in msg.reminders if now - t < REMIND_WINDOW_S]
        limit = self.config.groupmsg_reminds_per_24h
        if len(msg.reminders) >= limit:
            raise ApiError(
                self.config.groupmsg_remind_limit_errcode,
                f"a mass message can be reminded at most {limit} times per 24 hours",
            )
        msg.reminders.append(now)
        pending = (
            () if msg.cancelled else tuple(t.userid for t in msg.tasks.values() if t.status == TASK_UNSENT)
        )
        self._groupmsg_reminders.append(GroupMsgReminder(msg.msgid, pending, self.wall_time()))
        return {}

    def _cancel_groupmsg_send(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        self._send_due_tasks()
        self._groupmsg_of(data).cancelled = True
        return {}
