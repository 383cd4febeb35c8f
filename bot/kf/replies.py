"""kf replies inside WeCom's window: 48 h after the customer's last message, at most 5, counted by us."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.handoff.flow import silenced
from bot.routing import HandlerContext
from models.bulk import conflict_insert
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.kf import KfConversation
from models.leads import Lead
from scripts_library.catalogue import NotSendable, sendable_for

WINDOW = timedelta(hours=48)
# Leave the dispatcher time to send before WeCom's window closes.
WINDOW_MARGIN = timedelta(minutes=5)
MAX_REPLIES = 5
COUNTED = (DeliveryStatus.QUEUED, DeliveryStatus.HELD)


def conversation(ctx: HandlerContext, open_kfid: str, external_user_id: str) -> KfConversation:
    """The (kf account, customer) conversation, created on first use."""
    stmt = select(KfConversation).where(
        KfConversation.open_kfid == open_kfid, KfConversation.external_user_id == external_user_id
    )
    conv = ctx.session.scalars(stmt.with_for_update()).first()
    if conv is None:
        # Two workers may meet a customer's first messages at once (a lock on a missing row locks
        # nothing): insert if still absent, then lock whichever row won.
        ctx.session.execute(
            conflict_insert(ctx.session, KfConversation)
            .values(
                open_kfid=open_kfid, external_user_id=external_user_id, replies_since=0, updated_at=ctx.now
            )
            .on_conflict_do_nothing(index_elements=["open_kfid", "external_user_id"])
        )
        conv = ctx.session.scalars(stmt.with_for_update()).one()
    return conv


def customer_spoke(conv: KfConversation, at: datetime, now: datetime) -> None:
    """A customer message reopens the window and resets the reply budget (WECOM.md §7.3)."""
    if conv.last_customer_msg_at is None or at >= conv.last_customer_msg_at:
        conv.last_customer_msg_at = at
        conv.replies_since = 0
    conv.updated_at = now


def refusal(
    conv: KfConversation, lead: Lead | None, now: datetime, allow_opted_out: bool = False
) -> str | None:
    """Why a kf/send_msg reply may not go out now, or None when it may."""
    if lead is not None and lead.opted_out and not allow_opted_out:
        return "opted_out: the customer unsubscribed"
    if not allow_opted_out and silenced(lead):
        return "manager_accepted: an account manager has taken this customer over"
    if conv.last_customer_msg_at is None:
        return "no_window: the customer has not sent a message"
    if now >= conv.last_customer_msg_at + WINDOW - WINDOW_MARGIN:
        last = f"{conv.last_customer_msg_at:%Y-%m-%d %H:%M:%S}Z"
        return f"window_closed: 48 h have passed since the customer's last message at {last}"
    if conv.replies_since >= MAX_REPLIES:
        sent = conv.replies_since
        return f"reply_limit: {sent} replies sent since the customer's last message (max {MAX_REPLIES})"
    if conv.servicer_userid:
        return f"human_servicer: {conv.servicer_userid} is serving the session in the WeCom client"
    return None


def send_kf_text(
    ctx: HandlerContext,
    conv: KfConversation,
    lead: Lead | None,
    *,
    purpose_key: str,
    script_key: str,
    values: Mapping[str, Mapping[str, Any]],
    allow_opted_out: bool = False,
) -> Delivery | None:
    """Queue a kf/send_msg reply if the window allows it; else audit `kf.reply_refused` with the reason."""
    target = f"kf:{conv.open_kfid}:{conv.external_user_id}"
    reason = refusal(conv, lead, ctx.now, allow_opted_out)
    if reason is None:
        try:
            sendable_for(ctx.session, script_key, ctx.now, lead.id if lead is not None else None)
        except NotSendable as exc:
            reason = f"no_script: {exc}"
    if reason is not None:
        ctx.audit("kf.reply_refused", target, reason=reason, script_key=script_key, purpose=purpose_key)
        return None
    assert conv.last_customer_msg_at is not None
    delivery = ctx.queue(
        purpose_key=purpose_key,
        channel=Channel.KF_TEXT,
        recipient=conv.external_user_id,
        script_key=script_key,
        values=values,
        params={"open_kfid": conv.open_kfid},
        priority=10,
        lead_id=lead.id if lead is not None else None,
        deadline=conv.last_customer_msg_at + WINDOW,
    )
    if delivery.status in COUNTED:
        conv.replies_since += 1
        conv.last_reply_at = ctx.now
    return delivery
