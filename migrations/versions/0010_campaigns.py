"""campaigns, courses, runs, run recipients, mass-send tasks, switches

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "courses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=128), nullable=False),
        sa.Column("speaker_name", sa.String(length=64), nullable=False),
        sa.Column("speaker_sac_no", sa.String(length=32), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("link", sa.String(length=512), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_courses")),
        sa.UniqueConstraint("key", name=op.f("uq_courses_key")),
    )
    op.create_table(
        "switches",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("on", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_switches")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("script_key", sa.String(length=64), nullable=False),
        sa.Column("schedule_kind", sa.String(length=16), nullable=False),
        sa.Column("time_of_day", sa.String(length=5), nullable=True),
        sa.Column("run_at", sa.DateTime(), nullable=True),
        sa.Column("course_id", sa.Integer(), nullable=True),
        sa.Column("offset_minutes", sa.Integer(), nullable=True),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["course_id"], ["courses.id"], name=op.f("fk_campaigns_course_id_courses")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("key", name=op.f("uq_campaigns_key")),
    )
    op.create_table(
        "course_attendance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["course_id"], ["courses.id"], name=op.f("fk_course_attendance_course_id_courses")
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_course_attendance_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_course_attendance")),
        sa.UniqueConstraint("course_id", "lead_id", name="uq_course_attendance_course_lead"),
    )
    with op.batch_alter_table("course_attendance", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_course_attendance_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "course_registrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["course_id"], ["courses.id"], name=op.f("fk_course_registrations_course_id_courses")
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_course_registrations_lead_id_leads")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_course_registrations")),
        sa.UniqueConstraint("course_id", "lead_id", name="uq_course_registrations_course_lead"),
    )
    with op.batch_alter_table("course_registrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_course_registrations_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "campaign_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("occurrence", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("planned_at", sa.DateTime(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_runs_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_runs")),
        sa.UniqueConstraint("campaign_id", "occurrence", name="uq_campaign_runs_campaign_occurrence"),
    )
    with op.batch_alter_table("campaign_runs", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_runs_status", ["status"], unique=False)

    op.create_table(
        "mass_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("script_key", sa.String(length=64), nullable=False),
        sa.Column("script_version", sa.Integer(), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("msgid", sa.String(length=128), nullable=True),
        sa.Column("fail_list", sa.JSON(), nullable=False),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_check_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["campaign_runs.id"], name=op.f("fk_mass_tasks_run_id_campaign_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mass_tasks")),
    )
    with op.batch_alter_table("mass_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_mass_tasks_claim", ["status", "next_check_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_mass_tasks_run_id"), ["run_id"], unique=False)

    op.create_table(
        "run_recipients",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("skip_reason", sa.String(length=64), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("mass_task_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_run_recipients_lead_id_leads")),
        sa.ForeignKeyConstraint(
            ["mass_task_id"], ["mass_tasks.id"], name=op.f("fk_run_recipients_mass_task_id_mass_tasks")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["campaign_runs.id"], name=op.f("fk_run_recipients_run_id_campaign_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_recipients")),
        sa.UniqueConstraint("run_id", "lead_id", name="uq_run_recipients_run_lead"),
    )
    with op.batch_alter_table("run_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_run_recipients_lead", ["lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_run_recipients_lead")

    op.drop_table("run_recipients")
    with op.batch_alter_table("mass_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mass_tasks_run_id"))
        batch_op.drop_index("ix_mass_tasks_claim")

    op.drop_table("mass_tasks")
    with op.batch_alter_table("campaign_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_runs_status")

    op.drop_table("campaign_runs")
    with op.batch_alter_table("course_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_course_registrations_lead_id"))

    op.drop_table("course_registrations")
    with op.batch_alter_table("course_attendance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_course_attendance_lead_id"))

    op.drop_table("course_attendance")
    op.drop_table("campaigns")
    op.drop_table("switches")
    op.drop_table("courses")
