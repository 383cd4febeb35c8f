"""The console's own wording of what the services report by code: timeline lines, refusals, labels.

The services stay free of Flask: they name each line or refusal with a stable code and the values it
mentions (English for the CLI). Here each code gets a translatable text, and values that are codes
themselves (stages, statuses, channels) get their labels, when a page is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from flask_babel import LazyString
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from bot.campaigns.planner import SkipReason
from bot.console.forms import KIND_LABELS, ROLE_LABELS
from bot.console.presenting import localtime
from bot.handoff.channel import ChannelAction, ChannelStatus
from bot.leads.scoring import ScoreItem
from bot.leads.stages import Stage
from bot.leads.timeline import TimelineItem
from models.campaigns import Campaign, CampaignKind, CampaignStatus, Course, RunStatus, ScheduleKind
from models.deliveries import DeliveryStatus
from models.scoring import ScoreKind

STAGE_LABELS = {
    Stage.NEW: _l("New"),
    Stage.ENGAGED: _l("Engaged"),
    Stage.NURTURED: _l("Nurtured"),
    Stage.QUALIFIED: _l("Qualified"),
    Stage.HANDED_OFF: _l("Handed off"),
    Stage.ACCEPTED: _l("Accepted"),
    Stage.CONVERTED: _l("Converted"),
    Stage.LOST: _l("Lost"),
    Stage.OPTED_OUT: _l("Opted out"),
}
DELIVERY_STATUS_LABELS = {
    DeliveryStatus.QUEUED: _l("queued"),
    DeliveryStatus.HELD: _l("held for review"),
    DeliveryStatus.BLOCKED: _l("blocked"),
    DeliveryStatus.SENDING: _l("sending"),
    DeliveryStatus.SENT: _l("sent"),
    DeliveryStatus.FAILED: _l("failed"),
    DeliveryStatus.EXPIRED: _l("expired"),
    DeliveryStatus.UNKNOWN: _l("outcome unknown"),
    DeliveryStatus.CANCELLED: _l("cancelled"),
}
RUN_STATUS_LABELS = {
    RunStatus.PENDING: _l("Pending"),
    RunStatus.PLANNED: _l("Plan made"),
    RunStatus.SKIPPED: _l("Skipped"),
    RunStatus.FAILED: _l("Failed"),
}
CAMPAIGN_KIND_LABELS = {
    CampaignKind.MORNING_REPORT: _l("Morning report"),
    CampaignKind.COURSE_INVITE: _l("Course invitation"),
    CampaignKind.COURSE_REMINDER: _l("Course reminder"),
    CampaignKind.ANNOUNCEMENT: _l("Announcement"),
}
SCHEDULE_LABELS = {
    ScheduleKind.TRADING_DAYS: _l("Trading days at a time"),
    ScheduleKind.DAILY: _l("Every day at a time"),
    ScheduleKind.ONCE: _l("Once, at a date and time"),
    ScheduleKind.COURSE: _l("Relative to a course start"),
}
SKIP_LABELS = {
    SkipReason.OPTED_OUT: _l("the customer opted out"),
    SkipReason.UNREACHABLE: _l("the customer can no longer be reached (removed the member)"),
    SkipReason.QUIET_HOURS: _l("the run falls in quiet hours"),
    SkipReason.CAP_DAY: _l("daily campaign cap reached"),
    SkipReason.CAP_WEEK: _l("weekly campaign cap reached"),
    SkipReason.CAP_MONTH: _l("monthly campaign cap reached"),
    SkipReason.NO_MEMBER: _l("no member relationship and no open kf window"),
}
CHANNEL_ACTION_LABELS = {
    ChannelAction.KF_TRANSFER: _l("customer service session moved to the manager"),
    ChannelAction.TRANSFER_CUSTOMER: _l("customer moved to the manager in WeCom"),
    ChannelAction.NOTIFY_OWNER: _l("owning member told who takes over"),
    ChannelAction.NONE: _l("conversation needs no move"),
}
CHANNEL_STATUS_LABELS = {
    ChannelStatus.PENDING: _l("pending"),
    ChannelStatus.TRANSFERRING: _l("in progress"),
    ChannelStatus.DONE: _l("done"),
    ChannelStatus.FAILED: _l("failed"),
}
SCORE_KIND_LABELS = {
    ScoreKind.SUBSCRIBED: _l("subscribed"),
    ScoreKind.REPLIED: _l("replied"),
    ScoreKind.REGISTERED: _l("registered"),
    ScoreKind.ATTENDED: _l("attended"),
    ScoreKind.CLICKED: _l("clicked"),
    ScoreKind.INTENT: _l("intent"),
    ScoreKind.FIT: _l("profile fit"),
}
SOURCE_LABELS = {
    "contact_way": _l("「Contact me」 QR code"),
    "kf": _l("WeChat Customer Service"),
    "keyword": _l("keyword"),
    "acquisition_link": _l("acquisition link"),
    "console": _l("console"),
    "import": _l("import"),
}

TIMELINE_TEXTS: dict[str, LazyString] = {
    "inbound.text": _l("customer: %(text)s"),
    "inbound.kf_event": _l("customer service event %(event)s"),
    "inbound.event": _l("WeCom event %(kind)s %(change)s"),
    "inbound.other": _l("WeCom event %(kind)s"),
    "touch.code": _l("arrived through %(source)s, hook code %(code)s, member %(member)s"),
    "touch.raw": _l("arrived through %(source)s (unknown state %(raw)s), member %(member)s"),
    "tag.synced": _l("%(tag)s (in WeCom)"),
    "tag.failed": _l("%(tag)s (not in WeCom: %(error)s)"),
    "tag.local": _l("%(tag)s (only in the bot)"),
    "course.registered": _l("registered for course %(course)s 《%(title)s》 through %(channel)s"),
    "course.attended": _l("attended course %(course)s 《%(title)s》 for %(minutes)s minutes"),
    "score": _l("+%(points)s %(label)s (%(kind)s)"),
    "handoff.offered": _l("handoff #%(id)s offered to %(manager)s (attempt %(attempt)s): %(reason)s"),
    "handoff.offered_due": _l(
        "handoff #%(id)s offered to %(manager)s (attempt %(attempt)s), answer due %(due)s: %(reason)s"
    ),
    "handoff.escalated": _l(
        "handoff #%(id)s escalated to supervisor %(manager)s (attempt %(attempt)s): %(reason)s"
    ),
    "handoff.escalated_due": _l(
        "handoff #%(id)s escalated to supervisor %(manager)s (attempt %(attempt)s), answer due %(due)s:"
        " %(reason)s"
    ),
    "handoff.accepted": _l("handoff #%(id)s accepted by %(manager)s"),
    "handoff.declined": _l("handoff #%(id)s declined by %(manager)s: %(note)s"),
    "handoff.timed_out": _l("handoff #%(id)s timed out: %(note)s"),
    "handoff.closed": _l("handoff #%(id)s closed: %(note)s"),
    "handoff.cancelled": _l("handoff #%(id)s cancelled: %(note)s"),
    "handoff.channel": _l("handoff #%(id)s, %(action)s: %(status)s"),
    "handoff.channel_detail": _l("handoff #%(id)s, %(action)s: %(status)s (%(detail)s)"),
    "stage": _l("stage %(from_stage)s → %(to_stage)s by %(actor)s: %(reason)s"),
    "outbound": _l("%(script)s v%(version)s [%(status)s]: %(text)s"),
    "outbound.error": _l("%(script)s v%(version)s [%(status)s, error %(errcode)s]: %(text)s"),
    "variant": _l("A/B test #%(experiment)s of %(script)s: assigned variant %(label)s (v%(version)s)"),
    "audit": _l("%(action)s by %(actor)s"),
}

# Values that are codes themselves, by the timeline code and value name that carry them.
_TIMELINE_VALUES: dict[str, dict[str, Mapping[Any, LazyString]]] = {
    "touch.code": {"source": SOURCE_LABELS},
    "touch.raw": {"source": SOURCE_LABELS},
    "course.registered": {"channel": SOURCE_LABELS},
    "score": {"kind": SCORE_KIND_LABELS},
    "handoff.channel": {"action": CHANNEL_ACTION_LABELS, "status": CHANNEL_STATUS_LABELS},
    "handoff.channel_detail": {"action": CHANNEL_ACTION_LABELS, "status": CHANNEL_STATUS_LABELS},
    "stage": {"from_stage": STAGE_LABELS, "to_stage": STAGE_LABELS},
    "outbound": {"status": DELIVERY_STATUS_LABELS},
    "outbound.error": {"status": DELIVERY_STATUS_LABELS},
}

CAMPAIGN_REFUSALS: dict[str, LazyString] = {
    "campaign.unknown": _l("There is no campaign %(key)s."),
    "campaign.archived": _l("Campaign %(key)s is archived; archived campaigns do not change."),
    "campaign.nothing_to_change": _l("Nothing to change."),
    "campaign.status_change": _l("Campaign %(key)s is %(status)s and cannot become %(to)s."),
    "status.unknown": _l("Choose a status from the list."),
    "key.format": _l("Keys are 2-64 characters from letters, digits, _ and -."),
    "key.exists": _l("A campaign with the key %(key)s exists already."),
    "name.length": _l("Names are 1-128 characters."),
    "kind.unknown": _l("Choose a kind from the list."),
    "script.unknown": _l("There is no script %(script)s."),
    "script.wrong_kind": _l(
        "Script %(script)s is of the kind %(script_kind)s;"
        " this campaign sends scripts of the kind %(wanted)s."
    ),
    "script.per_customer_variables": _l(
        "Script %(script)s v%(version)s uses %(names)s, but a campaign sends one text to all its recipients"
        " and fills only %(allowed)s. Choose a script without per-customer variables."
    ),
    "schedule.unknown": _l("Choose a schedule from the list."),
    "schedule.trading_days_only": _l("Morning reports run on trading days at a time."),
    "schedule.course_only": _l("Course invitations and reminders are scheduled relative to a course start."),
    "schedule.missing": _l("This schedule needs: %(missing)s."),
    "schedule.extra": _l("This schedule does not take: %(extra)s."),
    "schedule.time_of_day": _l("%(value)s is not a time of day: write it as HH:MM, from 00:00 to 23:59."),
    "schedule.run_at_zone": _l("The send time needs a time zone."),
    "schedule.run_at_passed": _l("The send time %(run_at)s has passed."),
    "schedule.offset_whole": _l("Give a whole number of minutes."),
    "schedule.offset_range": _l("At most %(max)s minutes (30 days) before or after the start."),
    "schedule.offset_after_start": _l(
        "Course invitations and reminders go out before the course starts (0 or fewer minutes)."
    ),
    "schedule.unknown_course": _l("There is no course %(course)s."),
    "schedule.course_time_passed": _l(
        "%(offset)s minutes from the start of %(course)s is %(when)s, which has passed."
    ),
    "audience.not_object": _l("The audience filter could not be read."),
    "audience.unknown_keys": _l("Unknown audience filters: %(keys)s."),
    "audience.not_list": _l("This filter is a list of texts."),
    "audience.empty_list": _l("This filter is empty; leave it out to match everyone."),
    "audience.item_length": _l("Each entry is 1-%(limit)s characters."),
    "audience.unknown_platforms": _l("Unknown platforms: %(platforms)s."),
    "audience.unknown_hook_codes": _l("There is no hook code %(codes)s."),
    "audience.not_flag": _l("This filter is yes or no."),
    "audience.registrants_only_courses": _l(
        "Only course invitations and reminders can go to a course's registrants only."
    ),
    "audience.consent": _l(
        "Campaigns go to subscribers only (or, for courses, to registrants): leads who never subscribed"
        " must consent first."
    ),
    "course.invite_minutes": _l("Give the invitation a positive number of minutes before the start."),
    "course.reminder_minutes": _l("Give the reminder a positive number of minutes before the start."),
    "course.invite_after_reminder": _l(
        "The invitation must go out before the reminder: give it more minutes before the start."
    ),
}

# Refusals of the other services, by the codes their errors carry.
COURSE_REFUSALS: dict[str, LazyString] = {
    "author.unknown": _l("There is no active account %(username)s."),
    "author.role": _l(
        "%(username)s (%(role)s) may not manage campaigns or courses; administrators and operators may."
    ),
    "course.unknown": _l("There is no course %(key)s."),
    "course.key_format": _l("Course keys are 2-48 characters from letters, digits, _ and -."),
    "course.title_length": _l("Titles are 1-128 characters."),
    "course.speaker_length": _l("Speaker names are 1-64 characters."),
    "course.sac_format": _l(
        "%(value)s is not a SAC registration number: one capital letter and 13 digits,"
        " e.g. S0260612345678 for 投资顾问 or A… for 一般证券业务."
    ),
    "course.starts_zone": _l("The start time needs a time zone."),
    "course.starts_passed": _l("The start time %(starts_at)s has passed."),
    "course.link_format": _l("The live link is an http(s) address of at most 512 characters."),
    "course.link_domain": _l("%(host)s is not an allowed link domain; allowed are: %(domains)s."),
    "course.link_no_domains": _l(
        "%(host)s is not an allowed link domain; no link domains are allowed yet (compliance settings)."
    ),
    "course.exists": _l("A course with the key %(key)s exists already."),
    "course.channel": _l("Registrations come through one of: %(channels)s."),
    "attendance.not_started": _l(
        "Course %(key)s starts at %(starts_at)s; there is no attendance to import yet."
    ),
    "attendance.header": _l(
        "Line %(line)s: the header must name an external_userid column (minutes is optional)."
    ),
    "attendance.csv": _l("Line %(line)s is not valid CSV: %(error)s"),
    "attendance.userid_empty": _l("external_userid is empty."),
    "attendance.userid_long": _l("external_userid is longer than 64 characters."),
    "attendance.minutes": _l("Minutes %(value)s is not a whole number from 0 to %(max)s."),
    "attendance.duplicate": _l("%(userid)s already appears on line %(first)s; this row is ignored."),
    "attendance.empty": _l("The file is empty: it needs a header with an external_userid column."),
}
HOOK_CODE_REFUSALS: dict[str, LazyString] = {
    "hookcode.unknown": _l("There is no hook code %(hook)s."),
    "hookcode.format": _l("Hook codes are 2-30 characters from letters, digits, _ and - (WeCom's limit)."),
    "hookcode.platform": _l("Choose a platform from the list."),
    "hookcode.members": _l("Give 1-%(limit)s member userids."),
    "hookcode.exists": _l("A hook code %(hook)s exists already."),
    "hookcode.keyword_length": _l("Keywords are 2-32 characters."),
    "hookcode.keyword_taken": _l("The keyword %(keyword)s already names another hook code."),
}
AUDIENCE_REFUSALS: dict[str, LazyString] = {
    "audience.no_course": _l("This campaign goes to a course's registrants but has no course."),
}
SWITCH_REFUSALS: dict[str, LazyString] = {
    "switch.actor": _l("Name who changes the switch."),
    "switch.reason_missing": _l("Say why sending is stopped."),
    "switch.reason_length": _l("The reason is at most %(max)s characters."),
}
ACCOUNT_REFUSALS: dict[str, LazyString] = {
    "account.username_format": _l("User names are 2-64 characters from letters, digits and _.-@."),
    "account.role": _l("Choose a role from the list."),
    "account.password": _l("Passwords are at least %(min)s characters."),
    "account.taken": _l("The user name %(username)s is taken."),
    "account.unknown": _l("There is no account %(username)s."),
    "account.disable_self": _l("You cannot disable your own account."),
    "account.last_admin": _l("The last active administrator cannot be disabled."),
}
REFUSALS: dict[str, LazyString] = {
    **CAMPAIGN_REFUSALS,
    **COURSE_REFUSALS,
    **HOOK_CODE_REFUSALS,
    **AUDIENCE_REFUSALS,
    **SWITCH_REFUSALS,
    **ACCOUNT_REFUSALS,
}

# The bot's own stage-change reasons and handoff notes, by the codes stored with them.
STAGE_REASONS: dict[str, LazyString] = {
    "offered": _l("offered to %(manager)s"),
    "accepted": _l("accepted by %(manager)s"),
    "waiting.opted_out": _l("waiting for a manager: the customer opted out"),
    "waiting.no_manager": _l("waiting for a manager: no other eligible manager is free"),
}
HANDOFF_NOTES: dict[str, LazyString] = {
    "declined": _l("declined"),
    "timed_out": _l("no answer within %(minutes)s min"),
    "withdrawn": _l("withdrawn: the card was %(card)s"),
    "withdrawn_error": _l("withdrawn: the card was %(card)s (%(error)s)"),
    "lead_ended": _l("lead %(stage)s"),
}
_NOTE_VALUES: dict[str, Mapping[Any, LazyString]] = {
    "card": DELIVERY_STATUS_LABELS,
    "stage": STAGE_LABELS,
}


CAMPAIGN_STATUS_WORDS = {
    CampaignStatus.ACTIVE: _l("active"),
    CampaignStatus.PAUSED: _l("paused"),
    CampaignStatus.ARCHIVED: _l("archived"),
}
# Values of refusals that are codes themselves, by value name.
_REFUSAL_VALUES: dict[str, Mapping[Any, LazyString]] = {
    "status": CAMPAIGN_STATUS_WORDS,
    "to": CAMPAIGN_STATUS_WORDS,
    "script_kind": KIND_LABELS,
    "wanted": KIND_LABELS,
    "role": ROLE_LABELS,
}


def _shown(value: Any, labels: Mapping[Any, LazyString] | None) -> Any:
    """One value as the page shows it: a code by its label, a time in Shanghai time."""
    if isinstance(value, datetime):
        return localtime(value)
    if labels is not None and isinstance(value, str) and value in labels:
        return str(labels[value])
    return value


def timeline_line(item: TimelineItem) -> str:
    """A timeline entry in the reader's language (its values already masked for the viewer)."""
    text = TIMELINE_TEXTS.get(item.code)
    if text is None:
        return item.summary
    labels = _TIMELINE_VALUES.get(item.code, {})
    return str(text) % {name: _shown(value, labels.get(name)) for name, value in item.params.items()}


