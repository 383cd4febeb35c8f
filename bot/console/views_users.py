"""Account administration: list, create, unlock, enable and disable (administrators only)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.wrappers import Response

from bot.accounts import AccountError, create_user, set_active, unlock_user
from bot.console.auth import current_user, roles_required, services
from bot.console.blueprint import bp
from bot.console.forms import ROLE_LABELS, ActionForm, NewUserForm
from bot.console.presenting import page_number, paginate
from bot.console.texts import refusal
from models.base import utcnow
from models.users import Role, User


def _list_page(form: NewUserForm) -> str:
    size = services().settings.console.page_size
    with services().db.read() as session:
        page = paginate(
            session, select(User).order_by(User.username), page_number(request.args.get("page")), size
        )
    return render_template(
        "console/users.html", page=page, form=form, action_form=ActionForm(), roles=ROLE_LABELS, now=utcnow()
    )


@bp.route("/users", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def users() -> str | Response:
    """Every account with its state; the form below creates one."""
    form = NewUserForm()
    if form.validate_on_submit():
        try:
            with services().db.transaction() as session:
                create_user(
                    session,
                    form.username.data or "",
                    form.role.data or "",
                    form.password.data or "",
                    actor=current_user().username,
                )
        except AccountError as exc:
            fields = {"account.role": form.role, "account.password": form.password}
            field = fields.get(exc.code, form.username)
            field.errors = [*field.errors, refusal(exc)]
        else:
            flash(_("Account %(name)s created.", name=form.username.data), "success")
            return redirect(url_for("console.users"))
    return _list_page(form)


def _account_action(username: str, action: str) -> Response:
    if ActionForm().validate_on_submit():
        actor = current_user().username
        try:
            with services().db.transaction() as session:
                if action == "unlock":
                    unlock_user(session, username, actor)
                else:
                    set_active(session, username, action == "enable", actor)
        except AccountError as exc:
            flash(refusal(exc), "error")
        else:
            flash(_("Account %(name)s updated.", name=username), "success")
    return redirect(url_for("console.users"))


@bp.route("/users/<username>/unlock", methods=["POST"])
@roles_required(Role.ADMIN)
def user_unlock(username: str) -> Response:
    """Lift a sign-in lockout."""
    return _account_action(username, "unlock")


@bp.route("/users/<username>/enable", methods=["POST"])
@roles_required(Role.ADMIN)
def user_enable(username: str) -> Response:
    """Let a disabled account sign in again."""
    return _account_action(username, "enable")


@bp.route("/users/<username>/disable", methods=["POST"])
@roles_required(Role.ADMIN)
def user_disable(username: str) -> Response:
    """Stop an account from signing in; its open sessions end on their next request."""
    return _account_action(username, "disable")
