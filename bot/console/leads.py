"""Lead and handoff queries for the console: filtered lead lists, one lead's record, the handoff queue.

Who sees what is decided here, not in templates: a manager sees only the leads they hold (an open
handoff to their WeCom userid) and only their own handoffs; ids and phone numbers are masked for every
role except administrators and compliance reviewers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session

from bot.config import ScoringSettings
from bot.console.presenting import Page
from bot.leads.masking import mask
from bot.leads.scoring import Score, ScoreItem, compute
from bot.leads.scoring import score as lead_score
from bot.leads.stages import Stage
from bot.leads.timeline import TimelineItem, timeline
from models.handoff import OPEN_STATUSES, AccountManager, Handoff, HandoffStatus
from models.leads import Lead, Platform
from models.scoring import ScoreEvent, StageChange
from models.users import Role, User

FULL_VIEW_ROLES = frozenset({Role.ADMIN, Role.COMPLIANCE})
ID_VISIBLE_HEAD = 6  # characters of an external id a masked view shows (and may search by)
ID_VISIBLE_TAIL = 4
MAX_SCORE = 10_000
# Score ranges and searches on masked names are decided in Python; past this many candidates the
# list asks for a narrower filter instead of scoring every lead.
MAX_SCANNED = 5_000
SEARCH_MAX = 64


class FilterError(ValueError):
    """A filter value that cannot be used; `field` names the query parameter, the message says why."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


@dataclass(frozen=True)
class Viewer:
    """The signed-in account as the lead pages see it: whether it masks, and whose leads it may see."""

    role: str
    wecom_userid: str | None

    @classmethod
    def of(cls, user: User) -> Viewer:
        """The viewer for a console account."""
        return cls(user.role, user.wecom_userid or None)

    @property
    def masked(self) -> bool:
        """Whether ids and phone numbers are hidden from this role."""
        return self.role not in FULL_VIEW_ROLES

    @property
    def is_manager(self) -> bool:
        """Whether this viewer is limited to the leads and handoffs it holds itself."""
        return self.role == Role.MANAGER

    def text(self, value: str) -> str:
        """Free text (names, messages, notes) as this viewer may read it."""
        return mask(value) if self.masked else value

    def external_id(self, value: str) -> str:
        """A WeCom external user id, shortened to its head and tail for masked roles."""
        if not self.masked:
            return value
        if len(value) <= ID_VISIBLE_HEAD + ID_VISIBLE_TAIL:
            return f"{value[:ID_VISIBLE_HEAD]}…"  # too short to show both ends and still hide a part
        return f"{value[:ID_VISIBLE_HEAD]}…{value[-ID_VISIBLE_TAIL:]}"

    def summary(self, value: str, external_ids: Iterable[str]) -> str:
        """A timeline line with every named external id and the phone numbers in it masked."""
        if not self.masked:
            return value
        for ext in external_ids:
            value = value.replace(ext, self.external_id(ext))
        return mask(value)


@dataclass(frozen=True)
class LeadFilters:
    """What the lead list is narrowed to; empty fields do not filter."""

    platform: str = ""
    hook_code: str = ""
    stage: str = ""
    min_score: int | None = None
    max_score: int | None = None
    manager: str = ""
    opted_out: bool | None = None
    search: str = ""

    @property
    def by_score(self) -> bool:
        """Whether a score bound is set (scores decay, so they are computed, not stored)."""
        return self.min_score is not None or self.max_score is not None


def _score_bound(raw: str, what: str) -> int | None:
    if not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(what, "a whole number") from None
    if not 0 <= value <= MAX_SCORE:
        raise FilterError(what, f"0 to {MAX_SCORE}")
    return value


