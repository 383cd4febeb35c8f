"""The life of a handoff: offer with a brief card, accept, decline, time out, escalate, close.

Every step runs in the caller's transaction and touches only the database; cards and notes go
through the outbox, WeCom calls (card updates, transfers) are left marked for the call runner.
The lead row is locked first, then a manager's slot is taken atomically, and the unique
`open_lead_id` key makes a second open handoff for the same lead impossible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.handoff import brief as briefs
from bot.handoff import cards
from bot.handoff.assignment import Choice, Need, choose, claim_capacity, release_capacity
from bot.handoff.channel import ChannelAction, ChannelStatus, member_name, plan, schedule_calls
from bot.leads.stages import Stage, transition
from models.alerts import Alert
from models.audit import AuditEntry
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.kf import IntentSignal
from models.leads import Lead
from scripts_library.catalogue import NotSendable, WorkflowError
from scripts_library.rendering import RenderError

ACTOR = "handoff"
BRIEF_SCRIPT = "handoff_brief"
NOTE_SCRIPT = "handoff_note"
# The bot stays silent to a lead once a manager has it (opt-out keeps working).
SILENT_STAGES = frozenset({Stage.ACCEPTED, Stage.CONVERTED})
# An offer's answer time runs from when its card reached the manager. Cards in these states have not
# (queued behind a rate limit or the kill switch, being sent, or held for compliance review) …
CARD_WAITING = frozenset({DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.HELD})
# … and in these never will (blocked, discarded in review, refused by WeCom, too late): the offer is
# withdrawn and goes to the next manager, without counting as the manager's miss.
CARD_LOST = frozenset(
    {DeliveryStatus.BLOCKED, DeliveryStatus.CANCELLED, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED}
)

QueueFn = Callable[..., Delivery]


class HandoffError(ValueError):
    """A handoff answer that cannot be applied (unknown handoff); nothing was changed."""


@dataclass(frozen=True)
class Desk:
    """What every step needs: the caller's session, settings, the time, and how to queue a message."""

    session: Session
    settings: Settings
    now: datetime
    queue: QueueFn


@dataclass(frozen=True)
class Answer:
    """What an answer, a time-out or the card's arrival came to, and the next offer it caused (if any)."""

    handoff: Handoff
    # accepted | declined | timed_out | withdrawn | clock_started | already | expired | not_yours
    outcome: str
    following: Handoff | None = None


def silenced(lead: Lead | None) -> bool:
    """Whether automated replies to this lead stop because a manager has accepted it."""
    return lead is not None and lead.stage in SILENT_STAGES


def open_handoff(session: Session, lead_id: int) -> Handoff | None:
    """The lead's open (offered or accepted) handoff, if any."""
    return session.scalars(select(Handoff).where(Handoff.open_lead_id == lead_id)).first()


def asked_for_advice(session: Session, lead: Lead, settings: Settings) -> bool:
    """Whether the lead asked an advice-type question (only licensed managers may take it)."""
    intents = settings.handoff.advice_intent_names()
    stmt = select(IntentSignal.id).where(
        IntentSignal.external_user_id == lead.external_user_id, IntentSignal.intent.in_(intents)
    )
    return session.scalars(stmt.limit(1)).first() is not None


def _audit(desk: Desk, action: str, lead: Lead, actor: str = ACTOR, **detail: Any) -> None:
    desk.session.add(
        AuditEntry(
            at=desk.now, actor=actor, action=action, target=f"lead:{lead.external_user_id}", detail=detail
        )
    )


def _alert(desk: Desk, kind: str, message: str, **detail: Any) -> None:
    desk.session.add(
        Alert(
            raised_at=desk.now,
            kind=kind,
            severity="warning",
            audience="operator",
            message=message,
            detail=detail,
        )
    )


def _locked_lead(session: Session, lead_id: int) -> Lead:
    lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).one()
    session.refresh(lead)
    return lead


def _tried(session: Session, chain_id: int | None) -> set[str]:
    if chain_id is None:
        return set()
    return set(session.scalars(select(Handoff.manager_userid).where(Handoff.chain_id == chain_id)))


