"""Inbound callback events: persisted before the ack, then claimed and handled by workers."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class EventStatus(enum.StrEnum):
    """Where an inbound event is in its life."""

    PENDING = "pending"  # stored, waiting for a worker (also: waiting for a retry)
    PROCESSING = "processing"  # claimed under a lease
    DONE = "done"  # a handler ran and committed
    IGNORED = "ignored"  # no handler matched (unknown or uninteresting event)
    DEAD = "dead"  # failed max_attempts times; an operator may replay it


class InboundEvent(Base):
    """One decrypted WeCom callback; `dedupe_key` is unique so a retried callback is stored once."""

    __tablename__ = "inbound_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    corp_id: Mapped[str] = mapped_column(String(64), default="")
    subject: Mapped[str] = mapped_column(String(64), default="", index=True)  # the customer, if any
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    raw_xml: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    handled_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_inbound_events_claim", "status", "next_attempt_at"),
        Index("ix_inbound_events_kind", "kind"),
    )
