"""Lead scoring facts (each scored once) and the history of lead stage changes."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class ScoreKind(enum.StrEnum):
    """What a lead did (or is) that earns points."""

    SUBSCRIBED = "subscribed"
    REPLIED = "replied"
    REGISTERED = "registered"
    ATTENDED = "attended"
    CLICKED = "clicked"
    INTENT = "intent"
    FIT = "fit"


class ScoreEvent(Base):
    """One scored fact about a lead; (lead, kind, source_ref) is unique so a fact never scores twice."""

    __tablename__ = "score_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    kind: Mapped[str] = mapped_column(String(16))
    source_ref: Mapped[str] = mapped_column(String(128))  # e.g. course:12, open_account:2026-11-24
    detail: Mapped[str] = mapped_column(String(256), default="")  # human-readable: keyword, course title
    points: Mapped[int] = mapped_column(Integer)  # as awarded, before decay and caps
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # when the fact happened

    __table_args__ = (
        UniqueConstraint("lead_id", "kind", "source_ref", name="uq_score_events_lead_kind_ref"),
        Index("ix_score_events_lead_at", "lead_id", "at"),
    )


class StageChange(Base):
    """A lead moved from one stage to another, by whom and why."""

    __tablename__ = "stage_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    from_stage: Mapped[str] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    # The bot's own reasons also by code and values, so the console can word them (None: free text only).
    reason_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