def _take(desk: Desk, lead: Lead, need: Need, exclude: set[str], supervisor: str | None) -> Choice | None:
    if supervisor is None:
        return choose(desk.session, lead.owner_userid, need, desk.now, exclude)
    # An escalation goes to the supervisor whatever their load or hours: someone must answer.
    if not claim_capacity(desk.session, supervisor, desk.now, over_capacity=True):
        return None
    boss = desk.session.get(AccountManager, supervisor)
    return Choice(boss, kept_with_owner=False) if boss is not None else None


def offer(
    desk: Desk,
    lead: Lead,
    reason: str,
    *,
    after: Handoff | None = None,
    supervisor: str | None = None,
) -> Handoff | None:
    """Offer the lead to the best eligible manager (or `supervisor`) and send the brief card; None if nobody.

    A first offer needs a qualified lead; a follow-up (`after`, the handoff that just ended) keeps the
    chain, so managers already tried are skipped. Nothing happens to an opted-out lead or one that
    already has an open handoff.
    """
    session = desk.session
    lead = _locked_lead(session, lead.id)
    expected = Stage.HANDED_OFF if after is not None else Stage.QUALIFIED
    if lead.opted_out or lead.stage != expected or open_handoff(session, lead.id) is not None:
        return None
    need = Need(lead.platform, asked_for_advice(session, lead, desk.settings))
    chain_id = after.chain_id if after is not None else None
    misses = after.misses + (after.status == HandoffStatus.TIMED_OUT) if after is not None else 0
    savepoint = session.begin_nested()
    try:
        choice = _take(desk, lead, need, _tried(session, chain_id), supervisor)
        if choice is None:
            savepoint.rollback()
            return None
        handoff = Handoff(
            lead_id=lead.id,
            manager_userid=choice.manager.userid,
            status=HandoffStatus.OFFERED,
            open_lead_id=lead.id,
            chain_id=chain_id,
            attempt=(after.attempt + 1) if after is not None else 1,
            misses=misses,
            escalated=supervisor is not None,
            reason=reason,
            advice=need.advice,
            kept_with_owner=choice.kept_with_owner,
            offered_at=desk.now,
            due_at=desk.now + timedelta(minutes=desk.settings.handoff.sla_minutes),
            note="",
            channel_action="",
            channel_status="",
            channel_target="",
            channel_detail="",
            card_replace_name="",
            action_attempts=0,
        )
        session.add(handoff)
        session.flush()
    except IntegrityError:
        savepoint.rollback()  # another worker opened a handoff for this lead first
        return None
    savepoint.commit()
    handoff.chain_id = handoff.chain_id or handoff.id
    handoff.task_id = cards.new_task_id(handoff.id)
    if lead.stage == Stage.QUALIFIED:
        transition(
            session,
            lead,
            Stage.HANDED_OFF,
            ACTOR,
            f"offered to {choice.manager.name}",
            desk.now,
            code="offered",
            params={"manager": choice.manager.name},
        )
    _audit(
        desk,
        "handoff.escalated" if supervisor else "handoff.offered",
        lead,
        handoff=handoff.id,
        manager=handoff.manager_userid,
        attempt=handoff.attempt,
        advice=need.advice,
        kept_with_owner=choice.kept_with_owner,
    )
    card = _send_card(desk, lead, choice.manager, handoff)
    if card is not None and card.status == DeliveryStatus.HELD:
        handoff.due_at = None  # no answer is due until compliance releases the card and it goes out
    # A blocked card keeps its answer time: the offer is withdrawn then, at the pace of an unanswered
    # one, since the next manager's card (the same brief) would be blocked as well.
    session.flush()
    return handoff


def _send_card(desk: Desk, lead: Lead, manager: AccountManager, handoff: Handoff) -> Delivery | None:
    """Queue the brief card for the manager; None (and an alert) when no approved brief can be composed."""
    assert handoff.task_id is not None
    brief = briefs.build(desk.session, lead, handoff.reason, desk.settings, desk.now)
    values = briefs.script_values(brief, manager, handoff, desk.settings, lead.stage)
    placeholder = cards.card(
        handoff.id,
        handoff.task_id,
        brief,
        "",
        desk.settings.handoff.sla_minutes,
        desk.settings.compliance.firm_name,
    )
    try:
        delivery = desk.queue(
            purpose_key=card_key(handoff.id),
            channel=Channel.APP_MESSAGE,
            recipient=manager.userid,
            script_key=BRIEF_SCRIPT,
            values=values,
            params={"template_card": placeholder},
            priority=20,
        )
    except (NotSendable, RenderError, WorkflowError) as exc:
        _alert(
            desk, "handoff.card_unsendable", f"no card for handoff {handoff.id} to {manager.userid}: {exc}"
        )
        return None
    # The card carries the approved, linted brief text exactly as it was composed.
    delivery.params = {
        "template_card": cards.card(
            handoff.id,
            handoff.task_id,
            brief,
            delivery.text,
            desk.settings.handoff.sla_minutes,
            desk.settings.compliance.firm_name,
        )
    }
    return delivery


