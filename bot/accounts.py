"""Console accounts: creation with hashed passwords, shared by `init`, `users add` and the console."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from models.audit import AuditEntry
from models.base import utcnow
from models.users import Role, User

_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-@]{2,64}$")
MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    """An account cannot be created as asked."""


def create_user(session: Session, username: str, role: str, password: str, actor: str = "cli") -> User:
    """Create an account after validating name, role and password strength; audit it."""
    if not _USERNAME_RE.match(username):
        raise AccountError("username: 2-64 characters from letters, digits and _.-@")
    if role not in Role.__members__.values():
        raise AccountError(f"role: must be one of {', '.join(r.value for r in Role)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise AccountError(f"username {username!r} is taken")
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
