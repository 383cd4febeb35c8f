"""`wecom-bot campaigns …` and `courses …`: scheduled sends and live courses as operators manage them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.campaigns.catalog import (
    DEFAULT_INVITE_LEAD_MINUTES,
    DEFAULT_REMINDER_MINUTES,
    CampaignError,
    Schedule,
    archive_campaign,
    course_campaigns,
    create_campaign,
    describe_schedule,
    get_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
    update_campaign,
)
from bot.campaigns.courses import (
    CourseError,
    attendance_count,
    create_course,
    get_course,
    import_attendance,
    register,
    registration_count,
    require_author,
)
from bot.trading_calendar import SHANGHAI
from models.base import utcnow
from models.campaigns import (
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    Course,
    CourseAttendance,
    CourseRegistration,
    ScheduleKind,
)
from models.leads import Lead, Platform

if TYPE_CHECKING:
    from bot.cli import Context

RECENT_RUNS = 10


class _LocalTimeType(click.ParamType):
    name = "DATETIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a time like 2026-11-26T20:00 or 2026-11-26T20:00+08:00", param, ctx)
        return parsed.replace(tzinfo=SHANGHAI) if parsed.tzinfo is None else parsed


LOCAL_TIME = _LocalTimeType()


def _services(ctx: Context) -> Any:
    from bot.cli import _require_schema

    services = ctx.services()
    _require_schema(services)
    return services


@contextmanager
def _transaction(ctx: Context) -> Iterator[tuple[Session, Any]]:
    """A transaction; campaign and course errors become clean command errors and change nothing."""
    services = _services(ctx)
    try:
        with services.db.transaction() as session:
            yield session, services
    except (CampaignError, CourseError) as exc:
        raise click.ClickException(str(exc)) from None


def _local(at: datetime | None) -> str:
    return f"{at.astimezone(SHANGHAI):%Y-%m-%d %H:%M}" if at is not None else "-"


as_option = click.option(
    "--as", "username", required=True, help="Active admin or operator making the change (audited)."
)
reason_option = click.option("--reason", default="", help="Why (kept in the audit trail).")


def _schedule_options(fn: Any) -> Any:
    for option in reversed(
        (
            click.option("--schedule", type=click.Choice([s.value for s in ScheduleKind]), default=None),
            click.option("--time-of-day", default=None, help="HH:MM Asia/Shanghai (trading_days, daily)."),
            click.option(
                "--run-at",
                type=LOCAL_TIME,
                default=None,
                help="When (once); without an offset, Asia/Shanghai.",
            ),
            click.option("--course", "course_key", default=None, help="Course key (course schedules)."),
            click.option(
                "--offset-minutes",
                type=int,
                default=None,
                help="Minutes from the course start; negative = before.",
            ),
        )
    ):
        fn = option(fn)
    return fn


def _audience_options(fn: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--platform", "platforms", multiple=True, type=click.Choice([p.value for p in Platform])
            ),
            click.option(
                "--hook-code", "hook_codes", multiple=True, help="Only leads of this code (repeat)."
            ),
            click.option(
                "--tag", "tags", multiple=True, help="Only leads with this tag (repeat; all must match)."
            ),
            click.option("--stage", "stages", multiple=True, help="Only leads in this stage (repeat)."),
            click.option(
                "--registrants-only", is_flag=True, default=None, help="Only the course's registrants."
            ),
        )
    ):
        fn = option(fn)
    return fn


def _audience(
    platforms: tuple[str, ...],
    hook_codes: tuple[str, ...],
    tags: tuple[str, ...],
    stages: tuple[str, ...],
    registrants_only: bool | None,
) -> dict[str, Any] | None:
    """The audience filter from the options; subscribers only unless registrants of a course."""
    audience: dict[str, Any] = {
        name: list(values)
        for name, values in (
            ("platforms", platforms),
            ("hook_codes", hook_codes),
            ("tags", tags),
            ("stages", stages),
        )
        if values
    }
    if registrants_only:
        audience["registrants_only"] = True
    return audience or None


def _schedule(
    kind: str | None, time_of_day: str | None, run_at: datetime | None, course: str | None, offset: int | None
) -> Schedule | None:
    if kind is None:
        return None
    return Schedule(kind, time_of_day=time_of_day, run_at=run_at, course_key=course, offset_minutes=offset)


@click.group()
def campaigns() -> None:
    """Scheduled sends: morning reports, course invites and reminders, announcements."""


@campaigns.command("create")
@click.argument("key")
@click.option("--name", required=True)
@click.option("--kind", required=True, type=click.Choice([k.value for k in CampaignKind]))
@click.option("--script", "script_key", required=True, help="Script key it sends (of the matching kind).")
@_schedule_options
@_audience_options
@as_option
@click.pass_obj
def campaigns_create(
    ctx: Context,
    key: str,
    name: str,
    kind: str,
    script_key: str,
    schedule: str | None,
    time_of_day: str | None,
    run_at: datetime | None,
    course_key: str | None,
    offset_minutes: int | None,
    platforms: tuple[str, ...],
    hook_codes: tuple[str, ...],
    tags: tuple[str, ...],
    stages: tuple[str, ...],
    registrants_only: bool | None,
    username: str,
) -> None:
    """Create campaign KEY, e.g. --kind morning_report --schedule trading_days --time-of-day 08:30."""
    plan = _schedule(schedule, time_of_day, run_at, course_key, offset_minutes)
    if plan is None:
        raise click.UsageError("say --schedule (trading_days, daily, once or course)")
    audience = _audience(platforms, hook_codes, tags, stages, registrants_only)
    with _transaction(ctx) as (session, _):
        campaign = create_campaign(session, key, name, kind, script_key, plan, username, audience)
        click.echo(f"campaign {key} created: {kind}, {describe_schedule(session, campaign)}")


@campaigns.command("update")
@click.argument("key")
@click.option("--name", default=None)
@click.option("--script", "script_key", default=None)
@_schedule_options
@_audience_options
@as_option
@click.pass_obj
def campaigns_update(
    ctx: Context,
    key: str,
    name: str | None,
    script_key: str | None,
    schedule: str | None,
    time_of_day: str | None,
    run_at: datetime | None,
    course_key: str | None,
    offset_minutes: int | None,
    platforms: tuple[str, ...],
    hook_codes: tuple[str, ...],
    tags: tuple[str, ...],
    stages: tuple[str, ...],
    registrants_only: bool | None,
    username: str,
) -> None:
    """Change KEY's name, script, schedule (given whole) or audience (any audience option replaces it)."""
    audience = _audience(platforms, hook_codes, tags, stages, registrants_only)
    with _transaction(ctx) as (session, _):
        campaign = get_campaign(session, key)
        if schedule is None and any(v is not None for v in (time_of_day, run_at, course_key, offset_minutes)):
            schedule = campaign.schedule_kind  # same kind; unnamed parts stay as they are
            if schedule == ScheduleKind.COURSE:
                current = session.get(Course, campaign.course_id) if campaign.course_id is not None else None
                course_key = course_key or (current.key if current is not None else None)
                offset_minutes = campaign.offset_minutes if offset_minutes is None else offset_minutes
        plan = _schedule(schedule, time_of_day, run_at, course_key, offset_minutes)
        update_campaign(
            session, key, username, name=name, script_key=script_key, schedule=plan, audience=audience
        )
        click.echo(
            f"campaign {key}: {describe_schedule(session, campaign)}, audience {_json(campaign.audience)}"
        )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@campaigns.command("list")
