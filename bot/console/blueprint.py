"""The console blueprint: CSRF on every POST, the signed-in user, guard checks and error pages."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, render_template, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from bot.config import CONSOLE_LOCALES
from bot.console.auth import has_role, load_signed_in_user
from bot.console.forms import KIND_LABELS, ROLE_LABELS, LogoutForm
from bot.console.presenting import SHANGHAI as SHANGHAI  # the views' time zone, shared here
from bot.console.presenting import STATUS_LABELS, localtime
from bot.console.texts import (
    CAMPAIGN_KIND_LABELS,
    DELIVERY_STATUS_LABELS,
    RUN_STATUS_LABELS,
    SKIP_LABELS,
    run_reason,
    timeline_line,
)
from models.users import Role

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

LOCALE_NAMES = {"zh_Hans_CN": "简体中文", "en": "English"}


@bp.before_request
def _guard() -> None:
    """Check CSRF on every state change and refuse views that declare no access rule."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        current_app.extensions["console.csrf"].protect()
    g.console_user = load_signed_in_user()
    if request.endpoint == "console.static":
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and not (hasattr(view, "console_roles") or getattr(view, "console_public", False)):
        abort(403)  # a view without a role rule is closed by default


bp.add_app_template_filter(localtime, "localtime")


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "current_user": g.get("console_user"),
        "has_role": has_role,
        "Role": Role,
        "locales": [(code, LOCALE_NAMES[code]) for code in CONSOLE_LOCALES],
        "current_locale": str(get_locale()),
        "logout_form": LogoutForm(),
        "role_label": lambda role: str(ROLE_LABELS.get(role, role)),
        "status_label": lambda status: str(STATUS_LABELS.get(status, status)),
        "kind_label": lambda kind: str(KIND_LABELS.get(kind, kind)),
        "campaign_kind_label": lambda kind: str(CAMPAIGN_KIND_LABELS.get(kind, kind)),
        "delivery_status_label": lambda status: str(DELIVERY_STATUS_LABELS.get(status, status)),
        "run_status_label": lambda status: str(RUN_STATUS_LABELS.get(status, status)),
        "skip_label": lambda reason: str(SKIP_LABELS.get(reason, reason)),
        "timeline_line": timeline_line,
        "run_reason": run_reason,
    }


_ERROR_TITLES = {
    400: _l("The request could not be processed"),
    401: _l("Please sign in"),
    403: _l("You do not have permission to do this"),
    404: _l("Page not found"),
    429: _l("Too many attempts"),
}


def render_error(code: int, detail: str = "") -> tuple[str, int]:
    """The console's error page."""
    title = _ERROR_TITLES.get(code, _l("Something went wrong"))
    return render_template("console/error.html", code=code, title=title, detail=detail), code


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    return render_error(
        400, str(_l("The form expired or was not sent from this console. Reload the page and try again."))
    )


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return render_error(exc.code or 500)
