"""Script library pages: list, create, edit with live lint, versions with diff, review, A/B tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.console.auth import AUTHORS, current_user, lint_policy, roles_required, services
from bot.console.blueprint import SHANGHAI, bp
from bot.console.forms import KIND_LABELS, ActionForm, ApproveForm, DraftForm, NewScriptForm, ReasonForm
from bot.console.presenting import diff_rows, finding_view, highlight, page_number, paginate
from bot.console.variant_forms import VariantApproveForm, WeightForm
from models.scripts import Approval, Script, ScriptKind, ScriptVersion, VersionStatus
from models.users import Role
from scripts_library import catalogue as cat
from scripts_library import experiments, variants
from scripts_library.rendering import KIND_VARIABLES, RenderError, TemplateError

MAX_BODY = 4000
STATUS_ORDER = tuple(VersionStatus)


def _lint_view(body: str, kind: str) -> dict[str, Any]:
    """Preview, verdict, findings and highlighted segments of a body, or the template error."""
    try:
        preview, result = cat.preview_and_lint(body, kind, lint_policy())
    except (TemplateError, RenderError) as exc:
        return {"error": str(exc)}
    return {
        "preview": preview,
        "verdict": result.verdict,
        "findings": [finding_view(f) for f in result.findings],
        "segments": [s.to_dict() for s in highlight(preview, result.findings)],
        "lexicon_version": result.lexicon_version,
    }


def _script_or_404(session: Session, key: str) -> Script:
    script = session.scalars(select(Script).where(Script.key == key)).first()
    if script is None:
        abort(404)
    return script


def _version_or_404(session: Session, script: Script, number: int) -> ScriptVersion:
    version = session.scalars(
        select(ScriptVersion).where(ScriptVersion.script_id == script.id, ScriptVersion.number == number)
    ).first()
    if version is None:
        abort(404)
    return version


def _approved_version(session: Session, script: Script) -> ScriptVersion | None:
    """The newest approved version: what edits are compared against."""
    return session.scalars(
        select(ScriptVersion)
        .where(ScriptVersion.script_id == script.id, ScriptVersion.status == VersionStatus.APPROVED)
        .order_by(ScriptVersion.number.desc())
    ).first()


@bp.route("/scripts")
@roles_required()
def scripts() -> str:
    """All scripts, filtered by kind and by the status of their versions."""
    kind = request.args.get("kind", "")
    status = request.args.get("status", "")
    stmt = select(Script).order_by(Script.key)
    if kind in set(ScriptKind):
        stmt = stmt.where(Script.kind == kind)
    if status in set(VersionStatus):
        stmt = stmt.where(
            Script.id.in_(select(ScriptVersion.script_id).where(ScriptVersion.status == status))
        )
    size = services().settings.console.page_size
    with services().db.read() as session:
        page = paginate(session, stmt, page_number(request.args.get("page")), size)
        rows = []
        for script in page.items:
            latest = script.versions[-1] if script.versions else None
            approved = _approved_version(session, script)
            waiting = sum(1 for v in script.versions if v.status == VersionStatus.SUBMITTED)
            rows.append({"script": script, "latest": latest, "approved": approved, "waiting": waiting})
    return render_template(
        "console/scripts.html",
        rows=rows,
        page=page,
        kind=kind,
        status=status,
        kinds=KIND_LABELS,
        statuses=STATUS_ORDER,
    )


@bp.route("/scripts/new", methods=["GET", "POST"])
@roles_required(*AUTHORS)
def script_new() -> str | Response:
    """Register a new script key."""
    form = NewScriptForm()
    if form.validate_on_submit():
        try:
            with services().db.transaction() as session:
                cat.create_script(
                    session,
                    form.key.data or "",
                    form.kind.data or "",
                    current_user().username,
                    form.description.data or "",
                )
        except cat.WorkflowError as exc:
            form.key.errors = [*form.key.errors, str(exc)]
        else:
            flash(_("Script %(key)s created. Write its first version.", key=form.key.data), "success")
            return redirect(url_for("console.script_edit", key=form.key.data))
    return render_template("console/script_new.html", form=form)


@bp.route("/scripts/<key>")
@roles_required()
def script_detail(key: str) -> str:
    """A script's versions and every decision taken on them."""
    with services().db.read() as session:
        script = _script_or_404(session, key)
        versions = list(reversed(script.versions))
        decisions = session.execute(
            select(Approval, ScriptVersion.number)
            .join(ScriptVersion, Approval.version_id == ScriptVersion.id)
            .where(ScriptVersion.script_id == script.id)
            .order_by(Approval.decided_at.desc(), Approval.id.desc())
        ).all()
        approved = _approved_version(session, script)
        tests = variants.report(session, key)
    running = next((t for t in tests if t.experiment.status == "running"), None)
    live_arms = [a for a in (running.arms if running else []) if a.variant.status == "live"]
    running_versions = ", ".join(f"v{a.version.number} ({a.variant.label})" for a in live_arms)
    return render_template(
        "console/script_detail.html",
        script=script,
        versions=versions,
        decisions=decisions,
        approved=approved,
        tests=tests,
        running=running,
        running_versions=running_versions,
        action_form=ActionForm(),
        weight_form=WeightForm(),
    )