@click.option("--status", type=click.Choice([s.value for s in CampaignStatus]), default=None)
@click.option("--kind", type=click.Choice([k.value for k in CampaignKind]), default=None)
@click.pass_obj
def campaigns_list(ctx: Context, status: str | None, kind: str | None) -> None:
    """Campaigns (archived ones only with --status archived)."""
    with _transaction(ctx) as (session, _):
        rows = list_campaigns(session, status=status, kind=kind)
        for c in rows:
            click.echo(
                f"{c.key:<28} {c.kind:<16} {c.status:<8} {c.script_key:<20} {describe_schedule(session, c)}"
            )
    if not rows:
        click.echo("no campaigns")


@campaigns.command("show")
@click.argument("key")
@click.pass_obj
def campaigns_show(ctx: Context, key: str) -> None:
    """A campaign's settings and its latest runs."""
    with _transaction(ctx) as (session, _):
        c = get_campaign(session, key)
        click.echo(f"campaign {c.key}: {c.name}")
        click.echo(f"kind: {c.kind}  status: {c.status}  script: {c.script_key}")
        click.echo(f"schedule: {describe_schedule(session, c)}")
        click.echo(f"audience: {_json(c.audience)} (opted-out and unreachable leads never match)")
        click.echo(f"created by {c.created_by} at {_local(c.created_at)}, updated {_local(c.updated_at)}")
        runs = list(
            session.scalars(
                select(CampaignRun)
                .where(CampaignRun.campaign_id == c.id)
                .order_by(CampaignRun.occurrence.desc())
                .limit(RECENT_RUNS)
            )
        )
        click.echo(f"latest runs: {len(runs) or 'none'}")
        for run in runs:
            reason = f" ({run.reason})" if run.reason else ""
            click.echo(f"  {_local(run.occurrence)}  {run.status}{reason}  {_json(run.counts)}")


