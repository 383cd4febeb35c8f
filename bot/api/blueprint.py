"""The `/api/v1` blueprint: bearer-token sign-in, scope checks and JSON errors (no session, no CSRF)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from bot.api.tokens import authenticate
from bot.services import Services
from models.api_tokens import ApiScope, ApiToken
from models.base import utcnow

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("api", __name__, url_prefix="/api/v1")


class ApiError(Exception):
    """A refused request: its HTTP status and the message the integration sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def services() -> Services:
    """The process's wired services."""
    found: Services = current_app.extensions["wecom_bot"]
    return found


def error_response(status: int, message: str) -> tuple[Response, int]:
    """`{"error": {"status", "message"}}`; a 401 also names the Bearer scheme."""
    response = jsonify({"error": {"status": status, "message": message}})
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="wecom-bot"'
    return response, status


def open_endpoint(view: F) -> F:
    """Mark a view readable without a token (the API description)."""
    cast(Any, view).api_public = True
    return view


def scope_required(scope: ApiScope) -> Callable[[F], F]:
    """Let the view run only for a live token that carries `scope`."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            token: ApiToken = g.api_token
            if scope.value not in token.scopes:
                raise ApiError(403, f"this token does not carry the {scope.value!r} scope")
            return view(*args, **kwargs)

        cast(Any, guarded).api_scope = scope
        return cast(F, guarded)

    return decorate


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


@bp.before_request
def _sign_in() -> tuple[Response, int] | None:
    """Check the bearer token of every call; a view without a declared scope is closed."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, "api_public", False):
        return None
    if not hasattr(view, "api_scope"):
        return error_response(403, "this endpoint is not open to tokens")
    presented = _bearer()
    if not presented:
        return error_response(401, "send the token as 'Authorization: Bearer <token>'")
    with services().db.transaction() as session:
        token = authenticate(session, presented, utcnow())
        if token is not None:
            session.flush()
            session.expunge(token)
    if token is None:
        return error_response(401, "the token is unknown or revoked")
    g.api_token = token
    return None


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc.status, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return error_response(exc.code or 500, exc.description or exc.name)


def iso(value: datetime | None) -> str | None:
    """A stored UTC time as ISO 8601 with a Z suffix."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
