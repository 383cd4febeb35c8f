"""Campaigns as data: create, change, pause, resume and archive them, each change validated and audited."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.campaigns.courses import require_author
from bot.trading_calendar import SHANGHAI
from models.audit import AuditEntry
from models.base import utcnow
from models.campaigns import Campaign, CampaignKind, CampaignStatus, Course, ScheduleKind
from models.leads import HookCode, Platform
from models.scripts import Script, ScriptKind, ScriptVersion, VersionStatus

CAMPAIGN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{2,64}$")
TIME_OF_DAY_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# The script kind each campaign kind sends (announcements reuse approved keyword replies).
SCRIPT_KIND: dict[str, str] = {
    CampaignKind.MORNING_REPORT: ScriptKind.MORNING_REPORT,
    CampaignKind.COURSE_INVITE: ScriptKind.COURSE_INVITE,
    CampaignKind.COURSE_REMINDER: ScriptKind.COURSE_REMINDER,
    CampaignKind.ANNOUNCEMENT: ScriptKind.KEYWORD_REPLY,
}
COURSE_KINDS = frozenset({CampaignKind.COURSE_INVITE, CampaignKind.COURSE_REMINDER})
# The variables a run fills (see planner._prepare): every kind renders one text per run for all its
# recipients, so per-lead variables such as lead.display_name can never be filled.
RUN_VARIABLES: dict[str, frozenset[str]] = {
    CampaignKind.MORNING_REPORT: frozenset({"firm", "report"}),
    CampaignKind.COURSE_INVITE: frozenset({"firm", "course"}),
    CampaignKind.COURSE_REMINDER: frozenset({"firm", "course"}),
    CampaignKind.ANNOUNCEMENT: frozenset({"firm"}),
}
# Versions that are or may become the one a run sends.
_LIVE_VERSIONS = (VersionStatus.DRAFT, VersionStatus.SUBMITTED, VersionStatus.APPROVED)
_PARSER = Environment(autoescape=False)  # parses only; scripts are rendered in the sandbox
MAX_OFFSET_MINUTES = 30 * 24 * 60
AUDIENCE_LISTS = ("platforms", "hook_codes", "tags", "stages")
AUDIENCE_FLAGS = ("subscribed_only", "registrants_only")
AUDIENCE_KEYS = AUDIENCE_LISTS + AUDIENCE_FLAGS
_LIST_ITEM_MAX = {"platforms": 32, "hook_codes": 30, "tags": 64, "stages": 16}
DEFAULT_INVITE_LEAD_MINUTES = 24 * 60
DEFAULT_REMINDER_MINUTES = 30


class CampaignError(ValueError):
    """A campaign cannot be created or changed as asked; the message says why and nothing was changed.

    `code` names the refusal and `params` the values its message mentions, so the console can say it
    in the reader's language; the English message stays for the CLI and logs.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Schedule:
    """When a campaign's runs fall; only the fields of its kind are set (times are Asia/Shanghai)."""

    kind: str
    time_of_day: str | None = None  # trading_days, daily: "HH:MM"
    run_at: datetime | None = None  # once: an aware time in the future
    course_key: str | None = None  # course: the course …
    offset_minutes: int | None = None  # … and minutes from its start (negative = before)

    @classmethod
    def trading_days(cls, time_of_day: str) -> Schedule:
        """Every trading day at `time_of_day` Shanghai time."""
        return cls(ScheduleKind.TRADING_DAYS, time_of_day=time_of_day)

    @classmethod
    def daily(cls, time_of_day: str) -> Schedule:
        """Every day at `time_of_day` Shanghai time."""
        return cls(ScheduleKind.DAILY, time_of_day=time_of_day)

    @classmethod
    def once(cls, run_at: datetime) -> Schedule:
        """Once, at `run_at`."""
        return cls(ScheduleKind.ONCE, run_at=run_at)

    @classmethod
    def course(cls, course_key: str, offset_minutes: int) -> Schedule:
        """Once, `offset_minutes` from the course's start (negative = before)."""
        return cls(ScheduleKind.COURSE, course_key=course_key, offset_minutes=offset_minutes)


