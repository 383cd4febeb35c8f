"""Account managers: validated registration and changes (audited), and when a manager is at work."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.campaigns.courses import SAC_RE
from models.audit import AuditEntry
from models.handoff import AccountManager
from models.leads import Platform
from models.users import Role, User

FIRM_TZ = ZoneInfo("Asia/Shanghai")
USERID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_CAPACITY = 500
# SAC registration letters that allow giving investment advice (证券投资咨询 / 投资顾问).
ADVISER_LETTERS = frozenset({"S"})


MANAGING_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})


class ManagerError(ValueError):
    """An account manager cannot be registered or changed as asked; nothing was changed."""


def require_admin(session: Session, username: str) -> User:
    """The active admin or operator account named `username` (who may manage account managers), or refuse."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise ManagerError(f"no active account named {username!r}")
    if user.role not in MANAGING_ROLES:
        raise ManagerError(
            f"{username} ({user.role}) may not manage account managers (admins and operators may)"
        )
    return user


@dataclass(frozen=True)
class ManagerFields:
    """Validated values for an account manager, as given on the command line or in the console."""

    name: str | None = None
    sac_number: str | None = None
    licensed: bool | None = None
    capacity: int | None = None
    work_days: str | None = None
    work_start: str | None = None
    work_end: str | None = None
    platforms: tuple[str, ...] | None = None
    supervisor: str | None = None


def normalize_sac(value: str) -> str:
    """A SAC registration number in canonical form (NFKC, upper case), or ManagerError."""
    sac = unicodedata.normalize("NFKC", value).strip().upper()
    if not SAC_RE.match(sac):
        raise ManagerError(
            f"SAC registration number {value!r}: expected one capital letter and 13 digits"
            " (pattern ^[A-Z]\\d{13}$, e.g. S0260612345678 for 投资顾问, A… for 一般证券业务)"
        )
    return sac


def parse_days(value: str) -> str:
    """ISO weekdays as a sorted digit string: "1-5" → "12345", "1,3,5" → "135", "12345" stays."""
    text = value.replace(" ", "")
    days: set[int] = set()
    for part in filter(None, re.split(r"[,，]", text)):
        if re.fullmatch(r"[1-7]-[1-7]", part):
            first, last = int(part[0]), int(part[2])
            if first > last:
                raise ManagerError(f"working days {value!r}: range {part} runs backwards")
            days.update(range(first, last + 1))
        elif re.fullmatch(r"[1-7]+", part):
            days.update(int(d) for d in part)
        else:
            raise ManagerError(
                f"working days {value!r}: use ISO weekdays 1-7 (1 = Monday), e.g. 1-5 or 1,3,5"
            )
    if not days:
        raise ManagerError("working days: name at least one day (1 = Monday … 7 = Sunday)")
    return "".join(str(d) for d in sorted(days))


def parse_clock(value: str, what: str) -> str:
    """A HH:MM time of day in firm time, or ManagerError."""
    text = value.strip()
    if len(text) == 4 and text[1] == ":":
        text = "0" + text
    if not CLOCK_RE.match(text):
        raise ManagerError(f"{what} {value!r}: expected HH:MM (24-hour, Asia/Shanghai)")
    return text


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def working(manager: AccountManager, now: datetime) -> bool:
    """Whether `now` is in the manager's working hours (firm time; an end before the start spans midnight)."""
    local = now.astimezone(FIRM_TZ)
    start, end, at = _clock(manager.work_start), _clock(manager.work_end), local.time()
    if start < end:
        return str(local.isoweekday()) in manager.work_days and start <= at < end
    if at >= start:  # evening part of an overnight shift, on the day it starts
        return str(local.isoweekday()) in manager.work_days
    previous_day = (local.isoweekday() - 2) % 7 + 1
    return at < end and str(previous_day) in manager.work_days


def serves(manager: AccountManager, platform: str | None) -> bool:
    """Whether the manager takes leads from `platform` (an empty list serves every platform)."""
    return not manager.platforms or (platform is not None and platform in manager.platforms)


