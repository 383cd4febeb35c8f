"""Console accounts: creation with hashed passwords, sign-in with lockout, shared by the CLI and console."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from models.audit import AuditEntry
from models.base import utcnow
from models.users import Role, User

_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-@]{2,64}$")
MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    """An account cannot be created or changed as asked.

    `code` names the refusal and `params` the values its message mentions, so the console can say it
    in the reader's language; the English message stays for the CLI and logs.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


def create_user(session: Session, username: str, role: str, password: str, actor: str = "cli") -> User:
    """Create an account after validating name, role and password strength; audit it."""
    if not _USERNAME_RE.match(username):
        raise AccountError(
            "username: 2-64 characters from letters, digits and _.-@", "account.username_format"
        )
    if role not in Role.__members__.values():
        roles = ", ".join(r.value for r in Role)
        raise AccountError(f"role: must be one of {roles}", "account.role", roles=roles)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"password: at least {MIN_PASSWORD_LENGTH} characters",
            "account.password",
            min=MIN_PASSWORD_LENGTH,
        )
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise AccountError(f"username {username!r} is taken", "account.taken", username=username)
    user = User(username=username, role=role, password_hash=generate_password_hash(password))
    session.add(user)
    session.add(
        AuditEntry(
            at=utcnow(), actor=actor, action="user.create", target=f"user:{username}", detail={"role": role}
        )
    )
    return user


def has_admin(session: Session) -> bool:
    """Whether an active admin account exists."""
    stmt = select(User.id).where(User.role == Role.ADMIN, User.active.is_(True)).limit(1)
    return session.scalars(stmt).first() is not None


def _audit(session: Session, actor: str, action: str, target: str, **detail: Any) -> None:
    session.add(AuditEntry(at=utcnow(), actor=actor, action=action, target=target, detail=detail))


def find_user(session: Session, username: str) -> User | None:
    """The account named `username`, active or not."""
    return session.scalars(select(User).where(User.username == username)).first()


class LoginStatus(enum.StrEnum):
    """How a sign-in attempt ended."""

    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"


@dataclass(frozen=True)
class LoginOutcome:
    """The result of one sign-in attempt: the user on success, the lockout end when locked."""

    status: LoginStatus
    user: User | None = None
    locked_until: datetime | None = None


# Checked against when the account does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def attempt_login(
    session: Session,
    username: str,
    password: str,
    *,
    max_failures: int,
    lockout: timedelta,
    client: str = "",
    now: datetime | None = None,
) -> LoginOutcome:
    """Check a password; count failures and lock the account for `lockout` after `max_failures` in a row."""
    now = now or utcnow()
    user = find_user(session, username)
    target = f"user:{username[:64]}"
    if user is None or not user.active:
        check_password_hash(_DUMMY_HASH, password)
        _audit(session, username[:64], "console.login_failed", target, client=client, reason="unknown")
        return LoginOutcome(LoginStatus.BAD_CREDENTIALS)
    if user.locked_until is not None and now < user.locked_until:
        _audit(session, username, "console.login_refused", target, client=client, reason="locked")
        return LoginOutcome(LoginStatus.LOCKED, locked_until=user.locked_until)
    if not check_password_hash(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= max_failures:
            user.failed_logins = 0
            user.locked_until = now + lockout
            _audit(
                session, username, "user.lockout", target, client=client, until=user.locked_until.isoformat()
            )
            return LoginOutcome(LoginStatus.LOCKED, locked_until=user.locked_until)
        _audit(session, username, "console.login_failed", target, client=client, reason="password")
        return LoginOutcome(LoginStatus.BAD_CREDENTIALS)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    _audit(session, username, "console.login", target, client=client)
    return LoginOutcome(LoginStatus.OK, user=user)


def unlock_user(session: Session, username: str, actor: str) -> User:
    """Lift a sign-in lockout before it runs out; audited."""
    user = find_user(session, username)
    if user is None:
        raise AccountError(f"no account named {username!r}", "account.unknown", username=username)
    user.failed_logins = 0
    user.locked_until = None
    _audit(session, actor, "user.unlock", f"user:{username}")
    return user


def set_active(session: Session, username: str, active: bool, actor: str) -> User:
    """Enable or disable an account; nobody disables themselves, and the last active admin stays."""
    user = find_user(session, username)
    if user is None:
        raise AccountError(f"no account named {username!r}", "account.unknown", username=username)
    if not active and username == actor:
        raise AccountError("you cannot disable your own account", "account.disable_self")
    if not active and user.role == Role.ADMIN and user.active:
        others = select(User.id).where(User.role == Role.ADMIN, User.active.is_(True), User.id != user.id)
        if session.scalars(others.limit(1)).first() is None:
            raise AccountError("the last active admin cannot be disabled", "account.last_admin")
    if user.active != active:
        user.active = active
        _audit(session, actor, "user.enable" if active else "user.disable", f"user:{username}")
    return user