def _audit(session: Session, at: datetime, actor: str, action: str, target: str, **detail: Any) -> None:
    session.add(AuditEntry(at=at, actor=actor, action=action, target=target, detail=detail))


def get_campaign(session: Session, key: str) -> Campaign:
    """The campaign with `key`, or refuse with a clear error."""
    campaign = session.scalars(select(Campaign).where(Campaign.key == key)).first()
    if campaign is None:
        raise CampaignError(f"no campaign {key!r}", "campaign.unknown", key=key)
    return campaign


def list_campaigns(
    session: Session, status: str | None = None, kind: str | None = None, course_id: int | None = None
) -> list[Campaign]:
    """Campaigns by key: those with `status`, or every one not archived; optionally of one kind or course."""
    stmt = select(Campaign).order_by(Campaign.key)
    if status is None:
        stmt = stmt.where(Campaign.status != CampaignStatus.ARCHIVED)
    else:
        if status not in CampaignStatus.__members__.values():
            raise CampaignError(f"status: one of {', '.join(CampaignStatus)}", "status.unknown")
        stmt = stmt.where(Campaign.status == status)
    if kind is not None:
        stmt = stmt.where(Campaign.kind == kind)
    if course_id is not None:
        stmt = stmt.where(Campaign.course_id == course_id)
    return list(session.scalars(stmt))


def _check_script(session: Session, kind: str, script_key: str) -> None:
    script = session.scalars(select(Script).where(Script.key == script_key)).first()
    if script is None:
        raise CampaignError(
            f"script: no script {script_key!r} in the catalogue", "script.unknown", script=script_key
        )
    wanted = SCRIPT_KIND[kind]
    if script.kind != wanted:
        raise CampaignError(
            f"script: {script_key!r} is a {script.kind} script; {kind} campaigns send {wanted} scripts",
            "script.wrong_kind",
            script=script_key,
            script_kind=script.kind,
            kind=kind,
            wanted=wanted,
        )
    _check_run_variables(session, kind, script)


def _variables(body: str) -> list[str]:
    """The `name.field` variables a script body references, in order of appearance, each once."""
    try:
        tree = _PARSER.parse(body)
    except TemplateSyntaxError:
        return []  # the catalogue refuses such bodies when they are saved
    found = [
        f"{node.node.name}.{node.attr}"
        for node in tree.find_all(nodes.Getattr)
        if isinstance(node.node, nodes.Name)
    ]
    return list(dict.fromkeys(found))


def _check_run_variables(session: Session, kind: str, script: Script) -> None:
    """Refuse a script any of whose live versions uses a variable a run of `kind` cannot fill."""
    allowed = RUN_VARIABLES[kind]
    stmt = (
        select(ScriptVersion)
        .where(ScriptVersion.script_id == script.id, ScriptVersion.status.in_(_LIVE_VERSIONS))
        .order_by(ScriptVersion.number)
    )
    for version in session.scalars(stmt):
        unfilled = [v for v in _variables(version.body) if v.split(".", 1)[0] not in allowed]
        if unfilled:
            names = ", ".join(f"{{{{ {v} }}}}" for v in unfilled)
            raise CampaignError(
                f"script: {script.key!r} v{version.number} ({version.status}) uses {names}, but"
                f" campaigns of kind {kind} render one text for all their recipients and fill only"
                f" {', '.join(sorted(allowed))}.*; choose a script without per-customer variables",
                "script.per_customer_variables",
                script=script.key,
                version=version.number,
                names=names,
                kind=kind,
                allowed=", ".join(f"{a}.*" for a in sorted(allowed)),
            )


