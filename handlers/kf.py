"""WeChat Customer Service: queue pulls on callbacks, welcome entries, answer texts inside the window."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from bot.campaigns.courses import register, upcoming_course
from bot.delivery.outbox import cancel_pending
from bot.handoff.flow import Desk, offer
from bot.kf import KF_WAKE_CHANNEL
from bot.kf.keywords import intents_in, is_register, is_subscribe, is_unsubscribe
from bot.kf.replies import conversation, customer_spoke, send_kf_text
from bot.kf.risk import record_inbound_risk
from bot.leads.attribution import Arrival, record_arrival
from bot.leads.scoring import evaluate
from bot.leads.welcome import message_values, queue_welcome, welcome_deadline
from bot.routing import Filter, HandlerContext, Router
from bot.wecom.events import (
    Event,
    KfCustomerMessage,
    KfCustomerText,
    KfEnterSession,
    KfMsgOrEvent,
    KfMsgSendFail,
    KfServicerMessage,
    KfSessionStatusChange,
)
from models.bulk import conflict_insert
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.kf import IntentSignal, KfConversation, KfCursor
from models.leads import HookCode, Lead
from scripts_library import ledger

router = Router("kf")

FAIL_TYPES = {
    0: "unknown",
    1: "kf account deleted",
    2: "app closed",
    4: "session expired (>48 h)",
    5: "session closed",
    6: "over the 5-message limit",
    7: "no Channels account bound",
    8: "entity not verified",
    9: "no Channels account and entity not verified",
    10: "user rejected",
    11: "no member has logged into the WeCom app",
}


@router.on(KfMsgOrEvent)
def kf_callback(event: Event, ctx: HandlerContext) -> None:
    """Record a pending pull for the kf account (bursts coalesce into one row) and wake the syncer."""
    assert isinstance(event, KfMsgOrEvent)
    values = {"token": event.token, "token_at": ctx.now, "requested_at": ctx.now}
    stmt = conflict_insert(ctx.session, KfCursor).values(
        open_kfid=event.open_kfid, cursor="", pulled=0, failures=0, **values
    )
    ctx.session.execute(stmt.on_conflict_do_update(index_elements=["open_kfid"], set_=values))
    ctx.wake_after_commit.add(KF_WAKE_CHANNEL)


def _lead(ctx: HandlerContext, external_user_id: str) -> Lead:
    lead = ctx.session.scalars(select(Lead).where(Lead.external_user_id == external_user_id)).first()
    if lead is None:
        lead = Lead(external_user_id=external_user_id, created_at=ctx.now, updated_at=ctx.now)
        ctx.session.add(lead)
        ctx.session.flush()
    return lead


@router.on(KfEnterSession)
def entered(event: Event, ctx: HandlerContext) -> None:
    """Attribute the lead by scene_param and welcome it with send_msg_on_event inside the 20 s window."""
    assert isinstance(event, KfEnterSession)
    arrival = Arrival(event.external_userid, None, event.scene_param or None, "kf", ctx.event_id)
    lead, code = record_arrival(ctx.session, arrival, ctx.now)
    ctx.audit(
        "lead.touch", f"lead:{lead.external_user_id}", code=code.code if code else None, raw=event.scene_param
    )
    if not event.welcome_code or lead.opted_out:
        return
    queue_welcome(
        ctx,
        lead,
        {"open_kfid": event.open_kfid},
        purpose_key=f"kf_welcome:{event.open_kfid}:{event.msgid}",
        channel=Channel.KF_WELCOME,
        recipient=event.external_userid,
        sender=event.open_kfid,
        values=message_values(ctx, lead),
        params={"code": event.welcome_code},
        priority=0,
        deadline=welcome_deadline(ctx, event.create_time),
    )


def _inbound(event: KfCustomerMessage, ctx: HandlerContext) -> tuple[KfConversation, Lead]:
    """Every customer message: reopen the window, and count risk words (statistics, never a block)."""
    sent = datetime.fromtimestamp(event.create_time, UTC) if event.create_time else ctx.received_at
    conv = conversation(ctx, event.open_kfid, event.external_userid)
    customer_spoke(conv, min(sent, ctx.received_at), ctx.now)
    if isinstance(event, KfCustomerText) and event.content:
        record_inbound_risk(ctx.session, event.content, event.external_userid, ctx.now, ctx.event_id)
    return conv, _lead(ctx, event.external_userid)


def _qualify(ctx: HandlerContext, lead: Lead) -> None:
    """Score what the lead just did; a lead that now qualifies is offered to an account manager."""
    evaluation = evaluate(ctx.session, lead, ctx.now, settings=ctx.settings.scoring)
    if evaluation.change is not None and ctx.settings.handoff.enabled:
        desk = Desk(ctx.session, ctx.settings, ctx.now, ctx.queue)
        if offer(desk, lead, evaluation.reason or "qualified") is None:
            ctx.audit("handoff.waiting", f"lead:{lead.external_user_id}", why="no eligible manager free now")


def _purpose(event: KfCustomerMessage) -> str:
    return f"kf_reply:{event.open_kfid}:{event.msgid}"


def _text(predicate: Any, name: str) -> Filter:
    return Filter(lambda e: predicate(str(getattr(e, "content", ""))), name)


@router.on(KfCustomerText, _text(is_unsubscribe, "unsubscribe"))
def unsubscribe(event: Event, ctx: HandlerContext) -> None:
    """TD / 退订 / 取消订阅: opt out at once, cancel what is queued, confirm, audit."""
    assert isinstance(event, KfCustomerText)
    conv, lead = _inbound(event, ctx)
    already = lead.opted_out
    lead.opted_out, lead.subscribed, lead.updated_at = True, False, ctx.now
    cancel_pending(ctx.session, lead.external_user_id, "customer opted out", ctx.now)
    ctx.audit("lead.opt_out", f"lead:{lead.external_user_id}", via="kf", text=event.content, already=already)
    send_kf_text(
        ctx,
        conv,
        lead,
        purpose_key=_purpose(event),
        script_key="unsubscribe_confirm",
        values=message_values(ctx, lead),
        allow_opted_out=True,
    )


@router.on(KfCustomerText, _text(is_subscribe, "subscribe"))
def subscribe(event: Event, ctx: HandlerContext) -> None:
    """订阅: an explicit consent, which also lifts an earlier opt-out; confirm and audit."""
    assert isinstance(event, KfCustomerText)
    conv, lead = _inbound(event, ctx)
    was_opted_out = lead.opted_out
    lead.subscribed, lead.opted_out, lead.updated_at = True, False, ctx.now
    ctx.audit("lead.subscribe", f"lead:{lead.external_user_id}", via="kf", was_opted_out=was_opted_out)
    _qualify(ctx, lead)
    send_kf_text(
        ctx,
        conv,
        lead,
        purpose_key=_purpose(event),
        script_key="subscribe_confirm",
        values=message_values(ctx, lead),
    )


@router.on(KfCustomerText, _text(is_register, "register"))
def register_for_course(event: Event, ctx: HandlerContext) -> None:
    """报名: register the lead for the next course (once) and confirm; with no course ahead, say so."""
    assert isinstance(event, KfCustomerText)
    conv, lead = _inbound(event, ctx)
    course = upcoming_course(ctx.session, ctx.now)
    script_key = "course_none"
    if course is not None:
        register(ctx.session, course, lead, "kf", ctx.now)
        script_key = "course_registered"
        _qualify(ctx, lead)
    send_kf_text(
        ctx, conv, lead, purpose_key=_purpose(event), script_key=script_key, values=message_values(ctx, lead)
    )


def _hook_by_keyword(ctx: HandlerContext, text: str) -> HookCode | None:
    word = text.strip().casefold()
    if not word:
        return None
    stmt = select(HookCode).where(func.lower(HookCode.keyword) == word, HookCode.active.is_(True))
    return ctx.session.scalars(stmt).first()


@router.on(KfCustomerText)
def customer_text(event: Event, ctx: HandlerContext) -> None:
    """A hook-code keyword claims its material; intent words are recorded; everything gets the fallback."""
    assert isinstance(event, KfCustomerText)
    conv, lead = _inbound(event, ctx)
    code = _hook_by_keyword(ctx, event.content)
    if code is not None:
        arrival = Arrival(event.external_userid, None, code.code, "keyword", ctx.event_id)
        lead, _ = record_arrival(ctx.session, arrival, ctx.now)
        ctx.audit("lead.touch", f"lead:{lead.external_user_id}", code=code.code, keyword=event.content)
        send_kf_text(
            ctx,
            conv,
            lead,
            purpose_key=_purpose(event),
            script_key="keyword_report_claim",
            values=message_values(ctx, lead),
        )
        return
    for intent, word in intents_in(event.content):
        ctx.session.add(
            IntentSignal(
                external_user_id=lead.external_user_id,
                intent=intent,
                keyword=word,
                source="kf",
                at=ctx.now,
                event_id=ctx.event_id,
            )
        )
    _qualify(ctx, lead)
    send_kf_text(
        ctx, conv, lead, purpose_key=_purpose(event), script_key="fallback", values=message_values(ctx, lead)
    )


@router.on(KfCustomerMessage)
def customer_message(event: Event, ctx: HandlerContext) -> None:
    """Images, voice, files…: they reopen the window; a person reads them, the bot does not answer."""
    assert isinstance(event, KfCustomerMessage)
    _inbound(event, ctx)


@router.on(KfServicerMessage)
def servicer_message(event: Event, ctx: HandlerContext) -> None:
    """A servicer wrote from the WeCom client: keep a trace, never answer it."""
    assert isinstance(event, KfServicerMessage)
    target = f"kf:{event.open_kfid}:{event.external_userid}"
    ctx.audit("kf.servicer_message", target, servicer=event.servicer_userid, msgid=event.msgid)


@router.on(KfSessionStatusChange)
def session_changed(event: Event, ctx: HandlerContext) -> None:
    """Track whether a human servicer holds the session (the API may not send while one does)."""
    assert isinstance(event, KfSessionStatusChange)
    conv = conversation(ctx, event.open_kfid, event.external_userid)
    conv.servicer_userid = None if event.change_type == 3 else (event.new_servicer_userid or None)
    conv.updated_at = ctx.now
    ctx.audit(
        "kf.session_status_change",
        f"kf:{event.open_kfid}:{event.external_userid}",
        change_type=event.change_type,
        servicer=conv.servicer_userid,
    )


@router.on(KfMsgSendFail)
def send_failed(event: Event, ctx: HandlerContext) -> None:
    """WeCom reports a send it accepted did not arrive: mark our delivery d<ID> failed with the reason."""
    assert isinstance(event, KfMsgSendFail)
    reason = f"msg_send_fail: fail_type {event.fail_type} ({FAIL_TYPES.get(event.fail_type, 'unknown')})"
    target = f"kf:{event.open_kfid}:{event.external_userid}"
    delivery_id = int(event.fail_msgid[1:]) if event.fail_msgid[1:].isdigit() else None
    row = ctx.session.get(Delivery, delivery_id, with_for_update=True) if delivery_id else None
    if row is None or row.channel not in (Channel.KF_TEXT, Channel.KF_WELCOME):
        ctx.audit("kf.send_fail_unmatched", target, fail_msgid=event.fail_msgid, reason=reason)
        return
    row.status, row.error = DeliveryStatus.FAILED, reason
    if row.ledger_seq is not None:
        ledger.append_outcome(ctx.session, row.ledger_seq, "failed", detail=reason, now=ctx.now)
    if event.fail_type in (4, 6):  # WeCom's own count says the window is spent until the customer writes
        conv = conversation(ctx, event.open_kfid, event.external_userid)
        conv.replies_since = max(conv.replies_since, 5)
    ctx.audit("kf.send_failed", target, delivery=row.id, reason=reason)