@bp.route("/scripts/<key>/edit", methods=["GET", "POST"])
@roles_required(*AUTHORS)
def script_edit(key: str) -> str | Response:
    """The editor: the author's open draft (or the newest wording) with live lint and preview."""
    username = current_user().username
    with services().db.read() as session:
        script = _script_or_404(session, key)
        own_draft = next(
            (v for v in script.versions if v.status == VersionStatus.DRAFT and v.author == username), None
        )
        starting = own_draft or (script.versions[-1] if script.versions else None)
    form = DraftForm()
    if request.method == "GET" and starting is not None:
        form.body.data = starting.body
    if form.validate_on_submit():
        try:
            with services().db.transaction() as session:
                saved = cat.save_draft(session, key, form.body.data or "", username, lint_policy())
                number, verdict = saved.version.number, saved.lint.verdict
        except (TemplateError, RenderError) as exc:
            form.body.errors = [*form.body.errors, str(exc)]
        except cat.WorkflowError as exc:
            flash(_("Not saved: %(reason)s", reason=str(exc)), "error")
        else:
            flash(_("Draft v%(n)d saved.", n=number), "success" if verdict == "pass" else "warning")
            return redirect(url_for("console.version_detail", key=key, number=number))
    lint = _lint_view(form.body.data, script.kind) if form.body.data else None
    return render_template(
        "console/script_edit.html",
        script=script,
        form=form,
        lint=lint,
        own_draft=own_draft,
        variables=KIND_VARIABLES[script.kind],
    )


@bp.route("/scripts/<key>/lint", methods=["POST"])
@roles_required(*AUTHORS, Role.COMPLIANCE)
def script_lint(key: str) -> Response | tuple[Response, int]:
    """Live lint for the editor: preview with sample values, verdict, findings and their spans."""
    payload = request.get_json(silent=True)
    body = payload.get("body") if isinstance(payload, dict) else None
    if not isinstance(body, str):
        return jsonify({"error": _('Send the script text as {"body": "..."}.')}), 400
    if len(body) > MAX_BODY:
        return jsonify({"error": _("The text is longer than %(n)d characters.", n=MAX_BODY)}), 400
    with services().db.read() as session:
        script = _script_or_404(session, key)
    if not body.strip():
        return jsonify({"error": _("The text is empty.")})
    return jsonify(_lint_view(body, script.kind))


@bp.route("/scripts/<key>/v/<int:number>")
@roles_required()
def version_detail(key: str, number: int) -> str:
    """One version: text, preview with highlighted findings, changes against the approved one, decisions."""
    with services().db.read() as session:
        script = _script_or_404(session, key)
        version = _version_or_404(session, script, number)
        approved = _approved_version(session, script)
        decisions = list(
            session.scalars(
                select(Approval).where(Approval.version_id == version.id).order_by(Approval.decided_at.desc())
            )
        )
        newest = session.scalar(
            select(func.max(ScriptVersion.number)).where(ScriptVersion.script_id == script.id)
        )
        arm = experiments.live_variant(session, version.id)
    compare = approved if approved is not None and approved.id != version.id else None
    return render_template(
        "console/version.html",
        script=script,
        version=version,
        lint=_lint_view(version.body, script.kind),
        compare=compare,
        diff=diff_rows(compare.body, version.body) if compare is not None else [],
        decisions=decisions,
        newest=newest,
        arm=arm,
        action_form=ActionForm(),
        approve_form=ApproveForm(),
        variant_form=VariantApproveForm(prefix="variant"),
        reject_form=ReasonForm(),
    )


def _back(key: str, number: int) -> Response:
    return redirect(url_for("console.version_detail", key=key, number=number))


@bp.route("/scripts/<key>/v/<int:number>/submit", methods=["POST"])
@roles_required(*AUTHORS)
def version_submit(key: str, number: int) -> Response:
    """Send the author's draft to compliance."""
    if ActionForm().validate_on_submit():
        try:
            with services().db.transaction() as session:
                cat.submit(session, key, number, current_user().username, lint_policy())
        except cat.WorkflowError as exc:
            flash(_("Not submitted: %(reason)s", reason=str(exc)), "error")
        else:
            flash(_("v%(n)d submitted for compliance review.", n=number), "success")
    return _back(key, number)


def _utc(local: datetime | None) -> datetime | None:
    """A Shanghai wall-clock time from the form as an aware datetime."""
    return local.replace(tzinfo=SHANGHAI) if local is not None else None


