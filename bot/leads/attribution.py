"""Turns contact events into attributed leads: hook code lookup, first touch kept, touches appended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

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
    code = find_code(session, arrival.raw_code)
    lead = session.scalars(select(Lead).where(Lead.external_user_id == arrival.external_user_id)).first()
    if lead is None:
        lead = Lead(external_user_id=arrival.external_user_id, created_at=now, updated_at=now)
        lead.first_state_raw = arrival.raw_code
        session.add(lead)
        session.flush()
    if code is not None and lead.hook_code is None:
        lead.hook_code, lead.platform = code.code, code.platform
    if arrival.member:
        lead.owner_userid = arrival.member
    lead.reachable = True
    lead.updated_at = now
    session.add(
        LeadTouch(
            lead_id=lead.id,
            at=now,
            source=arrival.source,
            code=code.code if code else None,
            raw_state=arrival.raw_code,
            member=arrival.member,
            event_id=arrival.event_id,
            detail={} if code or not arrival.raw_code else {"unknown_code": arrival.raw_code},
        )
    )
    if code is not None:
        add_tag(session, lead, f"platform:{code.platform}")
        add_tag(session, lead, f"code:{code.code}")
    return lead, code
