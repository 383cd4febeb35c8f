"""Campaign and course pages: create and edit, audience size, dry runs, run history, pauses, kill switch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.campaigns import audience as aud
from bot.campaigns import catalog, controls, courses
from bot.campaigns.planner import load_plan
from bot.console.auth import current_user, roles_required, services
from bot.console.blueprint import SHANGHAI, bp
from bot.console.campaign_forms import AttendanceForm, CampaignForm, CourseForm
from bot.console.forms import ReasonForm
from bot.console.presenting import Page, page_number, paginate, slice_page
from bot.console.texts import refusal, row_problem, schedule_text
from bot.leads.masking import mask
from models.base import utcnow
from models.campaigns import Campaign, CampaignRun, CampaignStatus, Course, RunRecipient
from models.deliveries import Delivery
from models.users import Role

VIEWERS = (Role.ADMIN, Role.OPERATOR, Role.COMPLIANCE)
AUTHORS = (Role.ADMIN, Role.OPERATOR)  # the roles the catalogue lets create and change campaigns
PAUSERS = AUTHORS
SWITCHERS = (Role.ADMIN, Role.COMPLIANCE)
FULL_VIEW = (Role.ADMIN, Role.COMPLIANCE)
PREVIEW_FORMAT = "%Y-%m-%dT%H:%M"
MAX_ATTENDANCE_BYTES = 2 * 2**20

CAMPAIGN_STATUS_LABELS = {
    CampaignStatus.ACTIVE: _l("Active"),
    CampaignStatus.PAUSED: _l("Paused"),
    CampaignStatus.ARCHIVED: _l("Archived"),
}
CHANNEL_LABELS = {"kf": _l("Customer service (kf)"), "mass": _l("Member mass send"), "none": _l("Not sent")}


def visible(text: str) -> str:
    """`text` as the signed-in role may see it: full for admin and compliance, masked for the others."""
    return text if current_user().role in FULL_VIEW else mask(text)


def _switch_context() -> dict[str, Any]:
    """The kill switch as every campaign page shows it, with its form."""
    with services().db.read() as session:
        state = controls.switch_state(session)
    return {"switch": state, "switch_form": ReasonForm()}


@bp.route("/campaigns")
@roles_required(*VIEWERS)
def campaigns() -> str:
    """Campaigns with their schedule and status; archived ones on request."""
    status = request.args.get("status", "")
    chosen = status if status in set(CampaignStatus) else None
    with services().db.read() as session:
        found = catalog.list_campaigns(session, chosen)
        page = slice_page(found, page_number(request.args.get("page")), services().settings.console.page_size)
        rows = [{"campaign": c, "schedule": _schedule(session, c)} for c in page.items]
    return render_template(
        "console/campaigns.html",
        rows=rows,
        page=page,
        status=chosen or "",
        statuses=CAMPAIGN_STATUS_LABELS,
        **_switch_context(),
    )


def _campaign_or_404(session: Session, key: str) -> Campaign:
    try:
        return catalog.get_campaign(session, key)
    except catalog.CampaignError:
        abort(404)


def _schedule(session: Session, campaign: Campaign) -> str:
    """When the campaign runs, in the reader's language."""
    course = session.get(Course, campaign.course_id) if campaign.course_id is not None else None
    return schedule_text(campaign, course)


def _audience_size(session: Session, campaign: Campaign) -> tuple[int | None, str]:
    """How many leads the campaign reaches now, or why its filter cannot be applied."""
    try:
        return aud.count(session, aud.AudienceFilter.for_campaign(campaign)), ""
    except aud.AudienceError as exc:
        return None, refusal(exc)