def _schedule_columns(session: Session, kind: str, schedule: Schedule, now: datetime) -> dict[str, Any]:
    """The campaign columns for `schedule` after checking it fits `kind`; refuses inconsistent schedules."""
    sk = schedule.kind
    if sk not in ScheduleKind.__members__.values():
        raise CampaignError(f"schedule: one of {', '.join(ScheduleKind)}", "schedule.unknown")
    if kind == CampaignKind.MORNING_REPORT and sk != ScheduleKind.TRADING_DAYS:
        raise CampaignError(
            "schedule: morning reports run on trading days (trading_days at HH:MM)",
            "schedule.trading_days_only",
        )
    if kind in COURSE_KINDS and sk != ScheduleKind.COURSE:
        raise CampaignError(
            f"schedule: {kind} campaigns are scheduled relative to a course (course)",
            "schedule.course_only",
            kind=kind,
        )
    given = {
        "time_of_day": schedule.time_of_day is not None,
        "run_at": schedule.run_at is not None,
        "course": schedule.course_key is not None,
        "offset_minutes": schedule.offset_minutes is not None,
    }
    needed = {
        ScheduleKind.TRADING_DAYS: {"time_of_day"},
        ScheduleKind.DAILY: {"time_of_day"},
        ScheduleKind.ONCE: {"run_at"},
        ScheduleKind.COURSE: {"course", "offset_minutes"},
    }[ScheduleKind(sk)]
    missing = sorted(name for name in needed if not given[name])
    if missing:
        raise CampaignError(
            f"schedule: {sk} needs {' and '.join(missing)}",
            "schedule.missing",
            schedule=sk,
            missing=", ".join(missing),
        )
    extra = sorted(name for name, present in given.items() if present and name not in needed)
    if extra:
        raise CampaignError(
            f"schedule: {sk} takes only {' and '.join(sorted(needed))}, not {', '.join(extra)}",
            "schedule.extra",
            schedule=sk,
            extra=", ".join(extra),
        )
    columns: dict[str, Any] = {
        "schedule_kind": str(sk),
        "time_of_day": None,
        "run_at": None,
        "course_id": None,
        "offset_minutes": None,
    }
    if sk in (ScheduleKind.TRADING_DAYS, ScheduleKind.DAILY):
        assert schedule.time_of_day is not None
        if not TIME_OF_DAY_RE.match(schedule.time_of_day):
            raise CampaignError(
                f"schedule: time of day {schedule.time_of_day!r} is not HH:MM (00:00-23:59)",
                "schedule.time_of_day",
                value=schedule.time_of_day,
            )
        columns["time_of_day"] = schedule.time_of_day
    elif sk == ScheduleKind.ONCE:
        run_at = schedule.run_at
        assert run_at is not None
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise CampaignError("schedule: run_at needs a time zone (e.g. +08:00)", "schedule.run_at_zone")
        if run_at <= now:
            raise CampaignError(
                f"schedule: run_at {run_at.isoformat()} has passed", "schedule.run_at_passed", run_at=run_at
            )
        columns["run_at"] = run_at
    else:
        offset = schedule.offset_minutes
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise CampaignError(
                "schedule: offset_minutes must be a whole number of minutes", "schedule.offset_whole"
            )
        if not -MAX_OFFSET_MINUTES <= offset <= MAX_OFFSET_MINUTES:
            raise CampaignError(
                f"schedule: offset_minutes within ±{MAX_OFFSET_MINUTES} (30 days)",
                "schedule.offset_range",
                max=MAX_OFFSET_MINUTES,
            )
        if kind in COURSE_KINDS and offset > 0:
            raise CampaignError(
                f"schedule: {kind} campaigns run before the course starts (offset ≤ 0)",
                "schedule.offset_after_start",
                kind=kind,
            )
        course = session.scalars(select(Course).where(Course.key == schedule.course_key)).first()
        if course is None:
            raise CampaignError(
                f"schedule: no course {schedule.course_key!r}",
                "schedule.unknown_course",
                course=schedule.course_key,
            )
        when = course.starts_at + timedelta(minutes=offset)
        if when <= now:
            local = when.astimezone(SHANGHAI)
            raise CampaignError(
                f"schedule: {offset} minutes from the start of {course.key} is {local:%Y-%m-%d %H:%M}"
                " Asia/Shanghai, which has passed",
                "schedule.course_time_passed",
                offset=offset,
                course=course.key,
                when=when,
            )
        columns["course_id"], columns["offset_minutes"] = course.id, offset
    return columns


