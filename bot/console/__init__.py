"""The operator and compliance console under /console/: sign-in, script library, review queue, accounts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Flask, current_app, session
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

from bot.config import CONSOLE_LOCALES
from bot.services import Services

TRANSLATIONS_DIR = Path(__file__).parent / "translations"


def _select_locale() -> str:
    """The user's chosen language, else the deployment's default."""
    chosen = session.get("lang")
    if chosen in CONSOLE_LOCALES:
        return str(chosen)
    return str(current_app.config["BABEL_DEFAULT_LOCALE"])


def init_app(app: Flask, services: Services) -> None:
    """Wire the console into the app: cookie policy, CSRF, translations, the blueprint."""
    console = services.settings.console
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=console.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=console.session_lifetime_min),
        # Console views ask for the check themselves; the WeCom callback is not a browser form.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=console.session_lifetime_min * 60,
        BABEL_DEFAULT_LOCALE=console.default_locale,
        BABEL_DEFAULT_TIMEZONE="Asia/Shanghai",
        BABEL_TRANSLATION_DIRECTORIES=str(TRANSLATIONS_DIR),
    )
    app.extensions["console.csrf"] = CSRFProtect(app)
    Babel(app, locale_selector=_select_locale)

    # Importing the view modules attaches their routes to the blueprint.
    import bot.console.views_auth
    import bot.console.views_campaigns
    import bot.console.views_dashboard
    import bot.console.views_hookcodes
    import bot.console.views_leads
    import bot.console.views_ledger
    import bot.console.views_previews
    import bot.console.views_review
    import bot.console.views_scripts
    import bot.console.views_users  # noqa: F401
    from bot.console.blueprint import bp

    app.register_blueprint(bp)
