"""Plan one campaign run: whole-run checks, one approved text, then per recipient a channel or a reason.

A run is planned once. Its audience is read in keyset pages, one short transaction per page; every
recipient gets one `RunRecipient` row (unique per run and lead) and at most one delivery (purpose
key `run:{run_id}:{lead_id}`), so a crash mid-plan resumes where it stopped without duplicates.
The run row turns `planned` only at the end, and its mass-send tasks only become due then.
A dry run takes exactly the same decisions in read-only transactions and writes nothing.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any, TextIO

from sqlalchemy import String, and_, case, func, or_, select, text, true
from sqlalchemy.orm import Session

from bot.campaigns.audience import AudienceError, AudienceFilter, AudienceMember, fetch_batch
from bot.campaigns.controls import SENDING, switch_state
from bot.campaigns.masssend import MASS_CHANNEL
from bot.config import CampaignSettings, Settings
from bot.coordination import Coordinator
from bot.db import Database
from bot.delivery.outbox import OUTBOX_CHANNEL, enqueue
from bot.kf.replies import COUNTED as KF_COUNTED
from bot.kf.replies import WINDOW as KF_WINDOW
from bot.kf.replies import refusal as kf_refusal
from bot.trading_calendar import SHANGHAI, TradingCalendar
from models.alerts import Alert
from models.base import utcnow
from models.bulk import array_param, insert_columns, one_of, pipelined, reserve_ids
from models.campaigns import (
    Campaign,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    Course,
    MassTask,
    MassTaskStatus,
    RecipientChannel,
    RunRecipient,
    RunStatus,
    ScheduleKind,
)
from models.contacts import ContactRelation, RelationStatus
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.kf import KfConversation
from models.leads import Lead
from models.scripts import ScriptKind
from scripts_library import ledger
from scripts_library.catalogue import (
    Composed,
    MessageBlocked,
    NotSendable,
    compose_sendable,
    live,
    policy_from_settings,
    sendable_for_many,
)
from scripts_library.rendering import RenderError

# Deliveries that use up a customer's campaign allowance: queued or (possibly) sent, never failed ones.
CAP_COUNTED = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)
PURPOSE_PREFIX = "run:"
# "Not due": mass-send tasks wait so while their run is being planned (no task goes out half-filled),
# and mass-send recipients' delivery rows always (their task sends them, not the dispatcher).
NOT_DUE = datetime(9999, 12, 31, tzinfo=UTC)
HELD_FOR_REVIEW = "held for compliance review"
_WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
_SHORT_WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
# The script kind each campaign kind sends.
SCRIPT_KINDS: dict[str, str] = {
    CampaignKind.MORNING_REPORT: ScriptKind.MORNING_REPORT,
    CampaignKind.COURSE_INVITE: ScriptKind.COURSE_INVITE,
    CampaignKind.COURSE_REMINDER: ScriptKind.COURSE_REMINDER,
    CampaignKind.ANNOUNCEMENT: ScriptKind.KEYWORD_REPLY,
}
COURSE_KINDS = frozenset({CampaignKind.COURSE_INVITE, CampaignKind.COURSE_REMINDER})
# Leads per planning transaction: large enough that per-batch costs vanish, small enough that the
# ledger lock (held to each commit) never keeps a welcome waiting for long.
PLAN_BATCH_SIZE = 2000
# Mass recipients per pair of bulk statements (ledger, deliveries): pipelined, so PostgreSQL writes one
# chunk while the planner chains and encodes the next.
WRITE_CHUNK = 500


class SkipReason(enum.StrEnum):
    """Why one recipient of a run gets nothing (stored in RunRecipient.skip_reason)."""

    OPTED_OUT = "opted_out"
    UNREACHABLE = "unreachable"
    QUIET_HOURS = "quiet_hours"
    CAP_DAY = "cap_day"
    CAP_WEEK = "cap_week"
    CAP_MONTH = "cap_month"
    NO_MEMBER = "no_member"


SKIP_DESCRIPTIONS = {
    SkipReason.OPTED_OUT: "the customer opted out",
    SkipReason.UNREACHABLE: "the customer can no longer be reached (removed the member)",
    SkipReason.QUIET_HOURS: "the run falls in quiet hours",
    SkipReason.CAP_DAY: "daily campaign cap reached",
    SkipReason.CAP_WEEK: "weekly campaign cap reached",
    SkipReason.CAP_MONTH: "monthly campaign cap reached",
    SkipReason.NO_MEMBER: "no member relationship and no open kf window",
}


class PlanError(LookupError):
    """The run or campaign to plan does not exist."""


@dataclass(frozen=True)
class Message:
    """The run's one approved, rendered, linted text and what it is bound to."""

    text: str
    script_key: str
    script_version: int
    approval_id: int
    content_hash: str
    lint_verdict: str
    lexicon_version: str


