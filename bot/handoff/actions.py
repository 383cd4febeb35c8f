"""Makes the WeCom calls handoffs are waiting for — card updates, kf session and contact transfers —
outside any database transaction, and records what came of them (retrying transient failures)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.config import Settings
from bot.db import Database
from bot.delivery.outbox import enqueue
from bot.handoff.channel import (
    TRANSFER_ERRORS,
    TRANSFER_FAIL_REASONS,
    ChannelAction,
    ChannelClient,
    ChannelStatus,
    calls_due,
)
from bot.handoff.flow import Desk, notify_owner
from bot.wecom.errors import WeComAPIError
from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.handoff import Handoff
from models.kf import KfConversation
from models.leads import Lead
from scripts_library.catalogue import policy_from_settings

log = logging.getLogger("wecom_bot.handoff")

LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 5
TAKEOVER_DELAY = timedelta(hours=24)  # WeCom completes an on-job transfer 24 h after it starts
TAKEOVER_CHECK_MARGIN = timedelta(minutes=10)
TRANSFER_STATUS = {
    1: "taken over",
    2: "waiting",
    3: "the customer refused",
    4: "the manager's customer limit",
}


@dataclass(frozen=True)
class _Work:
    """A snapshot of what one handoff needs, taken under its lease."""

    handoff_id: int
    manager: str
    external_user_id: str
    response_code: str | None
    replace_name: str
    channel_action: str
    channel_status: str
    channel_target: str
    attempts: int


@dataclass
class _Done:
    """What the calls for one handoff came to, recorded in one transaction."""

    work: _Work
    card_settled: bool = False
    channel_status: str | None = None
    channel_detail: str = ""
    retry: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CallOutcome:
    """The state a handoff's calls left it in."""

    handoff_id: int
    card: str  # updated | failed | "" (nothing to update)
    channel: str  # the channel status after the calls


