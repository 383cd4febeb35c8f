"""Campaign dry runs as background jobs: the request with its progress and result, and its recipients."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class PreviewStatus(enum.StrEnum):
    """queued → running → done | failed; a running preview whose lease lapsed is claimed again."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class CampaignPreview(Base):
    """One requested dry run of a campaign occurrence: who asked, how far it got, what it would send."""

    __tablename__ = "campaign_previews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    occurrence: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=PreviewStatus.QUEUED)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)  # recipients decided and stored so far
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When done, the plan's verdict: "planned", or "skipped"/"failed" with the reason it sends nothing.
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # as CampaignRun.counts
    tasks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # [{"sender", "recipients"}]
    message: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # text, script, approval

    __table_args__ = (
        Index("ix_campaign_previews_campaign", "campaign_id", "id"),
        Index("ix_campaign_previews_status", "status"),
    )


class PreviewRecipient(Base):
    """One lead's place in a dry run, as the planner decided it (a snapshot: no link to the lead row)."""

    __tablename__ = "campaign_preview_recipients"

    preview_id: Mapped[int] = mapped_column(ForeignKey("campaign_previews.id"), primary_key=True)
    lead_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_user_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))
    skip_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sender: Mapped[str] = mapped_column(String(64), default="")
    open_kfid: Mapped[str] = mapped_column(String(64), default="")
