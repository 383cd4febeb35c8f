"""The append-only, hash-chained record of every outbound message and its outcome."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class LedgerEntry(Base):
    """One ledger row; `entry_hash` covers its fields and the previous row's hash."""

    __tablename__ = "send_ledger"

    # The chain position is the key: no surrogate id beside it (one index write per row, not two).
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    entry_type: Mapped[str] = mapped_column(String(16))  # message | outcome
    ref_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # outcome → its message
    recipient: Mapped[str] = mapped_column(String(128), default="")
    sender: Mapped[str] = mapped_column(String(128), default="")
    channel: Mapped[str] = mapped_column(String(32), default="")
    script_key: Mapped[str] = mapped_column(String(64), default="")
    script_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    approval_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rendered_text: Mapped[str] = mapped_column(Text, default="")
    lint_verdict: Mapped[str] = mapped_column(String(16), default="")
    lexicon_version: Mapped[str] = mapped_column(String(32), default="")
    wecom_id: Mapped[str] = mapped_column(String(128), default="")
    outcome: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_send_ledger_recorded_at", "recorded_at"),
        Index("ix_send_ledger_recipient", "recipient"),
    )
