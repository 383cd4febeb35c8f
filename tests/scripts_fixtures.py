"""Helpers that put approved scripts in the catalogue the way people would."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.accounts import create_user
from bot.config import ComplianceSettings
from scripts_library import catalogue as cat

POLICY = cat.policy_from_settings(ComplianceSettings())


def ensure_people(session: Session) -> None:
    """An operator who writes scripts and a compliance reviewer who approves them."""
    from sqlalchemy import select

    from models.users import User

    if session.scalars(select(User).where(User.username == "olivia")).first() is None:
        create_user(session, "olivia", "operator", "operator-password")
        create_user(session, "chen", "compliance", "compliance-password")


def approved(session: Session, key: str, kind: str, body: str) -> None:
    """Create `key`, draft `body`, submit it and approve it."""
    ensure_people(session)
    cat.create_script(session, key, kind, "olivia")
    saved = cat.save_draft(session, key, body, "olivia", POLICY)
    cat.submit(session, key, saved.version.number, "olivia", POLICY)
    cat.approve(session, key, saved.version.number, "chen", POLICY)