@bp.route("/scripts/<key>/v/<int:number>/approve", methods=["POST"])
@roles_required(Role.COMPLIANCE)
def version_approve(key: str, number: int) -> Response:
    """Approve a submitted version; the catalogue refuses authors, blocks and other roles."""
    form = ApproveForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(key, number)
    return _approve(key, number, form, _("v%(n)d approved.", n=number))


def _approve(key: str, number: int, form: Any, done: str, **variant: Any) -> Response:
    """Approve with the validity window and reason from a checked form (and, for a variant, its weight)."""
    try:
        with services().db.transaction() as session:
            cat.approve(
                session,
                key,
                number,
                current_user().username,
                lint_policy(),
                valid_from=_utc(form.valid_from.data),
                valid_until=_utc(form.valid_until.data),
                reason=form.reason.data or "",
                **variant,
            )
    except cat.WorkflowError as exc:
        flash(_("Not approved: %(reason)s", reason=str(exc)), "error")
    else:
        flash(done, "success")
    return _back(key, number)


@bp.route("/scripts/<key>/v/<int:number>/reject", methods=["POST"])
@roles_required(Role.COMPLIANCE)
def version_reject(key: str, number: int) -> Response:
    """Reject a submitted version with a reason the author reads."""
    form = ReasonForm()
    if not form.validate_on_submit():
        flash(_("A rejection needs a reason."), "error")
        return _back(key, number)
    try:
        with services().db.transaction() as session:
            cat.reject(session, key, number, current_user().username, form.reason.data or "")
    except cat.WorkflowError as exc:
        flash(_("Not rejected: %(reason)s", reason=str(exc)), "error")
    else:
        flash(_("v%(n)d rejected.", n=number), "success")
    return _back(key, number)


def _back_to_script(key: str) -> Response:
    return redirect(url_for("console.script_detail", key=key, _anchor="ab-tests"))


def _flash_form_errors(form: Any) -> None:
    for errors in form.errors.values():
        for error in errors:
            flash(str(error), "error")


@bp.route("/scripts/<key>/v/<int:number>/approve-variant", methods=["POST"])
@roles_required(Role.COMPLIANCE)
def version_approve_variant(key: str, number: int) -> Response:
    """Approve a submitted version as a live A/B variant next to the version in use (same checks)."""
    form = VariantApproveForm(prefix="variant")
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(key, number)
    weight = form.weight.data
    assert weight is not None
    done = _("v%(n)d approved as an A/B variant with weight %(w)d.", n=number, w=weight)
    return _approve(key, number, form, done, as_variant=True, weight=weight)


@bp.route("/scripts/<key>/v/<int:number>/weight", methods=["POST"])
@roles_required(*AUTHORS, Role.COMPLIANCE)
def variant_weight(key: str, number: int) -> Response:
    """Change a live variant's share of new leads; leads already assigned keep their variant."""
    form = WeightForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back_to_script(key)
    weight = form.weight.data
    assert weight is not None
    try:
        with services().db.transaction() as session:
            variants.set_weight(session, key, number, weight, current_user().username)
    except cat.WorkflowError as exc:
        flash(_("Weight not changed: %(reason)s", reason=str(exc)), "error")
    else:
        flash(_("v%(n)d now has weight %(w)d.", n=number, w=weight), "success")
    return _back_to_script(key)


@bp.route("/scripts/<key>/v/<int:number>/promote", methods=["POST"])
@roles_required(*AUTHORS, Role.COMPLIANCE)
def variant_promote(key: str, number: int) -> Response:
    """End the A/B test with this variant as the version in use; the other variants are superseded."""
    return _variant_action(
        key,
        number,
        variants.promote,
        _("v%(n)d promoted: the A/B test has ended.", n=number),
        lambda reason: _("Not promoted: %(reason)s", reason=reason),
    )


@bp.route("/scripts/<key>/v/<int:number>/retire-variant", methods=["POST"])
@roles_required(*AUTHORS, Role.COMPLIANCE)
def variant_retire(key: str, number: int) -> Response:
    """Withdraw one live variant; its leads get one of the others, and one left ends the test."""
    return _variant_action(
        key,
        number,
        variants.retire_variant,
        _("v%(n)d retired from the A/B test.", n=number),
        lambda reason: _("Not retired: %(reason)s", reason=reason),
    )


def _variant_action(
    key: str, number: int, change: Callable[..., object], done: str, refused: Callable[[str], str]
) -> Response:
    """Apply one A/B-test change from a posted form; the catalogue's refusal is flashed as is."""
    if ActionForm().validate_on_submit():
        try:
            with services().db.transaction() as session:
                change(session, key, number, current_user().username)
        except cat.WorkflowError as exc:
            flash(refused(str(exc)), "error")
        else:
            flash(done, "success")
    return _back_to_script(key)
