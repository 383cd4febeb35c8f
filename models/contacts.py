"""Relationships between corp members and external contacts, kept in step with WeCom events."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class RelationStatus(enum.StrEnum):
    """Whether the member and the customer are still connected, and who ended it."""

    PENDING = "pending"  # added through skip-verify, not yet accepted by the member
    ACTIVE = "active"
    REMOVED_BY_CUSTOMER = "removed_by_customer"  # del_follow_user: stop every send
    REMOVED_BY_MEMBER = "removed_by_member"  # del_external_contact


class ContactRelation(Base):
    """One (member, external contact) pair as WeCom reported it."""

    __tablename__ = "contact_relations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    external_user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))
    first_state: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_state: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removal_source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    transfer_fail_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "external_user_id", name="uq_contact_relations_pair"),)
