"""The periodic handoff sweep (scheduler leader only): unanswered offers time out and move on,
qualified leads still waiting for a manager are offered again, and due WeCom calls are made."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.coordination.base import Coordinator
from bot.db import Database
from bot.delivery.outbox import OUTBOX_CHANNEL, enqueue
from bot.handoff.actions import CallOutcome, HandoffCalls
from bot.handoff.channel import ChannelClient
from bot.handoff.flow import Desk, offer, time_out
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
    """What one sweep did: offers timed out, waiting leads offered, WeCom calls made."""

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

    def time_out_due(self, now: datetime) -> list[int]:
        """Time out every offer past its answer time; each is followed up in its own transaction."""
        with self.db.read() as session:
            due = list(
                session.scalars(
                    select(Handoff.id)
                    .where(Handoff.status == HandoffStatus.OFFERED, Handoff.due_at <= now)
                    .order_by(Handoff.due_at, Handoff.id)
                    .limit(BATCH)
                )
            )
        done = []
        for handoff_id in due:
            queued: list[Delivery] = []
            with self.db.transaction() as session:
                if time_out(self._desk(session, now, queued), handoff_id) is not None:
                    done.append(handoff_id)
            if queued:
                self.coordinator.wake(OUTBOX_CHANNEL)
        return done

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
        """One sweep: time-outs first (they free slots), then waiting leads, then the WeCom calls."""
        now = now or self.clock()
        report = SweepReport()
        report.timed_out = self.time_out_due(now)
        if self.settings.handoff.enabled:
            report.offered = self.offer_waiting(now)
        runner = self.calls()
        if runner is not None:
            report.calls = runner.run_once()
        if report.timed_out or report.offered:
            log.info("handoff sweep: timed out %s, offered %s", report.timed_out, report.offered)
        return report


def default_handoff_sweep(
    settings: Settings, db: Database, coordinator: Coordinator
) -> Callable[[datetime], SweepReport]:
    """The sweep the scheduler runs: WeCom calls go through a client built from `[wecom]` on first use."""

    def client() -> ChannelClient:
        from bot.wecom.client import WeComClient

        return WeComClient.from_settings(settings.wecom, coordinator)

    return HandoffSweeper(settings, db, coordinator, client_factory=client).run