class HandoffCalls:
    """Claims handoffs whose WeCom calls are due, makes the calls, and records the results."""

    def __init__(
        self, settings: Settings, db: Database, client: ChannelClient, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.db = db
        self.client = client
        self.clock = clock

    def run_once(self, limit: int = 20) -> list[CallOutcome]:
        """Lease up to `limit` due handoffs, call WeCom for each, record the outcomes."""
        work = self._claim(limit)
        return [self._record(self._call(item)) for item in work]

    def _claim(self, limit: int) -> list[_Work]:
        now = self.clock()
        with self.db.transaction() as session:
            stmt = (
                select(Handoff, Lead.external_user_id)
                .join(Lead, Lead.id == Handoff.lead_id)
                .where(Handoff.actions_due_at.is_not(None), Handoff.actions_due_at <= now)
                .order_by(Handoff.actions_due_at, Handoff.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=Handoff)
            )
            claimed = []
            for handoff, external_user_id in session.execute(stmt):
                handoff.actions_due_at = now + LEASE  # nobody else takes it while we call
                claimed.append(
                    _Work(
                        handoff.id,
                        handoff.manager_userid,
                        external_user_id,
                        handoff.card_response_code,
                        handoff.card_replace_name,
                        handoff.channel_action,
                        handoff.channel_status,
                        handoff.channel_target,
                        handoff.action_attempts,
                    )
                )
        return claimed

    def _call(self, work: _Work) -> _Done:
        done = _Done(work)
        if work.response_code:
            try:
                self.client.update_template_card(
                    [work.manager], work.response_code, replace_name=work.replace_name
                )
                done.card_settled = True
            except WeComAPIError as exc:
                done.card_settled = not exc.retryable
                done.retry |= exc.retryable
                done.notes.append(f"card update failed: {exc.errcode} {exc.errmsg}")
        if work.channel_status == ChannelStatus.PENDING and work.channel_action == ChannelAction.KF_TRANSFER:
            self._kf_transfer(work, done)
        elif (
            work.channel_status == ChannelStatus.PENDING
            and work.channel_action == ChannelAction.TRANSFER_CUSTOMER
        ):
            self._transfer_customer(work, done)
        elif work.channel_status == ChannelStatus.TRANSFERRING:
            self._check_takeover(work, done)
        return done

    def _kf_transfer(self, work: _Work, done: _Done) -> None:
        try:
            self.client.kf_transfer_session(work.channel_target, work.external_user_id, work.manager)
        except WeComAPIError as exc:
            self._failed(done, exc, f"kf session not transferred: {exc.errcode} {exc.errmsg}")
            return
        done.channel_status, done.channel_detail = ChannelStatus.DONE, f"kf session given to {work.manager}"

    def _transfer_customer(self, work: _Work, done: _Done) -> None:
        message = self.settings.handoff.transfer_success_msg or None
        try:
            result = self.client.transfer_customer(
                work.channel_target, work.manager, [work.external_user_id], message
            )
        except WeComAPIError as exc:
            self._failed(done, exc, f"transfer not started: {exc.errcode} {exc.errmsg}")
            return
        errcode = result.get(work.external_user_id, -1)
        if errcode == 0:
            done.channel_status = ChannelStatus.TRANSFERRING
            done.channel_detail = "transfer started; WeCom completes it in 24 h unless the customer refuses"
            return
        why = TRANSFER_ERRORS.get(errcode, f"errcode {errcode}")
        done.channel_status, done.channel_detail = ChannelStatus.FAILED, f"transfer refused by WeCom: {why}"

    def _check_takeover(self, work: _Work, done: _Done) -> None:
        try:
            statuses = self.client.transfer_result(work.channel_target, work.manager)
        except WeComAPIError as exc:
            self._failed(done, exc, f"transfer result unknown: {exc.errcode} {exc.errmsg}")
            return
        status = next((s.status for s in statuses if s.external_userid == work.external_user_id), 5)
        if status == 1:
            done.channel_status, done.channel_detail = ChannelStatus.DONE, "customer taken over"
        elif status == 2:
            done.retry = True  # not yet: look again later
        else:
            why = TRANSFER_STATUS.get(status, "no transfer record")
            done.channel_status, done.channel_detail = ChannelStatus.FAILED, f"transfer failed: {why}"

    @staticmethod
    def _failed(done: _Done, exc: WeComAPIError, detail: str) -> None:
        if exc.retryable and done.work.attempts + 1 < MAX_ATTEMPTS:
            done.retry = True
            done.notes.append(detail)
            return
        done.channel_status, done.channel_detail = ChannelStatus.FAILED, detail

    def _record(self, done: _Done) -> CallOutcome:
        now = self.clock()
        work = done.work
        with self.db.transaction() as session:
            handoff = session.get(Handoff, work.handoff_id, with_for_update=True)
            assert handoff is not None
            lead = session.get(Lead, handoff.lead_id)
            assert lead is not None
            if done.card_settled and handoff.card_response_code == work.response_code:
                handoff.card_response_code = None
            if done.channel_status is not None:
                handoff.channel_status, handoff.channel_detail = done.channel_status, done.channel_detail
                self._after_channel(session, handoff, lead, now)
            handoff.action_attempts = work.attempts + 1 if done.retry else 0
            detail: dict[str, Any] = {"handoff": handoff.id, "channel": handoff.channel_status}
            if done.notes:
                detail["notes"] = done.notes
            session.add(
                AuditEntry(
                    at=now,
                    actor="handoff",
                    action="handoff.calls",
                    target=f"lead:{lead.external_user_id}",
                    detail=detail,
                )
            )
            if done.retry and handoff.action_attempts >= MAX_ATTEMPTS:
                handoff.card_response_code = None
                alert(
                    session, handoff, f"WeCom calls for handoff {handoff.id} keep failing: {done.notes}", now
                )
                done.retry = False
            self._schedule(handoff, done.retry, now)
            card = (
                "updated"
                if done.card_settled and not done.notes
                else ("failed" if work.response_code else "")
            )
            return CallOutcome(handoff.id, card, handoff.channel_status)

    def _after_channel(self, session: Any, handoff: Handoff, lead: Lead, now: datetime) -> None:
        if (
            handoff.channel_action == ChannelAction.KF_TRANSFER
            and handoff.channel_status == ChannelStatus.DONE
        ):
            conv = session.scalars(
                select(KfConversation).where(
                    KfConversation.open_kfid == handoff.channel_target,
                    KfConversation.external_user_id == lead.external_user_id,
                )
            ).first()
            if conv is not None:
                conv.servicer_userid, conv.updated_at = handoff.manager_userid, now
        if handoff.channel_status != ChannelStatus.FAILED:
            return
        alert(session, handoff, f"handoff {handoff.id}: {handoff.channel_detail}", now)
        if handoff.channel_action == ChannelAction.TRANSFER_CUSTOMER:
            fall_back_to_owner(session, self.settings, handoff, lead, now)

    @staticmethod
    def _schedule(handoff: Handoff, retry: bool, now: datetime) -> None:
        if handoff.channel_status == ChannelStatus.TRANSFERRING:
            start = handoff.responded_at or now
            check_at = max(
                start + TAKEOVER_DELAY + TAKEOVER_CHECK_MARGIN, now + (LEASE if retry else timedelta(0))
            )
            handoff.actions_due_at = check_at if not retry else max(check_at, now + timedelta(hours=1))
            return
        if retry:
            handoff.actions_due_at = now + LEASE * (2 ** min(handoff.action_attempts, 5))
            return
        handoff.actions_due_at = now if calls_due(handoff) else None


def alert(session: Any, handoff: Handoff, message: str, now: datetime) -> None:
    """Tell operators a handoff's conversation did not move to the manager as planned."""
    session.add(
        Alert(
            raised_at=now,
            kind="handoff.channel",
            severity="warning",
            audience="operator",
            message=message,
            detail={"handoff": handoff.id},
        )
    )


def fall_back_to_owner(session: Any, settings: Settings, handoff: Handoff, lead: Lead, now: datetime) -> None:
    """A contact transfer failed: the customer stays with the owner, who is told who follows up."""
    policy = policy_from_settings(settings.compliance)

    def queue(**kwargs: Any) -> Any:
        return enqueue(session, policy=policy, now=now, **kwargs)

    why = handoff.channel_detail
    notify_owner(Desk(session, settings, now, queue), handoff, lead)
    if handoff.channel_status == ChannelStatus.DONE:
        handoff.channel_detail = f"{why}; owner told instead"


def transfer_failed(
    session: Any, settings: Settings, handoff: Handoff, lead: Lead, reason: str, now: datetime
) -> None:
    """WeCom's transfer_fail event: record why, alert, and tell the owner who follows the customer up."""
    handoff.channel_status = ChannelStatus.FAILED
    handoff.channel_detail = (
        f"transfer failed: {TRANSFER_FAIL_REASONS.get(reason, reason or 'unknown reason')}"
    )
    if handoff.card_response_code is None:
        handoff.actions_due_at = None
    alert(session, handoff, f"handoff {handoff.id}: {handoff.channel_detail}", now)
    fall_back_to_owner(session, settings, handoff, lead, now)