@dataclass(frozen=True, slots=True)
class PlannedRecipient:
    """One lead's place in a plan: kf (with its kf account), mass (with its sender) or none (why)."""

    lead_id: int
    external_user_id: str
    channel: str
    skip_reason: str | None = None
    sender: str = ""  # mass: the member whose task carries it
    open_kfid: str = ""  # kf: the account whose window is open


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One mass-send task of a plan: its sending member and how many customers it carries."""

    sender: str
    recipients: int


@dataclass
class RunPlan:
    """What a run sends, or why it sends nothing; a dry run also carries every recipient."""

    campaign_key: str
    occurrence: datetime
    run_id: int | None
    status: str
    reason: str | None = None
    dry_run: bool = False
    message: Message | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    # During an A/B test of the script: every live arm's text (`message` is the first arm's).
    variants: list[Message] = field(default_factory=list)
    tasks: list[TaskSummary] = field(default_factory=list)
    recipients: list[PlannedRecipient] = field(default_factory=list)
    # `reason` as a code and its values (see _Stopped), for wording it in the reader's language.
    reason_code: str | None = None
    reason_params: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601 UTC)."""
        return {
            "campaign": self.campaign_key,
            "occurrence": self.occurrence.astimezone(UTC).isoformat(),
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "message": asdict(self.message) if self.message else None,
            "variants": [asdict(v) for v in self.variants],
            "counts": self.counts,
            "tasks": [asdict(t) for t in self.tasks],
            "recipients": [asdict(r) for r in self.recipients],
        }

    def to_json(self) -> str:
        """The plan as one JSON document, for compliance review."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def write_csv(self, out: TextIO) -> None:
        """One CSV row per recipient: lead, customer, channel, skip reason, sender, kf account."""
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        for r in self.recipients:
            writer.writerow(
                [r.lead_id, r.external_user_id, r.channel, r.skip_reason or "", r.sender, r.open_kfid]
            )

    def to_csv(self) -> str:
        """The recipient rows as CSV text."""
        out = io.StringIO()
        self.write_csv(out)
        return out.getvalue()


CSV_FIELDS = ("lead_id", "external_user_id", "channel", "skip_reason", "sender", "open_kfid")
# Takes a dry run's recipients batch by batch, in lead order (a dry run then keeps none in memory).
RecipientSink = Callable[[list[PlannedRecipient]], None]


def purpose_key(run_id: int, lead_id: int) -> str:
    """The delivery purpose key of one run's message to one lead (unique: one message per run and lead)."""
    return f"{PURPOSE_PREFIX}{run_id}:{lead_id}"


def in_quiet_hours(window: tuple[int, int] | None, at: datetime) -> bool:
    """Whether `at` falls in the quiet window (minutes of the Shanghai day; may wrap midnight)."""
    if window is None:
        return False
    local = at.astimezone(SHANGHAI)
    minute = local.hour * 60 + local.minute
    start, end = window
    return start <= minute < end if start < end else (minute >= start or minute < end)


@dataclass(frozen=True)
class CapWindows:
    """The Shanghai day, ISO week and calendar month containing a send, as UTC bounds."""

    day: tuple[datetime, datetime]
    week: tuple[datetime, datetime]
    month: tuple[datetime, datetime]

    @classmethod
    def around(cls, at: datetime) -> CapWindows:
        """The periods containing `at`."""
        today = at.astimezone(SHANGHAI).date()
        monday = today - timedelta(days=today.weekday())
        first = today.replace(day=1)
        next_month = (first + timedelta(days=32)).replace(day=1)
        return cls(
            (_start(today), _start(today + timedelta(days=1))),
            (_start(monday), _start(monday + timedelta(days=7))),
            (_start(first), _start(next_month)),
        )


def _start(day: date) -> datetime:
    return datetime.combine(day, time(0), SHANGHAI).astimezone(UTC)


def cap_usage(
    session: Session, recipients: Collection[str], windows: CapWindows, run_id: int | None = None
) -> dict[str, tuple[int, int, int]]:
    """Campaign messages queued or sent to each of `recipients` in the day, week and month (one query).

    Messages of run `run_id` itself are not counted, so a dry run of a run half planned before a
    crash decides as the resumed run will. Each recipient is its own probe of the recipient index
    (a lateral subquery on PostgreSQL): a plan over the status index, or a scan, looks cheap on stale
    statistics (a run's own queued rows) but reads every delivery, for each batch.
    """
    if not recipients:
        return {}
    d = Delivery
    own = [d.purpose_key.not_like(f"{PURPOSE_PREFIX}{run_id}:%")] if run_id is not None else []
    lo = min(windows.week[0], windows.month[0])
    hi = max(windows.week[1], windows.month[1])
    counted = and_(d.purpose_key.like(f"{PURPOSE_PREFIX}%"), d.status.in_(CAP_COUNTED))

    def within(bounds: tuple[datetime, datetime]) -> Any:
        return func.sum(
            case((and_(counted, d.created_at >= bounds[0], d.created_at < bounds[1]), 1), else_=0)
        )

    sums = (within(windows.day).label("day"), within(windows.week).label("week"),
            within(windows.month).label("month"))  # fmt: skip
    scope = (d.created_at >= lo, d.created_at < hi, *own)
    if session.get_bind().dialect.name == "postgresql":
        # The estimated cost of many probes can cross jit_above_cost; compiling costs more than it saves.
        session.execute(text("SET LOCAL jit = off"))
        wanted = (
            func.unnest(array_param(list(recipients), String()))
            .table_valued("recipient")
            .render_derived(name="wanted")
        )
        probe = select(*sums).where(d.recipient == wanted.c.recipient, *scope).lateral()
        # Only recipients with messages come back (the week and the month cover the day).
        used = or_(probe.c.week > 0, probe.c.month > 0)
        stmt = select(wanted.c.recipient, *probe.c).select_from(wanted).join(probe, true()).where(used)
    else:
        stmt = select(d.recipient, *sums).where(d.recipient.in_(recipients), *scope).group_by(d.recipient)
    rows = session.connection().execute(stmt).all()
    usage = {r: (int(a or 0), int(b or 0), int(c or 0)) for r, a, b, c in rows}
    return {r: counts for r, counts in usage.items() if any(counts)}


def cap_reason(usage: tuple[int, int, int], caps: CampaignSettings) -> SkipReason | None:
    """The first cap another campaign message would exceed, if any."""
    day, week, month = usage
    if day >= caps.cap_per_day:
        return SkipReason.CAP_DAY
    if week >= caps.cap_per_week:
        return SkipReason.CAP_WEEK
    if month >= caps.cap_per_month:
        return SkipReason.CAP_MONTH
    return None


# One member's relationship with a customer: (member user id, status); a customer's come oldest change first.
Relation = tuple[str, str]
_ACTIVE, _REMOVED = RelationStatus.ACTIVE.value, RelationStatus.REMOVED_BY_CUSTOMER.value
_KF, _MASS, _NONE = RecipientChannel.KF.value, RecipientChannel.MASS.value, RecipientChannel.NONE.value