def _platforms(values: Iterable[str]) -> tuple[str, ...]:
    known = {p.value for p in Platform}
    cleaned = tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip()))
    unknown = sorted(set(cleaned) - known)
    if unknown:
        raise ManagerError(f"platforms: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cleaned


def get_manager(session: Session, userid: str) -> AccountManager:
    """The account manager with this WeCom userid, or ManagerError."""
    manager = session.get(AccountManager, userid)
    if manager is None:
        raise ManagerError(f"no account manager {userid!r}")
    return manager


def _check_supervisor(session: Session, userid: str, supervisor: str) -> None:
    if supervisor == userid:
        raise ManagerError("supervisor: a manager cannot supervise themself")
    seen = {userid}
    current: str | None = supervisor
    while current is not None:
        boss = session.get(AccountManager, current)
        if boss is None:
            raise ManagerError(f"supervisor: no account manager {current!r} (add the supervisor first)")
        if current == supervisor and not boss.active:
            raise ManagerError(f"supervisor: {supervisor!r} is disabled")
        if current in seen:
            raise ManagerError(f"supervisor: {supervisor!r} would make a supervision loop")
        seen.add(current)
        current = boss.supervisor_userid


def _apply(session: Session, manager: AccountManager, fields: ManagerFields) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if fields.name is not None:
        name = fields.name.strip()
        if not name or len(name) > 64:
            raise ManagerError("name: 1-64 characters")
        changes["name"] = name
    if fields.sac_number is not None:
        changes["sac_number"] = normalize_sac(fields.sac_number) if fields.sac_number.strip() else None
    if fields.licensed is not None:
        changes["licensed"] = fields.licensed
    if fields.capacity is not None:
        if not 0 <= fields.capacity <= MAX_CAPACITY:
            raise ManagerError(f"capacity: 0-{MAX_CAPACITY} open leads at once (0 takes no new leads)")
        changes["capacity"] = fields.capacity
    if fields.work_days is not None:
        changes["work_days"] = parse_days(fields.work_days)
    if fields.work_start is not None:
        changes["work_start"] = parse_clock(fields.work_start, "work start")
    if fields.work_end is not None:
        changes["work_end"] = parse_clock(fields.work_end, "work end")
    if fields.platforms is not None:
        changes["platforms"] = list(_platforms(fields.platforms))
    if fields.supervisor is not None:
        supervisor = fields.supervisor.strip() or None
        if supervisor is not None:
            _check_supervisor(session, manager.userid, supervisor)
        changes["supervisor_userid"] = supervisor
    licensed = changes.get("licensed", manager.licensed)
    sac = changes.get("sac_number", manager.sac_number)
    if licensed and (sac is None or sac[0] not in ADVISER_LETTERS):
        raise ManagerError(
            "licensed: a manager licensed to advise needs an adviser's SAC number (S followed by 13 digits)"
        )
    start = changes.get("work_start", manager.work_start)
    if start == changes.get("work_end", manager.work_end):
        raise ManagerError("working hours: start and end must differ")
    for key, value in changes.items():
        setattr(manager, key, value)
    return changes


def _audit(session: Session, now: datetime, actor: str, action: str, userid: str, **detail: Any) -> None:
    session.add(AuditEntry(at=now, actor=actor, action=action, target=f"manager:{userid}", detail=detail))


def add_manager(
    session: Session, userid: str, fields: ManagerFields, *, actor: str, now: datetime
) -> AccountManager:
    """Register an account manager (name required; licence needs an adviser's SAC number); audited."""
    userid = userid.strip()
    if not USERID_RE.match(userid):
        raise ManagerError(f"userid {userid!r}: the member's WeCom userid, 1-64 of letters, digits, _ . @ -")
    if session.get(AccountManager, userid) is not None:
        raise ManagerError(f"account manager {userid!r} exists (use update)")
    if fields.name is None:
        raise ManagerError("name: required")
    manager = AccountManager(
        userid=userid,
        name="",
        licensed=False,
        capacity=10,
        open_count=0,
        work_days="12345",
        work_start="09:00",
        work_end="18:00",
        platforms=[],
        active=True,
        created_at=now,
        updated_at=now,
    )
    changes = _apply(session, manager, fields)
    session.add(manager)
    session.flush()
    _audit(session, now, actor, "manager.add", userid, **changes)
    return manager


def update_manager(
    session: Session,
    userid: str,
    fields: ManagerFields,
    *,
    actor: str,
    now: datetime,
    active: bool | None = None,
) -> AccountManager:
    """Change some of a manager's fields (and re-enable with active=True); audited."""
    manager = get_manager(session, userid)
    changes = _apply(session, manager, fields)
    if active is not None and active != manager.active:
        manager.active = changes["active"] = active
    if not changes:
        raise ManagerError("nothing to change")
    manager.updated_at = now
    session.flush()
    _audit(session, now, actor, "manager.update", userid, **changes)
    return manager


def disable_manager(session: Session, userid: str, *, actor: str, now: datetime) -> AccountManager:
    """Stop offering leads to a manager (their open handoffs stay theirs until answered or timed out)."""
    manager = get_manager(session, userid)
    if not manager.active:
        raise ManagerError(f"account manager {userid!r} is already disabled")
    manager.active = False
    manager.updated_at = now
    _audit(session, now, actor, "manager.disable", userid)
    return manager


def list_managers(session: Session, include_inactive: bool = False) -> list[AccountManager]:
    """Account managers by userid (active ones only unless asked)."""
    stmt = select(AccountManager).order_by(AccountManager.userid)
    if not include_inactive:
        stmt = stmt.where(AccountManager.active.is_(True))
    return list(session.scalars(stmt))
