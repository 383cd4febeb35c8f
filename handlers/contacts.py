"""Customer-contact events: attribute the lead, welcome it within the 20 s window, keep records in step."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from bot.delivery.outbox import cancel_pending
from bot.leads.attribution import Arrival, record_arrivals
from bot.leads.tagsync import TAGS_CHANNEL
from bot.leads.welcome import assign_welcome_variants, message_values, queue_welcome, welcome_deadline
from bot.routing import HandlerContext, Router, change_type
from bot.wecom.events import (
    ChangeType,
    CustomerAcquisitionEvent,
    Event,
    ExternalContactChange,
    ExternalTagChange,
)
from handlers.relations import (
    has_active_relation,
    record_transfer_failure,
    track_relation,
    track_relations,
)
from models.alerts import Alert
from models.audit import AuditEntry
from models.bulk import insert_rows
from models.deliveries import Channel, Delivery
from models.leads import CorpTag, Lead, Member

router = Router("contacts")


def _queue_welcome(
    event: ExternalContactChange, ctx: HandlerContext, lead: Lead, member: Member | None
) -> None:
    queue_welcome(
        ctx,
        lead,
        {},
        purpose_key=_welcome_key(event),
        channel=Channel.CONTACT_WELCOME,
        recipient=event.external_user_id,
        sender=event.user_id,
        values=message_values(ctx, lead, member.name if member else ""),
        params={"welcome_code": event.welcome_code},
        priority=0,
        deadline=welcome_deadline(ctx, event.create_time),
        known_new=True,
        flush=False,
    )


def _welcome_key(event: ExternalContactChange) -> str:
    return f"welcome:{event.external_user_id}:{event.welcome_code}"


@router.on_batch(
    ExternalContactChange, change_type(ChangeType.ADD_EXTERNAL_CONTACT, ChangeType.ADD_HALF_EXTERNAL_CONTACT)
)
def customers_added(items: Sequence[tuple[Event, HandlerContext]]) -> None:
    """Record each relationship and touch, tag the leads, and queue each platform's welcome.

    A burst of adds is handled in batches: a few statements load and write for all of them.
    """
    adds = [(event, ctx) for event, ctx in items if isinstance(event, ExternalContactChange)]
    session = adds[0][1].session
    track_relations(adds)
    arrivals = [
        Arrival(event.external_user_id, event.user_id, event.state, "contact_way", ctx.event_id)
        for event, ctx in adds
    ]
    attributed = record_arrivals(session, arrivals, adds[0][1].now)
    welcomes = {_welcome_key(event) for event, _ctx in adds if event.welcome_code}
    if welcomes:
        stmt = select(Delivery.purpose_key).where(Delivery.purpose_key.in_(welcomes))
        welcomes -= set(session.scalars(stmt))  # a redelivered add is welcomed once
        stmt_members = select(Member).where(Member.userid.in_({event.user_id for event, _ctx in adds}))
        members = {member.userid: member for member in session.scalars(stmt_members)}
    audits = []
    to_welcome: list[tuple[ExternalContactChange, HandlerContext, Lead]] = []
    for (event, ctx), (lead, code) in zip(adds, attributed, strict=True):
        audits.append(
            ctx.audit_row(
                "lead.touch",
                f"lead:{lead.external_user_id}",
                code=code.code if code else None,
                raw=event.state,
            )
        )
        if code is not None:
            ctx.wake_after_commit.add(TAGS_CHANNEL)  # mirror the new tags into WeCom
        key = _welcome_key(event)
        if event.welcome_code and not lead.opted_out and key in welcomes:
            welcomes.discard(key)
            to_welcome.append((event, ctx, lead))
    if to_welcome:
        assign_welcome_variants(session, [lead for _event, _ctx, lead in to_welcome], adds[0][1].now)
    for event, ctx, lead in to_welcome:
        _queue_welcome(event, ctx, lead, members.get(event.user_id))
    insert_rows(session, AuditEntry, audits)


@router.on(ExternalContactChange, change_type(ChangeType.DEL_FOLLOW_USER, ChangeType.DEL_EXTERNAL_CONTACT))
def customer_removed(event: Event, ctx: HandlerContext) -> None:
    """Stop every send to a customer no member is connected to any more."""
    assert isinstance(event, ExternalContactChange)
    track_relation(event, ctx)
    lead = ctx.session.scalars(select(Lead).where(Lead.external_user_id == event.external_user_id)).first()
    if lead is None or has_active_relation(ctx, event.external_user_id):
        return
    lead.reachable = False
    lead.updated_at = ctx.now
    cancel_pending(
        ctx.session, event.external_user_id, f"customer unreachable after {event.change_type}", ctx.now
    )


@router.on(ExternalContactChange, change_type(ChangeType.TRANSFER_FAIL))
def transfer_failed(event: Event, ctx: HandlerContext) -> None:
    """A takeover failed; the customer stays where they were."""
    assert isinstance(event, ExternalContactChange)
    record_transfer_failure(event, ctx)


@router.on(
    ExternalContactChange, change_type(ChangeType.EDIT_EXTERNAL_CONTACT, ChangeType.MSG_AUDIT_APPROVED)
)
def contact_edited(event: Event, ctx: HandlerContext) -> None:
    """Keep a trace of member-side edits and archiving consent."""
    assert isinstance(event, ExternalContactChange)
    ctx.audit(f"contact.{event.change_type}", f"contact:{event.external_user_id}", member=event.user_id)


@router.on(CustomerAcquisitionEvent, change_type("balance_low", "balance_exhausted"))
def acquisition_quota(event: Event, ctx: HandlerContext) -> None:
    """Tell operators the 获客助手 quota is running out before acquisition links stop working."""
    assert isinstance(event, CustomerAcquisitionEvent)
    exhausted = event.change_type == "balance_exhausted"
    ctx.session.add(
        Alert(
            raised_at=ctx.now,
            kind=f"acquisition.{event.change_type}",
            severity="critical" if exhausted else "warning",
            audience="operator",
            message="获客助手 quota used up: acquisition links no longer add customers"
            if exhausted
            else "获客助手 quota is low: top it up before acquisition links stop working",
            detail={"event": ctx.event_id},
        )
    )


@router.on(ExternalTagChange)
def corp_tag_changed(event: Event, ctx: HandlerContext) -> None:
    """An admin changed corp tags in the console; forget a deleted tag of ours so it is re-created."""
    assert isinstance(event, ExternalTagChange)
    if event.change_type == "delete":
        for tag in ctx.session.scalars(select(CorpTag).where(CorpTag.wecom_tag_id == event.tag_id)):
            ctx.session.delete(tag)
    ctx.audit(f"corp_tag.{event.change_type}", f"corp_tag:{event.tag_id}", tag_type=event.tag_type)
