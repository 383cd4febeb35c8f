"""The periodic handoff sweep (scheduler leader only): offers whose card has gone out start their answer
time, unanswered offers time out and move on, qualified leads still waiting for a manager are offered
again, and due WeCom calls are made."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, exists, literal, or_, select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.coordination.base import Coordinator
from bot.db import Database
from bot.delivery.outbox import OUTBOX_CHANNEL, enqueue
from bot.handoff.actions import CallOutcome, HandoffCalls
from bot.handoff.channel import ChannelClient
from bot.handoff.flow import CARD_WAITING, Desk, offer, start_clock, time_out
from bot.leads.stages import Stage
from models.base import utcnow
from models.deliveries import Delivery
from models.handoff import Handoff, HandoffStatus
from models.leads import Lead
from models.scoring import StageChange
from scripts_library.catalogue import policy_from_settings

log = logging.getLogger("wecom_bot.handoff")

BATCH = 50


@dataclass
class SweepReport:
    """What one sweep did: answer times started, offers timed out, waiting leads offered, WeCom calls made."""

    clocks_started: list[int] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    offered: list[int] = field(default_factory=list)
    calls: list[CallOutcome] = field(default_factory=list)


class HandoffSweeper:
    """Runs the SLA clock for handoffs; every step is its own short transaction."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        client_factory: Callable[[], ChannelClient] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.coordinator = coordinator
        self.clock = clock
        self._client_factory = client_factory  # built on first use: no WeCom set-up unless needed
        self._calls: HandoffCalls | None = None

    def _desk(self, session: Session, now: datetime, queued: list[Delivery]) -> Desk:
        policy = policy_from_settings(self.settings.compliance)

        def queue(**kwargs: Any) -> Delivery:
            delivery = enqueue(session, policy=policy, now=now, **kwargs)
            queued.append(delivery)
            return delivery

        return Desk(session, self.settings, now, queue)

    def start_clocks(self, now: datetime) -> tuple[list[int], list[int]]:
        """Start the answer time of offers whose card has gone out since (held for review, or queued).

        Offers whose card can never go out are withdrawn and followed up. Returns (started, withdrawn).
        """
        card_key = literal("handoff:") + cast(Handoff.id, String) + literal(":card")
        with self.db.read() as session:
            ready = list(
                session.scalars(
                    select(Handoff.id)
                    .outerjoin(Delivery, Delivery.purpose_key == card_key)
                    .where(Handoff.status == HandoffStatus.OFFERED, Handoff.due_at.is_(None))
                    .where(or_(Delivery.id.is_(None), Delivery.status.not_in(CARD_WAITING)))
                    .order_by(Handoff.id)
                    .limit(BATCH)
                )
            )
        started: list[int] = []
        withdrawn: list[int] = []
        for handoff_id in ready:
            queued: list[Delivery] = []
            with self.db.transaction() as session:
                answer = start_clock(self._desk(session, now, queued), handoff_id)
            if answer is not None:
                (withdrawn if answer.outcome == "withdrawn" else started).append(handoff_id)
            if queued:
                self.coordinator.wake(OUTBOX_CHANNEL)
        return started, withdrawn

    def time_out_due(self, now: datetime) -> tuple[list[int], list[int]]:
        """Time out every offer past its answer time, each followed up in its own transaction.

        An offer whose card never reached the manager is withdrawn instead. Returns (timed out, withdrawn).
        """
        with self.db.read() as session:
            due = list(
                session.scalars(
                    select(Handoff.id)
                    .where(Handoff.status == HandoffStatus.OFFERED, Handoff.due_at <= now)
                    .order_by(Handoff.due_at, Handoff.id)
                    .limit(BATCH)
                )
            )
        timed_out: list[int] = []
        withdrawn: list[int] = []
        for handoff_id in due:
            queued: list[Delivery] = []
            with self.db.transaction() as session:
                answer = time_out(self._desk(session, now, queued), handoff_id)
            if answer is not None:
                (withdrawn if answer.outcome == "withdrawn" else timed_out).append(handoff_id)
            if queued:
                self.coordinator.wake(OUTBOX_CHANNEL)
        return timed_out, withdrawn

    def offer_waiting(self, now: datetime) -> list[int]:
        """Offer qualified leads that have no open handoff (nobody was free, or it was outside hours)."""
        open_one = exists().where(Handoff.open_lead_id == Lead.id)
        with self.db.read() as session:
            waiting = list(
                session.execute(
                    select(Lead.id)
                    .where(Lead.stage == Stage.QUALIFIED, Lead.opted_out.is_(False), ~open_one)
                    .order_by(Lead.updated_at, Lead.id)
                    .limit(BATCH)
                ).scalars()
            )
        offered = []
        for lead_id in waiting:
            queued: list[Delivery] = []
            with self.db.transaction() as session:
                lead = session.get(Lead, lead_id)
                if lead is None:
                    continue
                handoff = offer(self._desk(session, now, queued), lead, self._reason(session, lead))
                if handoff is not None:
                    offered.append(handoff.id)
            if queued:
                self.coordinator.wake(OUTBOX_CHANNEL)
        return offered

    @staticmethod
    def _reason(session: Session, lead: Lead) -> str:
        """Why the lead qualified, as recorded when it moved to qualified."""
        reason = session.scalar(
            select(StageChange.reason)
            .where(StageChange.lead_id == lead.id, StageChange.to_stage == Stage.QUALIFIED)
            .where(~StageChange.reason.startswith("waiting for a manager"))
            .order_by(StageChange.at.desc(), StageChange.id.desc())
            .limit(1)
        )
        return reason or "qualified"

    def calls(self) -> HandoffCalls | None:
        """The WeCom call runner, built on first use (None when no client factory was given)."""
        if self._calls is None and self._client_factory is not None:
            self._calls = HandoffCalls(self.settings, self.db, self._client_factory(), clock=self.clock)
        return self._calls

    def run(self, now: datetime | None = None) -> SweepReport:
        """One sweep: answer clocks, then time-outs (they free slots), waiting leads, the WeCom calls."""
        now = now or self.clock()
        report = SweepReport()
        report.clocks_started, report.withdrawn = self.start_clocks(now)
        report.timed_out, withdrawn = self.time_out_due(now)
        report.withdrawn += withdrawn
        if self.settings.handoff.enabled:
            report.offered = self.offer_waiting(now)
        runner = self.calls()
        if runner is not None:
            report.calls = runner.run_once()
        if report.timed_out or report.offered or report.withdrawn:
            log.info(
                "handoff sweep: timed out %s, withdrawn %s, offered %s",
                report.timed_out,
                report.withdrawn,
                report.offered,
            )
        return report


def default_handoff_sweep(
    settings: Settings, db: Database, coordinator: Coordinator
) -> Callable[[datetime], SweepReport]:
    """The sweep the scheduler runs: WeCom calls go through a client built from `[wecom]` on first use."""

    def client() -> ChannelClient:
        from bot.wecom.client import WeComClient

        return WeComClient.from_settings(settings.wecom, coordinator)

    return HandoffSweeper(settings, db, coordinator, client_factory=client).run