def _audience(session: Session, kind: str, audience: Mapping[str, Any] | None) -> dict[str, Any]:
    """The audience filter checked and normalised; morning reports default to subscribers only."""
    if audience is None:
        audience = {}
    if not isinstance(audience, Mapping):
        raise CampaignError("audience: a JSON object", "audience.not_object")
    unknown = sorted(set(audience) - set(AUDIENCE_KEYS))
    if unknown:
        raise CampaignError(
            f"audience: unknown {', '.join(unknown)}; allowed: {', '.join(AUDIENCE_KEYS)}",
            "audience.unknown_keys",
            keys=", ".join(unknown),
        )
    result: dict[str, Any] = {}
    for name in AUDIENCE_LISTS:
        if name not in audience:
            continue
        values = audience[name]
        if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
            raise CampaignError(f"audience: {name} is a list of strings", "audience.not_list", name=name)
        cleaned = list(dict.fromkeys(v.strip() for v in values))
        if not cleaned:
            raise CampaignError(
                f"audience: {name} is empty; leave it out to match any", "audience.empty_list", name=name
            )
        limit = _LIST_ITEM_MAX[name]
        if any(not v or len(v) > limit for v in cleaned):
            raise CampaignError(
                f"audience: each of {name} is 1-{limit} characters",
                "audience.item_length",
                name=name,
                limit=limit,
            )
        result[name] = cleaned
    if "platforms" in result:
        bad = [p for p in result["platforms"] if p not in Platform.__members__.values()]
        if bad:
            raise CampaignError(
                f"audience: unknown platforms {', '.join(bad)}; one of {', '.join(Platform)}",
                "audience.unknown_platforms",
                name="platforms",
                platforms=", ".join(bad),
            )
    if "hook_codes" in result:
        known = set(session.scalars(select(HookCode.code).where(HookCode.code.in_(result["hook_codes"]))))
        missing = [c for c in result["hook_codes"] if c not in known]
        if missing:
            raise CampaignError(
                f"audience: no hook code {', '.join(missing)}",
                "audience.unknown_hook_codes",
                name="hook_codes",
                codes=", ".join(missing),
            )
    for name in AUDIENCE_FLAGS:
        if name not in audience:
            continue
        if not isinstance(audience[name], bool):
            raise CampaignError(f"audience: {name} is true or false", "audience.not_flag", name=name)
        result[name] = audience[name]
    if result.get("registrants_only") and kind not in COURSE_KINDS:
        raise CampaignError(
            "audience: registrants_only applies to course invites and reminders only",
            "audience.registrants_only_courses",
            name="registrants_only",
        )
    # Marketing needs consent: subscribers, or for course sends the leads who registered.
    if not result.get("registrants_only"):
        if result.get("subscribed_only") is False:
            raise CampaignError(
                "audience: campaigns go to subscribers only (or, for courses, to registrants); "
                "sending to leads who never subscribed needs their consent first",
                "audience.consent",
                name="subscribed_only",
            )
        result["subscribed_only"] = True
    return result


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 128:
        raise CampaignError("name: 1-128 characters", "name.length")
    return name