def read_relations(session: Session, customers: list[str]) -> dict[str, list[Relation]]:
    """Each customer's relations with members, oldest change first (customers without any: absent)."""
    rel = ContactRelation
    stmt = (
        select(rel.external_user_id, rel.user_id, rel.status)
        .where(one_of(session, rel.external_user_id, customers))
        .order_by(rel.updated_at, rel.id)
    )
    relations: dict[str, list[Relation]] = defaultdict(list)
    for ext, user_id, status in session.connection().execute(stmt).all():  # one fetch, not row by row
        relations[ext].append((user_id, status))
    return relations


def choose_sender(member: AudienceMember, relations: list[Relation]) -> str | None:
    """The member whose mass-send task reaches this customer: the owner if connected, else the one
    connected most recently."""
    active = [user_id for user_id, status in relations if status == _ACTIVE]
    if not active:
        return None
    return member.owner_userid if member.owner_userid in active else active[-1]


def choose_kf(conversations: list[KfConversation], at: datetime) -> KfConversation | None:
    """The conversation whose 48 h window is open with replies left (the freshest), if any."""
    open_ = [c for c in conversations if kf_refusal(c, None, at) is None]
    if not open_:
        return None
    return max(open_, key=lambda c: (c.last_customer_msg_at or at, c.id))


@dataclass(frozen=True, slots=True)
class Decision:
    """The channel for one recipient, or why they are skipped."""

    channel: str
    reason: SkipReason | None = None
    sender: str = ""
    conversation: KfConversation | None = None


_SKIPPED = {reason: Decision(RecipientChannel.NONE, reason) for reason in SkipReason}


@lru_cache(maxsize=4096)
def _mass_by(sender: str) -> Decision:
    """The (immutable, shared) decision to reach a customer through `sender`'s task."""
    return Decision(RecipientChannel.MASS, sender=sender)


def decide(
    member: AudienceMember,
    *,
    quiet: bool,
    usage: tuple[int, int, int],
    caps: CampaignSettings,
    relations: list[Relation],
    conversations: list[KfConversation],
    at: datetime,
) -> Decision:
    """Opt-out, reachability, quiet hours and caps first; then kf if its window is open, else mass."""
    if member.opted_out:
        return _SKIPPED[SkipReason.OPTED_OUT]
    removed = relations and relations[0][1] == _REMOVED and all(s == _REMOVED for _, s in relations)
    if not member.reachable or removed:
        return _SKIPPED[SkipReason.UNREACHABLE]
    if quiet:
        return _SKIPPED[SkipReason.QUIET_HOURS]
    capped = cap_reason(usage, caps)
    if capped is not None:
        return _SKIPPED[capped]
    conv = choose_kf(conversations, at) if conversations else None
    if conv is not None:
        return Decision(RecipientChannel.KF, conversation=conv)
    sender = choose_sender(member, relations)
    if sender is not None:
        return _mass_by(sender)
    return _SKIPPED[SkipReason.NO_MEMBER]


# --- whole-run preparation ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """Everything a run's batches need, as plain values."""

    campaign_key: str
    occurrence: datetime
    at: datetime
    audience: AudienceFilter
    message: Message
    values: dict[str, dict[str, Any]]
    quiet: bool
    # Version id → text: the one version, or each live arm of an A/B test of the script.
    messages: dict[int, Message] = field(default_factory=dict)

    @property
    def testing(self) -> bool:
        """Whether recipients are split between the arms of an A/B test."""
        return len(self.messages) > 1


@dataclass(frozen=True)
class _Stopped:
    """The run sends nothing: skipped (a policy said no) or failed (the campaign is misconfigured).

    `code` and `params` say the same as `reason`, for the console to word in the reader's language.
    """

    status: str
    reason: str
    message: Message | None = None
    code: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def shanghai_date_text(day: date) -> str:
    """A date as Chinese readers expect it, e.g. 2026年11月24日."""
    return f"{day.year}年{day.month}月{day.day}日"


def report_values(occurrence: datetime) -> dict[str, str]:
    """`report.*` values for the occurrence's Shanghai date."""
    day = occurrence.astimezone(SHANGHAI).date()
    return {"date": shanghai_date_text(day), "weekday": _WEEKDAYS[day.weekday()]}


def course_values(course: Course) -> dict[str, str]:
    """`course.*` values from a course row (start time in Shanghai wall-clock)."""
    start = course.starts_at.astimezone(SHANGHAI)
    return {
        "title": course.title,
        "speaker": course.speaker_name,
        "speaker_sac": course.speaker_sac_no,
        "start_time": f"{start.month}月{start.day}日 {_SHORT_WEEKDAYS[start.weekday()]} {start:%H:%M}",
        "link": course.link,
    }


def _alert(
    session: Session, at: datetime, kind: str, severity: str, audience: str, message: str, **detail: Any
) -> None:
    session.add(
        Alert(
            raised_at=at,
            kind=kind,
            severity=severity,
            audience=audience,
            message=message,
            detail=detail,
        )
    )


