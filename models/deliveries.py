"""The transactional outbox: one row per outbound message, unique per purpose and recipient."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class Channel(enum.StrEnum):
    """How a delivery reaches its recipient; each maps to one WeCom API."""

    CONTACT_WELCOME = "contact_welcome"  # externalcontact/send_welcome_msg (20 s code)
    KF_WELCOME = "kf_welcome"  # kf/send_msg_on_event (20 s code)
    KF_TEXT = "kf_text"  # kf/send_msg inside the 48 h / 5-message window
    APP_MESSAGE = "app_message"  # message/send to members
    MASS_TEMPLATE = "mass_template"  # one customer of a member's add_msg_template task (sent by the task)


class DeliveryStatus(enum.StrEnum):
    """queued → sending → sent | failed | expired; held awaits review; blocked never goes out."""

    QUEUED = "queued"
    HELD = "held"
    BLOCKED = "blocked"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"


class Delivery(Base):
    """One message to send; `purpose_key` makes a second copy for the same purpose impossible."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    purpose_key: Mapped[str] = mapped_column(String(191), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(128))
    sender: Mapped[str] = mapped_column(String(128), default="")
    script_key: Mapped[str] = mapped_column(String(64))
    script_version: Mapped[int] = mapped_column(Integer)
    approval_id: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # welcome_code, open_kfid, msgid…
    lint_verdict: Mapped[str] = mapped_column(String(16))
    lexicon_version: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=100)  # lower goes first
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    wecom_id: Mapped[str] = mapped_column(String(128), default="")
    errcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_deliveries_claim", "status", "priority", "next_attempt_at"),
        Index("ix_deliveries_recipient", "recipient"),
    )