def _delivery_outcomes(session: Session, run_ids: list[int]) -> dict[int, dict[str, dict[str, int]]]:
    """Per run, per channel: how many of its deliveries are in each status now."""
    outcomes: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    if not run_ids:
        return outcomes
    rows = session.execute(
        select(RunRecipient.run_id, RunRecipient.channel, Delivery.status, func.count())
        .join(Delivery, Delivery.id == RunRecipient.delivery_id)
        .where(RunRecipient.run_id.in_(run_ids))
        .group_by(RunRecipient.run_id, RunRecipient.channel, Delivery.status)
    ).all()
    for run_id, channel, status, n in rows:
        outcomes[run_id][channel][status] = n
    return outcomes


def _run_history(session: Session, campaign: Campaign, number: int) -> tuple[Page[Any], list[dict[str, Any]]]:
    """One page of the campaign's runs, newest first, with stored counts and delivery outcomes."""
    stmt = (
        select(CampaignRun)
        .where(CampaignRun.campaign_id == campaign.id)
        .order_by(CampaignRun.occurrence.desc(), CampaignRun.id.desc())
    )
    page = paginate(session, stmt, number, services().settings.console.page_size)
    outcomes = _delivery_outcomes(session, [run.id for run in page.items])
    history = []
    for run in page.items:
        plan = load_plan(session, run.id)
        history.append({"plan": plan, "outcomes": outcomes.get(run.id, {})})
    return page, history


@bp.route("/campaigns/<key>")
@roles_required(*VIEWERS)
def campaign_detail(key: str) -> str:
    """A campaign: schedule, audience size, its dry-run previews, run history and its controls."""
    from bot.console.views_previews import preview_panel  # builds on this module

    raw_at = request.args.get("at", "").strip()
    with services().db.read() as session:
        campaign = _campaign_or_404(session, key)
        schedule = _schedule(session, campaign)
        audience_size, audience_error = _audience_size(session, campaign)
        runs_page, history = _run_history(session, campaign, page_number(request.args.get("page")))
        panel = preview_panel(session, campaign)
    return render_template(
        "console/campaign.html",
        campaign=campaign,
        schedule=schedule,
        audience_size=audience_size,
        audience_error=audience_error,
        runs_page=runs_page,
        history=history,
        at=raw_at or utcnow().astimezone(SHANGHAI).strftime(PREVIEW_FORMAT),
        visible=visible,
        channel_labels=CHANNEL_LABELS,
        statuses=CAMPAIGN_STATUS_LABELS,
        status_form=ReasonForm(),
        **panel,
        **_switch_context(),
    )


def _change_status(key: str, change: Callable[..., Campaign], done: str) -> Response:
    """Pause or resume `key` with the reason from the form; the catalogue refuses what is not allowed."""
    form = ReasonForm()
    if not form.validate_on_submit():
        flash(_("Pausing or resuming a campaign needs a reason."), "error")
        return redirect(url_for("console.campaign_detail", key=key))
    try:
        with services().db.transaction() as session:
            change(session, key, current_user().username, form.reason.data or "")
    except catalog.CampaignError as exc:
        flash(_("Not changed: %(reason)s", reason=refusal(exc)), "error")
    else:
        flash(done, "success")
    return redirect(url_for("console.campaign_detail", key=key))


@bp.route("/campaigns/<key>/pause", methods=["POST"])
@roles_required(*PAUSERS)
def campaign_pause(key: str) -> Response:
    """Stop a campaign from sending; its schedule stays for a later resume."""
    return _change_status(key, catalog.pause_campaign, _("Campaign %(key)s paused.", key=key))


@bp.route("/campaigns/<key>/resume", methods=["POST"])
@roles_required(*PAUSERS)
def campaign_resume(key: str) -> Response:
    """Let a paused campaign send again from its next occurrence."""
    return _change_status(key, catalog.resume_campaign, _("Campaign %(key)s resumed.", key=key))


def _back_to_campaigns() -> Response:
    """The campaign page the switch was used from, else the campaign list."""
    key = request.args.get("back", "")
    with services().db.read() as session:
        known = bool(key) and session.scalar(select(Campaign.id).where(Campaign.key == key)) is not None
    return redirect(url_for("console.campaign_detail", key=key) if known else url_for("console.campaigns"))


