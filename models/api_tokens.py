"""Bearer tokens that let an integration (a CRM, a data warehouse) read the JSON API."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class ApiScope(enum.StrEnum):
    """Which part of the API a token may read."""

    LEADS = "leads"
    HANDOFFS = "handoffs"
    LEDGER = "ledger"


class ApiToken(Base):
    """One integration's token; only its sha256 is stored, so a lost token is revoked and reissued."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