def parse_filters(args: Mapping[str, str]) -> LeadFilters:
    """Lead filters from a query string; FilterError names the first unusable value."""
    platform = args.get("platform", "").strip()
    if platform and platform not in {p.value for p in Platform}:
        raise FilterError("platform", "not a known platform")
    stage = args.get("stage", "").strip()
    if stage and stage not in {s.value for s in Stage}:
        raise FilterError("stage", "not a known stage")
    opted = args.get("opted_out", "").strip()
    if opted not in ("", "yes", "no"):
        raise FilterError("opted_out", "yes, no or empty")
    search = args.get("q", "").strip()
    if len(search) > SEARCH_MAX:
        raise FilterError("q", f"at most {SEARCH_MAX} characters")
    low = _score_bound(args.get("min_score", ""), "min_score")
    high = _score_bound(args.get("max_score", ""), "max_score")
    if low is not None and high is not None and high < low:
        raise FilterError("max_score", "below min_score")
    return LeadFilters(
        platform=platform,
        hook_code=args.get("code", "").strip()[:30],
        stage=stage,
        min_score=low,
        max_score=high,
        manager=args.get("manager", "").strip()[:64],
        opted_out=None if not opted else opted == "yes",
        search=search,
    )


def held_by(userid: str) -> ColumnElement[bool]:
    """Leads with an open (offered or accepted) handoff to this manager."""
    return exists().where(
        Handoff.lead_id == Lead.id,
        Handoff.manager_userid == userid,
        Handoff.status.in_(OPEN_STATUSES),
    )


def visible_leads(viewer: Viewer) -> ColumnElement[bool] | None:
    """The condition limiting a manager to the leads they hold (None: every lead)."""
    if not viewer.is_manager:
        return None
    if viewer.wecom_userid is None:
        return false()  # an account not linked to a WeCom member holds nothing
    return held_by(viewer.wecom_userid)


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _search_condition(search: str, viewer: Viewer) -> ColumnElement[bool]:
    """Name contains the text, or the external id starts with it (masked roles: only the visible head)."""
    # For masked roles the name is matched again on its masked form in Python; the SQL part only
    # narrows to names holding every unmasked piece of the text.
    pieces = [p for p in re.split(r"[*…]+", search) if p] if viewer.masked else [search]
    name = and_(*(Lead.display_name.like(f"%{_like_escaped(p)}%", escape="\\") for p in pieces))
    if viewer.masked and len(search) > ID_VISIBLE_HEAD:
        return name
    return or_(name, Lead.external_user_id.like(f"{_like_escaped(search)}%", escape="\\"))


def lead_query(filters: LeadFilters, viewer: Viewer) -> Select[Any]:
    """Leads matching every SQL-decidable filter, newest first."""
    stmt = select(Lead).order_by(Lead.created_at.desc(), Lead.id.desc())
    scope = visible_leads(viewer)
    if scope is not None:
        stmt = stmt.where(scope)
    if filters.platform:
        stmt = stmt.where(Lead.platform == filters.platform)
    if filters.hook_code:
        stmt = stmt.where(Lead.hook_code == filters.hook_code)
    if filters.stage:
        stmt = stmt.where(Lead.stage == filters.stage)
    if filters.manager and not viewer.is_manager:
        stmt = stmt.where(held_by(filters.manager))
    if filters.opted_out is not None:
        stmt = stmt.where(Lead.opted_out.is_(filters.opted_out))
    if filters.search:
        stmt = stmt.where(_search_condition(filters.search, viewer))
    return stmt


def _scores(
    session: Session, leads: list[Lead], settings: ScoringSettings, now: datetime
) -> dict[int, Score]:
    """Every listed lead's score as of now, from one query over their score events."""
    events: dict[int, list[ScoreEvent]] = {lead.id: [] for lead in leads}
    for start in range(0, len(leads), 500):  # keep the IN list within every database's limits
        ids = [lead.id for lead in leads[start : start + 500]]
        for event in session.scalars(select(ScoreEvent).where(ScoreEvent.lead_id.in_(ids))):
            events[event.lead_id].append(event)
    return {lead_id: compute(rows, settings, now) for lead_id, rows in events.items()}


@dataclass(frozen=True)
class LeadRow:
    """One line of the lead list, already masked for the viewer."""

    id: int
    name: str
    external_id: str
    platform: str
    hook_code: str
    stage: str
    score: int
    opted_out: bool
    manager: str
    created_at: datetime


