"""Hook code pages: codes per platform with their funnel numbers; create, show and disable a code."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from bot.console import dashboard as dash
from bot.console.auth import current_user, roles_required, services
from bot.console.blueprint import SHANGHAI, bp
from bot.console.forms import ActionForm
from bot.console.texts import refusal
from bot.leads import hookcodes as hc
from bot.wecom.errors import WeComAPIError
from models.base import utcnow
from models.leads import PLATFORM_NAMES, HookCode
from models.users import Role

VIEWERS = (Role.ADMIN, Role.OPERATOR, Role.COMPLIANCE)
EDITORS = (Role.ADMIN, Role.OPERATOR)
# Codes count every lead they ever brought: the funnel is asked for all days up to today.
FIRST_DAY = date(2000, 1, 1)
PLATFORMS = {str(p): name for p, name in PLATFORM_NAMES.items()}
_REQUIRED = _l("This field is required.")
_MEMBER_SPLIT = re.compile(r"[\s,，、]+")


class HookCodeForm(FlaskForm):
    """A new hook code: where it is posted, who it routes to, and an optional kf account for a link."""

    code = StringField(
        _l("Code"),
        validators=[
            DataRequired(_REQUIRED),
            Regexp(r"^[A-Za-z0-9_-]{2,30}$", message=_l("2-30 letters, digits, '_' or '-'.")),
        ],
    )
    platform = SelectField(
        _l("Platform"),
        choices=[SelectChoice(p, name) for p, name in PLATFORMS.items()],
        validators=[DataRequired(_REQUIRED)],
    )
    members = StringField(
        _l("Members (WeCom userids)"), validators=[DataRequired(_REQUIRED), Length(max=2000)]
    )
    campaign = StringField(_l("Campaign"), validators=[Optional(), Length(max=128)])
    keyword = StringField(_l("Keyword customers can type"), validators=[Optional(), Length(min=2, max=32)])
    open_kfid = StringField(
        _l("Customer service account (open_kfid)"), validators=[Optional(), Length(max=64)]
    )


def _all_time() -> dash.DateRange:
    return dash.DateRange(FIRST_DAY, utcnow().astimezone(SHANGHAI).date())


def _numbers() -> dict[str, dash.FunnelRow]:
    """Each code's funnel over all time, by code."""
    with services().db.read() as session:
        return {row.hook_code: row for row in dash.funnel_by_hook_code(session, _all_time()) if row.hook_code}


def profile_link(code: HookCode) -> str:
    """The link for a Douyin, Xiaohongshu or Bilibili profile: the kf link, else the acquisition link."""
    return code.kf_url or code.acquisition_url or ""


def _code_or_404(code: str) -> HookCode:
    with services().db.read() as session:
        row = session.scalars(select(HookCode).where(HookCode.code == code)).first()
        if row is None:
            abort(404)
        session.expunge(row)
    return row


def _provision(code: str, open_kfid: str) -> bool:
    """Create the code's contact-way QR (and kf link); on a WeCom error, say so and keep the code."""
    try:
        hc.provision_contact_way(services().db, services().client, code)
        if open_kfid:
            hc.provision_kf_link(services().db, services().client, code, open_kfid)
    except WeComAPIError as exc:
        flash(_("WeCom refused to create the QR code or link: %(error)s", error=str(exc)), "error")
        return False
    return True


@bp.route("/hookcodes", methods=["GET", "POST"])
@roles_required(*VIEWERS)
def hookcodes() -> str | Response | tuple[str, int]:
    """Codes grouped by platform with leads added, subscribed, qualified and converted; the create form."""
    form = HookCodeForm()
    if request.method == "POST":
        if current_user().role not in EDITORS:
            abort(403)
        if form.validate_on_submit():
            created = _create(form)
            if created:
                return redirect(url_for("console.hookcode", code=created))
    platform = request.args.get("platform", "")
    stmt = select(HookCode).order_by(HookCode.platform, HookCode.code)
    if platform in PLATFORMS:
        stmt = stmt.where(HookCode.platform == platform)
    with services().db.read() as session:
        codes = list(session.scalars(stmt))
    numbers = _numbers()
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in codes:
        groups.setdefault(row.platform, []).append({"code": row, "numbers": numbers.get(row.code)})
    page = render_template(
        "console/hookcodes.html",
        groups=groups,
        platform=platform,
        platforms=PLATFORMS,
        form=form,
    )
    return page, 400 if form.errors else 200


def _create(form: HookCodeForm) -> str | None:
    """Register the code, then create its QR in WeCom; the code's name, or None with the form's errors."""
    code = (form.code.data or "").strip()
    members = [m for m in _MEMBER_SPLIT.split(form.members.data or "") if m]
    try:
        with services().db.transaction() as session:
            hc.create_code(
                session,
                code,
                form.platform.data or "",
                members,
                current_user().username,
                (form.campaign.data or "").strip(),
                (form.keyword.data or "").strip() or None,
            )
    except hc.HookCodeError as exc:
        fields = {
            "hookcode.platform": form.platform,
            "hookcode.members": form.members,
            "hookcode.keyword_length": form.keyword,
            "hookcode.keyword_taken": form.keyword,
        }
        field = fields.get(exc.code, form.code)
        field.errors = [*field.errors, refusal(exc)]
        return None
    if _provision(code, (form.open_kfid.data or "").strip()):
        flash(_("Hook code %(code)s is ready. Put its QR code or link on the profile.", code=code), "success")
    return code


@bp.route("/hookcodes/<code>")
@roles_required(*VIEWERS)
def hookcode(code: str) -> str:
    """One code: its QR image, kf link with scene_param, the profile link and its numbers."""
    row = _code_or_404(code)
    return render_template(
        "console/hookcode.html",
        code=row,
        platform_name=PLATFORMS.get(row.platform, row.platform),
        profile_link=profile_link(row),
        numbers=_numbers().get(row.code),
        action_form=ActionForm(),
    )


@bp.route("/hookcodes/<code>/provision", methods=["POST"])
@roles_required(*EDITORS)
def hookcode_provision(code: str) -> Response:
    """Create the QR code in WeCom again after an earlier attempt failed."""
    row = _code_or_404(code)
    if not ActionForm().validate_on_submit():
        abort(400)
    if not row.active:
        flash(_("Hook code %(code)s is disabled; create a new code instead.", code=row.code), "error")
    elif _provision(row.code, ""):
        flash(_("The QR code of %(code)s was created.", code=row.code), "success")
    return redirect(url_for("console.hookcode", code=row.code))


@bp.route("/hookcodes/<code>/disable", methods=["POST"])
@roles_required(*EDITORS)
def hookcode_disable(code: str) -> Response:
    """Stop attributing new arrivals to the code (printed QR codes still add the customer)."""
    row = _code_or_404(code)
    if not ActionForm().validate_on_submit():
        abort(400)
    if row.active:
        with services().db.transaction() as session:
            hc.disable_code(session, row.code, current_user().username)
        flash(_("Hook code %(code)s is disabled.", code=row.code), "success")
    return redirect(url_for("console.hookcode", code=row.code))
