"""Moving the conversation to the manager who accepted: kf session transfer, contact transfer, or a note.

Planning happens in the accept transaction (database only); the WeCom calls run later, outside any
transaction (see actions.py). WeCom's rules (WECOM.md §7.5, §9.2): a kf session can be given to a
servicer who is receiving (95014/95019 otherwise); a contact transfer completes after 24 h, can be
refused, and is allowed at most twice per customer per 90 days (40128).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.config import Settings
from models.handoff import AccountManager, Handoff
from models.kf import KfConversation
from models.leads import Lead, Member

KF_WINDOW = timedelta(hours=48)
TRANSFER_PERIOD = timedelta(days=90)
TRANSFERS_PER_PERIOD = 2
TRANSFER_ERRORS = {
    40128: "customer transferred too often (WeCom allows 2 per 90 days)",
    40129: "a transfer of this customer is already in progress",
    40100: "customer already in a transfer flow",
    40099: "the manager has reached WeCom's customer limit",
    40130: "handover and takeover are the same member",
    40131: "the owner no longer follows the customer",
}
TRANSFER_FAIL_REASONS = {
    "customer_refused": "the customer refused the transfer",
    "customer_limit_exceed": "the manager has reached WeCom's customer limit",
}


class ChannelAction(enum.StrEnum):
    """How an accepted lead's conversation reaches the manager."""

    KF_TRANSFER = "kf_transfer"  # kf/service_state/trans to state 3 with the manager as servicer
    TRANSFER_CUSTOMER = "transfer_customer"  # externalcontact/transfer_customer from an intake member
    NOTIFY_OWNER = "notify_owner"  # the owning member is told who takes over
    NONE = "none"  # the manager already follows the customer, or there is nothing to move


class ChannelStatus(enum.StrEnum):
    """pending (call not made yet) → transferring (contact transfer started) → done | failed."""

    PENDING = "pending"
    TRANSFERRING = "transferring"
    DONE = "done"
    FAILED = "failed"


class ChannelClient(Protocol):
    """The WeCom calls a handoff needs (implemented by bot.wecom.client.WeComClient)."""

    def update_template_card(
        self,
        userids: Sequence[str],
        response_code: str,
        *,
        replace_name: str | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> None:
        """Grey out the clicked card's button with `replace_name` (or replace the card)."""

    def kf_transfer_session(self, open_kfid: str, external_userid: str, servicer_userid: str) -> str | None:
        """Give the kf session to a servicer (state 3); returns the msg_code, if any."""

    def transfer_customer(
        self,
        handover_userid: str,
        takeover_userid: str,
        external_userids: Sequence[str],
        transfer_success_msg: str | None = None,
    ) -> dict[str, int]:
        """Start on-job transfers; per customer the errcode (0 = started, completes after 24 h)."""

    def transfer_result(self, handover_userid: str, takeover_userid: str) -> Sequence[TransferState]:
        """Each transferred customer's state (status 1 taken over, 2 waiting, 3 refused, 4 limit, 5 none)."""


class TransferState(Protocol):
    """One customer's transfer as WeCom reports it."""

    @property
    def external_userid(self) -> str:
        """The customer."""

    @property
    def status(self) -> int:
        """1 taken over, 2 waiting, 3 refused, 4 takeover member at limit, 5 no record."""


def open_kf_conversation(session: Session, external_user_id: str, now: datetime) -> KfConversation | None:
    """The customer's kf conversation with a message in the last 48 h, newest first, if any."""
    stmt = (
        select(KfConversation)
        .where(
            KfConversation.external_user_id == external_user_id,
            KfConversation.last_customer_msg_at.is_not(None),
            KfConversation.last_customer_msg_at > now - KF_WINDOW,
        )
        .order_by(KfConversation.last_customer_msg_at.desc())
    )
    return session.scalars(stmt).first()


def recent_transfers(session: Session, lead: Lead, now: datetime) -> int:
    """Contact transfers of this customer the bot started in the last 90 days (not failed ones)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Handoff)
            .where(
                Handoff.lead_id == lead.id,
                Handoff.channel_action == ChannelAction.TRANSFER_CUSTOMER,
                Handoff.channel_status.in_([ChannelStatus.TRANSFERRING, ChannelStatus.DONE]),
                Handoff.responded_at >= now - TRANSFER_PERIOD,
            )
        )
        or 0
    )


def plan(session: Session, settings: Settings, handoff: Handoff, lead: Lead, now: datetime) -> None:
    """Decide how the conversation moves to the accepting manager and mark the call as due."""
    options = settings.handoff
    manager = handoff.manager_userid
    conv = open_kf_conversation(session, lead.external_user_id, now) if options.kf_transfer else None
    owner = lead.owner_userid
    if conv is not None:
        _set(handoff, ChannelAction.KF_TRANSFER, ChannelStatus.PENDING, conv.open_kfid, "", now)
    elif not owner or owner == manager:
        why = "the manager already follows the customer" if owner else "no conversation or owner to move"
        _set(handoff, ChannelAction.NONE, ChannelStatus.DONE, owner or "", why, now)
    elif options.transfer_customer and owner in options.intake_members:
        if recent_transfers(session, lead, now) >= TRANSFERS_PER_PERIOD:
            _set(
                handoff, ChannelAction.NOTIFY_OWNER, ChannelStatus.PENDING, owner, TRANSFER_ERRORS[40128], now
            )
        else:
            _set(handoff, ChannelAction.TRANSFER_CUSTOMER, ChannelStatus.PENDING, owner, "", now)
    else:
        _set(handoff, ChannelAction.NOTIFY_OWNER, ChannelStatus.PENDING, owner, "", now)


def _set(handoff: Handoff, action: str, status: str, target: str, detail: str, now: datetime) -> None:
    handoff.channel_action, handoff.channel_status = action, status
    handoff.channel_target, handoff.channel_detail = target, detail
    schedule_calls(handoff, now)


def calls_due(handoff: Handoff) -> bool:
    """Whether the handoff still needs a WeCom call: a card update, a kf or contact transfer."""
    transfer = handoff.channel_action in (ChannelAction.KF_TRANSFER, ChannelAction.TRANSFER_CUSTOMER)
    return handoff.card_response_code is not None or (
        transfer and handoff.channel_status == ChannelStatus.PENDING
    )


def schedule_calls(handoff: Handoff, now: datetime) -> None:
    """Mark the handoff for the call runner now, or clear the mark when nothing is left to call.

    A contact transfer under way keeps its own later check time unless a card update is due now.
    """
    if handoff.channel_status == ChannelStatus.TRANSFERRING and handoff.card_response_code is None:
        return
    handoff.actions_due_at = now if calls_due(handoff) else None


def member_name(session: Session, userid: str) -> str:
    """A member's display name (account manager or member record), else the userid."""
    manager = session.get(AccountManager, userid)
    if manager is not None:
        return manager.name
    member = session.get(Member, userid)
    return member.name if member is not None else userid