def _prepare(
    session: Session,
    settings: Settings,
    campaign: Campaign,
    occurrence: datetime,
    at: datetime,
    run_id: int | None,
) -> _Prepared | _Stopped:
    """Whole-run checks in order, then the one rendered text; alerts go in `session`."""
    skipped, failed = RunStatus.SKIPPED, RunStatus.FAILED
    where = f"campaign {campaign.key!r} at {occurrence.astimezone(SHANGHAI):%Y-%m-%d %H:%M} Shanghai"
    detail = {"campaign": campaign.key, "run": run_id, "occurrence": occurrence.isoformat()}
    if campaign.status != CampaignStatus.ACTIVE:
        return _Stopped(skipped, f"campaign {campaign.status}", code="campaign_status",
                        params={"status": campaign.status})  # fmt: skip
    switch = switch_state(session, SENDING)
    if switch.on:
        stopped = {"by": switch.changed_by, "reason": switch.reason}
        return _Stopped(skipped, f"sending stopped by {switch.changed_by}: {switch.reason}",
                        code="sending_stopped", params=stopped)  # fmt: skip
    day = occurrence.astimezone(SHANGHAI).date()
    trading_only = (
        campaign.kind == CampaignKind.MORNING_REPORT or campaign.schedule_kind == ScheduleKind.TRADING_DAYS
    )
    if trading_only and not TradingCalendar.load(session).is_trading_day(day):
        return _Stopped(skipped, f"{day} is not a trading day", code="not_trading_day",
                        params={"day": day.isoformat()})  # fmt: skip
    try:
        audience = AudienceFilter.for_campaign(campaign)
    except AudienceError as exc:
        _alert(session, at, "run.misconfigured", "warning", "operator", f"{where}: {exc}", **detail)
        return _Stopped(failed, str(exc), code="audience", params={"error": str(exc)})
    values: dict[str, dict[str, Any]] = {
        "firm": {"name": settings.compliance.firm_name, "opt_out": settings.compliance.opt_out_instruction}
    }
    if campaign.kind == CampaignKind.MORNING_REPORT:
        values["report"] = report_values(occurrence)
    if campaign.kind in COURSE_KINDS:
        course = session.get(Course, campaign.course_id) if campaign.course_id is not None else None
        if course is None:
            reason = "course campaign without a course"
            _alert(session, at, "run.misconfigured", "warning", "operator", f"{where}: {reason}", **detail)
            return _Stopped(failed, reason, code="no_course")
        values["course"] = course_values(course)
    try:
        current = live(session, campaign.script_key, at)
    except NotSendable as exc:
        _alert(
            session,
            at,
            "run.no_approved_script",
            "critical",
            "both",
            f"{where} not sent: no approved version of script {campaign.script_key!r} ({exc})",
            script=campaign.script_key,
            **detail,
        )
        return _Stopped(skipped, f"no approved script: {exc}", code="no_approved_script",
                        params={"script": campaign.script_key})  # fmt: skip
    script = current.base[0]
    expected = SCRIPT_KINDS.get(campaign.kind)
    if script.kind != expected:
        reason = f"script {campaign.script_key!r} is a {script.kind} script; {campaign.kind} sends {expected}"
        _alert(session, at, "run.misconfigured", "warning", "operator", f"{where}: {reason}", **detail)
        kinds = {"script": campaign.script_key, "script_kind": script.kind, "wanted": expected or ""}
        return _Stopped(failed, reason, code="wrong_script_kind", params=kinds)
    policy = policy_from_settings(settings.compliance)
    # One text per version sent: the version, or every live arm of an A/B test (each checked alike).
    versions = [arm.sendable for arm in current.arms] if current.testing else [current.base]
    messages: dict[int, Message] = {}
    for chosen in versions:
        try:
            composed = compose_sendable(
                session, chosen, values, policy, at, recipient=f"campaign:{campaign.key}"
            )
        except MessageBlocked as exc:  # compose has alerted operators and compliance
            rules = sorted({f.rule_id for f in exc.result.findings if f.severity == "block"})
            blocked = {"script": campaign.script_key, "version": chosen[1].number, "rules": ", ".join(rules)}
            return _Stopped(skipped, str(exc), code="blocked", params=blocked)
        except RenderError as exc:
            _alert(session, at, "run.misconfigured", "warning", "operator", f"{where}: {exc}", **detail)
            return _Stopped(failed, str(exc), code="render_error", params={"error": str(exc)})
        message = _message(campaign.script_key, composed)
        if composed.held:
            _alert(
                session,
                at,
                "run.held",
                "warning",
                "both",
                f"{where} not sent: the final text of {campaign.script_key} v{message.script_version}"
                " needs compliance review, and a mass text cannot be held per recipient",
                script=campaign.script_key,
                lint=composed.lint.to_dict(),
                **detail,
            )
            return _Stopped(skipped, HELD_FOR_REVIEW, message, code="held_for_review")
        messages[composed.version.id] = message
    quiet = in_quiet_hours(settings.campaigns.quiet_window(), at)
    first = messages[versions[0][1].id]
    return _Prepared(campaign.key, occurrence, at, audience, first, values, quiet, messages)


def _message(script_key: str, composed: Composed) -> Message:
    return Message(
        text=composed.text,
        script_key=script_key,
        script_version=composed.version.number,
        approval_id=composed.approval.id,
        content_hash=composed.version.content_hash,
        lint_verdict=composed.lint.verdict,
        lexicon_version=composed.lint.lexicon_version,
    )


# --- per-batch planning ------------------------------------------------------------------------