def _set_switch(stop: bool) -> Response:
    form = ReasonForm()
    if not form.validate_on_submit():
        flash(_("Stopping or resuming all sending needs a reason."), "error")
        return _back_to_campaigns()
    try:
        with services().db.transaction() as session:
            change = controls.stop_sending if stop else controls.resume_sending
            state = change(session, current_user().username, form.reason.data or "")
    except controls.ControlError as exc:
        flash(_("Not changed: %(reason)s", reason=refusal(exc)), "error")
    else:
        if not state.changed:
            flash(_("Nothing changed: sending was already in that state."), "warning")
        elif stop:
            flash(_("All sending is stopped. Nothing goes out until it is resumed."), "warning")
        else:
            flash(_("Sending resumed. Queued messages go out again."), "success")
    return _back_to_campaigns()


@bp.route("/sending/stop", methods=["POST"])
@roles_required(*SWITCHERS)
def sending_stop() -> Response:
    """The kill switch: stop every send to everyone at once."""
    return _set_switch(stop=True)


@bp.route("/sending/resume", methods=["POST"])
@roles_required(*SWITCHERS)
def sending_resume() -> Response:
    """Turn the kill switch off again."""
    return _set_switch(stop=False)


@bp.route("/courses")
@roles_required(*VIEWERS)
def courses_list() -> str:
    """Courses, newest start first, with how many registered and how many attended."""
    stmt = select(Course).order_by(Course.starts_at.desc(), Course.id.desc())
    with services().db.read() as session:
        page = paginate(
            session, stmt, page_number(request.args.get("page")), services().settings.console.page_size
        )
        rows = [
            {
                "course": course,
                "registrations": courses.registration_count(session, course),
                "attendance": courses.attendance_count(session, course),
                "campaigns": catalog.list_campaigns(session, course_id=course.id),
            }
            for course in page.items
        ]
    return render_template("console/courses.html", rows=rows, page=page, now=utcnow())


def _save_campaign(form: CampaignForm, save: Callable[[Session], object]) -> list[str] | None:
    """Run `save` for a valid form; None when saved, else the refusals no field took (may be empty)."""
    if not form.validate_on_submit():
        return []
    approved = {choice.value for choice in form.script_key.choices or []}
    if form.script_key.data not in approved:
        form.script_key.errors = [_("Choose a script with an approved version.")]
        return []
    try:
        with services().db.transaction() as session:
            save(session)
    except catalog.CampaignError as exc:
        return [m for m in [form.place(exc)] if m]
    return None


def _campaign_form(form: CampaignForm, general: list[str], campaign: Campaign | None) -> tuple[str, int]:
    """The campaign form again, 400 after a refused submission."""
    page = render_template("console/campaign_form.html", form=form, general=general, campaign=campaign)
    return page, 400 if request.method == "POST" else 200


@bp.route("/campaigns/new", methods=["GET", "POST"])
@roles_required(*AUTHORS)
def campaign_new() -> tuple[str, int] | Response:
    """Create a campaign; the catalogue checks script, schedule and audience and audits the creation."""
    form = CampaignForm()
    with services().db.read() as session:
        form.fill_choices(session, utcnow())
    key = (form.key.data or "").strip()
    general = _save_campaign(
        form,
        lambda session: catalog.create_campaign(
            session,
            key,
            form.name.data or "",
            form.kind.data or "",
            form.script_key.data or "",
            form.schedule(),
            current_user().username,
            form.audience(),
        ),
    )
    if general is None:
        flash(_("Campaign %(key)s created.", key=key), "success")
        return redirect(url_for("console.campaign_detail", key=key))
    return _campaign_form(form, general, None)