def _prepare(
    session: Session,
    key: str,
    name: str,
    kind: str,
    script_key: str,
    schedule: Schedule,
    actor: str,
    audience: Mapping[str, Any] | None,
    now: datetime,
) -> Campaign:
    """An unsaved campaign after every check; nothing is added to the session."""
    require_author(session, actor, CampaignError)
    if not CAMPAIGN_KEY_RE.match(key):
        raise CampaignError("key: 2-64 characters from letters, digits, '_' and '-'", "key.format")
    if kind not in CampaignKind.__members__.values():
        raise CampaignError(f"kind: one of {', '.join(CampaignKind)}", "kind.unknown")
    name = _name(name)
    _check_script(session, kind, script_key)
    columns = _schedule_columns(session, kind, schedule, now)
    checked = _audience(session, kind, audience)
    if session.scalars(select(Campaign.id).where(Campaign.key == key)).first() is not None:
        raise CampaignError(f"campaign {key!r} exists", "key.exists", key=key)
    return Campaign(
        key=key,
        name=name,
        kind=str(kind),
        script_key=script_key,
        audience=checked,
        status=CampaignStatus.ACTIVE,
        created_by=actor,
        created_at=now,
        updated_at=now,
        **columns,
    )


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _add(session: Session, campaign: Campaign, actor: str, now: datetime) -> None:
    session.add(campaign)
    session.flush()
    _audit(
        session,
        now,
        actor,
        "campaign.create",
        f"campaign:{campaign.key}",
        kind=campaign.kind,
        script=campaign.script_key,
        schedule=campaign.schedule_kind,
        time_of_day=campaign.time_of_day,
        run_at=_json(campaign.run_at),
        course_id=campaign.course_id,
        offset_minutes=campaign.offset_minutes,
        audience=campaign.audience,
    )