def refusal(error: object) -> str:
    """A service's refusal in the reader's language; one without a known code keeps its own message."""
    return _refused(getattr(error, "code", ""), getattr(error, "params", {}), str(error))


def row_problem(problem: str, shown: Callable[[str], str]) -> str:
    """An imported row's problem in the reader's language, its customer id as `shown` lets them see it."""
    params = {k: shown(v) if k == "userid" else v for k, v in getattr(problem, "params", {}).items()}
    return _refused(getattr(problem, "code", ""), params, str(problem))


def _refused(code: str, params: Mapping[str, Any], fallback: str) -> str:
    text = REFUSALS.get(code)
    if text is None:
        return fallback
    return str(text) % {name: _shown(value, _REFUSAL_VALUES.get(name)) for name, value in params.items()}


def _worded(
    texts: Mapping[str, LazyString],
    code: str | None,
    params: Mapping[str, Any] | None,
    fallback: str,
    labels: Mapping[str, Mapping[Any, LazyString]],
) -> str:
    text = texts.get(code or "")
    if text is None:
        return fallback
    return str(text) % {name: _shown(value, labels.get(name)) for name, value in (params or {}).items()}


# Why a campaign run (or its dry run) sends nothing, by the code the planner and scheduler store.
RUN_REASONS: dict[str, LazyString] = {
    "campaign_status": _l("the campaign is %(status)s"),
    "campaign_paused": _l("the campaign was paused"),
    "sending_stopped": _l("all sending stopped by %(by)s: %(reason)s"),
    "not_trading_day": _l("%(day)s is not a trading day"),
    "audience": _l("the audience cannot be used: %(error)s"),
    "no_course": _l("a course campaign without a course"),
    "no_approved_script": _l("no approved version of script %(script)s is valid at send time"),
    "wrong_script_kind": _l("script %(script)s is a %(script_kind)s script; this campaign sends %(wanted)s"),
    "blocked": _l("the final text of %(script)s v%(version)s was blocked by %(rules)s"),
    "render_error": _l("the script could not be filled in: %(error)s"),
    "held_for_review": _l(
        "the final text needs compliance review, and a mass text cannot be held per customer"
    ),
    "missed": _l("missed: the scheduler was not running at %(at)s"),
}
_RUN_REASON_VALUES: dict[str, Mapping[Any, LazyString]] = {
    "status": CAMPAIGN_STATUS_WORDS,
    "script_kind": KIND_LABELS,
    "wanted": KIND_LABELS,
}