@dataclass(frozen=True)
class LeadList:
    """A page of leads; `too_many` when a score or masked-name filter met more leads than it may scan."""

    page: Page[LeadRow]
    too_many: bool = False


def _holders(session: Session, lead_ids: list[int]) -> dict[int, str]:
    """The manager holding each lead (open handoff), if any."""
    if not lead_ids:
        return {}
    rows = session.execute(
        select(Handoff.lead_id, Handoff.manager_userid).where(
            Handoff.lead_id.in_(lead_ids), Handoff.status.in_(OPEN_STATUSES)
        )
    )
    return {lead_id: userid for lead_id, userid in rows}


def _in_range(total: int, filters: LeadFilters) -> bool:
    low, high = filters.min_score, filters.max_score
    return (low is None or total >= low) and (high is None or total <= high)


def list_leads(
    session: Session,
    filters: LeadFilters,
    viewer: Viewer,
    number: int,
    size: int,
    *,
    settings: ScoringSettings,
    now: datetime,
) -> LeadList:
    """One page of the leads the viewer may see that match `filters`, with scores and holders."""
    stmt = lead_query(filters, viewer)
    masked_search = bool(filters.search) and viewer.masked
    too_many = False
    if filters.by_score or masked_search:
        candidates = list(session.scalars(stmt.limit(MAX_SCANNED + 1)))
        too_many = len(candidates) > MAX_SCANNED
        candidates = candidates[:MAX_SCANNED]
        if masked_search:
            candidates = [lead for lead in candidates if _masked_match(lead, filters.search, viewer)]
        scores = _scores(session, candidates, settings, now)
        matching = [lead for lead in candidates if _in_range(scores[lead.id].total, filters)]
        total = len(matching)
        leads = matching[(number - 1) * size : number * size]
    else:
        total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
        leads = list(session.scalars(stmt.limit(size).offset((number - 1) * size)))
        scores = _scores(session, leads, settings, now)
    holders = _holders(session, [lead.id for lead in leads])
    rows = [
        LeadRow(
            id=lead.id,
            name=viewer.text(lead.display_name),
            external_id=viewer.external_id(lead.external_user_id),
            platform=lead.platform or "",
            hook_code=lead.hook_code or "",
            stage=lead.stage,
            score=scores[lead.id].total,
            opted_out=lead.opted_out,
            manager=holders.get(lead.id, ""),
            created_at=lead.created_at,
        )
        for lead in leads
    ]
    return LeadList(Page(rows, number, size, total), too_many)


def _masked_match(lead: Lead, search: str, viewer: Viewer) -> bool:
    """The search as a masked role may use it: on the masked name, or the visible head of the id."""
    if search in viewer.text(lead.display_name):
        return True
    return len(search) <= ID_VISIBLE_HEAD and lead.external_user_id.startswith(search)


def lead_for(session: Session, lead_id: int, viewer: Viewer) -> Lead | None:
    """The lead if it exists and the viewer may see it."""
    stmt = select(Lead).where(Lead.id == lead_id)
    scope = visible_leads(viewer)
    if scope is not None:
        stmt = stmt.where(scope)
    return session.scalars(stmt).first()


class SlaState:
    """Where a handoff stands against its answer time, as the queue shows and filters it."""

    OFFERED = "offered"  # offered with no answer time (outside working hours)
    DUE = "due"  # offered, answer due in the future
    OVERDUE = "overdue"  # offered, answer time passed, not yet timed out by the sweep
    ESCALATED = "escalated"  # offered to a supervisor after missed offers
    ACCEPTED = HandoffStatus.ACCEPTED.value
    DECLINED = HandoffStatus.DECLINED.value
    TIMED_OUT = HandoffStatus.TIMED_OUT.value
    CLOSED = HandoffStatus.CLOSED.value
    CANCELLED = HandoffStatus.CANCELLED.value

    ALL = (OFFERED, DUE, OVERDUE, ESCALATED, ACCEPTED, DECLINED, TIMED_OUT, CLOSED, CANCELLED)


