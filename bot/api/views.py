"""Read endpoints for integrations: leads, handoffs and the send ledger, each paged by a cursor.

External user ids and member userids are returned in full: the CRM matches customers by them and
cannot do so with a masked id. Free text (display names, handoff reasons and notes) is masked like
everything staff see, so phone and ID-card numbers typed by customers never leave through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import jsonify, request
from sqlalchemy import or_, select
from werkzeug.wrappers import Response

from bot.api.blueprint import ApiError, bp, iso, scope_required, services
from bot.leads.masking import mask
from bot.leads.stages import Stage
from models.api_tokens import ApiScope
from models.handoff import Handoff, HandoffStatus
from models.leads import Lead, LeadTag, LeadTouch, Platform
from models.ledger import LedgerEntry
from scripts_library.ledger import EXPORT_FIELDS, format_time

DEFAULT_PAGE = 100
MAX_PAGE = 500
MAX_LEDGER_PAGE = 1000
_LEDGER_COLUMNS = tuple(getattr(LedgerEntry, name) for name in EXPORT_FIELDS)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}: between {low} and {high}")
    return value


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name}: an ISO 8601 time such as 2026-11-01T00:00:00Z") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _choice_arg(name: str, allowed: list[str]) -> str | None:
    raw = request.args.get(name)
    if not raw:
        return None
    if raw not in allowed:
        raise ApiError(400, f"{name}: one of {', '.join(allowed)}")
    return raw


def _lead(lead: Lead) -> dict[str, Any]:
    return {
        "external_user_id": lead.external_user_id,
        "display_name": mask(lead.display_name),
        "platform": lead.platform,
        "hook_code": lead.hook_code,
        "owner_userid": lead.owner_userid,
        "stage": lead.stage,
        "subscribed": lead.subscribed,
        "opted_out": lead.opted_out,
        "reachable": lead.reachable,
        "created_at": iso(lead.created_at),
        "updated_at": iso(lead.updated_at),
    }


def _page(items: list[dict[str, Any]], last_id: int | None, limit: int, count: int) -> Response:
    """`data` plus `next_cursor`: pass it back as `cursor` for the next page; null on the last page."""
    return jsonify({"data": items, "next_cursor": last_id if count == limit else None})


@bp.get("/leads")
@scope_required(ApiScope.LEADS)
def leads() -> Response:
    """Leads in id order, optionally updated since a time, from one platform or at one stage."""
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = _int_arg("cursor", 0, 0, 2**62)
    stmt = select(Lead).where(Lead.id > cursor).order_by(Lead.id).limit(limit)
    if (since := _time_arg("updated_since")) is not None:
        stmt = stmt.where(Lead.updated_at >= since)
    if platform := _choice_arg("platform", [p.value for p in Platform]):
        stmt = stmt.where(Lead.platform == platform)
    if stage := _choice_arg("stage", [s.value for s in Stage]):
        stmt = stmt.where(Lead.stage == stage)
    with services().db.read() as session:
        rows = session.scalars(stmt).all()
        items = [_lead(row) for row in rows]
    return _page(items, rows[-1].id if rows else None, limit, len(rows))


@bp.get("/leads/<external_user_id>")
@scope_required(ApiScope.LEADS)
def lead(external_user_id: str) -> Response:
    """One lead with its tags and every arrival (touch) in time order."""
    with services().db.read() as session:
        row = session.scalars(select(Lead).where(Lead.external_user_id == external_user_id)).first()
        if row is None:
            raise ApiError(404, "no lead with this external_user_id")
        tags = session.scalars(select(LeadTag.name).where(LeadTag.lead_id == row.id).order_by(LeadTag.name))
        touches = session.scalars(select(LeadTouch).where(LeadTouch.lead_id == row.id).order_by(LeadTouch.at))
        body = {
            **_lead(row),
            "tags": list(tags),
            "touches": [
                {"at": iso(t.at), "source": t.source, "code": t.code, "member": t.member} for t in touches
            ],
        }
    return jsonify(body)


def _handoff(handoff: Handoff, external_user_id: str) -> dict[str, Any]:
    return {
        "id": handoff.id,
        "external_user_id": external_user_id,
        "manager_userid": handoff.manager_userid,
        "status": handoff.status,
        "attempt": handoff.attempt,
        "escalated": handoff.escalated,
        "advice": handoff.advice,
        "reason": mask(handoff.reason),
        "note": mask(handoff.note),
        "offered_at": iso(handoff.offered_at),
        "due_at": iso(handoff.due_at),
        "responded_at": iso(handoff.responded_at),
        "closed_at": iso(handoff.closed_at),
    }


@bp.get("/handoffs")
@scope_required(ApiScope.HANDOFFS)
def handoffs() -> Response:
    """Handoffs in id order; `since` keeps those offered, answered or closed at or after that time."""
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = _int_arg("cursor", 0, 0, 2**62)
    stmt = (
        select(Handoff, Lead.external_user_id)
        .join(Lead, Lead.id == Handoff.lead_id)
        .where(Handoff.id > cursor)
        .order_by(Handoff.id)
        .limit(limit)
    )
    if (since := _time_arg("since")) is not None:
        stmt = stmt.where(
            or_(Handoff.offered_at >= since, Handoff.responded_at >= since, Handoff.closed_at >= since)
        )
    if status := _choice_arg("status", [s.value for s in HandoffStatus]):
        stmt = stmt.where(Handoff.status == status)
    with services().db.read() as session:
        rows = session.execute(stmt).all()
        items = [_handoff(handoff, ext) for handoff, ext in rows]
    return _page(items, rows[-1][0].id if rows else None, limit, len(rows))


@bp.get("/ledger")
@scope_required(ApiScope.LEDGER)
def ledger() -> Response:
    """Ledger entries after `since_seq` in seq order, with the fields and hashes of the ledger export."""
    limit = _int_arg("limit", MAX_LEDGER_PAGE, 1, MAX_LEDGER_PAGE)
    since_seq = _int_arg("since_seq", 0, 0, 2**62)
    stmt = select(*_LEDGER_COLUMNS).where(LedgerEntry.seq > since_seq).order_by(LedgerEntry.seq).limit(limit)
    with services().db.read() as session:
        rows = session.execute(stmt).mappings().all()
    items = [
        {
            name: format_time(row[name]) if isinstance(row[name], datetime) else row[name]
            for name in EXPORT_FIELDS
        }
        for row in rows
    ]
    # The last seq returned; pass it back as since_seq. Null when the page is not full (caught up).
    next_seq = items[-1]["seq"] if len(items) == limit else None
    return jsonify({"data": items, "next_since_seq": next_seq})
