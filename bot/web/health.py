"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from bot.db import schema_status

bp = Blueprint("health", __name__)


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
