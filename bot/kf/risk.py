"""Risk-word statistics of inbound customer messages: recorded per message, read per category per week."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.kf import InboundRiskHit
from scripts_library.compliance import scan_inbound

FIRM_TZ = ZoneInfo("Asia/Shanghai")


def record_inbound_risk(
    session: Session,
    text: str,
    external_user_id: str,
    at: datetime,
    event_id: int | None,
    channel: str = "kf",
) -> dict[str, int]:
    """Scan the text and store one row per risk category found; the message itself is never blocked."""
    counts = scan_inbound(text)
    day = at.astimezone(FIRM_TZ).date()
    for category, count in counts.items():
        session.add(
            InboundRiskHit(
                day=day,
                at=at,
                category=category,
                count=count,
                channel=channel,
                external_user_id=external_user_id,
                event_id=event_id,
            )
        )
    return counts


def week_start(day: date) -> date:
    """The Monday of the ISO week containing `day`."""
    return day - timedelta(days=day.weekday())


def weekly_frequency(session: Session, since: date, until: date) -> dict[tuple[date, str], int]:
    """Risk-word hits per (week's Monday, category) between two days inclusive."""
    stmt = (
        select(InboundRiskHit.day, InboundRiskHit.category, func.sum(InboundRiskHit.count))
        .where(InboundRiskHit.day >= since, InboundRiskHit.day <= until)
        .group_by(InboundRiskHit.day, InboundRiskHit.category)
    )
    weeks: dict[tuple[date, str], int] = defaultdict(int)
    for day, category, total in session.execute(stmt):
        weeks[(week_start(day), category)] += int(total or 0)
    return dict(weeks)
