"""WeChat Customer Service (kf): sync cursors, conversations, inbound risk words and intent signals."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class KfCursor(Base):
    """Per kf account: the persisted sync_msg cursor, the newest callback token and a pending pull."""

    __tablename__ = "kf_cursors"

    open_kfid: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(64), default="")
    token: Mapped[str] = mapped_column(String(128), default="")
    token_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set by each kf_msg_or_event, cleared by the syncer once it pulled everything after it.
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # While syncing: the lease; after a failure: when to try again.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    pulled: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_kf_cursors_claim", "requested_at", "lease_until"),)


class KfConversation(Base):
    """A customer's conversation with a kf account: the reply window and the replies counted in it."""

    __tablename__ = "kf_conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    open_kfid: Mapped[str] = mapped_column(String(64))
    external_user_id: Mapped[str] = mapped_column(String(64))
    last_customer_msg_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replies_since: Mapped[int] = mapped_column(Integer, default=0)
    last_reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A servicer took the session in the WeCom client: the API may not send (95018) until it ends.
    servicer_userid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("open_kfid", "external_user_id", name="uq_kf_conversations_kf_customer"),
    )


class InboundRiskHit(Base):
    """Risk-word categories found in one inbound customer message (statistics only, never a block)."""

    __tablename__ = "inbound_risk_hits"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    day: Mapped[date] = mapped_column(Date)  # in the firm's time zone (Asia/Shanghai)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    category: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer, default=1)
    channel: Mapped[str] = mapped_column(String(16), default="kf")
    external_user_id: Mapped[str] = mapped_column(String(64), default="")
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_inbound_risk_hits_day_category", "day", "category"),)


class IntentSignal(Base):
    """A buying-intent keyword a customer typed (开户, 佣金…), kept for lead scoring."""

    __tablename__ = "intent_signals"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    external_user_id: Mapped[str] = mapped_column(String(64), index=True)
    intent: Mapped[str] = mapped_column(String(32))
    keyword: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16), default="kf")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
