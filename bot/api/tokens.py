"""API tokens: issue one to an integration (shown once), list, revoke, and check a presented token."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.api_tokens import ApiScope, ApiToken
from models.audit import AuditEntry
from models.base import utcnow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
TOKEN_PREFIX = "wbt_"
# Recording every call would turn each read into a write; once a minute is enough to spot idle tokens.
LAST_USED_EVERY = timedelta(minutes=1)


class ApiTokenError(ValueError):
    """A token cannot be issued or revoked as asked."""


def token_digest(token: str) -> str:
    """The sha256 hex stored in place of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _scopes(requested: Iterable[str]) -> list[str]:
    known = {s.value for s in ApiScope}
    chosen = sorted(set(requested))
    unknown = [s for s in chosen if s not in known]
    if unknown or not chosen:
        raise ApiTokenError(f"scope: one or more of {', '.join(s.value for s in ApiScope)}")
    return chosen


def get_token(session: Session, name: str) -> ApiToken:
    """The token named `name`, or a clear error."""
    row = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise ApiTokenError(f"no API token named {name!r}")
    return row


def issue_token(session: Session, name: str, scopes: Iterable[str], actor: str) -> tuple[ApiToken, str]:
    """Create a token for an integration; the plain token is returned here and never again."""
    if not NAME_RE.match(name):
        raise ApiTokenError("name: 2-64 characters from letters, digits, '_', '.' and '-'")
    chosen = _scopes(scopes)
    if session.scalars(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        raise ApiTokenError(f"an API token named {name!r} exists (names are never reused)")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_sha256=token_digest(plain), scopes=chosen, created_by=actor)
    session.add(row)
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor,
            action="api_token.create",
            target=f"api_token:{name}",
            detail={"scopes": chosen},
        )
    )
    session.flush()
    return row, plain


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, live ones first, then by name."""
    rows = session.scalars(select(ApiToken).order_by(ApiToken.name)).all()
    return sorted(rows, key=lambda row: row.revoked_at is not None)


def revoke_token(session: Session, name: str, actor: str) -> ApiToken:
    """Stop a token working from now on; revoking twice is refused so the audit shows one revocation."""
    row = get_token(session, name)
    if row.revoked_at is not None:
        raise ApiTokenError(f"API token {name!r} is already revoked")
    row.revoked_at = utcnow()
    session.add(
        AuditEntry(
            at=row.revoked_at, actor=actor, action="api_token.revoke", target=f"api_token:{name}", detail={}
        )
    )
    return row


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def authenticate(session: Session, presented: str, now: datetime) -> ApiToken | None:
    """The live token matching `presented` (its use recorded at most once a minute), or None."""
    if not presented.startswith(TOKEN_PREFIX):
        return None
    row = session.scalars(
        select(ApiToken).where(
            ApiToken.token_sha256 == token_digest(presented), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    if row.last_used_at is None or now - _aware(row.last_used_at) >= LAST_USED_EVERY:
        row.last_used_at = now
    return row