def card_of(session: Session, handoff_id: int) -> Delivery | None:
    """The handoff's card to its manager, if one was queued."""
    return session.scalars(select(Delivery).where(Delivery.purpose_key == card_key(handoff_id))).first()


def answer_due(handoff: Handoff, card: Delivery | None, settings: Settings) -> datetime | None:
    """When the manager's answer is due: SLA minutes after the card reached them; None while it has not.

    Without a card (no approved brief) the offer runs from when it was made, as does a card whose
    sending ended unknown (it may have arrived).
    """
    sla = timedelta(minutes=settings.handoff.sla_minutes)
    if card is None:
        return handoff.offered_at + sla
    if card.status in CARD_WAITING or card.status in CARD_LOST:
        return None
    return (card.sent_at or handoff.offered_at) + sla


def start_clock(desk: Desk, handoff_id: int) -> Answer | None:
    """Start the answer time of an offer whose card has now gone out, or withdraw one whose card never will.

    None when nothing changes: the offer is no longer open, its clock runs already, or its card waits.
    """
    handoff = _locked(desk.session, handoff_id)
    if handoff.status != HandoffStatus.OFFERED or handoff.due_at is not None:
        return None
    card = card_of(desk.session, handoff.id)
    if card is not None and card.status in CARD_WAITING:
        return None
    lead = _locked_lead(desk.session, handoff.lead_id)
    if card is not None and card.status in CARD_LOST:
        return _withdraw(desk, handoff, lead, card)
    due = answer_due(handoff, card, desk.settings)
    assert due is not None  # the card is neither waiting nor lost
    handoff.due_at = due
    _audit(desk, "handoff.clock_started", lead, handoff=handoff.id, due=due.isoformat())
    return Answer(handoff, "clock_started")


def _withdraw(desk: Desk, handoff: Handoff, lead: Lead, card: Delivery) -> Answer:
    """The card can never reach the manager: end the offer (not their miss) and offer the lead onwards."""
    why = f"the card was {card.status}" + (f" ({card.error})" if card.error else "")
    note = f"withdrawn: {why}"[:200]
    if card.error:
        _end(
            desk,
            handoff,
            HandoffStatus.CANCELLED,
            note,
            "withdrawn_error",
            card=card.status,
            error=card.error,
        )
    else:
        _end(desk, handoff, HandoffStatus.CANCELLED, note, "withdrawn", card=card.status)
    _audit(
        desk, "handoff.withdrawn", lead, handoff=handoff.id, manager=handoff.manager_userid, card=card.status
    )
    return Answer(handoff, "withdrawn", _follow_up(desk, handoff, lead))


def _mark_card(
    session: Session, handoff: Handoff, response_code: str | None, label: str, now: datetime
) -> None:
    # A click brings a fresh code; a typed answer uses the one WeCom returned when the card was sent.
    code = response_code or _sent_card_code(session, handoff)
    if code:
        handoff.card_response_code, handoff.card_replace_name = code, label
    schedule_calls(handoff, now)


def _sent_card_code(session: Session, handoff: Handoff) -> str | None:
    """Take the response_code WeCom returned when the handoff's card was sent (single use), if any."""
    card = card_of(session, handoff.id)
    code = (card.params or {}).get("response_code") if card is not None else None
    if card is None or not code:
        return None
    card.params = {k: v for k, v in card.params.items() if k != "response_code"}  # used up now
    return str(code)


def card_key(handoff_id: int) -> str:
    """The purpose key of a handoff's card to its manager."""
    return f"handoff:{handoff_id}:card"