@campaigns.command("pause")
@click.argument("key")
@reason_option
@as_option
@click.pass_obj
def campaigns_pause(ctx: Context, key: str, reason: str, username: str) -> None:
    """Stop KEY from sending until it is resumed."""
    with _transaction(ctx) as (session, _):
        pause_campaign(session, key, username, reason)
    click.echo(f"campaign {key} paused")


@campaigns.command("resume")
@click.argument("key")
@reason_option
@as_option
@click.pass_obj
def campaigns_resume(ctx: Context, key: str, reason: str, username: str) -> None:
    """Let paused KEY send again from its next occurrence."""
    with _transaction(ctx) as (session, _):
        resume_campaign(session, key, username, reason)
    click.echo(f"campaign {key} resumed")


@campaigns.command("archive")
@click.argument("key")
@reason_option
@as_option
@click.pass_obj
def campaigns_archive(ctx: Context, key: str, reason: str, username: str) -> None:
    """Retire KEY for good (its runs stay on record)."""
    with _transaction(ctx) as (session, _):
        archive_campaign(session, key, username, reason)
    click.echo(f"campaign {key} archived")


@click.group()
def courses() -> None:
    """Live investor-education courses: speakers, registrations (报名), attendance."""


@courses.command("create")
@click.argument("key")
@click.option("--title", required=True)
@click.option("--speaker", required=True, help="Speaker's name.")
@click.option("--sac", required=True, help="Speaker's SAC registration number, e.g. S0260612345678.")
@click.option("--starts-at", required=True, type=LOCAL_TIME, help="Start; without an offset, Asia/Shanghai.")
@click.option("--link", required=True, help="Where to watch (an allowed domain).")
@click.option("--with-campaigns", is_flag=True, help="Also create the invite and reminder campaigns.")
@click.option("--invite-lead-minutes", type=int, default=DEFAULT_INVITE_LEAD_MINUTES, show_default=True)
@click.option("--reminder-minutes", type=int, default=DEFAULT_REMINDER_MINUTES, show_default=True)
@as_option
@click.pass_obj
def courses_create(
    ctx: Context,
    key: str,
    title: str,
    speaker: str,
    sac: str,
    starts_at: datetime,
    link: str,
    with_campaigns: bool,
    invite_lead_minutes: int,
    reminder_minutes: int,
    username: str,
) -> None:
    """Create course KEY; with --with-campaigns its invite (subscribers) and reminder (registrants) too."""
    with _transaction(ctx) as (session, services):
        course = create_course(
            session, key, title, speaker, sac, starts_at, link, username, services.settings.compliance
        )
        made = []
        if with_campaigns:
            made = list(
                course_campaigns(
                    session,
                    course,
                    username,
                    invite_lead_minutes=invite_lead_minutes,
                    reminder_minutes=reminder_minutes,
                )
            )
        click.echo(f"course {key} created: 《{course.title}》 at {_local(course.starts_at)} Asia/Shanghai")
        for campaign in made:
            click.echo(f"campaign {campaign.key} created: {describe_schedule(session, campaign)}")


