"""Sign-in with per-account lockout and per-address limits, sign-out, language choice, home."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from flask import flash, g, redirect, render_template, request, session, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from bot.accounts import LoginStatus, attempt_login
from bot.config import CONSOLE_LOCALES
from bot.console.auth import current_user, public, roles_required, services, sign_in, sign_out
from bot.console.blueprint import bp, render_error
from bot.console.forms import LoginForm
from models.audit import AuditEntry
from models.base import utcnow
from models.users import Role

log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Only redirect back into the console after sign-in, never to another site."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.home")


def _address_wait_s() -> float:
    """Take one sign-in attempt from this client address's allowance; seconds to wait when none is left."""
    c = services().settings.console
    window_s = c.ip_window_min * 60
    client = request.remote_addr or "unknown"
    return services().coordinator.take_token(
        f"console-login:{client}", c.ip_max_attempts / window_s, c.ip_max_attempts
    )


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response | tuple[str, int]:
    """The sign-in page."""
    if g.get("console_user") is not None:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("console/login.html", form=form)
    wait_s = _address_wait_s()
    if wait_s > 0:
        log.warning("console sign-in limited for %s", request.remote_addr)
        minutes = max(1, math.ceil(wait_s / 60))
        message = _("Too many sign-in attempts from your address. Try again in %(n)d minutes.", n=minutes)
        return render_template("console/login.html", form=form, error=message), 429
    console = services().settings.console
    with services().db.transaction() as db_session:
        outcome = attempt_login(
            db_session,
            form.username.data or "",
            form.password.data or "",
            max_failures=console.max_failed_logins,
            lockout=timedelta(minutes=console.lockout_min),
            client=request.remote_addr or "",
        )
    if outcome.status is LoginStatus.OK and outcome.user is not None:
        sign_in(outcome.user)
        return redirect(_safe_next(request.args.get("next")))
    if outcome.status is LoginStatus.LOCKED and outcome.locked_until is not None:
        until = format_datetime(outcome.locked_until, "HH:mm")
        error = _(
            "This account is locked after too many wrong passwords. Try again after %(time)s"
            " or ask an administrator to unlock it.",
            time=until,
        )
    else:
        error = _("Wrong username or password.")
    return render_template("console/login.html", form=form, error=error), 401


@bp.route("/logout", methods=["POST"])
@roles_required()
def logout() -> Response:
    """End the session."""
    user = current_user()
    with services().db.transaction() as db_session:
        db_session.add(
            AuditEntry(
                at=utcnow(), actor=user.username, action="console.logout", target=f"user:{user.username}"
            )
        )
    sign_out()
    flash(_("You have signed out."), "info")
    return redirect(url_for("console.login"))


@bp.route("/lang/<code>")
@public
def set_language(code: str) -> Response | tuple[str, int]:
    """Remember the chosen language in the session."""
    if code not in CONSOLE_LOCALES:
        return render_error(404)
    session["lang"] = code
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/")
@roles_required()
def home() -> Response:
    """Compliance reviewers start at their queue; everyone else at the script library."""
    if current_user().role == Role.COMPLIANCE:
        return redirect(url_for("console.review_queue"))
    return redirect(url_for("console.scripts"))