def _end(
    desk: Desk, handoff: Handoff, status: str, note: str, code: str | None = None, **params: Any
) -> None:
    """End the offer with its English `note` (and, for the bot's own notes, their code and values)."""
    handoff.status, handoff.note = status, note
    handoff.note_code, handoff.note_params = code, (params if code else None)
    handoff.open_lead_id, handoff.due_at = None, None
    handoff.closed_at = desk.now
    release_capacity(desk.session, handoff.manager_userid)


def _locked(session: Session, handoff_id: int) -> Handoff:
    handoff = session.scalars(select(Handoff).where(Handoff.id == handoff_id).with_for_update()).first()
    if handoff is None:
        raise HandoffError(f"no handoff {handoff_id}")
    session.refresh(handoff)
    return handoff


def _unanswerable(handoff: Handoff, userid: str) -> str | None:
    if handoff.manager_userid != userid:
        return "not_yours"
    if handoff.status == HandoffStatus.ACCEPTED:
        return "already"
    if handoff.status != HandoffStatus.OFFERED:
        return "expired"
    return None


def _stale_label(handoff: Handoff) -> str:
    return cards.EXPIRED_LABEL if handoff.status == HandoffStatus.TIMED_OUT else cards.TAKEN_LABEL


def _ignored(
    desk: Desk, handoff: Handoff, lead: Lead, userid: str, response_code: str | None, refused: str
) -> Answer:
    """An answer that changes nothing (late, repeated or not the manager's): the card shows how it stands."""
    if refused != "not_yours":
        label = cards.ACCEPTED_LABEL if refused == "already" else _stale_label(handoff)
        _mark_card(desk.session, handoff, response_code, label, desk.now)
    _audit(desk, "handoff.answer_ignored", lead, actor=f"manager:{userid}", handoff=handoff.id, why=refused)
    return Answer(handoff, refused)


def accept(desk: Desk, handoff_id: int, userid: str, response_code: str | None = None) -> Answer:
    """The manager takes the lead: the bot goes quiet, the conversation moves to them, the card says so."""
    handoff = _locked(desk.session, handoff_id)
    refused = _unanswerable(handoff, userid)
    lead = _locked_lead(desk.session, handoff.lead_id)
    if refused is not None:
        return _ignored(desk, handoff, lead, userid, response_code, refused)
    handoff.status, handoff.responded_at, handoff.due_at = HandoffStatus.ACCEPTED, desk.now, None
    manager = member_name(desk.session, userid)
    transition(
        desk.session,
        lead,
        Stage.ACCEPTED,
        f"manager:{userid}",
        f"accepted by {manager}",
        desk.now,
        code="accepted",
        params={"manager": manager},
    )
    plan(desk.session, desk.settings, handoff, lead, desk.now)
    if handoff.channel_action == ChannelAction.NOTIFY_OWNER:
        notify_owner(desk, handoff, lead)
    _mark_card(desk.session, handoff, response_code, cards.ACCEPTED_LABEL, desk.now)
    _audit(desk, "handoff.accepted", lead, actor=f"manager:{userid}", handoff=handoff.id)
    return Answer(handoff, "accepted")


def decline(
    desk: Desk, handoff_id: int, userid: str, response_code: str | None = None, note: str = ""
) -> Answer:
    """The manager passes: their slot is freed and the lead is offered to the next eligible manager."""
    handoff = _locked(desk.session, handoff_id)
    refused = _unanswerable(handoff, userid)
    lead = _locked_lead(desk.session, handoff.lead_id)
    if refused is not None:
        return _ignored(desk, handoff, lead, userid, response_code, refused)
    handoff.responded_at = desk.now
    note = note.strip()[:200]
    _end(desk, handoff, HandoffStatus.DECLINED, note or "declined", None if note else "declined")
    _mark_card(desk.session, handoff, response_code, cards.DECLINED_LABEL, desk.now)
    _audit(desk, "handoff.declined", lead, actor=f"manager:{userid}", handoff=handoff.id, note=handoff.note)
    return Answer(handoff, "declined", _follow_up(desk, handoff, lead))