class _Tasks:
    """Fills one mass-send task per sender up to the configured size, then starts the next."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.summaries: list[TaskSummary] = []
        self._current: dict[tuple[str, int], int] = {}  # (sender, approval) -> index in summaries

    def assign_dry(self, key: tuple[str, int]) -> None:
        """Count one recipient into the current task of (sender, approved text): dry runs keep tasks
        in memory."""
        index = self._current.get(key)
        if index is None or self.summaries[index].recipients >= self.maximum:
            self.summaries.append(TaskSummary(key[0], 0))
            index = self._current[key] = len(self.summaries) - 1
        self.summaries[index] = TaskSummary(key[0], self.summaries[index].recipients + 1)


class _Planner:
    """Runs the batches of one prepared run, for real (writing) or dry (reading only)."""

    def __init__(self, settings: Settings, prepared: _Prepared, run_id: int | None, dry_run: bool) -> None:
        self.settings = settings
        self.caps = settings.campaigns
        self.prepared = prepared
        self.run_id = run_id
        self.dry_run = dry_run
        self.windows = CapWindows.around(prepared.at)
        self.tasks = _Tasks(settings.campaigns.mass_task_max)
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self.recipients: list[PlannedRecipient] = []
        self.policy = policy_from_settings(settings.compliance)
        self._kf_accounts: list[str] | None = None  # open_kfids with conversations, read once
        self._params: dict[int, dict[str, int]] = {}
        self._mass_rows: dict[int, dict[str, Any]] = {}

    def decide_batch(
        self,
        session: Session,
        batch: list[AudienceMember],
        conversations: Mapping[str, list[KfConversation]] | None = None,
        relations: Mapping[str, list[Relation]] | None = None,
    ) -> list[tuple[AudienceMember, Decision]]:
        """Look up what the batch's decisions need in a few queries, then decide each recipient.

        `conversations` are the batch's kf conversations when the caller has already locked them,
        `relations` its customers' relations when the caller has read them ahead.
        """
        p = self.prepared
        if p.quiet:
            return [(m, decide(m, quiet=True, usage=(0, 0, 0), caps=self.caps, relations=[],
                               conversations=[], at=p.at)) for m in batch]  # fmt: skip
        customers = [m.external_user_id for m in batch]
        if conversations is None:
            conversations = self.conversations(session, customers)
        usage = cap_usage(session, customers, self.windows, self.run_id)
        if relations is None:
            relations = read_relations(session, customers)
        return [
            (
                m,
                decide(
                    m,
                    quiet=False,
                    usage=usage.get(m.external_user_id, (0, 0, 0)),
                    caps=self.caps,
                    relations=relations.get(m.external_user_id, []),
                    conversations=conversations.get(m.external_user_id, []),
                    at=p.at,
                ),
            )
            for m in batch
        ]

    def messages_for(
        self, session: Session, decided: list[tuple[AudienceMember, Decision]]
    ) -> dict[int, Message]:
        """During an A/B test, the text of each recipient who is sent something (by lead id): the arm
        the lead was assigned, or is assigned now (stored by a real run only). Else empty: one text."""
        p = self.prepared
        if not p.testing:
            return {}
        leads = [m.lead_id for m, d in decided if d.channel != _NONE]
        picked = sendable_for_many(session, p.message.script_key, p.at, leads, store=not self.dry_run)
        texts: dict[int, Message] = {}
        for lead_id, chosen in picked.items():
            msg = p.messages.get(chosen[1].id)
            if msg is None:  # an arm that went live after the run was prepared: checked as the others
                composed = compose_sendable(
                    session, chosen, p.values, self.policy, p.at, f"run:{self.run_id}"
                )
                if composed.held:
                    raise MessageBlocked(
                        f"{HELD_FOR_REVIEW}: {p.message.script_key} v{composed.version.number}",
                        composed.lint,
                        composed.text,
                        composed.version,
                        composed.approval,
                    )
                msg = p.messages[chosen[1].id] = _message(p.message.script_key, composed)
            texts[lead_id] = msg
        return texts

    def conversations(self, session: Session, customers: list[str]) -> dict[str, list[KfConversation]]:
        """The customers' kf conversations; a real run locks them before it takes the ledger lock,
        in the order kf replies use (conversation, then ledger), so the two never deadlock."""
        conversations: dict[str, list[KfConversation]] = defaultdict(list)
        if self.prepared.quiet:
            return conversations
        if self._kf_accounts is None:
            self._kf_accounts = list(session.scalars(select(KfConversation.open_kfid).distinct()))
        if self._kf_accounts:
            kf = KfConversation
            # open_kfid leads the conversations' unique index, so each customer is an index lookup.
            stmt = (
                select(kf)
                .where(kf.open_kfid.in_(self._kf_accounts), one_of(session, kf.external_user_id, customers))
                .order_by(kf.id)
            )
            if not self.dry_run:
                stmt = stmt.with_for_update(of=kf)  # its reply count is updated below, as kf replies do
            for conv in session.scalars(stmt):
                conversations[conv.external_user_id].append(conv)
        return conversations

    def plan_dry(
        self, session: Session, batch: list[AudienceMember], sink: RecipientSink | None = None
    ) -> None:
        """Decide a batch; its recipients go to `sink`, else are kept in memory. Nothing is written."""
        planned: list[PlannedRecipient] = []
        decided = self.decide_batch(session, batch)
        texts = self.messages_for(session, decided)
        for m, d in decided:
            if d.channel == _MASS:
                self.tasks.assign_dry((d.sender, texts.get(m.lead_id, self.prepared.message).approval_id))
            self.counts[(d.channel, d.reason)] += 1
            planned.append(
                PlannedRecipient(
                    m.lead_id,
                    m.external_user_id,
                    d.channel,
                    d.reason,
                    d.sender,
                    d.conversation.open_kfid if d.conversation is not None else "",
                )
            )
        if sink is None:
            self.recipients.extend(planned)
        else:
            sink(planned)

    def plan_real(
        self,
        session: Session,
        batch: list[AudienceMember],
        relations: Mapping[str, list[Relation]] | None = None,
    ) -> int:
        """Decide the batch's new recipients and write their rows, deliveries, ledger entries and tasks.

        `relations` are the batch's customers' relations when read ahead. Returns how many kf messages
        it queued (they may go out as soon as the batch commits).
        """
        assert self.run_id is not None
        run_id = self.run_id
        first, last = batch[0].lead_id, batch[-1].lead_id
        done = set(
            session.scalars(
                select(RunRecipient.lead_id).where(
                    RunRecipient.run_id == run_id, RunRecipient.lead_id >= first, RunRecipient.lead_id <= last
                )
            )
        )
        batch = [m for m in batch if m.lead_id not in done]  # planned before a crash: kept as they are
        if not batch:
            return 0
        conversations = self.conversations(session, [m.external_user_id for m in batch])
        # Held to commit: campaign messages are only written under it, so this batch's cap counts
        # include every message committed by any other run, and none can be added until it commits.
        ledger.hold(session)
        decided = self.decide_batch(session, batch, conversations, relations)
        texts = self.messages_for(session, decided)
        tasks = self._assign_tasks(session, decided, texts)
        kf_rows: dict[int, Delivery] = {}
        # The mass recipients per approved text (one text, or one per A/B arm): written by column.
        mass: dict[int, list[tuple[AudienceMember, MassTask]]] = defaultdict(list)
        sent: dict[int, Message] = {}  # approval id -> text
        with session.no_autoflush:
            for m, d in decided:
                if d.channel == _KF:
                    kf_rows[m.lead_id] = self._kf_delivery(session, m, d)
                elif d.channel == _MASS:
                    text = texts.get(m.lead_id, self.prepared.message)
                    sent[text.approval_id] = text
                    mass[text.approval_id].append((m, tasks[m.lead_id]))
        session.flush()  # the ORM's rows (kf deliveries, tasks) before the bulk writes
        delivery_ids = {lead_id: row.id for lead_id, row in kf_rows.items()}
        fresh = iter(reserve_ids(session, Delivery, sum(map(len, mass.values()))))
        task_ids = {task: task.id for task in set(tasks.values())}
        with pipelined(session):
            for approval_id, members in mass.items():
                for start in range(0, len(members), WRITE_CHUNK):
                    chunk = members[start : start + WRITE_CHUNK]
                    ids = list(islice(fresh, len(chunk)))
                    self._write_mass(session, sent[approval_id], chunk, ids)
                    delivery_ids.update(zip((m.lead_id for m, _ in chunk), ids, strict=True))
            leads = [m.lead_id for m, _ in decided]
            insert_columns(
                session,
                RunRecipient,
                {"run_id": run_id},
                {
                    "lead_id": leads,
                    "channel": [d.channel for _, d in decided],
                    "skip_reason": [d.reason for _, d in decided],
                    "delivery_id": [delivery_ids.get(lead_id) for lead_id in leads],
                    "mass_task_id": [task_ids[tasks[lead]] if lead in tasks else None for lead in leads],
                },
            )
        return len(kf_rows)

    def _write_mass(
        self, session: Session, msg: Message, members: list[tuple[AudienceMember, MassTask]], ids: list[int]
    ) -> None:
        """Queue and ledger one text's mass recipients: delivery rows their task (not the dispatcher)
        sends, with explicit ids so the run-recipient rows name them without reading them back."""
        assert self.run_id is not None
        keys = [purpose_key(self.run_id, m.lead_id) for m, _ in members]
        recipients = [m.external_user_id for m, _ in members]
        # Each task's sender and params read once: ORM attribute access per recipient adds up.
        of_task = {task: (task.sender, self._task_params(task.id)) for task in {t for _, t in members}}
        senders = [of_task[task][0] for _, task in members]
        seqs = ledger.append_message_columns(
            session,
            {
                "channel": Channel.MASS_TEMPLATE,
                "script_key": msg.script_key,
                "script_version": msg.script_version,
                "content_hash": msg.content_hash,
                "approval_id": msg.approval_id,
                "rendered_text": msg.text,
                "lint_verdict": msg.lint_verdict,
                "lexicon_version": msg.lexicon_version,
                "outcome": "queued",
            },
            {"recipient": recipients, "sender": senders, "detail": [f"delivery {key}" for key in keys]},
            self.prepared.at,
        )
        insert_columns(
            session,
            Delivery,
            self._mass_row(msg),
            {
                "id": ids,
                "purpose_key": keys,
                "recipient": recipients,
                "sender": senders,
                "params": [of_task[task][1] for _, task in members],
                "ledger_seq": seqs,
            },
        )

    def _assign_tasks(
        self,
        session: Session,
        decided: list[tuple[AudienceMember, Decision]],
        texts: Mapping[int, Message],
    ) -> dict[int, MassTask]:
        """Each mass recipient's task (by lead id): the task of its sender and text being filled, or a
        new one when full (a mass-send task carries one text, so each A/B arm has its own tasks)."""
        mass = [(m, d) for m, d in decided if d.channel == _MASS]
        if not mass:
            return {}
        open_tasks = self._open_tasks(session, {d.sender for _, d in mass})
        filled = {key: task.recipients for key, task in open_tasks.items()}
        assigned: dict[int, MassTask] = {}
        for m, d in mass:
            text = texts.get(m.lead_id, self.prepared.message)
            key = (d.sender, text.approval_id)
            task = open_tasks.get(key)
            if task is None or filled[key] >= self.tasks.maximum:
                if task is not None:
                    task.recipients = filled[key]
                task = open_tasks[key] = self._new_task(d.sender, text)
                session.add(task)
                filled[key] = 0
            filled[key] += 1
            assigned[m.lead_id] = task
        for key, task in open_tasks.items():
            task.recipients = filled[key]
        session.flush()  # new tasks get their ids before their recipients name them
        return assigned

    def _kf_delivery(self, session: Session, m: AudienceMember, d: Decision) -> Delivery:
        """Queue the message through the open kf window and count it against the window's replies."""
        assert self.run_id is not None
        p, conv = self.prepared, d.conversation
        assert conv is not None and conv.last_customer_msg_at is not None
        delivery = enqueue(
            session,
            purpose_key=purpose_key(self.run_id, m.lead_id),
            channel=Channel.KF_TEXT,
            recipient=m.external_user_id,
            script_key=p.message.script_key,
            values=p.values,
            policy=self.policy,
            params={"open_kfid": conv.open_kfid, "run_id": self.run_id},
            deadline=conv.last_customer_msg_at + KF_WINDOW,
            now=p.at,
            known_new=True,
            flush=False,
            lead_id=m.lead_id,
        )
        if delivery.status in KF_COUNTED:
            conv.replies_since += 1
            conv.last_reply_at = p.at
        return delivery

    def _open_tasks(self, session: Session, senders: set[str]) -> dict[tuple[str, int], MassTask]:
        """The run's tasks still being filled, per sender and approved text of this plan."""
        if not senders:
            return {}
        texts = {m.approval_id: m.text for m in self.prepared.messages.values()}
        stmt = (
            select(MassTask)
            .where(
                MassTask.run_id == self.run_id,
                MassTask.sender.in_(senders),
                MassTask.status == MassTaskStatus.QUEUED,
                MassTask.recipients < self.tasks.maximum,
                MassTask.approval_id.in_(texts),
            )
            .order_by(MassTask.id)
        )
        return {
            (task.sender, task.approval_id): task
            for task in session.scalars(stmt)
            if task.approval_id is not None and texts[task.approval_id] == task.text
        }

    def _new_task(self, sender: str, msg: Message) -> MassTask:
        at = self.prepared.at
        return MassTask(
            run_id=self.run_id,
            sender=sender,
            text=msg.text,
            script_key=msg.script_key,
            script_version=msg.script_version,
            approval_id=msg.approval_id,
            recipients=0,
            status=MassTaskStatus.QUEUED,
            fail_list=[],
            reminders=0,
            attempts=0,
            next_check_at=NOT_DUE,
            created_at=at,
        )

    def _task_params(self, task_id: int) -> dict[str, int]:
        """The params of a task's delivery rows: one shared object per task, so the bulk writer
        converts it to JSON once per task rather than once per row."""
        params = self._params.get(task_id)
        if params is None:
            assert self.run_id is not None
            params = self._params[task_id] = {"mass_task_id": task_id, "run_id": self.run_id}
        return params

    def _mass_row(self, msg: Message) -> dict[str, Any]:
        """What every mass recipient's delivery row of this run and text has in common (one object per
        text, so the bulk writer sends its values once)."""
        row = self._mass_rows.get(msg.approval_id)
        if row is None:
            row = self._mass_rows[msg.approval_id] = self._common_row(msg)
        return row

    def _common_row(self, msg: Message) -> dict[str, Any]:
        at = self.prepared.at
        return dict(
            channel=Channel.MASS_TEMPLATE,
            script_key=msg.script_key,
            script_version=msg.script_version,
            approval_id=msg.approval_id,
            content_hash=msg.content_hash,
            text=msg.text,
            lint_verdict=msg.lint_verdict,
            lexicon_version=msg.lexicon_version,
            status=DeliveryStatus.QUEUED,
            priority=100,
            attempts=0,
            created_at=at,
            # Sent by its task, never by the delivery dispatcher: never due there, so a run of a
            # million queued recipients stays out of the dispatcher's claim scan.
            next_attempt_at=NOT_DUE,
        )