def create_campaign(
    session: Session,
    key: str,
    name: str,
    kind: str,
    script_key: str,
    schedule: Schedule,
    actor: str,
    audience: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Campaign:
    """Create an active campaign after checking its script, schedule and audience fit its kind; audit it."""
    now = now or utcnow()
    campaign = _prepare(session, key, name, kind, script_key, schedule, actor, audience, now)
    _add(session, campaign, actor, now)
    return campaign


def _changeable(session: Session, key: str, actor: str) -> Campaign:
    require_author(session, actor, CampaignError)
    campaign = get_campaign(session, key)
    if campaign.status == CampaignStatus.ARCHIVED:
        raise CampaignError(
            f"campaign {key} is archived; archived campaigns do not change", "campaign.archived", key=key
        )
    return campaign


def update_campaign(
    session: Session,
    key: str,
    actor: str,
    *,
    name: str | None = None,
    script_key: str | None = None,
    schedule: Schedule | None = None,
    audience: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Campaign:
    """Replace a campaign's name, script, schedule or audience (each checked whole); audit the change."""
    now = now or utcnow()
    if name is None and script_key is None and schedule is None and audience is None:
        raise CampaignError(
            "nothing to change: give a name, script, schedule or audience", "campaign.nothing_to_change"
        )
    campaign = _changeable(session, key, actor)
    wanted: dict[str, Any] = {}
    if name is not None:
        wanted["name"] = _name(name)
    if script_key is not None:
        _check_script(session, campaign.kind, script_key)
        wanted["script_key"] = script_key
    if schedule is not None:
        wanted.update(_schedule_columns(session, campaign.kind, schedule, now))
    if audience is not None:
        wanted["audience"] = _audience(session, campaign.kind, audience)
    changed = {
        column: [_json(getattr(campaign, column)), _json(value)]
        for column, value in wanted.items()
        if getattr(campaign, column) != value
    }
    if not changed:
        return campaign
    for column, value in wanted.items():
        setattr(campaign, column, value)
    campaign.updated_at = now
    _audit(session, now, actor, "campaign.update", f"campaign:{key}", changed=changed)
    return campaign


def _set_status(
    session: Session,
    key: str,
    actor: str,
    status: str,
    allowed_from: Collection[str],
    reason: str,
    now: datetime | None,
) -> Campaign:
    now = now or utcnow()
    campaign = _changeable(session, key, actor)
    if campaign.status not in allowed_from:
        raise CampaignError(
            f"campaign {key} is {campaign.status}; it cannot become {status}",
            "campaign.status_change",
            key=key,
            status=campaign.status,
            to=status,
        )
    old = campaign.status
    campaign.status, campaign.updated_at = status, now
    action = {
        CampaignStatus.PAUSED: "campaign.pause",
        CampaignStatus.ACTIVE: "campaign.resume",
        CampaignStatus.ARCHIVED: "campaign.archive",
    }[CampaignStatus(status)]
    _audit(session, now, actor, action, f"campaign:{key}", previous=old, reason=reason.strip())
    return campaign


def pause_campaign(
    session: Session, key: str, actor: str, reason: str = "", now: datetime | None = None
) -> Campaign:
    """Stop an active campaign from sending; its schedule is kept for a later resume."""
    return _set_status(session, key, actor, CampaignStatus.PAUSED, {CampaignStatus.ACTIVE}, reason, now)


def resume_campaign(
    session: Session, key: str, actor: str, reason: str = "", now: datetime | None = None
) -> Campaign:
    """Let a paused campaign send again from its next occurrence."""
    return _set_status(session, key, actor, CampaignStatus.ACTIVE, {CampaignStatus.PAUSED}, reason, now)


def archive_campaign(
    session: Session, key: str, actor: str, reason: str = "", now: datetime | None = None
) -> Campaign:
    """Retire a campaign for good: it never sends again and can no longer change (its runs stay on record)."""
    allowed = {CampaignStatus.ACTIVE, CampaignStatus.PAUSED}
    return _set_status(session, key, actor, CampaignStatus.ARCHIVED, allowed, reason, now)


def course_campaigns(
    session: Session,
    course: Course,
    actor: str,
    *,
    invite_lead_minutes: int = DEFAULT_INVITE_LEAD_MINUTES,
    reminder_minutes: int = DEFAULT_REMINDER_MINUTES,
    invite_script: str = "course_invite",
    reminder_script: str = "course_reminder",
    invite_audience: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[Campaign, Campaign]:
    """Create a course's invite (to subscribers, by default) and its reminder to registrants, both or neither.

    Keys are `<course>-invite` and `<course>-reminder`; the invite goes out `invite_lead_minutes`
    and the reminder `reminder_minutes` before the start.
    """
    now = now or utcnow()
    lead_times = (
        ("invite lead time", invite_lead_minutes, "course.invite_minutes"),
        ("reminder time", reminder_minutes, "course.reminder_minutes"),
    )
    for label, minutes, code in lead_times:
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes <= 0:
            raise CampaignError(f"{label}: a positive number of minutes before the start", code)
    if invite_lead_minutes <= reminder_minutes:
        raise CampaignError(
            "the invite must go out before the reminder (invite lead time > reminder time)",
            "course.invite_after_reminder",
        )
    audience = {"subscribed_only": True} if invite_audience is None else invite_audience
    invite = _prepare(
        session,
        f"{course.key}-invite",
        f"《{course.title}》直播邀请",
        CampaignKind.COURSE_INVITE,
        invite_script,
        Schedule.course(course.key, -invite_lead_minutes),
        actor,
        audience,
        now,
    )
    reminder = _prepare(
        session,
        f"{course.key}-reminder",
        f"《{course.title}》开课提醒",
        CampaignKind.COURSE_REMINDER,
        reminder_script,
        Schedule.course(course.key, -reminder_minutes),
        actor,
        {"registrants_only": True},
        now,
    )
    _add(session, invite, actor, now)
    _add(session, reminder, actor, now)
    return invite, reminder


def describe_schedule(session: Session, campaign: Campaign) -> str:
    """A campaign's schedule in words, for listings and the audit of operators' changes."""
    kind = campaign.schedule_kind
    if kind == ScheduleKind.TRADING_DAYS:
        return f"trading days at {campaign.time_of_day} Asia/Shanghai"
    if kind == ScheduleKind.DAILY:
        return f"every day at {campaign.time_of_day} Asia/Shanghai"
    if kind == ScheduleKind.ONCE and campaign.run_at is not None:
        return f"once at {campaign.run_at.astimezone(SHANGHAI):%Y-%m-%d %H:%M} Asia/Shanghai"
    course = session.get(Course, campaign.course_id) if campaign.course_id is not None else None
    if kind == ScheduleKind.COURSE and course is not None and campaign.offset_minutes is not None:
        offset = campaign.offset_minutes
        when = (course.starts_at + timedelta(minutes=offset)).astimezone(SHANGHAI)
        relation = f"{-offset} min before" if offset < 0 else f"{offset} min after"
        return f"{relation} course {course.key} starts ({when:%Y-%m-%d %H:%M} Asia/Shanghai)"
    return kind
