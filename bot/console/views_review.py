"""The compliance queue: versions waiting for a decision and messages the final-text lint held."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.wrappers import Response

from bot.console.auth import current_user, lint_policy, roles_required, services
from bot.console.blueprint import bp
from bot.console.forms import ActionForm, ReasonForm
from bot.console.presenting import highlight, page_number, paginate
from bot.delivery import review
from models.deliveries import Delivery, DeliveryStatus
from models.scripts import Script, ScriptVersion, VersionStatus
from models.users import Role
from scripts_library.catalogue import PermissionDenied, WorkflowError
from scripts_library.compliance import lint
from scripts_library.rendering import KIND_VARIABLES

VIEWERS = (Role.COMPLIANCE, Role.ADMIN, Role.MANAGER)


@bp.route("/review")
@roles_required(*VIEWERS)
def review_queue() -> str:
    """Submitted versions oldest first, then held messages with their findings highlighted."""
    size = services().settings.console.page_size
    waiting_stmt = (
        select(ScriptVersion)
        .where(ScriptVersion.status == VersionStatus.SUBMITTED)
        .order_by(ScriptVersion.submitted_at, ScriptVersion.id)
    )
    held_stmt = select(Delivery).where(Delivery.status == DeliveryStatus.HELD).order_by(Delivery.id)
    policy = lint_policy()
    with services().db.read() as session:
        waiting = paginate(session, waiting_stmt, page_number(request.args.get("page")), size)
        waiting_rows = [{"version": v, "key": v.script.key, "kind": v.script.kind} for v in waiting.items]
        held = paginate(session, held_stmt, page_number(request.args.get("held_page")), size)
        keys = {d.script_key for d in held.items}
        kinds = {
            row.key: row.kind
            for row in session.execute(select(Script.key, Script.kind).where(Script.key.in_(keys)))
        }
    held_rows = []
    for delivery in held.items:
        kind = kinds.get(delivery.script_key)
        findings = lint(delivery.text, kind=kind, policy=policy).findings if kind in KIND_VARIABLES else []
        held_rows.append(
            {"delivery": delivery, "segments": highlight(delivery.text, findings), "findings": findings}
        )
    return render_template(
        "console/review.html",
        waiting=waiting,
        waiting_rows=waiting_rows,
        held=held,
        held_rows=held_rows,
        action_form=ActionForm(),
        discard_form=ReasonForm(),
    )


def _held_refusal(exc: WorkflowError, delivery_id: int) -> str:
    """Why a held message could not be released or discarded, in the reader's language.

    The view already requires a compliance reviewer and a reason, so the review service refuses only
    a message that is no longer held, or an account that lost its role meanwhile.
    """
    if isinstance(exc, PermissionDenied):
        return _("only an active compliance reviewer may do this")
    return _("message %(id)d is no longer held for review; someone else has dealt with it", id=delivery_id)


@bp.route("/review/held/<int:delivery_id>/release", methods=["POST"])
@roles_required(Role.COMPLIANCE)
def held_release(delivery_id: int) -> Response:
    """Send a held message after review."""
    if ActionForm().validate_on_submit():
        try:
            with services().db.transaction() as session:
                row = review.release(session, delivery_id, current_user().username)
                status = row.status
        except WorkflowError as exc:
            flash(_("Not released: %(reason)s", reason=_held_refusal(exc, delivery_id)), "error")
        else:
            if status == DeliveryStatus.EXPIRED:
                flash(
                    _("Message %(id)d missed its sending deadline and was not sent.", id=delivery_id),
                    "warning",
                )
            else:
                flash(_("Message %(id)d released for sending.", id=delivery_id), "success")
    return redirect(url_for("console.review_queue"))


@bp.route("/review/held/<int:delivery_id>/discard", methods=["POST"])
@roles_required(Role.COMPLIANCE)
def held_discard(delivery_id: int) -> Response:
    """Refuse a held message; it is never sent."""
    form = ReasonForm()
    if not form.validate_on_submit():
        flash(_("Discarding needs a reason."), "error")
        return redirect(url_for("console.review_queue"))
    try:
        with services().db.transaction() as session:
            review.discard(session, delivery_id, current_user().username, form.reason.data or "")
    except WorkflowError as exc:
        flash(_("Not discarded: %(reason)s", reason=_held_refusal(exc, delivery_id)), "error")
    else:
        flash(_("Message %(id)d discarded.", id=delivery_id), "success")
    return redirect(url_for("console.review_queue"))
