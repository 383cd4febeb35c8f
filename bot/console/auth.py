"""Who is signed in, and the decorator that lets a view run only for the roles it names."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort, current_app, g, redirect, request, session, url_for

from bot.services import Services
from models.users import Role, User
from scripts_library.catalogue import AUTHOR_ROLES, policy_from_settings
from scripts_library.compliance import LintPolicy

F = TypeVar("F", bound=Callable[..., Any])

_SESSION_USER = "console_uid"
_SESSION_STAMP = "console_stamp"
ALL_ROLES: tuple[Role, ...] = tuple(Role)
AUTHORS: tuple[Role, ...] = tuple(sorted(AUTHOR_ROLES))


def services() -> Services:
    """The process's wired services."""
    found: Services = current_app.extensions["wecom_bot"]
    return found


def lint_policy() -> LintPolicy:
    """The firm's lint policy from the `[compliance]` settings."""
    return policy_from_settings(services().settings.compliance)


def _stamp(user: User) -> str:
    # Changes when the password does, which ends every session signed in with the old one.
    return hashlib.sha256(f"{user.id}:{user.password_hash}".encode()).hexdigest()[:24]


def sign_in(user: User) -> None:
    """Start a fresh session for `user` (never reusing the pre-login one)."""
    lang = session.get("lang")
    session.clear()
    session.permanent = True
    session[_SESSION_USER] = user.id
    session[_SESSION_STAMP] = _stamp(user)
    if lang:
        session["lang"] = lang


def sign_out() -> None:
    """End the session, keeping only the language choice."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


def load_signed_in_user() -> User | None:
    """The active account of this session, or None (a disabled account or changed password ends it)."""
    uid = session.get(_SESSION_USER)
    if not isinstance(uid, int):
        return None
    with services().db.sessions() as db_session:
        user = db_session.get(User, uid)
    if user is None or not user.active or session.get(_SESSION_STAMP) != _stamp(user):
        sign_out()
        return None
    return user


def current_user() -> User:
    """The signed-in user of a view guarded by `roles_required`."""
    user: User | None = g.get("console_user")
    if user is None:
        abort(401)
    return user


def public(view: F) -> F:
    """Mark a view that needs no sign-in (the login page)."""
    cast(Any, view).console_public = True
    return view


def roles_required(*roles: Role) -> Callable[[F], F]:
    """Let the view run for signed-in users with one of `roles`; others get the login page or 403."""
    allowed = frozenset(roles or ALL_ROLES)

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            user: User | None = g.get("console_user")
            if user is None:
                return redirect(url_for("console.login", next=request.full_path))
            if user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        cast(Any, guarded).console_roles = allowed
        return cast(F, guarded)

    return decorate


def has_role(*roles: Role) -> bool:
    """Whether the signed-in user has one of `roles` (for showing or hiding actions)."""
    user: User | None = g.get("console_user")
    return user is not None and user.role in roles
