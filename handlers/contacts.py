"""Customer-contact events: attribute the lead, welcome it within the 20 s window, keep records in step."""

from __future__ import annotations

from sqlalchemy import select

from bot.delivery.outbox import cancel_pending
from bot.leads.attribution import Arrival, record_arrival
from bot.leads.tagsync import TAGS_CHANNEL
from bot.leads.welcome import message_values, queue_welcome, welcome_deadline
from bot.routing import HandlerContext, Router, change_type
from bot.wecom.events import (
    ChangeType,
    CustomerAcquisitionEvent,
    Event,
    ExternalContactChange,
    ExternalTagChange,
)
from handlers.relations import has_active_relation, record_transfer_failure, track_relation
from models.alerts import Alert
from models.deliveries import Channel
from models.leads import CorpTag, Lead, Member

router = Router("contacts")


def _queue_welcome(event: ExternalContactChange, ctx: HandlerContext, lead: Lead) -> None:
    member = ctx.session.get(Member, event.user_id)
    queue_welcome(
        ctx,
        lead,
        {},
        purpose_key=f"welcome:{event.external_user_id}:{event.welcome_code}",
        channel=Channel.CONTACT_WELCOME,
        recipient=event.external_user_id,
        sender=event.user_id,
        values=message_values(ctx, lead, member.name if member else ""),
        params={"welcome_code": event.welcome_code},
        priority=0,
        deadline=welcome_deadline(ctx, event.create_time),
    )


@router.on(
    ExternalContactChange, change_type(ChangeType.ADD_EXTERNAL_CONTACT, ChangeType.ADD_HALF_EXTERNAL_CONTACT)
)
def customer_added(event: Event, ctx: HandlerContext) -> None:
    """Record the relationship and the touch, tag the lead, and queue the platform's welcome."""
    assert isinstance(event, ExternalContactChange)
    track_relation(event, ctx)
    arrival = Arrival(event.external_user_id, event.user_id, event.state, "contact_way", ctx.event_id)
    lead, code = record_arrival(ctx.session, arrival, ctx.now)
    ctx.audit(
        "lead.touch", f"lead:{lead.external_user_id}", code=code.code if code else None, raw=event.state
    )
    if code is not None:
        ctx.wake_after_commit.add(TAGS_CHANNEL)  # mirror the new tags into WeCom
    if event.welcome_code and not lead.opted_out:
        _queue_welcome(event, ctx, lead)


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
