"""Lead pages (search, filter, one lead's record) and the handoff queue with each offer's SLA state."""

from __future__ import annotations

from flask import abort, render_template, request
from flask_babel import lazy_gettext as _l

from bot.console import leads as q
from bot.console.auth import current_user, roles_required, services
from bot.console.blueprint import bp
from bot.console.presenting import page_number, slice_page
from bot.console.texts import STAGE_LABELS, handoff_note, score_reason, stage_reason
from bot.handoff.managers import list_managers
from models.base import utcnow
from models.leads import PLATFORM_NAMES

SLA_LABELS = {
    q.SlaState.OFFERED: _l("Offered"),
    q.SlaState.DUE: _l("Awaiting answer"),
    q.SlaState.OVERDUE: _l("Overdue"),
    q.SlaState.ESCALATED: _l("Escalated"),
    q.SlaState.ACCEPTED: _l("Accepted"),
    q.SlaState.DECLINED: _l("Declined"),
    q.SlaState.TIMED_OUT: _l("Timed out"),
    q.SlaState.CLOSED: _l("Closed"),
    q.SlaState.CANCELLED: _l("Cancelled"),
}

TIMELINE_LABELS = {
    "inbound": _l("Customer message"),
    "touch": _l("Arrival"),
    "tag": _l("Tag"),
    "course": _l("Course"),
    "score": _l("Score"),
    "stage": _l("Stage"),
    "handoff": _l("Handoff"),
    "variant": _l("A/B variant"),
    "outbound": _l("Message sent"),
    "audit": _l("Audit"),
}

FILTER_ERRORS = {
    "platform": _l("Choose a platform from the list."),
    "stage": _l("Choose a stage from the list."),
    "opted_out": _l("Choose whether the lead opted out from the list."),
    "q": _l("The search text may be at most %(n)d characters.", n=q.SEARCH_MAX),
    "min_score": _l("Scores are whole numbers from 0 to %(n)d.", n=q.MAX_SCORE),
    "max_score": _l(
        "Scores are whole numbers from 0 to %(n)d, the highest no lower than the lowest.", n=q.MAX_SCORE
    ),
    "state": _l("Choose a handoff state from the list."),
}


def _platforms() -> dict[str, str]:
    return {str(code): name for code, name in PLATFORM_NAMES.items()}


def _label_globals() -> dict[str, object]:
    return {
        "platform_names": _platforms(),
        "stage_labels": {str(k): v for k, v in STAGE_LABELS.items()},
        "sla_labels": SLA_LABELS,
        "stage_reason": stage_reason,
        "handoff_note": handoff_note,
        "score_reason": score_reason,
    }


@bp.route("/leads")
@roles_required()
def leads() -> tuple[str, int]:
    """Leads the user may see, filtered and paginated; managers see only the leads they hold."""
    viewer = q.Viewer.of(current_user())
    try:
        filters, error = q.parse_filters(request.args), ""
    except q.FilterError as exc:
        filters, error = q.LeadFilters(), str(FILTER_ERRORS[exc.field])
    svc = services()
    with svc.db.read() as session:
        found = q.list_leads(
            session,
            filters,
            viewer,
            page_number(request.args.get("page")),
            svc.settings.console.page_size,
            settings=svc.settings.scoring,
            now=utcnow(),
        )
        managers = [] if viewer.is_manager else list_managers(session, include_inactive=True)
    page = render_template(
        "console/leads.html",
        found=found,
        filters=filters,
        error=error,
        viewer=viewer,
        managers=managers,
        stages=list(STAGE_LABELS),
        **_label_globals(),
    )
    return page, 400 if error else 200


@bp.route("/leads/<int:lead_id>")
@roles_required()
def lead_detail(lead_id: int) -> str:
    """One lead: details, score explained, stage and handoff history, and the whole timeline."""
    viewer = q.Viewer.of(current_user())
    svc = services()
    with svc.db.read() as session:
        lead = q.lead_for(session, lead_id, viewer)
        if lead is None:
            abort(404)  # also for leads a manager does not hold: their existence is not disclosed
        record = q.lead_record(session, lead, viewer, settings=svc.settings.scoring, now=utcnow())
    number = page_number(request.args.get("tpage"))
    return render_template(
        "console/lead.html",
        record=record,
        timeline=slice_page(record.timeline, number, svc.settings.console.page_size),
        viewer=viewer,
        timeline_labels=TIMELINE_LABELS,
        **_label_globals(),
    )


@bp.route("/handoffs")
@roles_required()
def handoffs() -> tuple[str, int]:
    """The handoff queue by manager with each offer's SLA state; a manager sees only their own."""
    viewer = q.Viewer.of(current_user())
    manager = request.args.get("manager", "").strip()[:64]
    try:
        state, error = q.parse_state(request.args.get("state", "")), ""
    except q.FilterError as exc:
        state, error = "", str(FILTER_ERRORS[exc.field])
    svc = services()
    with svc.db.read() as session:
        page = q.handoff_queue(
            session,
            viewer,
            manager,
            state,
            page_number(request.args.get("page")),
            svc.settings.console.page_size,
            utcnow(),
        )
        managers = [] if viewer.is_manager else list_managers(session, include_inactive=True)
    body = render_template(
        "console/handoffs.html",
        page=page,
        manager=manager,
        state=state,
        error=error,
        viewer=viewer,
        managers=managers,
        states=q.SlaState.ALL,
        **_label_globals(),
    )
    return body, 400 if error else 200
