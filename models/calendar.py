"""Operator overrides of the exchange trading calendar (extra closures and make-up trading days)."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class OverrideKind(enum.StrEnum):
    """What an override does to its day."""

    CLOSED = "closed"  # an extra closure on a day the exchange data says trades
    OPEN = "open"  # a make-up trading day the exchange data says is closed


class CalendarOverride(Base):
    """One Shanghai calendar day whose trading status an operator set by hand."""

    __tablename__ = "calendar_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