def run_reason(code: str | None, params: Mapping[str, Any] | None, fallback: str | None) -> str:
    """Why a run sends nothing, in the reader's language; runs stored before codes keep their text."""
    values = dict(params or {})
    if code == "missed" and isinstance(values.get("at"), str):
        values["at"] = datetime.fromisoformat(values["at"])
    return _worded(RUN_REASONS, code, values, fallback or "", _RUN_REASON_VALUES)


def stage_reason(code: str | None, params: Mapping[str, Any] | None, fallback: str) -> str:
    """Why a lead changed stage in the reader's language; free text (and old rows) as stored."""
    return _worded(STAGE_REASONS, code, params, fallback, {})


def handoff_note(code: str | None, params: Mapping[str, Any] | None, fallback: str) -> str:
    """Why a handoff ended in the reader's language; a manager's own note (and old rows) as stored."""
    return _worded(HANDOFF_NOTES, code, params, fallback, _NOTE_VALUES)


def score_reason(item: ScoreItem) -> str:
    """One scored fact with its points, and whether decay or the kind's cap took points off."""
    line = f"{item.label or item.detail} +{item.points}"
    if item.was_decayed and item.was_capped:
        return _(
            "%(line)s (decayed from %(awarded)d; cap %(cap)d reached)",
            line=line,
            awarded=item.awarded,
            cap=item.cap,
        )
    if item.was_decayed:
        return _("%(line)s (decayed from %(awarded)d)", line=line, awarded=item.awarded)
    if item.was_capped:
        return _("%(line)s (cap %(cap)d reached)", line=line, cap=item.cap)
    return line


def schedule_text(campaign: Campaign, course: Course | None) -> str:
    """When a campaign runs, in the reader's language and Shanghai time."""
    kind = campaign.schedule_kind
    if kind == ScheduleKind.TRADING_DAYS:
        return _("Trading days at %(time)s", time=campaign.time_of_day)
    if kind == ScheduleKind.DAILY:
        return _("Every day at %(time)s", time=campaign.time_of_day)
    if kind == ScheduleKind.ONCE and campaign.run_at is not None:
        return _("Once, at %(when)s", when=localtime(campaign.run_at))
    if kind == ScheduleKind.COURSE and course is not None and campaign.offset_minutes is not None:
        offset = campaign.offset_minutes
        values = {"course": course.key, "when": localtime(course.starts_at + timedelta(minutes=offset))}
        if offset <= 0:
            return _("%(n)d min before course %(course)s starts (%(when)s)", n=-offset, **values)
        return _("%(n)d min after course %(course)s starts (%(when)s)", n=offset, **values)
    return kind  # a course schedule whose course is gone