def _variants(prepared: _Prepared) -> list[Message]:
    """Each A/B arm's text, in the order the arms went live (empty without a test)."""
    return list(prepared.messages.values()) if prepared.testing else []


# --- entry points ------------------------------------------------------------------------------


def counts_of(pairs: Mapping[tuple[str, str | None], int], tasks: int) -> dict[str, Any]:
    """CampaignRun.counts from (channel, skip reason) tallies: per channel, per skip reason, tasks."""
    counts: dict[str, Any] = {"recipients": sum(pairs.values()), "kf": 0, "mass": 0, "none": 0, "skipped": {}}
    for (channel, reason), n in sorted(pairs.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        counts[channel] = counts.get(channel, 0) + n
        if reason:
            counts["skipped"][reason] = counts["skipped"].get(reason, 0) + n
    counts["mass_tasks"] = tasks
    return counts


def _stored_counts(session: Session, run_id: int) -> dict[str, Any]:
    pairs = session.execute(
        select(RunRecipient.channel, RunRecipient.skip_reason, func.count())
        .where(RunRecipient.run_id == run_id)
        .group_by(RunRecipient.channel, RunRecipient.skip_reason)
    ).all()
    tasks = session.scalar(select(func.count()).select_from(MassTask).where(MassTask.run_id == run_id)) or 0
    return counts_of({(c, r): n for c, r, n in pairs}, int(tasks))


def _stored_tasks(session: Session, run_id: int) -> list[TaskSummary]:
    rows = session.execute(
        select(MassTask.sender, MassTask.recipients).where(MassTask.run_id == run_id).order_by(MassTask.id)
    )
    return [TaskSummary(sender, n) for sender, n in rows]


def load_plan(session: Session, run_id: int, with_recipients: bool = False) -> RunPlan:
    """A run's plan as stored: status, reason, counts, tasks and (optionally) every recipient row."""
    found = session.execute(
        select(CampaignRun, Campaign.key)
        .join(Campaign, Campaign.id == CampaignRun.campaign_id)
        .where(CampaignRun.id == run_id)
    ).first()
    if found is None:
        raise PlanError(f"no run {run_id}")
    run, key = found
    plan = RunPlan(key, run.occurrence, run.id, run.status, run.reason, counts=dict(run.counts or {}),
                   reason_code=run.reason_code, reason_params=run.reason_params)  # fmt: skip
    plan.tasks = _stored_tasks(session, run_id)
    if with_recipients:
        plan.recipients = list(_stored_recipients(session, run_id))
    return plan


def _stored_recipients(session: Session, run_id: int) -> Iterator[PlannedRecipient]:
    rr, d = RunRecipient, Delivery
    stmt = (
        select(rr.lead_id, Lead.external_user_id, rr.channel, rr.skip_reason, d.sender, d.params)
        .join(Lead, Lead.id == rr.lead_id)
        .outerjoin(d, d.id == rr.delivery_id)
        .where(rr.run_id == run_id)
        .order_by(rr.lead_id)
        .execution_options(yield_per=1000)
    )
    for lead_id, ext, channel, reason, sender, params in session.execute(stmt):
        mass, kf = channel == RecipientChannel.MASS, channel == RecipientChannel.KF
        open_kfid = (params or {}).get("open_kfid", "") if kf else ""
        yield PlannedRecipient(lead_id, ext, channel, reason, (sender or "") if mass else "", open_kfid)


Page = tuple[list[AudienceMember], dict[str, list[Relation]]]


def _pages(db: Database, audience: AudienceFilter, batch_size: int) -> Generator[Page]:
    """The audience page by page with its customers' relations, each page read in one short transaction.

    Neither needs the planner's locks: a page is the keyset of leads that match, rechecked per lead
    (opt-out, reachability) from values read a moment before, as a page read inside the batch would be.
    """
    after_id = 0
    while True:
        with db.read() as session:
            batch = fetch_batch(session, audience, after_id, batch_size)
            if not batch:
                return
            relations = read_relations(session, [m.external_user_id for m in batch])
        yield batch, relations
        after_id = batch[-1].lead_id


def _read_ahead(items: Iterator[Page]) -> Generator[Page]:
    """`items`, the next one read by a background thread while the caller works on the current one."""
    with ThreadPoolExecutor(1, thread_name_prefix="plan-read") as reader:
        following = reader.submit(next, items, None)
        while (item := following.result()) is not None:
            following = reader.submit(next, items, None)
            yield item


@contextmanager
def _locked_run(db: Database, run_id: int) -> Iterator[tuple[Session, CampaignRun]]:
    """A transaction holding the run row's lock (PostgreSQL; SQLite's writes serialize anyway)."""
    with db.transaction() as session:
        run = session.scalars(select(CampaignRun).where(CampaignRun.id == run_id).with_for_update()).first()
        if run is None:
            raise PlanError(f"no run {run_id}")
        yield session, run


def plan_run(
    db: Database,
    settings: Settings,
    run_id: int,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = PLAN_BATCH_SIZE,
    coordinator: Coordinator | None = None,
) -> RunPlan:
    """Plan a pending run once (a planned or skipped run is returned as stored); a crash resumes.

    Messages go out at the occurrence, or now if that is later. With `dry_run` the same decisions
    are taken and returned, recipient by recipient, and nothing is written. With `coordinator`
    the senders are woken as soon as there is something to send.
    """
    now = now or utcnow()
    if dry_run:
        with db.read() as session:
            found = session.execute(
                select(CampaignRun, Campaign)
                .join(Campaign, Campaign.id == CampaignRun.campaign_id)
                .where(CampaignRun.id == run_id)
            ).first()
            if found is None:
                raise PlanError(f"no run {run_id}")
            run, campaign = found
            if run.status != RunStatus.PENDING:
                return load_plan(session, run_id, with_recipients=True)
            occurrence = run.occurrence
        return _dry(db, settings, campaign.id, occurrence, now, run_id, batch_size)

    with _locked_run(db, run_id) as (session, run):
        if run.status != RunStatus.PENDING:
            return load_plan(session, run_id)
        row = session.get(Campaign, run.campaign_id)
        assert row is not None
        at = max(run.occurrence, now)
        prepared = _prepare(session, settings, row, run.occurrence, at, run_id)
        if isinstance(prepared, _Stopped):
            run.status, run.reason, run.planned_at = prepared.status, prepared.reason, now
            run.reason_code, run.reason_params = prepared.code or None, prepared.params or None
            run.counts = {}
            return RunPlan(row.key, run.occurrence, run_id, run.status, run.reason, message=prepared.message,
                           reason_code=run.reason_code, reason_params=run.reason_params)  # fmt: skip
    planner = _Planner(settings, prepared, run_id, dry_run=False)
    pages = _pages(db, prepared.audience, batch_size)
    # PostgreSQL reads the next page on a second connection while this one is written; SQLite's
    # transactions run one at a time anyway.
    with closing(_read_ahead(pages) if db.engine.dialect.name == "postgresql" else pages) as ahead:
        for batch, relations in ahead:
            with _locked_run(db, run_id) as (session, run):
                if run.status != RunStatus.PENDING:  # another planner finished it meanwhile
                    return load_plan(session, run_id)
                queued_kf = planner.plan_real(session, batch, relations)
            if queued_kf and coordinator is not None:
                coordinator.wake(OUTBOX_CHANNEL)
    with _locked_run(db, run_id) as (session, run):
        if run.status != RunStatus.PENDING:
            return load_plan(session, run_id)
        counts = _stored_counts(session, run_id)
        run.status, run.planned_at, run.counts, run.reason = RunStatus.PLANNED, now, counts, None
        run.reason_code, run.reason_params = None, None
        for task in session.scalars(
            select(MassTask).where(MassTask.run_id == run_id, MassTask.next_check_at == NOT_DUE)
        ):
            task.next_check_at = prepared.at  # complete now: the task sender may create it
        tasks = _stored_tasks(session, run_id)
    if tasks and coordinator is not None:
        coordinator.wake(MASS_CHANNEL)
    return RunPlan(prepared.campaign_key, prepared.occurrence, run_id, RunStatus.PLANNED, None,
                   message=prepared.message, counts=counts, tasks=tasks,
                   variants=_variants(prepared))  # fmt: skip


def dry_run_campaign(
    db: Database,
    settings: Settings,
    campaign_key: str,
    occurrence: datetime,
    now: datetime | None = None,
    batch_size: int = PLAN_BATCH_SIZE,
    sink: RecipientSink | None = None,
) -> RunPlan:
    """Plan a hypothetical occurrence of a campaign, for review: every recipient, channel and the text.

    With `sink` the recipients are handed over batch by batch instead of returned (constant memory
    whatever the audience size); the plan still carries the text, counts and tasks.
    """
    if occurrence.tzinfo is None:
        raise ValueError("occurrence: pass an aware datetime")
    with db.read() as session:
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.key == campaign_key))
        if campaign_id is None:
            raise PlanError(f"no campaign {campaign_key!r}")
    return _dry(db, settings, campaign_id, occurrence, now or occurrence, None, batch_size, sink)


