"""What the messages of each script version led to: sent, delivered, replied, registered, qualified.

One GROUP BY query on SQLite and PostgreSQL; the ledger-backed delivery rows name the exact version
sent, so A/B variants (which are versions) are compared by the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, extract, func, select
from sqlalchemy.orm import Session

from bot.leads.scoring import CUSTOMER_MESSAGE_KINDS
from bot.leads.stages import Stage
from models.campaigns import CourseRegistration
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.inbox import InboundEvent
from models.leads import Lead
from models.scoring import StageChange

REPLY_WINDOW_MINUTES = 48 * 60  # a customer message this soon after a delivery counts as a reply
QUALIFIED_OR_LATER = (Stage.QUALIFIED, Stage.HANDED_OFF, Stage.ACCEPTED, Stage.CONVERTED)
# Messages that never passed the compliance gate or were withdrawn before going out.
NOT_SENT = (DeliveryStatus.BLOCKED, DeliveryStatus.HELD, DeliveryStatus.CANCELLED)


@dataclass(frozen=True)
class ScriptPerformance:
    """Messages of one script version created in a period and what followed them."""

    script_key: str
    version: int
    sent: int
    delivered: int
    replied: int
    registered: int
    qualified: int

    @classmethod
    def empty(cls, script_key: str, version: int) -> ScriptPerformance:
        """A version with no messages in the period."""
        return cls(script_key, version, 0, 0, 0, 0, 0)

    def rate(self, count: int) -> float:
        """`count` per delivered message, in percent (0 without deliveries)."""
        return round(100.0 * count / self.delivered, 1) if self.delivered else 0.0


def _minutes_between(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 1440.0
    return extract("epoch", later - earlier) / 60.0


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def script_performance(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    script_key: str | None = None,
    version: int | None = None,
) -> list[ScriptPerformance]:
    """Per script and version, customer messages created in [start, end) and what followed.

    sent: passed the compliance gate and queued for WeCom (not blocked, held or cancelled).
    delivered: WeCom accepted them. replied: delivered messages whose recipient wrote to us within
    48 hours after. registered / qualified: delivered messages whose recipient later (before `end`)
    registered for a course / reached the qualified stage or beyond. A customer who got several
    messages counts under each of them. Messages to staff are left out.
    """
    sent_at = Delivery.sent_at
    delivered = and_(Delivery.status == DeliveryStatus.SENT, sent_at.is_not(None))
    replied = exists().where(
        InboundEvent.subject == Delivery.recipient,
        InboundEvent.kind.in_(CUSTOMER_MESSAGE_KINDS),
        InboundEvent.received_at > sent_at,
        _minutes_between(session, InboundEvent.received_at, sent_at) <= REPLY_WINDOW_MINUTES,
    )
    registered = exists().where(
        Lead.external_user_id == Delivery.recipient,
        CourseRegistration.lead_id == Lead.id,
        CourseRegistration.registered_at > sent_at,
        CourseRegistration.registered_at < end,
    )
    qualified = exists().where(
        Lead.external_user_id == Delivery.recipient,
        StageChange.lead_id == Lead.id,
        StageChange.to_stage.in_([stage.value for stage in QUALIFIED_OR_LATER]),
        StageChange.at > sent_at,
        StageChange.at < end,
    )
    stmt = (
        select(
            Delivery.script_key,
            Delivery.script_version,
            _count_if(Delivery.status.not_in(NOT_SENT)),
            _count_if(delivered),
            _count_if(and_(delivered, replied)),
            _count_if(and_(delivered, registered)),
            _count_if(and_(delivered, qualified)),
        )
        .where(
            Delivery.channel != Channel.APP_MESSAGE,  # messages to staff have no customer to follow
            Delivery.created_at >= start,
            Delivery.created_at < end,
        )
        .group_by(Delivery.script_key, Delivery.script_version)
        .order_by(Delivery.script_key, Delivery.script_version)
    )
    if script_key is not None:
        stmt = stmt.where(Delivery.script_key == script_key)
    if version is not None:
        stmt = stmt.where(Delivery.script_version == version)
    return [
        ScriptPerformance(str(k), int(v), *(int(n) for n in counts))
        for k, v, *counts in session.execute(stmt)
    ]
