"""Liveness and readiness probes, Prometheus metrics, and the request id every response carries."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request
from sqlalchemy import text

from bot import logs, metrics
from bot.db import schema_status

bp = Blueprint("health", __name__)
_SCRAPE_REGISTRY = "wecom_bot_metrics"  # app.extensions key: this app's scrape registry


@bp.before_app_request
def _bind_request_id() -> None:
    """Give every request an id its log lines carry (the caller's X-Request-Id when it sent one)."""
    g.request_id_token = logs.REQUEST_ID.set(logs.new_request_id(request.headers.get(logs.REQUEST_ID_HEADER)))


@bp.after_app_request
def _answer_request_id(response: Response) -> Response:
    """Return the request's id to the caller as X-Request-Id."""
    request_id = logs.REQUEST_ID.get()
    if request_id is not None:
        response.headers[logs.REQUEST_ID_HEADER] = request_id
    return response


@bp.teardown_app_request
def _unbind_request_id(_exc: BaseException | None) -> None:
    """Forget the id, so nothing logged after the request carries it."""
    token = g.pop("request_id_token", None)
    if token is not None:
        logs.REQUEST_ID.reset(token)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return Response("ok", mimetype="text/plain")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database is reachable and migrated, and coordination answers."""
    services = current_app.extensions["wecom_bot"]
    checks: dict[str, str] = {}
    try:
        with services.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = schema_status(services.db.engine)
        checks["database"] = "ok" if current == head else f"schema at {current}, expected {head}"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        services.coordinator.ping()
        checks["coordination"] = "ok"
    except Exception as exc:
        checks["coordination"] = f"unreachable: {type(exc).__name__}"
    checks["callback"] = "ok" if services.ingestor is not None else "not configured"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(ready=ready, checks=checks), 200 if ready else 503


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition: this process's (or, in multiprocess mode, every process's) metrics."""
    services = current_app.extensions["wecom_bot"]
    settings = services.settings.metrics
    if not settings.enabled:
        return Response("metrics are disabled", status=404, mimetype="text/plain")
    if not metrics.authorized(request.headers.get("Authorization"), settings.token):
        return Response(
            "a bearer token is required",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry = current_app.extensions.get(_SCRAPE_REGISTRY)
    if registry is None:
        registry = current_app.extensions[_SCRAPE_REGISTRY] = metrics.scrape_registry(services.db)
    body, content_type = metrics.render(registry, request.headers.get("Accept"))
    return Response(body, content_type=content_type)
