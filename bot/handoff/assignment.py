"""Choosing the account manager for a lead: the owner if eligible, else the least loaded eligible one.

Capacity is taken with one conditional UPDATE (open_count < capacity), so concurrent assignments can
never push a manager over capacity; the caller's unique open-handoff key stops a lead being offered twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.handoff.managers import serves, working
from models.handoff import AccountManager

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Need:
    """What a lead needs from its manager: its platform, and a licence when it asked for advice."""

    platform: str | None
    advice: bool


@dataclass(frozen=True)
class Choice:
    """The manager a lead went to, and whether it stayed with the member who already owns it."""

    manager: AccountManager
    kept_with_owner: bool


def ineligible(manager: AccountManager, need: Need, now: datetime) -> str | None:
    """Why the manager may not take this lead now (capacity aside), or None when they may."""
    if not manager.active:
        return "disabled"
    if need.advice and not manager.licensed:
        return "not licensed to advise"
    if not serves(manager, need.platform):
        return f"does not serve {need.platform or 'unattributed leads'}"
    if not working(manager, now):
        return "outside working hours"
    return None


def ranked(managers: Collection[AccountManager]) -> list[AccountManager]:
    """Least loaded first (open leads / capacity); ties go to whoever waited longest since an assignment."""
    return sorted(
        managers,
        key=lambda m: (m.open_count / m.capacity, m.last_assigned_at or _NEVER, m.userid),
    )


def claim_capacity(session: Session, userid: str, now: datetime, *, over_capacity: bool = False) -> bool:
    """Take one open slot of the manager atomically; False when full (or disabled)."""
    t = AccountManager
    stmt = update(t).where(t.userid == userid, t.active.is_(True))
    if not over_capacity:
        stmt = stmt.where(t.open_count < t.capacity)
    result = session.execute(
        stmt.values(open_count=t.open_count + 1, last_assigned_at=now).execution_options(
            synchronize_session=False
        )
    )
    claimed = result.rowcount == 1  # type: ignore[attr-defined]
    if claimed:
        manager = session.get(AccountManager, userid)
        if manager is not None:
            session.refresh(manager)
    return claimed


def release_capacity(session: Session, userid: str) -> None:
    """Give one open slot back (a handoff was declined, timed out or closed)."""
    t = AccountManager
    session.execute(
        update(t)
        .where(t.userid == userid, t.open_count > 0)
        .values(open_count=t.open_count - 1)
        .execution_options(synchronize_session=False)
    )
    manager = session.get(AccountManager, userid)
    if manager is not None:
        session.refresh(manager)


def choose(
    session: Session,
    owner: str | None,
    need: Need,
    now: datetime,
    exclude: Collection[str] = (),
) -> Choice | None:
    """Take a slot of the lead's owner if eligible, else of the best eligible manager; None if nobody can."""
    if owner and owner not in exclude:
        manager = session.get(AccountManager, owner)
        eligible = manager is not None and ineligible(manager, need, now) is None
        if eligible and manager is not None and claim_capacity(session, owner, now):
            return Choice(manager, kept_with_owner=True)
    pool = [
        m
        for m in session.scalars(select(AccountManager).where(AccountManager.active.is_(True)))
        if m.userid not in exclude and m.capacity > 0 and ineligible(m, need, now) is None
    ]
    for manager in ranked(pool):
        if manager.open_count >= manager.capacity:
            continue
        if claim_capacity(session, manager.userid, now):
            return Choice(manager, kept_with_owner=False)
    return None