def _dry(
    db: Database,
    settings: Settings,
    campaign_id: int,
    occurrence: datetime,
    now: datetime,
    run_id: int | None,
    batch_size: int,
    sink: RecipientSink | None = None,
) -> RunPlan:
    at = max(occurrence, now)
    with db.read() as session:  # never committed: alerts raised while preparing are dropped
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        key = campaign.key
        prepared = _prepare(session, settings, campaign, occurrence, at, run_id)
    if isinstance(prepared, _Stopped):
        return RunPlan(key, occurrence, run_id, prepared.status, prepared.reason, dry_run=True,
                       message=prepared.message, reason_code=prepared.code or None,
                       reason_params=prepared.params or None)  # fmt: skip
    planner = _Planner(settings, prepared, run_id, dry_run=True)
    after_id = 0
    while True:
        with db.read() as session:
            batch = fetch_batch(session, prepared.audience, after_id, batch_size)
            if not batch:
                break
            planner.plan_dry(session, batch, sink)
        after_id = batch[-1].lead_id
    return RunPlan(
        prepared.campaign_key,
        occurrence,
        run_id,
        RunStatus.PLANNED,
        None,
        dry_run=True,
        message=prepared.message,
        variants=_variants(prepared),
        counts=counts_of(planner.counts, len(planner.tasks.summaries)),
        tasks=list(planner.tasks.summaries),
        recipients=planner.recipients,
    )
