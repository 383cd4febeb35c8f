"""A/B experiments on scripts: approved versions live side by side with weights, and each lead's arm."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class ExperimentStatus(enum.StrEnum):
    """running → ended (by promoting a variant, retiring down to one, or a plain approval)."""

    RUNNING = "running"
    ENDED = "ended"


class VariantStatus(enum.StrEnum):
    """live while the experiment runs; then promoted, retired or superseded."""

    LIVE = "live"
    PROMOTED = "promoted"
    RETIRED = "retired"
    SUPERSEDED = "superseded"
    ENDED = "ended"  # the last live arm when the others were retired: it simply stays approved


class ScriptExperiment(Base):
    """An A/B test of one script; at most one runs per script at a time."""

    __tablename__ = "script_experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("scripts.id"), index=True)
    # Equals script_id while running and is NULL afterwards: the unique key allows one running test.
    running_script_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ExperimentStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_by: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(Text, default="")
    variants: Mapped[list[ScriptVariant]] = relationship(
        back_populates="experiment", order_by="ScriptVariant.id"
    )


class ScriptVariant(Base):
    """One arm of an experiment: an approved version and its relative weight for new leads."""

    __tablename__ = "script_variants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("script_experiments.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("script_versions.id"), index=True)
    label: Mapped[str] = mapped_column(String(8))  # A, B, C… in the order the arms went live
    weight: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=VariantStatus.LIVE)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    added_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    experiment: Mapped[ScriptExperiment] = relationship(back_populates="variants")

    __table_args__ = (UniqueConstraint("experiment_id", "version_id", name="uq_script_variants_version"),)


class VariantAssignment(Base):
    """Which arm a lead was given the first time it was sent the script; sticky for the experiment."""

    __tablename__ = "variant_assignments"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("script_experiments.id"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("script_variants.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("experiment_id", "lead_id", name="uq_variant_assignments_lead"),)
