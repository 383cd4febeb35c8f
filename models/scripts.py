"""Message scripts, their immutable versions and the compliance decisions on them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class ScriptKind(enum.StrEnum):
    """What a script is for; each kind declares the variables it may use."""

    WELCOME = "welcome"
    MORNING_REPORT = "morning_report"
    COURSE_INVITE = "course_invite"
    COURSE_REMINDER = "course_reminder"
    SUBSCRIBE_CONFIRM = "subscribe_confirm"
    UNSUBSCRIBE_CONFIRM = "unsubscribe_confirm"
    KEYWORD_REPLY = "keyword_reply"
    FALLBACK = "fallback"
    HANDOFF_BRIEF = "handoff_brief"
    STAFF_REMINDER = "staff_reminder"


class Audience(enum.StrEnum):
    """Who reads the message."""

    CUSTOMER = "customer"
    STAFF = "staff"


class VersionStatus(enum.StrEnum):
    """draft → submitted → approved | rejected; approved → superseded | retired."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    RETIRED = "retired"


class Script(Base):
    """A named message an operator maintains, e.g. `welcome_xiaohongshu`."""

    __tablename__ = "scripts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    audience: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    versions: Mapped[list[ScriptVersion]] = relationship(
        back_populates="script", order_by="ScriptVersion.number"
    )


class ScriptVersion(Base):
    """One wording of a script; frozen once submitted (any edit is a new version)."""

    __tablename__ = "script_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("scripts.id"))
    number: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.DRAFT)
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lint_verdict: Mapped[str] = mapped_column(String(16), default="pass")
    lint_findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    lexicon_version: Mapped[str] = mapped_column(String(32), default="")
    script: Mapped[Script] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("script_id", "number", name="uq_script_versions_number"),)


class Approval(Base):
    """A compliance reviewer's decision on a submitted version, bound to its content hash."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("script_versions.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # approved | rejected
    reviewer: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
