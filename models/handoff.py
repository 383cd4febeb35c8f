"""Account managers and the handoffs of qualified leads to them (offers, answers, SLA, channel moves)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class AccountManager(Base):
    """A corp member who takes qualified leads: licence, capacity, working hours, platforms, supervisor."""

    __tablename__ = "account_managers"

    userid: Mapped[str] = mapped_column(String(64), primary_key=True)  # WeCom member userid
    name: Mapped[str] = mapped_column(String(64))
    sac_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    licensed: Mapped[bool] = mapped_column(Boolean, default=False)  # registered to give investment advice
    capacity: Mapped[int] = mapped_column(Integer, default=10)  # most open handoffs at once
    open_count: Mapped[int] = mapped_column(Integer, default=0)  # handoffs offered or accepted, not closed
    work_days: Mapped[str] = mapped_column(String(7), default="12345")  # ISO weekdays, 1 = Monday
    work_start: Mapped[str] = mapped_column(String(5), default="09:00")  # firm time (Asia/Shanghai)
    work_end: Mapped[str] = mapped_column(String(5), default="18:00")
    platforms: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty = every platform
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    supervisor_userid: Mapped[str | None] = mapped_column(
        ForeignKey("account_managers.userid"), nullable=True
    )
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HandoffStatus(enum.StrEnum):
    """offered → accepted → closed, or offered → declined | timed_out | cancelled."""

    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    CLOSED = "closed"


OPEN_STATUSES = frozenset({HandoffStatus.OFFERED, HandoffStatus.ACCEPTED})


class Handoff(Base):
    """One offer of a lead to one manager; `open_lead_id` (unique) allows one open handoff per lead."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    manager_userid: Mapped[str] = mapped_column(ForeignKey("account_managers.userid"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=HandoffStatus.OFFERED)
    # Equals lead_id while the handoff is open, NULL once it ends: the unique key is the concurrency guard.
    open_lead_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    # The first handoff of a run of offers for the same qualification; managers tried in a chain are skipped.
    chain_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    misses: Mapped[int] = mapped_column(Integer, default=0)  # offers in the chain that timed out before this
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)  # offered to a supervisor after misses
    reason: Mapped[str] = mapped_column(Text, default="")  # why the lead qualified
    advice: Mapped[bool] = mapped_column(Boolean, default=False)  # the lead asked for advice: licensed only
    kept_with_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    task_id: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)  # the card's task_id
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")  # why it ended (declined, timed out, closed)
    # The bot's own notes also by code and values, so the console can word them (None: free text only).
    note_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # How the conversation moved to the manager on accept: kf_transfer | transfer_customer | notify_owner.
    channel_action: Mapped[str] = mapped_column(String(32), default="")
    channel_status: Mapped[str] = mapped_column(String(16), default="")  # pending | done | failed
    channel_target: Mapped[str] = mapped_column(String(64), default="")  # open_kfid or handover member
    channel_detail: Mapped[str] = mapped_column(Text, default="")
    # A click's single-use ResponseCode and the outcome to show on the card, until the card is updated.
    card_response_code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    card_replace_name: Mapped[str] = mapped_column(String(32), default="")
    # When the WeCom calls this handoff still needs (card update, channel move) are next due.
    actions_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    action_attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_handoffs_status_due", "status", "due_at"),)
