"""The Flask application factory: wires subsystems, does no I/O, reads settings once."""

from __future__ import annotations

import secrets

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bot.config import Settings, load_settings
from bot.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the WSGI app; tests pass their own settings, production reads BOT_CONFIG and the env."""
    if services is None:
        services = Services(settings or load_settings())
    settings = services.settings
    app = Flask("wecom_bot")
    app.config.update(
        SECRET_KEY=settings.web.secret_key or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=settings.web.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.extensions["wecom_bot"] = services
    hops = settings.web.trusted_proxies
    if hops:
        # Believe only the entries our own proxies appended: the client's address and scheme.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    from bot import api, console
    from bot.web import callback, health

    app.register_blueprint(callback.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    console.init_app(app, services)
    return app
