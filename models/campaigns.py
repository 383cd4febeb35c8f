"""Scheduled sending as data: campaigns, courses, their runs, each run's recipients and mass-send tasks."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class CampaignKind(enum.StrEnum):
    """What a campaign sends; each kind sends scripts of the same kind (announcements: keyword_reply)."""

    MORNING_REPORT = "morning_report"
    COURSE_INVITE = "course_invite"
    COURSE_REMINDER = "course_reminder"
    ANNOUNCEMENT = "announcement"


class ScheduleKind(enum.StrEnum):
    """When a campaign's runs fall (times are Asia/Shanghai wall-clock)."""

    TRADING_DAYS = "trading_days"  # every trading day at time_of_day
    DAILY = "daily"  # every day at time_of_day
    ONCE = "once"  # once, at run_at
    COURSE = "course"  # once, offset_minutes from its course's start (negative = before)


class CampaignStatus(enum.StrEnum):
    """Active campaigns are scheduled; paused ones keep their schedule but send nothing."""

    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class Campaign(Base):
    """A schedule, an audience and the script it sends; runs are derived from it."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    script_key: Mapped[str] = mapped_column(String(64))
    schedule_kind: Mapped[str] = mapped_column(String(16))
    time_of_day: Mapped[str | None] = mapped_column(String(5), nullable=True)  # "08:30"
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    course_id: Mapped[int | None] = mapped_column(ForeignKey("courses.id"), nullable=True)
    offset_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # {"platforms": [...], "hook_codes": [...], "tags": [...], "stages": [...],
    #  "subscribed_only": bool, "registrants_only": bool}; opted-out and unreachable leads never match.
    audience: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.ACTIVE)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Course(Base):
    """A live investor-education course: who speaks (with SAC number), when, and where to watch."""

    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(128))
    speaker_name: Mapped[str] = mapped_column(String(64))
    speaker_sac_no: Mapped[str] = mapped_column(String(32))  # 证券从业资格/投资顾问登记编号
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    link: Mapped[str] = mapped_column(String(512))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CourseRegistration(Base):
    """A lead signed up for a course (报名 in kf, the console, or an import)."""

    __tablename__ = "course_registrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))  # kf | console | import
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("course_id", "lead_id", name="uq_course_registrations_course_lead"),)


class CourseAttendance(Base):
    """A lead attended a course (imported from the live platform's CSV)."""

    __tablename__ = "course_attendance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    minutes: Mapped[int] = mapped_column(Integer, default=0)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("course_id", "lead_id", name="uq_course_attendance_course_lead"),)


class RunStatus(enum.StrEnum):
    """A run is planned once, then its messages are dispatched; skipped runs say why."""

    PENDING = "pending"  # created by the scheduler, not planned yet
    PLANNED = "planned"  # recipients chosen, deliveries and tasks written
    SKIPPED = "skipped"  # nothing sent: no approved script, paused, kill switch, not a trading day…
    FAILED = "failed"


class CampaignRun(Base):
    """One occurrence of a campaign; (campaign, occurrence) is unique so no occurrence runs twice."""

    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    occurrence: Mapped[datetime] = mapped_column(UTCDateTime)  # the scheduled time
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.PENDING)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The same reason as a code and its values, so the console can word it in the reader's language.
    reason_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(128))  # scheduler instance, or a person for manual runs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # per channel and per skip reason

    __table_args__ = (
        UniqueConstraint("campaign_id", "occurrence", name="uq_campaign_runs_campaign_occurrence"),
        Index("ix_campaign_runs_status", "status"),
    )


class RecipientChannel(enum.StrEnum):
    """How one recipient of a run is reached, or that they are not."""

    KF = "kf"  # kf/send_msg inside the open 48 h window
    MASS = "mass"  # a member's add_msg_template task
    NONE = "none"  # skipped, with the reason


class RunRecipient(Base):
    """One lead's place in one run: the channel chosen or why they were skipped.

    A run writes one per audience member, so the row is kept lean: keyed by (run, lead), no surrogate
    id, and no foreign keys, like `deliveries` (PostgreSQL checks a foreign key with a query per row;
    three of them cost more than the row itself). Only the planner writes these rows, under the lock
    of the run they name, for the leads it has just read and the tasks it has just created; runs,
    leads and tasks are never deleted.
    """

    __tablename__ = "run_recipients"

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    skip_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mass_task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_run_recipients_lead", "lead_id"),
        Index("ix_run_recipients_mass_task", "mass_task_id"),  # a task's recipients, found by index
    )


class MassTaskStatus(enum.StrEnum):
    """queued → created (member confirms) → sent | cancelled | failed | unknown; reconciled until final."""

    QUEUED = "queued"
    CREATED = "created"
    SENT = "sent"  # the member sent it; per-customer results reconciled
    CANCELLED = "cancelled"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the create call's answer was lost: a person resolves it, never re-sent


class MassTask(Base):
    """One add_msg_template task: one sending member, at most 10,000 customers, one approved text."""

    __tablename__ = "mass_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"), index=True)
    sender: Mapped[str] = mapped_column(String(64))  # member userid who must confirm
    text: Mapped[str] = mapped_column(Text)
    script_key: Mapped[str] = mapped_column(String(64))
    script_version: Mapped[int] = mapped_column(Integer)
    approval_id: Mapped[int] = mapped_column(Integer)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=MassTaskStatus.QUEUED)
    msgid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    fail_list: Mapped[list[str]] = mapped_column(JSON, default=list)
    reminders: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_check_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_mass_tasks_claim", "status", "next_check_at"),)


class Switch(Base):
    """An operator control stored in the database so every process sees it (e.g. the send kill switch)."""

    __tablename__ = "switches"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    on: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    changed_by: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