def time_out(desk: Desk, handoff_id: int) -> Answer | None:
    """No answer in time: free the slot, then escalate after too many misses or offer to the next manager.

    None when the offer is no longer open or not yet due (answered meanwhile, its card went out late or
    not yet, or the clock is early); an offer whose card can never arrive is withdrawn instead.
    """
    handoff = _locked(desk.session, handoff_id)
    if handoff.status != HandoffStatus.OFFERED or handoff.due_at is None or handoff.due_at > desk.now:
        return None
    card = card_of(desk.session, handoff.id)
    if card is not None and card.status in CARD_LOST:
        return _withdraw(desk, handoff, _locked_lead(desk.session, handoff.lead_id), card)
    due = answer_due(handoff, card, desk.settings)
    if due is None or due > desk.now:  # the card went out late, or has not yet: the clock runs from then
        handoff.due_at = due
        return None
    lead = _locked_lead(desk.session, handoff.lead_id)
    minutes = desk.settings.handoff.sla_minutes
    _end(
        desk,
        handoff,
        HandoffStatus.TIMED_OUT,
        f"no answer within {minutes} min",
        "timed_out",
        minutes=minutes,
    )
    _mark_card(desk.session, handoff, None, cards.EXPIRED_LABEL, desk.now)  # the ignored card says so
    _audit(desk, "handoff.timed_out", lead, handoff=handoff.id, manager=handoff.manager_userid)
    return Answer(handoff, "timed_out", _follow_up(desk, handoff, lead))


def _chain_escalated(session: Session, chain_id: int | None) -> bool:
    stmt = select(Handoff.id).where(Handoff.chain_id == chain_id, Handoff.escalated.is_(True))
    return session.scalars(stmt.limit(1)).first() is not None


def _follow_up(desk: Desk, ended: Handoff, lead: Lead) -> Handoff | None:
    """After a decline or miss: the supervisor after N misses, else the next manager, else the queue."""
    misses = ended.misses + (ended.status == HandoffStatus.TIMED_OUT)
    limit = desk.settings.handoff.escalate_after_misses
    if (
        ended.status == HandoffStatus.TIMED_OUT
        and misses >= limit
        and not _chain_escalated(desk.session, ended.chain_id)
    ):
        manager = desk.session.get(AccountManager, ended.manager_userid)
        supervisor = manager.supervisor_userid if manager is not None else None
        escalated = (
            offer(desk, lead, ended.reason, after=ended, supervisor=supervisor) if supervisor else None
        )
        if escalated is not None:
            return escalated
        _alert(
            desk,
            "handoff.no_supervisor",
            f"lead {lead.id}: {misses} offers unanswered and no active supervisor to escalate to",
            lead=lead.id,
            handoff=ended.id,
        )
    following = offer(desk, lead, ended.reason, after=ended)
    if following is None:
        why = "the customer opted out" if lead.opted_out else "no other eligible manager is free"
        transition(
            desk.session,
            lead,
            Stage.QUALIFIED,
            ACTOR,
            f"waiting for a manager: {why}",
            desk.now,
            code="waiting.opted_out" if lead.opted_out else "waiting.no_manager",
        )
        if not lead.opted_out:
            _alert(
                desk,
                "handoff.waiting",
                f"lead {lead.id} is waiting for an account manager: {why}",
                lead=lead.id,
            )
    return following


def notify_owner(desk: Desk, handoff: Handoff, lead: Lead) -> None:
    """Tell the member who owns the contact which manager now follows the customer up."""
    owner = handoff.channel_target
    customer, manager = briefs.brief_name(lead), member_name(desk.session, handoff.manager_userid)
    values = {
        "firm": {
            "name": desk.settings.compliance.firm_name,
            "opt_out": desk.settings.compliance.opt_out_instruction,
        },
        "manager": {"name": member_name(desk.session, owner)},
        "task": {
            "title": f"客户「{customer}」已由{manager}接手，请协助引荐",
            "due": "今天下班",
            "link": desk.settings.handoff.console_url or "企业微信「客户联系」",
        },
    }
    try:
        desk.queue(
            purpose_key=f"handoff:{handoff.id}:owner",
            channel=Channel.APP_MESSAGE,
            recipient=owner,
            script_key=NOTE_SCRIPT,
            values=values,
            priority=30,
        )
    except (NotSendable, RenderError, WorkflowError) as exc:
        handoff.channel_status, handoff.channel_detail = ChannelStatus.FAILED, f"owner not told: {exc}"
        return
    handoff.channel_action, handoff.channel_status = ChannelAction.NOTIFY_OWNER, ChannelStatus.DONE