@courses.command("list")
@click.pass_obj
def courses_list(ctx: Context) -> None:
    """Courses by start time, with registration and attendance counts."""
    with _transaction(ctx) as (session, _):
        regs = dict(
            session.execute(
                select(CourseRegistration.course_id, func.count()).group_by(CourseRegistration.course_id)
            ).all()
        )
        seen = dict(
            session.execute(
                select(CourseAttendance.course_id, func.count()).group_by(CourseAttendance.course_id)
            ).all()
        )
        rows = list(session.scalars(select(Course).order_by(Course.starts_at, Course.id)))
        for course in rows:
            click.echo(
                f"{course.key:<24} {_local(course.starts_at)}  registered={regs.get(course.id, 0):<6}"
                f" attended={seen.get(course.id, 0):<6} 《{course.title}》 {course.speaker_name}"
            )
    if not rows:
        click.echo("no courses")


@courses.command("show")
@click.argument("key")
@click.pass_obj
def courses_show(ctx: Context, key: str) -> None:
    """A course: speaker, time, link, registrations by channel, attendance and its campaigns."""
    with _transaction(ctx) as (session, _):
        course = get_course(session, key)
        click.echo(f"course {course.key}: 《{course.title}》")
        click.echo(f"speaker: {course.speaker_name} (SAC {course.speaker_sac_no})")
        click.echo(f"starts: {_local(course.starts_at)} Asia/Shanghai")
        click.echo(f"link: {course.link}")
        by_channel = dict(
            session.execute(
                select(CourseRegistration.channel, func.count())
                .where(CourseRegistration.course_id == course.id)
                .group_by(CourseRegistration.channel)
            ).all()
        )
        channels = ", ".join(f"{ch} {n}" for ch, n in sorted(by_channel.items()))
        click.echo(
            f"registrations: {registration_count(session, course)}" + (f" ({channels})" if channels else "")
        )
        minutes = session.scalar(
            select(func.coalesce(func.sum(CourseAttendance.minutes), 0)).where(
                CourseAttendance.course_id == course.id
            )
        )
        click.echo(f"attendance: {attendance_count(session, course)} ({minutes} minutes in all)")
        linked = list_campaigns(session, course_id=course.id)
        for campaign in linked:
            click.echo(f"campaign {campaign.key} [{campaign.status}]: {describe_schedule(session, campaign)}")


@courses.command("register")
@click.argument("key")
@click.argument("external_userid")
@as_option
@click.pass_obj
def courses_register(ctx: Context, key: str, external_userid: str, username: str) -> None:
    """Register customer EXTERNAL_USERID for course KEY (e.g. signed up by phone)."""
    with _transaction(ctx) as (session, _):
        require_author(session, username)
        course = get_course(session, key)
        lead = session.scalars(select(Lead).where(Lead.external_user_id == external_userid)).first()
        if lead is None:
            raise CourseError(f"no customer {external_userid!r}")
        new = register(session, course, lead, "console", utcnow(), actor=username)
    click.echo(f"{external_userid} {'registered for' if new else 'was already registered for'} {key}")


@courses.command("import-attendance")
@click.argument("key")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@as_option
@click.pass_obj
def courses_import_attendance(ctx: Context, key: str, file: Path, username: str) -> None:
    """Import who attended KEY from FILE (CSV with a header: external_userid[, minutes]); safe to re-run."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException(f"{file}: not UTF-8 text; save the CSV as UTF-8") from None
    with _transaction(ctx) as (session, _):
        report = import_attendance(session, get_course(session, key), text, username)
    click.echo(
        f"attendance for {key}: {report.created} new, {report.updated} updated,"
        f" {report.unchanged} unchanged, {len(report.unknown)} unknown customers, {len(report.bad)} bad rows"
    )
    for line, userid in report.unknown:
        click.echo(f"  line {line}: no customer {userid}")
    for line, problem in report.bad:
        click.echo(f"  line {line}: {problem}")
