"""Turns contact events into attributed leads: hook code lookup, first touch kept, touches appended."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.bulk import insert_rows
from models.leads import HookCode, Lead, LeadTag, LeadTouch


@dataclass(frozen=True)
class Arrival:
    """A customer arriving (or re-arriving) through some channel."""

    external_user_id: str
    member: str | None
    raw_code: str | None
    source: str  # contact_way | kf | keyword | acquisition_link
    event_id: int | None


def find_code(session: Session, raw: str | None) -> HookCode | None:
    """The active hook code a raw `state` / scene_param names, if any (exact match)."""
    if not raw:
        return None
    return session.scalars(
        select(HookCode).where(HookCode.code == raw.strip(), HookCode.active.is_(True))
    ).first()


def add_tag(session: Session, lead: Lead, name: str) -> None:
    """Tag a lead locally, once."""
    exists = session.scalars(
        select(LeadTag.id).where(LeadTag.lead_id == lead.id, LeadTag.name == name)
    ).first()
    if exists is None:
        session.add(LeadTag(lead_id=lead.id, name=name))


def record_arrival(session: Session, arrival: Arrival, now: datetime) -> tuple[Lead, HookCode | None]:
    """Create or update the lead; attribution is set by the first attributed touch and never overwritten."""
    return record_arrivals(session, [arrival], now)[0]


def record_arrivals(
    session: Session, arrivals: Sequence[Arrival], now: datetime
) -> list[tuple[Lead, HookCode | None]]:
    """`record_arrival` for several arrivals at once, with a fixed handful of statements for all of them."""
    raws = {a.raw_code.strip() for a in arrivals if a.raw_code}
    codes: dict[str, HookCode] = {}
    if raws:
        stmt = select(HookCode).where(HookCode.code.in_(raws), HookCode.active.is_(True))
        codes = {code.code: code for code in session.scalars(stmt)}
    ext_ids = {a.external_user_id for a in arrivals}
    leads = {
        lead.external_user_id: lead
        for lead in session.scalars(select(Lead).where(Lead.external_user_id.in_(ext_ids)))
    }
    known = set(leads)
    for a in arrivals:
        if a.external_user_id not in leads:
            lead = Lead(external_user_id=a.external_user_id, created_at=now, updated_at=now)
            lead.first_state_raw = a.raw_code
            session.add(lead)
            leads[a.external_user_id] = lead
    if len(leads) > len(known):
        session.flush()  # the new leads' ids, in one INSERT
    tags: set[tuple[int, str]] = set()
    retagged = [leads[a.external_user_id].id for a in arrivals if a.external_user_id in known]
    if retagged:
        existing = select(LeadTag.lead_id, LeadTag.name).where(LeadTag.lead_id.in_(retagged))
        tags = {(row.lead_id, row.name) for row in session.execute(existing)}
    results: list[tuple[Lead, HookCode | None]] = []
    touches: list[dict[str, Any]] = []
    new_tags: list[dict[str, Any]] = []
    for a in arrivals:
        lead = leads[a.external_user_id]
        code = codes.get(a.raw_code.strip()) if a.raw_code else None
        if code is not None and lead.hook_code is None:
            lead.hook_code, lead.platform = code.code, code.platform
        if a.member:
            lead.owner_userid = a.member
        lead.reachable = True
        lead.updated_at = now
        touches.append(
            {
                "lead_id": lead.id,
                "at": now,
                "source": a.source,
                "code": code.code if code else None,
                "raw_state": a.raw_code,
                "member": a.member,
                "event_id": a.event_id,
                "detail": {} if code or not a.raw_code else {"unknown_code": a.raw_code},
            }
        )
        if code is not None:
            for name in (f"platform:{code.platform}", f"code:{code.code}"):
                if (lead.id, name) not in tags:
                    tags.add((lead.id, name))
                    new_tags.append(
                        {"lead_id": lead.id, "name": name, "wecom_synced": False, "created_at": now}
                    )
        results.append((lead, code))
    # Core inserts the driver prepares once, not the ORM's per-batch multi-row INSERT … RETURNING.
    insert_rows(session, LeadTouch, touches)
    insert_rows(session, LeadTag, new_tags)
    return results
