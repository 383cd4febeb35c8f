"""Account managers' answers: Accept / Decline clicks on handoff cards, typed commands, failed transfers."""

from __future__ import annotations

from sqlalchemy import select

from bot.handoff import commands, flow
from bot.handoff.actions import transfer_failed as record_failed_transfer
from bot.handoff.cards import ACCEPT, KEY_PREFIX, parse_key
from bot.handoff.channel import ChannelAction, ChannelStatus
from bot.routing import Filter, HandlerContext, Router, change_type, event_key_startswith
from bot.wecom.events import ChangeType, Event, ExternalContactChange, TemplateCardEvent, TextMessage
from handlers.relations import record_transfer_failure
from models.deliveries import Channel
from models.handoff import AccountManager, Handoff
from models.leads import Lead
from scripts_library.catalogue import NotSendable, WorkflowError
from scripts_library.rendering import RenderError

router = Router("handoff")

REPLY_SCRIPT = "handoff_note"


def _desk(ctx: HandlerContext) -> flow.Desk:
    return flow.Desk(ctx.session, ctx.settings, ctx.now, ctx.queue)


@router.on(TemplateCardEvent, event_key_startswith(f"{KEY_PREFIX}:"))
def card_clicked(event: Event, ctx: HandlerContext) -> None:
    """Accept or Decline on a handoff card; the card is then updated to show the outcome."""
    assert isinstance(event, TemplateCardEvent)
    key = parse_key(event.event_key)
    if key is None:
        ctx.audit("handoff.card_key_unknown", f"member:{event.from_user}", key=event.event_key)
        return
    answer_fn = flow.accept if key.action == ACCEPT else flow.decline
    try:
        answer = answer_fn(_desk(ctx), key.handoff_id, event.from_user, event.response_code or None)
    except flow.HandoffError as exc:
        ctx.audit("handoff.card_unknown", f"member:{event.from_user}", key=event.event_key, error=str(exc))
        return
    ctx.log.info("handoff %s: %s by %s", answer.handoff.id, answer.outcome, event.from_user)


def _is_command(event: Event) -> bool:
    return commands.parse(str(getattr(event, "content", ""))) is not None


@router.on(TextMessage, Filter(_is_command, "handoff command"))
def manager_command(event: Event, ctx: HandlerContext) -> None:
    """我的线索 / 接受 12 / 拒绝 12 原因 / 成交 12 / 结束 12 from a manager, confirmed by app message."""
    assert isinstance(event, TextMessage)
    command = commands.parse(event.content)
    assert command is not None
    manager = ctx.session.get(AccountManager, event.from_user)
    if manager is None:
        ctx.audit("handoff.command_ignored", f"member:{event.from_user}", why="not an account manager")
        return
    title, due = commands.run(_desk(ctx), manager.userid, command)
    ctx.audit(
        "handoff.command", f"member:{manager.userid}", command=command.action, handoff=command.handoff_id
    )
    compliance = ctx.settings.compliance
    values = {
        "firm": {"name": compliance.firm_name, "opt_out": compliance.opt_out_instruction},
        "manager": {"name": manager.name},
        "task": {
            "title": title,
            "due": due,
            "link": ctx.settings.handoff.console_url or "企业微信「客户联系」",
        },
    }
    try:
        ctx.queue(
            purpose_key=f"handoff_command:{ctx.event_id}",
            channel=Channel.APP_MESSAGE,
            recipient=manager.userid,
            script_key=REPLY_SCRIPT,
            values=values,
            priority=20,
        )
    except (NotSendable, RenderError, WorkflowError) as exc:
        ctx.audit("handoff.command_unanswered", f"member:{manager.userid}", error=str(exc))


@router.on(ExternalContactChange, change_type(ChangeType.TRANSFER_FAIL))
def transfer_failed(event: Event, ctx: HandlerContext) -> None:
    """A takeover failed (refused, or the manager at WeCom's limit): record it, tell the owner instead."""
    assert isinstance(event, ExternalContactChange)
    record_transfer_failure(event, ctx)
    stmt = (
        select(Handoff, Lead)
        .join(Lead, Lead.id == Handoff.lead_id)
        .where(
            Lead.external_user_id == event.external_user_id,
            Handoff.channel_action == ChannelAction.TRANSFER_CUSTOMER,
            Handoff.channel_status == ChannelStatus.TRANSFERRING,
        )
        .order_by(Handoff.id.desc())
    )
    row = ctx.session.execute(stmt).first()
    if row is None:
        return
    handoff, lead = row
    record_failed_transfer(ctx.session, ctx.settings, handoff, lead, event.fail_reason or "", ctx.now)