def sla_state(handoff: Handoff, now: datetime) -> str:
    """The handoff's SLA state at `now`."""
    if handoff.status != HandoffStatus.OFFERED:
        return str(handoff.status)
    if handoff.escalated:
        return SlaState.ESCALATED
    if handoff.due_at is None:
        return SlaState.OFFERED
    return SlaState.OVERDUE if handoff.due_at <= now else SlaState.DUE


def minutes_left(handoff: Handoff, now: datetime) -> int | None:
    """Whole minutes until an offer's answer is due (negative once overdue); None when not waiting."""
    if handoff.status != HandoffStatus.OFFERED or handoff.due_at is None:
        return None
    seconds = (handoff.due_at - now).total_seconds()
    return int(seconds // 60) if seconds < 0 else int(-(-seconds // 60))


def _state_condition(state: str, now: datetime) -> ColumnElement[bool]:
    offered = and_(Handoff.status == HandoffStatus.OFFERED, Handoff.escalated.is_(False))
    conditions: dict[str, ColumnElement[bool]] = {
        SlaState.OFFERED: and_(offered, Handoff.due_at.is_(None)),
        SlaState.DUE: and_(offered, Handoff.due_at > now),
        SlaState.OVERDUE: and_(offered, Handoff.due_at <= now),
        SlaState.ESCALATED: and_(Handoff.status == HandoffStatus.OFFERED, Handoff.escalated.is_(True)),
    }
    return conditions.get(state, Handoff.status == state)


@dataclass(frozen=True)
class HandoffRow:
    """One line of the handoff queue, already masked for the viewer."""

    id: int
    lead_id: int
    lead_name: str
    manager_userid: str
    manager_name: str
    state: str
    minutes_left: int | None
    attempt: int
    offered_at: datetime
    due_at: datetime | None
    responded_at: datetime | None
    closed_at: datetime | None
    reason: str
    note: str
    channel: str = field(default="")
    note_code: str = ""  # the bot's own note by code (the console words it), else "" for free text
    note_params: Mapping[str, Any] = field(default_factory=dict)


def _handoff_row(
    handoff: Handoff, lead: Lead, manager_name: str, viewer: Viewer, now: datetime
) -> HandoffRow:
    channel = f"{handoff.channel_action} {handoff.channel_status}".strip()
    return HandoffRow(
        id=handoff.id,
        lead_id=lead.id,
        lead_name=viewer.text(lead.display_name),
        manager_userid=handoff.manager_userid,
        manager_name=manager_name,
        state=sla_state(handoff, now),
        minutes_left=minutes_left(handoff, now),
        attempt=handoff.attempt,
        offered_at=handoff.offered_at,
        due_at=handoff.due_at,
        responded_at=handoff.responded_at,
        closed_at=handoff.closed_at,
        reason=viewer.summary(handoff.reason, [lead.external_user_id]),
        note=viewer.summary(handoff.note, [lead.external_user_id]),
        channel=channel,
        note_code=handoff.note_code or "",
        note_params=_masked_params(handoff.note_params, viewer, lead.external_user_id),
    )


def parse_state(raw: str) -> str:
    """A queue state filter from the query string; FilterError when unknown."""
    state = raw.strip()
    if state and state not in SlaState.ALL:
        raise FilterError("state", "not a known handoff state")
    return state


def handoff_queue(
    session: Session, viewer: Viewer, manager: str, state: str, number: int, size: int, now: datetime
) -> Page[HandoffRow]:
    """Handoffs by manager, newest offer first within each; a manager sees only their own."""
    stmt = (
        select(Handoff, Lead, AccountManager.name)
        .join(Lead, Lead.id == Handoff.lead_id)
        .join(AccountManager, AccountManager.userid == Handoff.manager_userid)
        .order_by(Handoff.manager_userid, Handoff.offered_at.desc(), Handoff.id.desc())
    )
    if viewer.is_manager:
        stmt = stmt.where(Handoff.manager_userid == viewer.wecom_userid if viewer.wecom_userid else false())
    elif manager:
        stmt = stmt.where(Handoff.manager_userid == manager)
    if state:
        stmt = stmt.where(_state_condition(state, now))
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = session.execute(stmt.limit(size).offset((number - 1) * size)).all()
    items = [_handoff_row(h, lead, name, viewer, now) for h, lead, name in rows]
    return Page(items, number, size, total)


@dataclass(frozen=True)
class LeadRecord:
    """Everything the lead page shows, already masked for the viewer."""

    lead: LeadRow
    first_state_raw: str
    owner_userid: str
    subscribed: bool
    reachable: bool
    score: Score
    explanation: list[ScoreItem]  # biggest contribution first
    stages: list[StageRow]
    handoffs: list[HandoffRow]
    timeline: list[TimelineItem]


def lead_record(
    session: Session, lead: Lead, viewer: Viewer, *, settings: ScoringSettings, now: datetime
) -> LeadRecord:
    """The lead's details, score with its explanation, stage and handoff history and timeline."""
    current = lead_score(session, lead, now, settings=settings)
    stages = list(
        session.scalars(
            select(StageChange).where(StageChange.lead_id == lead.id).order_by(StageChange.at, StageChange.id)
        )
    )
    handoffs = [
        _handoff_row(h, lead, name or h.manager_userid, viewer, now)
        for h, name in session.execute(
            select(Handoff, AccountManager.name)
            .join(AccountManager, AccountManager.userid == Handoff.manager_userid, isouter=True)
            .where(Handoff.lead_id == lead.id)
            .order_by(Handoff.offered_at, Handoff.id)
        )
    ]
    ext = lead.external_user_id
    items = [_masked_item(item, viewer, ext) for item in timeline(session, ext)]
    holder = next((h.manager_userid for h in handoffs if h.state not in _ENDED_STATES), "")
    row = LeadRow(
        id=lead.id,
        name=viewer.text(lead.display_name),
        external_id=viewer.external_id(ext),
        platform=lead.platform or "",
        hook_code=lead.hook_code or "",
        stage=lead.stage,
        score=current.total,
        opted_out=lead.opted_out,
        manager=holder,
        created_at=lead.created_at,
    )
    return LeadRecord(
        lead=row,
        first_state_raw=viewer.text(lead.first_state_raw or ""),
        owner_userid=lead.owner_userid or "",
        subscribed=lead.subscribed,
        reachable=lead.reachable,
        score=current,
        explanation=current.ranked(),
        stages=[_masked_change(change, viewer, ext) for change in stages],
        handoffs=handoffs,
        timeline=items,
    )


def _masked_item(item: TimelineItem, viewer: Viewer, ext: str) -> TimelineItem:
    """A timeline entry with every text value masked for the viewer (numbers and dates stay)."""
    return TimelineItem(item.at, item.kind, item.code, _masked_params(item.params, viewer, ext))


def _masked_params(params: Mapping[str, Any] | None, viewer: Viewer, ext: str) -> dict[str, Any]:
    """The values a coded text mentions, every text among them masked for the viewer."""
    return {k: viewer.summary(v, [ext]) if isinstance(v, str) else v for k, v in (params or {}).items()}


_ENDED_STATES = frozenset({SlaState.DECLINED, SlaState.TIMED_OUT, SlaState.CLOSED, SlaState.CANCELLED})


@dataclass(frozen=True)
class StageRow:
    """One stage change of the lead, its reason masked for the viewer."""

    from_stage: str
    to_stage: str
    at: datetime
    actor: str
    reason: str
    reason_code: str = ""  # the bot's own reason by code (the console words it), else "" for free text
    reason_params: Mapping[str, Any] = field(default_factory=dict)


def _masked_change(change: StageChange, viewer: Viewer, ext: str) -> StageRow:
    return StageRow(
        from_stage=change.from_stage,
        to_stage=change.to_stage,
        at=change.at,
        actor=change.actor,
        reason=viewer.summary(change.reason, [ext]),
        reason_code=change.reason_code or "",
        reason_params=_masked_params(change.reason_params, viewer, ext),
    )