@bp.route("/campaigns/<key>/edit", methods=["GET", "POST"])
@roles_required(*AUTHORS)
def campaign_edit(key: str) -> tuple[str, int] | Response:
    """Change a campaign's name, script, schedule and audience; its key and kind stay."""
    form = CampaignForm()
    with services().db.read() as session:
        campaign = _campaign_or_404(session, key)
        form.fill_choices(session, utcnow(), campaign)
        course = session.get(Course, campaign.course_id) if campaign.course_id is not None else None
        if request.method == "GET":
            form.load(campaign, course.key if course else "")
    form.key.data, form.kind.data = campaign.key, campaign.kind  # fixed: never taken from the request
    general = _save_campaign(
        form,
        lambda session: catalog.update_campaign(
            session,
            key,
            current_user().username,
            name=form.name.data or "",
            script_key=form.script_key.data or "",
            schedule=form.schedule(),
            audience=form.audience(),
        ),
    )
    if general is None:
        flash(_("Campaign %(key)s saved.", key=key), "success")
        return redirect(url_for("console.campaign_detail", key=key))
    return _campaign_form(form, general, campaign)


@bp.route("/courses/new", methods=["GET", "POST"])
@roles_required(*AUTHORS)
def course_new() -> tuple[str, int] | Response:
    """Create a course (SAC number and link checked by the course service), optionally with its campaigns."""
    form = CourseForm()
    general: list[str] = []
    if form.validate_on_submit():
        assert form.starts_at.data is not None
        actor = current_user().username
        try:
            with services().db.transaction() as session:
                course = courses.create_course(
                    session,
                    (form.key.data or "").strip(),
                    form.title.data or "",
                    form.speaker_name.data or "",
                    form.speaker_sac_no.data or "",
                    form.starts_at.data.replace(tzinfo=SHANGHAI),
                    form.link.data or "",
                    actor,
                    services().settings.compliance,
                )
                if form.with_campaigns.data:
                    catalog.course_campaigns(
                        session,
                        course,
                        actor,
                        invite_lead_minutes=form.invite_lead_minutes.data
                        or catalog.DEFAULT_INVITE_LEAD_MINUTES,
                        reminder_minutes=form.reminder_minutes.data or catalog.DEFAULT_REMINDER_MINUTES,
                    )
        except (courses.CourseError, catalog.CampaignError) as exc:
            general = [m for m in [form.place(exc)] if m]
        else:
            flash(_("Course %(key)s created.", key=form.key.data), "success")
            return redirect(url_for("console.courses_list"))
    page = render_template("console/course_form.html", form=form, general=general)
    return page, 400 if request.method == "POST" else 200


def _read_upload(form: AttendanceForm) -> str:
    """The uploaded CSV as text, or refuse with a message the page shows."""
    data = form.file.data.read(MAX_ATTENDANCE_BYTES + 1)
    if len(data) > MAX_ATTENDANCE_BYTES:
        raise courses.CourseError(_("The file is larger than %(n)d MB.", n=MAX_ATTENDANCE_BYTES // 2**20))
    try:
        return str(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise courses.CourseError(_("The file is not UTF-8 text; save it as CSV UTF-8.")) from None


@bp.route("/courses/<key>/attendance", methods=["GET", "POST"])
@roles_required(*AUTHORS)
def course_attendance(key: str) -> tuple[str, int]:
    """Import who attended a course from a CSV and show what was stored and which rows were not usable."""
    form = AttendanceForm()
    report: courses.AttendanceReport | None = None
    error = ""
    with services().db.read() as session:
        try:
            course = courses.get_course(session, key)
        except courses.CourseError:
            abort(404)
    if form.validate_on_submit():
        try:
            text = _read_upload(form)
            with services().db.transaction() as session:
                report = courses.import_attendance(
                    session, courses.get_course(session, key), text, current_user().username
                )
        except courses.CourseError as exc:
            error = refusal(exc)
    status = 400 if request.method == "POST" and report is None else 200
    page = render_template(
        "console/course_attendance.html",
        course=course,
        form=form,
        report=report,
        error=error,
        visible=visible,
        problem_text=lambda problem: row_problem(problem, visible),
    )
    return page, status
