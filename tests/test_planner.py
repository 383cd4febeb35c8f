"""The run planner: whole-run checks, audience, per-recipient channels and skips, caps, controls, dry runs."""

from __future__ import annotations

import json
import math
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.campaigns import planner as planner_module
from bot.campaigns.audience import AudienceError, AudienceFilter, fetch_batch, iter_batches, stream
from bot.campaigns.controls import (
    ControlError,
    KillSwitch,
    resume_sending,
    sending_stopped,
    stop_sending,
    switch_state,
)
from bot.campaigns.planner import (
    NOT_DUE,
    PlannedRecipient,
    RunPlan,
    decide,
    dry_run_campaign,
    in_quiet_hours,
    load_plan,
    plan_run,
    purpose_key,
)
from bot.cli import main
from bot.config import ConfigError, Settings, load_settings
from bot.db import Database
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.delivery.outbox import enqueue
from bot.services import Services
from bot.trading_calendar import SHANGHAI
from models.alerts import Alert
from models.audit import AuditEntry
from models.campaigns import (
    Campaign,
    CampaignRun,
    Course,
    CourseRegistration,
    MassTask,
    RunRecipient,
    Switch,
)
from models.contacts import ContactRelation
from models.deliveries import Channel, Delivery
from models.kf import KfConversation
from models.leads import Lead, LeadTag
from models.ledger import LedgerEntry
from models.scripts import ScriptVersion
from models.variants import ScriptVariant, VariantAssignment
from scripts_library import catalogue as cat
from scripts_library import ledger
from tests.scripts_fixtures import POLICY, approved, ensure_people

DEFAULTS = Path(__file__).resolve().parents[1] / "scripts_library" / "defaults"
KF = "wkKF01"


def body(name: str) -> str:
    return str(tomllib.loads((DEFAULTS / f"{name}.toml").read_text())["body"])


def sh(text: str) -> datetime:
    """A Shanghai wall-clock time as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


TUESDAY = sh("2026-11-24T08:30")  # a trading day
NATIONAL_DAY = sh("2026-10-01T08:30")  # the exchange is closed


@pytest.fixture
def scripts(db: Database) -> None:
    with db.transaction() as session:
        approved(session, "morning_report", "morning_report", body("morning_report"))
        approved(session, "course_invite", "course_invite", body("course_invite"))
        approved(session, "course_reminder", "course_reminder", body("course_reminder"))


def campaign(
    session: Session,
    key: str = "morning",
    kind: str = "morning_report",
    script_key: str = "morning_report",
    audience: dict[str, Any] | None = None,
    schedule_kind: str = "trading_days",
    **kw: Any,
) -> Campaign:
    row = Campaign(
        key=key, name=key, kind=kind, script_key=script_key, schedule_kind=schedule_kind, time_of_day="08:30",
        audience=audience if audience is not None else {}, created_by="olivia", **kw,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def run(session: Session, camp: Campaign, occurrence: datetime) -> int:
    row = CampaignRun(campaign_id=camp.id, occurrence=occurrence, created_by="test", counts={})
    session.add(row)
    session.flush()
    return row.id


def lead(session: Session, ext: str, owner: str | None = None, **kw: Any) -> Lead:
    kw.setdefault("subscribed", True)
    row = Lead(external_user_id=ext, owner_userid=owner, **kw)
    session.add(row)
    session.flush()
    return row


def relate(
    session: Session, member: str, ext: str, status: str = "active", at: datetime | None = None
) -> None:
    at = at or sh("2026-11-01T10:00")
    session.add(
        ContactRelation(user_id=member, external_user_id=ext, status=status, added_at=at, updated_at=at)
    )
    session.flush()


def kf_window(session: Session, ext: str, last_msg: datetime, replies: int = 0, **kw: Any) -> None:
    session.add(
        KfConversation(
            open_kfid=kw.pop("open_kfid", KF), external_user_id=ext, last_customer_msg_at=last_msg,
            replies_since=replies, updated_at=last_msg, **kw,
        )
    )  # fmt: skip
    session.flush()


def recipients(db: Database, run_id: int) -> dict[str, tuple[str, str | None]]:
    with db.read() as session:
        rows = session.execute(
            select(Lead.external_user_id, RunRecipient.channel, RunRecipient.skip_reason)
            .join(Lead, Lead.id == RunRecipient.lead_id)
            .where(RunRecipient.run_id == run_id)
        )
        return {ext: (channel, reason) for ext, channel, reason in rows}


def table_counts(db: Database) -> dict[str, int]:
    models = (RunRecipient, Delivery, MassTask, LedgerEntry, Alert, AuditEntry, Switch)
    with db.read() as session:
        counts = {m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0 for m in models}
        counts["kf_replies"] = session.scalar(select(func.sum(KfConversation.replies_since))) or 0
        counts["runs_pending"] = (
            session.scalar(
                select(func.count()).select_from(CampaignRun).where(CampaignRun.status == "pending")
            )
            or 0
        )
        return counts


def mixed_audience(session: Session) -> None:
    """Leads that exercise each channel and each exclusion of a morning report."""
    lead(session, "kf_open", owner="zhangsan")  # open kf window: kf, even with a member
    relate(session, "zhangsan", "kf_open")
    kf_window(session, "kf_open", TUESDAY - timedelta(hours=3))
    lead(session, "mass_owner", owner="zhangsan")
    relate(session, "zhangsan", "mass_owner")
    lead(session, "mass_other", owner="wangwu")  # the owner is not connected; lisi is
    relate(session, "lisi", "mass_other")
    lead(session, "kf_closed", owner="lisi")  # window closed: mass
    relate(session, "lisi", "kf_closed")
    kf_window(session, "kf_closed", TUESDAY - timedelta(hours=49))
    lead(session, "kf_spent")  # five replies used, no member: nothing
    kf_window(session, "kf_spent", TUESDAY - timedelta(hours=1), replies=5)
    lead(session, "nobody")
    lead(session, "dropped_member")  # the member removed them
    relate(session, "zhangsan", "dropped_member", status="removed_by_member")
    lead(session, "deleted_us")  # they removed the member (the lead flag not updated yet)
    relate(session, "zhangsan", "deleted_us", status="removed_by_customer")
    lead(session, "opted_out", opted_out=True)
    relate(session, "zhangsan", "opted_out")
    lead(session, "unreachable", reachable=False)
    relate(session, "zhangsan", "unreachable")
    lead(session, "not_subscribed", subscribed=False)
    relate(session, "zhangsan", "not_subscribed")


# --- planning a morning report -----------------------------------------------------------------------


def test_morning_report_plans_each_subscribed_lead_once_through_the_right_channel(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        run_id = run(session, campaign(session), TUESDAY)
    plan = plan_run(db, settings, run_id, now=TUESDAY)
    assert plan.status == "planned" and plan.message is not None
    assert "2026年11月24日 星期二" in plan.message.text and "示例证券" in plan.message.text
    assert recipients(db, run_id) == {
        "kf_open": ("kf", None),
        "mass_owner": ("mass", None),
        "mass_other": ("mass", None),
        "kf_closed": ("mass", None),
        "kf_spent": ("none", "no_member"),
        "nobody": ("none", "no_member"),
        "dropped_member": ("none", "no_member"),
        "deleted_us": ("none", "unreachable"),
    }
    assert plan.counts == {
        "recipients": 8, "kf": 1, "mass": 3, "none": 4, "mass_tasks": 2,
        "skipped": {"no_member": 3, "unreachable": 1},
    }  # fmt: skip
    with db.read() as session:
        stored = session.get(CampaignRun, run_id)
        assert stored is not None and stored.status == "planned" and stored.counts == plan.counts
        assert stored.planned_at == TUESDAY
        deliveries = {d.recipient: d for d in session.scalars(select(Delivery))}
        assert set(deliveries) == {"kf_open", "mass_owner", "mass_other", "kf_closed"}
        kf = deliveries["kf_open"]
        assert (kf.channel, kf.status, kf.params["open_kfid"]) == (Channel.KF_TEXT, "queued", KF)
        assert kf.purpose_key == purpose_key(run_id, stored_lead_id(session, "kf_open"))
        assert kf.text == plan.message.text and kf.ledger_seq is not None
        tasks = {t.sender: t for t in session.scalars(select(MassTask))}
        assert {s: t.recipients for s, t in tasks.items()} == {"zhangsan": 1, "lisi": 2}
        assert all(t.next_check_at == TUESDAY and t.text == plan.message.text for t in tasks.values())
        for ext in ("mass_owner", "mass_other", "kf_closed"):
            d = deliveries[ext]
            assert d.channel == Channel.MASS_TEMPLATE and d.status == "queued" and d.ledger_seq is not None
            assert tasks[d.sender].id == d.params["mass_task_id"]
            assert (d.script_key, d.approval_id, d.lint_verdict) == (
                "morning_report", plan.message.approval_id, "pass"
            )  # fmt: skip
        assert deliveries["mass_other"].sender == "lisi"
        entries = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
        assert sorted(e.recipient for e in entries) == sorted(deliveries)
        assert {e.channel for e in entries} == {"kf_text", "mass_template"}
        assert {e.seq for e in entries} == {d.ledger_seq for d in deliveries.values()}
        assert ledger.verify(session).ok
        conv = session.scalars(
            select(KfConversation).where(KfConversation.external_user_id == "kf_open")
        ).one()
        assert conv.replies_since == 1 and conv.last_reply_at == TUESDAY


def stored_lead_id(session: Session, ext: str) -> int:
    return session.scalars(select(Lead.id).where(Lead.external_user_id == ext)).one()


def test_planning_a_run_twice_changes_nothing(db: Database, settings: Settings, scripts: None) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        run_id = run(session, campaign(session), TUESDAY)
    first = plan_run(db, settings, run_id, now=TUESDAY)
    before = table_counts(db)
    second = plan_run(db, settings, run_id, now=TUESDAY + timedelta(minutes=5))
    assert table_counts(db) == before
    assert (second.status, second.counts, second.tasks) == (first.status, first.counts, first.tasks)


def test_a_plan_that_crashed_midway_resumes_without_duplicates(
    db: Database, settings: Settings, scripts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.replace(campaigns={"mass_task_max": 3})
    with db.transaction() as session:
        for i in range(8):
            lead(session, f"c{i}", owner="zhangsan")
            relate(session, "zhangsan", f"c{i}")
        lead(session, "kfc")
        kf_window(session, "kfc", TUESDAY - timedelta(hours=1))
        run_id = run(session, campaign(session), TUESDAY)

    real = planner_module._Planner.plan_real
    calls = {"n": 0}

    def crashing(self: Any, session: Session, batch: Any, relations: Any = None) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return real(self, session, batch, relations)

    monkeypatch.setattr(planner_module._Planner, "plan_real", crashing)
    with pytest.raises(RuntimeError, match="worker killed"):
        plan_run(db, settings, run_id, now=TUESDAY, batch_size=2)
    with db.read() as session:
        partial = session.get(CampaignRun, run_id)
        assert partial is not None and partial.status == "pending"
        assert session.scalar(select(func.count()).select_from(RunRecipient)) == 4
        # Tasks of an unfinished plan are never due, so no half-filled task goes out.
        assert {t.next_check_at for t in session.scalars(select(MassTask))} == {NOT_DUE}
    monkeypatch.setattr(planner_module._Planner, "plan_real", real)
    dry = plan_run(db, settings, run_id, now=TUESDAY + timedelta(minutes=1), dry_run=True, batch_size=2)
    plan = plan_run(db, settings, run_id, now=TUESDAY + timedelta(minutes=1), batch_size=2)
    assert plan.status == "planned"
    with db.read() as session:  # a dry run of the half-planned run foresaw the resumed plan
        assert dry.recipients == load_plan(session, run_id, with_recipients=True).recipients
        assert (dry.counts, dry.tasks) == (plan.counts, plan.tasks)
    assert plan.counts["recipients"] == 9 and plan.counts["mass"] == 8 and plan.counts["kf"] == 1
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(RunRecipient)) == 9
        assert session.scalar(select(func.count()).select_from(Delivery)) == 9
        assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 9
        tasks = list(session.scalars(select(MassTask).order_by(MassTask.id)))
        assert [t.recipients for t in tasks] == [3, 3, 2]
        assert all(t.next_check_at < NOT_DUE for t in tasks)
        per_task = session.execute(
            select(RunRecipient.mass_task_id, func.count()).where(RunRecipient.mass_task_id.is_not(None))
            .group_by(RunRecipient.mass_task_id)
        ).all()  # fmt: skip
        assert sorted(n for _, n in per_task) == [2, 3, 3]
        conv = session.scalars(select(KfConversation)).one()
        assert conv.replies_since == 1


def test_mass_recipients_are_grouped_per_sender_and_split_at_the_task_size(
    db: Database, settings: Settings, scripts: None
) -> None:
    settings = settings.replace(campaigns={"mass_task_max": 3})
    with db.transaction() as session:
        for i in range(7):
            lead(session, f"z{i}", owner="zhangsan")
            relate(session, "zhangsan", f"z{i}")
            if i < 2:
                lead(session, f"l{i}", owner="lisi")
                relate(session, "lisi", f"l{i}")
        run_id = run(session, campaign(session), TUESDAY)
    plan = plan_run(db, settings, run_id, now=TUESDAY, batch_size=2)
    assert [(t.sender, t.recipients) for t in plan.tasks] == [
        ("zhangsan", 3), ("lisi", 2), ("zhangsan", 3), ("zhangsan", 1)
    ]  # fmt: skip
    with db.read() as session:
        for task in session.scalars(select(MassTask)):
            members = session.execute(
                select(Delivery.sender, Delivery.params)
                .join(RunRecipient, RunRecipient.delivery_id == Delivery.id)
                .where(RunRecipient.mass_task_id == task.id)
            ).all()
            assert len(members) == task.recipients
            assert all(s == task.sender and p["mass_task_id"] == task.id for s, p in members)


def test_a_lead_is_sent_by_the_owner_if_connected_else_by_the_latest_member(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        lead(session, "a", owner="lisi")
        relate(session, "zhangsan", "a", at=sh("2026-11-20T10:00"))
        relate(session, "lisi", "a", at=sh("2026-11-01T10:00"))
        lead(session, "b", owner="wangwu")
        relate(session, "zhangsan", "b", at=sh("2026-11-01T10:00"))
        relate(session, "lisi", "b", at=sh("2026-11-20T10:00"))
        relate(session, "wangwu", "b", status="removed_by_member", at=sh("2026-11-21T10:00"))
        run_id = run(session, campaign(session), TUESDAY)
    plan_run(db, settings, run_id, now=TUESDAY)
    with db.read() as session:
        assert dict(session.execute(select(Delivery.recipient, Delivery.sender)).all()) == {
            "a": "lisi",
            "b": "lisi",
        }


@pytest.mark.parametrize(
    ("conversation", "channel"),
    [
        ({"last": timedelta(hours=-47)}, "kf"),
        ({"last": timedelta(hours=-47, minutes=-56)}, "mass"),  # closes before the send could go out
        ({"last": timedelta(hours=-1), "replies": 4}, "kf"),
        ({"last": timedelta(hours=-1), "replies": 5}, "mass"),
        ({"last": timedelta(hours=-1), "servicer_userid": "zhangsan"}, "mass"),
    ],
)
def test_kf_is_chosen_only_while_its_window_is_open_with_replies_left(
    db: Database, settings: Settings, scripts: None, conversation: dict[str, Any], channel: str
) -> None:
    with db.transaction() as session:
        lead(session, "c", owner="zhangsan")
        relate(session, "zhangsan", "c")
        last = TUESDAY + conversation.pop("last")
        kf_window(session, "c", last, replies=conversation.pop("replies", 0), **conversation)
        run_id = run(session, campaign(session), TUESDAY)
    plan_run(db, settings, run_id, now=TUESDAY)
    assert recipients(db, run_id) == {"c": (channel, None)}
    with db.read() as session:
        d = session.scalars(select(Delivery)).one()
        assert d.channel == {"kf": Channel.KF_TEXT, "mass": Channel.MASS_TEMPLATE}[channel]
        if channel == "kf":
            assert d.deadline == last + timedelta(hours=48)


def test_the_freshest_open_kf_conversation_carries_the_message(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        lead(session, "c")
        kf_window(session, "c", TUESDAY - timedelta(hours=10), open_kfid="wkOLD")
        kf_window(session, "c", TUESDAY - timedelta(hours=2), open_kfid="wkNEW")
        run_id = run(session, campaign(session), TUESDAY)
    plan_run(db, settings, run_id, now=TUESDAY)
    with db.read() as session:
        assert session.scalars(select(Delivery)).one().params["open_kfid"] == "wkNEW"
        replies = dict(session.execute(select(KfConversation.open_kfid, KfConversation.replies_since)).all())
        assert replies == {"wkOLD": 0, "wkNEW": 1}


def test_a_course_invite_renders_the_course_and_reminders_go_to_registrants_only(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        course = Course(
            key="etf", title="ETF定投入门", speaker_name="张老师", speaker_sac_no="S0570516010001",
            starts_at=sh("2026-11-26T20:00"), link="https://work.weixin.qq.com/live/abc", created_by="olivia",
        )  # fmt: skip
        session.add(course)
        session.flush()
        for ext in ("r1", "r2", "x"):
            row = lead(session, ext, owner="zhangsan", subscribed=False)
            relate(session, "zhangsan", ext)
            if ext != "x":
                session.add(CourseRegistration(course_id=course.id, lead_id=row.id, channel="kf"))
        common: dict[str, Any] = {"schedule_kind": "course", "course_id": course.id, "offset_minutes": -30}
        invite = campaign(session, "invite", "course_invite", "course_invite", **common)
        reminder = campaign(session, "remind", "course_reminder", "course_reminder", **common)
        invite_run = run(session, invite, sh("2026-11-25T10:00"))
        reminder_run = run(session, reminder, sh("2026-11-26T19:30"))
    plan = plan_run(db, settings, invite_run, now=sh("2026-11-25T10:00"))
    assert plan.message is not None
    assert "《ETF定投入门》" in plan.message.text and "11月26日 周四 20:00" in plan.message.text
    assert "S0570516010001" in plan.message.text
    assert set(recipients(db, invite_run)) == {"r1", "r2", "x"}
    plan_run(db, settings, reminder_run, now=sh("2026-11-26T19:30"))
    # 19:30 is before quiet hours; the invite was yesterday, so the daily cap allows it.
    assert recipients(db, reminder_run) == {"r1": ("mass", None), "r2": ("mass", None)}


# --- whole-run skips ---------------------------------------------------------------------------------


def _kill(session: Session) -> None:
    ensure_people(session)
    stop_sending(session, "olivia", "wrong figures in today's report")


@pytest.mark.parametrize(
    ("setup", "occurrence", "status", "reason"),
    [
        (_kill, TUESDAY, "skipped", "sending stopped by olivia: wrong figures in today's report"),
        (lambda s: None, NATIONAL_DAY, "skipped", "2026-10-01 is not a trading day"),
        (lambda s: None, sh("2026-11-28T08:30"), "skipped", "2026-11-28 is not a trading day"),
    ],
    ids=["kill_switch", "holiday", "weekend"],
)
def test_a_run_is_skipped_with_its_reason_and_writes_no_recipient(
    db: Database,
    settings: Settings,
    scripts: None,
    setup: Any,
    occurrence: datetime,
    status: str,
    reason: str,
) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        setup(session)
        run_id = run(session, campaign(session), occurrence)
    plan = plan_run(db, settings, run_id, now=occurrence)
    assert (plan.status, plan.reason) == (status, reason)
    with db.read() as session:
        stored = session.get(CampaignRun, run_id)
        assert stored is not None and (stored.status, stored.reason) == (status, reason)
        assert session.scalar(select(func.count()).select_from(RunRecipient)) == 0
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.scalar(select(func.count()).select_from(Alert)) == 0


@pytest.mark.parametrize("status", ["paused", "archived"])
def test_a_paused_or_archived_campaign_sends_nothing(
    db: Database, settings: Settings, scripts: None, status: str
) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        run_id = run(session, campaign(session, status=status), TUESDAY)
    plan = plan_run(db, settings, run_id, now=TUESDAY)
    assert (plan.status, plan.reason) == ("skipped", f"campaign {status}")
    assert recipients(db, run_id) == {}


def test_no_approved_script_fails_closed_and_alerts_operators_and_compliance(
    db: Database, settings: Settings
) -> None:
    with db.transaction() as session:
        ensure_people(session)
        cat.create_script(session, "morning_report", "morning_report", "olivia")
        saved = cat.save_draft(session, "morning_report", body("morning_report"), "olivia", POLICY)
        cat.submit(session, "morning_report", saved.version.number, "olivia", POLICY)  # never approved
        mixed_audience(session)
        run_id = run(session, campaign(session), TUESDAY)
    plan = plan_run(db, settings, run_id, now=TUESDAY)
    assert plan.status == "skipped" and plan.reason is not None
    assert plan.reason.startswith("no approved script: no approved version of 'morning_report'")
    with db.read() as session:
        alert = session.scalars(select(Alert)).one()
        assert (alert.severity, alert.audience, alert.kind) == ("critical", "both", "run.no_approved_script")
        assert "'morning'" in alert.message and "'morning_report'" in alert.message
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_an_approval_valid_only_for_another_day_is_not_sent(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        ensure_people(session)
        cat.create_script(session, "morning_report", "morning_report", "olivia")
        saved = cat.save_draft(session, "morning_report", body("morning_report"), "olivia", POLICY)
        cat.submit(session, "morning_report", saved.version.number, "olivia", POLICY)
        monday = sh("2026-11-23T00:00")
        cat.approve(session, "morning_report", 1, "chen", POLICY, valid_from=monday,
                    valid_until=monday + timedelta(days=1))  # fmt: skip
        mixed_audience(session)
        camp = campaign(session)
        monday_run, tuesday_run = run(session, camp, sh("2026-11-23T08:30")), run(session, camp, TUESDAY)
    assert plan_run(db, settings, monday_run, now=sh("2026-11-23T08:30")).status == "planned"
    assert plan_run(db, settings, tuesday_run, now=TUESDAY).status == "skipped"


def _course(session: Session, speaker: str) -> int:
    course = Course(
        key="c", title="ETF定投入门", speaker_name=speaker, speaker_sac_no="S0570516010001",
        starts_at=sh("2026-11-26T20:00"), link="https://work.weixin.qq.com/live/abc", created_by="olivia",
    )  # fmt: skip
    session.add(course)
    session.flush()
    return course.id


@pytest.mark.parametrize(
    ("speaker", "reason", "alert_kinds"),
    [
        ("张老师稳赚不赔内幕消息", "final text of course_invite v1 blocked by C1.returns, C5.inside_info",
         ["send.blocked"]),
        ("张老师返佣", "held for compliance review", ["run.held"]),
    ],
    ids=["block", "review"],
)  # fmt: skip
def test_a_final_text_that_fails_the_lint_skips_the_whole_run_and_alerts(
    db: Database, settings: Settings, scripts: None, speaker: str, reason: str, alert_kinds: list[str]
) -> None:
    with db.transaction() as session:
        course_id = _course(session, speaker)
        lead(session, "c", owner="zhangsan")
        relate(session, "zhangsan", "c")
        invite = campaign(session, "invite", "course_invite", "course_invite", schedule_kind="course",
                          course_id=course_id, offset_minutes=-1440)  # fmt: skip
        run_id = run(session, invite, sh("2026-11-25T20:00"))
    plan = plan_run(db, settings, run_id, now=sh("2026-11-25T20:00"))
    assert (plan.status, plan.reason) == ("skipped", reason)
    with db.read() as session:
        alerts = list(session.scalars(select(Alert)))
        assert [a.kind for a in alerts] == alert_kinds
        assert all(a.audience == "both" for a in alerts)
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.scalar(select(func.count()).select_from(RunRecipient)) == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: campaign(s, audience={"regions": ["sh"]}), "audience: unknown key(s) regions"),
        (lambda s: campaign(s, "inv", "course_invite", "course_invite", schedule_kind="course"),
         "course campaign without a course"),
        (lambda s: campaign(s, script_key="course_invite"),
         "script 'course_invite' is a course_invite script; morning_report sends morning_report"),
    ],
    ids=["audience", "course", "script_kind"],
)  # fmt: skip
def test_a_misconfigured_campaign_fails_its_run_and_alerts_operators(
    db: Database, settings: Settings, scripts: None, make: Any, reason: str
) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        run_id = run(session, make(session), TUESDAY)
    plan = plan_run(db, settings, run_id, now=TUESDAY)
    assert plan.status == "failed" and plan.reason is not None and plan.reason.startswith(reason)
    with db.read() as session:
        alert = session.scalars(select(Alert)).one()
        assert (alert.kind, alert.audience) == ("run.misconfigured", "operator")
        assert session.scalar(select(func.count()).select_from(RunRecipient)) == 0


# --- per-recipient skips: quiet hours and caps ------------------------------------------------------


def test_a_run_in_quiet_hours_sends_nothing_to_customers(
    db: Database, settings: Settings, scripts: None
) -> None:
    late = sh("2026-11-24T21:30")
    with db.transaction() as session:
        mixed_audience(session)
        run_id = run(session, campaign(session, schedule_kind="daily"), late)
    plan = plan_run(db, settings, run_id, now=late)
    assert plan.status == "planned" and plan.counts["skipped"] == {"quiet_hours": 8}
    found = recipients(db, run_id)
    assert set(found.values()) == {("none", "quiet_hours")} and len(found) == 8
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert (
            session.scalar(
                select(KfConversation.replies_since).where(KfConversation.external_user_id == "kf_open")
            )
            == 0
        )


def test_a_run_planned_late_is_judged_at_its_send_time(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        lead(session, "c", owner="zhangsan")
        relate(session, "zhangsan", "c")
        run_id = run(session, campaign(session, schedule_kind="daily"), sh("2026-11-24T20:50"))
    plan_run(db, settings, run_id, now=sh("2026-11-24T21:05"))  # the scheduler was down
    assert recipients(db, run_id) == {"c": ("none", "quiet_hours")}


@pytest.mark.parametrize(
    ("window", "clock", "quiet"),
    [
        ("21:00-08:00", "20:59", False), ("21:00-08:00", "21:00", True), ("21:00-08:00", "03:00", True),
        ("21:00-08:00", "07:59", True), ("21:00-08:00", "08:00", False), ("21:00-08:00", "08:30", False),
        ("12:00-13:30", "12:45", True), ("12:00-13:30", "13:30", False), ("", "03:00", False),
    ],
)  # fmt: skip
def test_quiet_hours_wrap_midnight_in_shanghai_time(window: str, clock: str, quiet: bool) -> None:
    settings = Settings().replace(campaigns={"quiet_hours": window})
    at = sh(f"2026-11-24T{clock}").astimezone(UTC)
    assert in_quiet_hours(settings.campaigns.quiet_window(), at) is quiet


def _daily_runs(session: Session, days: list[str]) -> list[int]:
    ids = []
    for i, day in enumerate(days):
        camp = campaign(session, f"m{i}", schedule_kind="daily")
        ids.append(run(session, camp, sh(day)))
    return ids


def test_caps_count_campaign_sends_per_shanghai_day_iso_week_and_calendar_month(
    db: Database, settings: Settings, scripts: None
) -> None:
    settings = settings.replace(campaigns={"cap_per_day": 1, "cap_per_week": 2, "cap_per_month": 3})
    days = [
        "2026-11-09T08:30",  # Mon, week 46: sent (1 this week, 1 this month)
        "2026-11-09T20:30",  # same Shanghai day: daily cap
        "2026-11-10T08:30",  # Tue: sent (2 this week)
        "2026-11-11T08:30",  # Wed: weekly cap
        "2026-11-16T08:30",  # Mon, week 47: sent (3 this month)
        "2026-11-17T08:30",  # Tue: monthly cap (1 this week)
        "2026-12-01T08:30",  # Tue, a new month: sent
    ]
    expected = ["mass", "cap_day", "mass", "cap_week", "mass", "cap_month", "mass"]
    with db.transaction() as session:
        lead(session, "c", owner="zhangsan")
        relate(session, "zhangsan", "c")
        run_ids = _daily_runs(session, days)
    got = []
    for run_id, day in zip(run_ids, days, strict=True):
        plan_run(db, settings, run_id, now=sh(day))
        channel, reason = recipients(db, run_id)["c"]
        got.append(reason or channel)
    assert got == expected


def test_two_runs_planned_at_once_never_break_a_cap_together(
    db: Database, settings: Settings, scripts: None
) -> None:
    settings = settings.replace(campaigns={"cap_per_day": 1})
    customers = [f"c{i:02d}" for i in range(40)]
    with db.transaction() as session:
        for ext in customers:
            lead(session, ext, owner="zhangsan")
            relate(session, "zhangsan", ext)
        run_ids = _daily_runs(session, ["2026-11-24T08:30", "2026-11-24T08:30"])
    start = threading.Barrier(len(run_ids))
    errors: list[BaseException] = []

    def plan(run_id: int) -> None:
        try:
            start.wait(timeout=10)
            plan_run(db, settings, run_id, now=TUESDAY, batch_size=3)  # many interleaved batches
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=plan, args=(run_id,)) for run_id in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    plans = [recipients(db, run_id) for run_id in run_ids]
    for ext in customers:  # each customer gets exactly one of the two messages that day
        assert sorted(plan[ext] for plan in plans) == [("mass", None), ("none", "cap_day")], ext
    with db.read() as session:
        per_customer = session.execute(
            select(Delivery.recipient, func.count())
            .where(Delivery.purpose_key.like("run:%"))
            .group_by(Delivery.recipient)
        ).all()
        assert dict(per_customer) == dict.fromkeys(customers, 1)
        assert ledger.verify(session).ok


def test_a_kf_reply_holding_its_conversation_and_a_planner_never_deadlock(
    db: Database, settings: Settings, scripts: None
) -> None:
    # A kf reply locks its conversation, then appends to the ledger. The planner must take the same
    # two locks in the same order; the other order deadlocks and PostgreSQL aborts one of them.
    if not db.is_postgres:
        pytest.skip("SQLite serializes writing transactions: there are no row locks to order")
    with db.transaction() as session:
        lead(session, "c", owner="zhangsan")
        relate(session, "zhangsan", "c")
        kf_window(session, "c", TUESDAY - timedelta(hours=1))
        run_id = run(session, campaign(session), TUESDAY)
    locked, errors = threading.Event(), []

    def reply() -> None:
        try:
            with db.transaction() as session:
                session.scalars(select(KfConversation).with_for_update()).one()
                locked.set()
                deadline = time.monotonic() + 10
                while not _waiting_on_a_lock(db) and time.monotonic() < deadline:
                    time.sleep(0.02)  # until the planner waits for this conversation
                ledger.append_message(session, recipient="c", sender="", channel="kf_text",
                                      script_key="fallback", script_version=1, content_hash="h",
                                      approval_id=1, rendered_text="x", lint_verdict="pass",
                                      lexicon_version="v", now=TUESDAY)  # fmt: skip
        except BaseException as exc:  # reported below
            errors.append(exc)

    replier = threading.Thread(target=reply)
    replier.start()
    assert locked.wait(timeout=10)
    try:
        plan_run(db, settings, run_id, now=TUESDAY)
    finally:
        replier.join(timeout=30)
    assert errors == []
    assert recipients(db, run_id) == {"c": ("kf", None)}
    with db.read() as session:
        assert ledger.verify(session).ok


def _waiting_on_a_lock(db: Database) -> bool:
    """Whether another session of this database waits for a lock (the planner, in the test above)."""
    with db.engine.connect() as conn:
        waiting = conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE '%kf_conversations%'"
            )
        )
    return bool(waiting)


def test_the_day_cap_follows_the_shanghai_date_not_utc(
    db: Database, settings: Settings, scripts: None
) -> None:
    # 07:30 and 08:30 Shanghai on the 24th straddle midnight UTC (23:30 on the 23rd, 00:30 on the 24th).
    settings = settings.replace(campaigns={"quiet_hours": ""})
    days = ["2026-11-24T07:30", "2026-11-24T08:30", "2026-11-25T07:59"]
    with db.transaction() as session:
        lead(session, "c", owner="zhangsan")
        relate(session, "zhangsan", "c")
        run_ids = _daily_runs(session, days)
    got = []
    for run_id, day in zip(run_ids, days, strict=True):
        plan_run(db, settings, run_id, now=sh(day))
        got.append(recipients(db, run_id)["c"])
    assert got == [("mass", None), ("none", "cap_day"), ("mass", None)]


def test_only_campaign_sends_that_went_or_may_go_out_count_toward_caps(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        approved(session, "subscribe_confirm", "subscribe_confirm", body("subscribe_confirm"))
        lead(session, "c", owner="zhangsan", display_name="王先生")
        relate(session, "zhangsan", "c")
        # A reply earlier today does not count: it is not a campaign send.
        values = {"lead": {"display_name": "王先生"}, "firm": {"name": "示例证券", "opt_out": "回复TD退订"}}
        reply = enqueue(
            session,
            purpose_key="kf:reply:1",
            channel=Channel.KF_TEXT,
            recipient="c",
            script_key="subscribe_confirm",
            values=values,
            policy=POLICY,
            now=TUESDAY - timedelta(hours=1),
        )
        assert reply.status == "queued"  # fmt: skip
        first, second = _daily_runs(session, ["2026-11-24T08:00", "2026-11-24T08:30"])
    plan_run(db, settings, first, now=sh("2026-11-24T08:00"))
    assert recipients(db, first) == {"c": ("mass", None)}
    with db.transaction() as session:  # the member's task failed for this customer
        session.execute(sa.update(Delivery).where(Delivery.purpose_key.like("run:%")).values(status="failed"))
    plan_run(db, settings, second, now=TUESDAY)
    assert recipients(db, second) == {"c": ("mass", None)}


# --- per-recipient decision ---------------------------------------------------------------------------


def test_the_decision_rechecks_opt_out_and_reachability_before_anything_else() -> None:
    from bot.campaigns.audience import AudienceMember

    caps = Settings().campaigns

    def member(**kw: Any) -> AudienceMember:
        base: dict[str, Any] = dict(lead_id=1, external_user_id="c", owner_userid=None, platform=None,
                                    hook_code=None, stage="new", opted_out=False, reachable=True)  # fmt: skip
        return AudienceMember(**(base | kw))

    def reason(m: AudienceMember, quiet: bool = True) -> str | None:
        return decide(
            m, quiet=quiet, usage=(9, 9, 9), caps=caps, relations=[], conversations=[], at=TUESDAY
        ).reason

    assert reason(member(opted_out=True)) == "opted_out"
    assert reason(member(reachable=False)) == "unreachable"
    assert reason(member()) == "quiet_hours"
    assert reason(member(), quiet=False) == "cap_day"


# --- audience -----------------------------------------------------------------------------------------


def test_the_audience_applies_every_filter_and_never_includes_opted_out_or_unreachable(db: Database) -> None:
    with db.transaction() as session:
        course = Course(key="k", title="t", speaker_name="s", speaker_sac_no="S1", starts_at=TUESDAY,
                        link="https://work.weixin.qq.com/", created_by="o")  # fmt: skip
        session.add(course)
        session.flush()
        a = lead(session, "a", platform="xiaohongshu", hook_code="XHS888", stage="qualified")
        b = lead(session, "b", platform="douyin", hook_code="DY1", stage="new", subscribed=False)
        c = lead(session, "c", platform="xiaohongshu", hook_code="XHS999", stage="new")
        lead(session, "d", platform="xiaohongshu", opted_out=True)
        lead(session, "e", platform="xiaohongshu", reachable=False)
        for row, tags in ((a, ["vip", "etf"]), (b, ["vip", "etf"]), (c, ["etf"])):
            for tag in tags:
                session.add(LeadTag(lead_id=row.id, name=tag))
        session.add(CourseRegistration(course_id=course.id, lead_id=b.id, channel="kf"))
        session.flush()

        def who(data: dict[str, Any], kind: str = "announcement") -> list[str]:
            audience = AudienceFilter.from_json(data, kind, course.id)
            return [m.external_user_id for m in fetch_batch(session, audience)]

        assert who({}) == ["a", "b", "c"]
        assert who({}, kind="morning_report") == ["a", "c"]  # subscribers by default
        assert who({"subscribed_only": False}, kind="morning_report") == ["a", "b", "c"]
        assert who({}, kind="course_reminder") == ["b"]  # registrants by default
        assert who({"platforms": ["xiaohongshu"]}) == ["a", "c"]
        assert who({"hook_codes": ["XHS888", "DY1"]}) == ["a", "b"]
        assert who({"stages": ["new"]}) == ["b", "c"]
        assert who({"tags": ["etf"]}) == ["a", "b", "c"]
        assert who({"tags": ["etf", "vip"]}) == ["a", "b"]  # all of them
        assert who({"tags": ["etf", "vip"], "subscribed_only": True}) == ["a"]
        assert who({"registrants_only": True}) == ["b"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"platform": ["x"]}, "unknown key(s) platform"),
        ({"platforms": "xiaohongshu"}, "audience.platforms: expected a list"),
        ({"tags": [""]}, "audience.tags: expected a list"),
        ({"subscribed_only": "yes"}, "audience.subscribed_only: expected true or false"),
        ({"registrants_only": True}, "the campaign has no course"),
    ],
)
def test_a_malformed_audience_is_refused_with_the_reason(data: dict[str, Any], message: str) -> None:
    with pytest.raises(AudienceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AudienceFilter.from_json(data, "announcement", None)


def test_the_audience_streams_in_keyset_pages_of_bounded_size(db: Database) -> None:
    with db.transaction() as session:
        for i in range(11):
            lead(session, f"c{i:02}")
    statements: list[tuple[str, list[Any]]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "FROM leads" in statement and "ORDER BY leads.id" in statement:
            values = list(params.values()) if isinstance(params, dict) else list(params)
            statements.append((statement, values))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        pages = [len(page) for page in iter_batches(db, AudienceFilter(), batch_size=4)]
        streamed = [m.external_user_id for m in stream(db, AudienceFilter(), batch_size=4)]
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    assert pages == [4, 4, 3]
    assert streamed == [f"c{i:02}" for i in range(11)]
    assert len(statements) == 8  # two passes of three pages and a last empty one: no full read
    assert all("LIMIT" in sql and "leads.id >" in sql and 4 in values for sql, values in statements)


def test_a_large_run_is_planned_in_bounded_batches_one_transaction_each(
    db: Database, settings: Settings, scripts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, size = 23, 5
    with db.transaction() as session:
        for i in range(n):
            lead(session, f"c{i:02}", owner="zhangsan")
            relate(session, "zhangsan", f"c{i:02}")
        run_id = run(session, campaign(session), TUESDAY)
    sizes: list[int] = []
    real = planner_module.fetch_batch

    def counting(*args: Any, **kw: Any) -> Any:
        batch = real(*args, **kw)
        sizes.append(len(batch))
        return batch

    monkeypatch.setattr(planner_module, "fetch_batch", counting)
    commits: list[object] = []

    def on_commit(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(db.engine, "commit", on_commit)
    try:
        plan = plan_run(db, settings, run_id, now=TUESDAY, batch_size=size)
    finally:
        sa.event.remove(db.engine, "commit", on_commit)
    assert plan.counts["mass"] == n
    assert sizes == [5, 5, 5, 5, 3, 0]
    # Preparation, each page, the end: pages are read ahead in read-only transactions.
    assert len(commits) == math.ceil(n / size) + 2


def test_an_ab_test_of_the_report_sends_each_lead_its_sticky_arm_in_tasks_per_arm(
    db: Database, settings: Settings, scripts: None
) -> None:
    settings = settings.replace(campaigns={"mass_task_max": 4})
    customers = [f"ab{i:02d}" for i in range(40)]
    with db.transaction() as session:
        for ext in customers:
            lead(session, ext, owner="zhangsan")
            relate(session, "zhangsan", ext)
        kf_window(session, "ab00", TUESDAY - timedelta(hours=1))  # one recipient by kf
        b_body = body("morning_report").replace("隔夜要闻", "海外要闻")
        saved = cat.save_draft(session, "morning_report", b_body, "olivia", POLICY)
        cat.submit(session, "morning_report", saved.version.number, "olivia", POLICY)
        cat.approve(session, "morning_report", saved.version.number, "chen", POLICY, as_variant=True)
        run_id = run(session, campaign(session), TUESDAY)
    dry = plan_run(db, settings, run_id, now=TUESDAY, dry_run=True, batch_size=7)
    with db.read() as session:  # a dry run assigns nobody
        assert session.scalar(select(func.count()).select_from(VariantAssignment)) == 0
    real = plan_run(db, settings, run_id, now=TUESDAY, batch_size=7)
    assert (dry.counts, dry.tasks, dry.variants) == (real.counts, real.tasks, real.variants)
    texts = {v.script_version: v.text for v in real.variants}
    assert sorted(texts) == [1, 2] and "海外要闻" in texts[2] and "隔夜要闻" in texts[1]
    with db.read() as session:
        arm_version = dict(
            session.execute(
                select(Lead.external_user_id, ScriptVersion.number)
                .join(VariantAssignment, VariantAssignment.lead_id == Lead.id)
                .join(ScriptVariant, ScriptVariant.id == VariantAssignment.variant_id)
                .join(ScriptVersion, ScriptVersion.id == ScriptVariant.version_id)
            ).all()
        )
        assert sorted(arm_version) == customers and set(arm_version.values()) == {1, 2}
        sent = session.scalars(select(Delivery).where(Delivery.purpose_key.like("run:%"))).all()
        assert len(sent) == len(customers)
        for d in sent:  # each customer gets the text of its own arm, on either channel
            assert (d.script_version, d.text) == (arm_version[d.recipient], texts[arm_version[d.recipient]])
        assert {d.channel for d in sent} == {Channel.KF_TEXT, Channel.MASS_TEMPLATE}
        tasks = session.scalars(select(MassTask).where(MassTask.run_id == run_id)).all()
        for task in tasks:  # a task carries one text: its customers all share that arm
            members = [d for d in sent if (d.params or {}).get("mass_task_id") == task.id]
            assert members and len(members) == task.recipients <= 4
            assert {d.script_version for d in members} == {task.script_version}
            assert task.text == texts[task.script_version]
        assert ledger.verify(session).ok
    # Sticky: a second run of the same campaign sends every lead the same arm again.
    with db.transaction() as session:
        again = run(session, session.scalars(select(Campaign)).one(), TUESDAY + timedelta(days=1))
    plan_run(db, settings, again, now=TUESDAY + timedelta(days=1))
    with db.read() as session:
        later = session.execute(
            select(Delivery.recipient, Delivery.script_version).where(
                Delivery.purpose_key.like(f"run:{again}:%")
            )
        ).all()
        assert later and all(arm_version[ext] == version for ext, version in later)


# --- dry runs -----------------------------------------------------------------------------------------


def test_a_dry_run_equals_the_real_plan_and_writes_nothing(
    db: Database, settings: Settings, scripts: None
) -> None:
    settings = settings.replace(campaigns={"mass_task_max": 2})
    with db.transaction() as session:
        mixed_audience(session)
        for i in range(5):
            lead(session, f"extra{i}", owner="zhangsan")
            relate(session, "zhangsan", f"extra{i}")
        # An earlier send today puts one customer over the daily cap.
        earlier = TUESDAY - timedelta(hours=1)
        session.add(Delivery(purpose_key="run:999:1", channel=Channel.MASS_TEMPLATE, recipient="extra0",
                             script_key="morning_report", script_version=1, approval_id=1, content_hash="x",
                             text="x", lint_verdict="pass", status="sent", created_at=earlier))  # fmt: skip
        camp = campaign(session)
        run_id = run(session, camp, TUESDAY)
    before = table_counts(db)
    dry = plan_run(db, settings, run_id, now=TUESDAY, dry_run=True, batch_size=3)
    hypothetical = dry_run_campaign(db, settings, "morning", TUESDAY, batch_size=3)
    streamed: list[list[PlannedRecipient]] = []
    summary = dry_run_campaign(db, settings, "morning", TUESDAY, batch_size=3, sink=streamed.append)
    assert table_counts(db) == before
    # Streamed batch by batch (at most a page each, in lead order), none kept: the same plan.
    assert summary.recipients == [] and all(0 < len(b) <= 3 for b in streamed)
    assert [r for b in streamed for r in b] == hypothetical.recipients
    assert (summary.counts, summary.tasks, summary.message) == (
        hypothetical.counts,
        hypothetical.tasks,
        hypothetical.message,
    )
    real = plan_run(db, settings, run_id, now=TUESDAY, batch_size=3)
    with db.read() as session:
        stored = load_plan(session, run_id, with_recipients=True)
    assert dry.dry_run and not real.dry_run
    assert dry.recipients == stored.recipients == hypothetical.recipients
    assert len(dry.recipients) == 13 and ("none", "cap_day") in {
        (r.channel, r.skip_reason) for r in dry.recipients
    }
    assert dry.counts == real.counts == stored.counts == hypothetical.counts
    assert dry.tasks == real.tasks == hypothetical.tasks
    assert dry.message == real.message == hypothetical.message
    # A dry run of a run already planned shows what was planned.
    again = plan_run(db, settings, run_id, now=TUESDAY, dry_run=True)
    assert again.recipients == stored.recipients and again.status == "planned"


def test_a_dry_run_reports_a_skip_without_alerting(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        campaign(session, script_key="missing")
    plan = dry_run_campaign(db, settings, "morning", TUESDAY)
    assert plan.status == "skipped" and plan.reason is not None and "no script 'missing'" in plan.reason
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0


def test_a_plan_renders_as_csv_and_json() -> None:
    plan = RunPlan("morning", TUESDAY, 7, "planned", dry_run=True, counts={"recipients": 2},
                   recipients=[PlannedRecipient(1, "a", "kf", None, "", KF),
                               PlannedRecipient(2, "b", "none", "no_member")])  # fmt: skip
    assert plan.to_csv().splitlines() == [
        "lead_id,external_user_id,channel,skip_reason,sender,open_kfid",
        f"1,a,kf,,,{KF}",
        "2,b,none,no_member,,",
    ]
    data = json.loads(plan.to_json())
    assert data["occurrence"] == "2026-11-24T00:30:00+00:00" and data["run_id"] == 7
    assert data["recipients"][1] == {"lead_id": 2, "external_user_id": "b", "channel": "none",
                                     "skip_reason": "no_member", "sender": "", "open_kfid": ""}  # fmt: skip


# --- controls -----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_kill_switch_stops_the_dispatcher_within_a_second_and_mass_rows_are_never_claimed(
    services: Services, scripts: None
) -> None:
    db, settings = services.db, services.settings
    with db.transaction() as session:
        mixed_audience(session)
        run_id = run(session, campaign(session), TUESDAY)
    plan_run(db, settings, run_id, now=TUESDAY)
    dispatcher = DeliveryDispatcher(
        settings, db, services.coordinator, services.client, clock=lambda: TUESDAY
    )
    clock = FakeClock()
    dispatcher.kill_switch = KillSwitch(db, clock=clock)
    with db.transaction() as session:
        kf_id = session.scalars(select(Delivery.id).where(Delivery.channel == Channel.KF_TEXT)).one()
        ensure_people(session)
        stop_sending(session, "olivia", "halt")
    assert dispatcher.claim() == []
    clock.now += 5
    assert dispatcher.claim() == []
    with db.read() as session:
        assert session.scalars(select(Delivery.status).where(Delivery.id == kf_id)).one() == "queued"
    with db.transaction() as session:
        resume_sending(session, "olivia")
    clock.now += 0.5
    assert dispatcher.claim() == []  # the answer is remembered for under a second
    clock.now += 0.5
    assert dispatcher.claim() == [kf_id]  # the kf message only: mass recipients belong to their task
    with db.transaction() as session:  # even when due, a mass-send recipient is its task's to send
        session.execute(sa.update(Delivery).values(next_attempt_at=TUESDAY - timedelta(hours=1)))
    assert dispatcher.claim() == []
    with db.read() as session:
        statuses = dict(session.execute(select(Delivery.channel, Delivery.status).distinct()).all())
        assert statuses == {"kf_text": "sending", "mass_template": "queued"}


def test_the_cached_kill_switch_reads_at_most_once_per_second(db: Database) -> None:
    reads: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "switches" in statement:
            reads.append(statement)

    clock = FakeClock()
    switch = KillSwitch(db, ttl=5.0, clock=clock)  # never trusted longer than a second
    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        for _ in range(10):
            switch.on()
        clock.now += 0.5
        switch.on()
        clock.now += 0.5
        switch.on()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    assert len(reads) == 2


def test_stopping_and_resuming_sending_is_audited_and_needs_a_reason(db: Database) -> None:
    with db.transaction() as session:
        assert switch_state(session).on is False and not sending_stopped(session)
        with pytest.raises(ControlError, match="reason"):
            stop_sending(session, "olivia", "  ")
        with pytest.raises(ControlError, match="actor"):
            stop_sending(session, "", "x")
        state = stop_sending(session, "olivia", "bad data", now=TUESDAY)
        assert state.on and state.changed and state.changed_by == "olivia" and sending_stopped(session)
        again = stop_sending(session, "chen", "other")
        assert not again.changed and again.reason == "bad data"
        assert resume_sending(session, "chen", now=TUESDAY).on is False
        audit = [(a.actor, a.action) for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert audit == [("olivia", "sending.stop"), ("chen", "sending.resume")]


# --- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"quiet_hours": "21-8"}, "campaigns.quiet_hours: expected HH:MM-HH:MM"),
        ({"quiet_hours": "25:00-08:00"}, "campaigns.quiet_hours"),
        ({"quiet_hours": "08:00-08:00"}, "start and end are equal"),
        ({"cap_per_day": 0}, "cap_per_day"),
        ({"cap_per_day": 3, "cap_per_week": 2}, "day <= week"),
        ({"cap_per_month": 31}, "<= 28"),
        ({"mass_task_max": 10001}, "mass_task_max"),
    ],
)
def test_campaign_settings_are_validated(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings().replace(campaigns=values)


def test_campaign_settings_come_from_the_environment() -> None:
    settings = load_settings(environ={"BOT_CAMPAIGNS__QUIET_HOURS": "", "BOT_CAMPAIGNS__CAP_PER_WEEK": "3"})
    assert settings.campaigns.quiet_window() is None and settings.campaigns.cap_per_week == 3
    assert Settings().campaigns.quiet_window() == (21 * 60, 8 * 60)


# --- command line -------------------------------------------------------------------------------------


def test_runs_commands_list_show_plan_and_dry_run(
    runner: CliRunner, env: dict[str, str], services: Services, scripts: None
) -> None:
    db = services.db
    env = {**env, "BOT_CAMPAIGNS__QUIET_HOURS": ""}  # `runs plan` sends at the real time
    with db.transaction() as session:
        mixed_audience(session)  # the kf windows are closed by December
        camp = campaign(session)
        run_id = run(session, camp, sh("2026-12-01T08:30"))
    before = table_counts(db)
    result = runner.invoke(main, ["runs", "dry-run", "morning", "--at", "2026-12-01T08:30"], env=env)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert rows[0] == "lead_id,external_user_id,channel,skip_reason,sender,open_kfid" and len(rows) == 9
    assert "dry run: nothing written" in result.stderr and "2026年12月1日 星期二" in result.stderr
    args = ["runs", "dry-run", "morning", "--at", "2026-12-01T08:30", "--format", "json"]
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["recipients"] == 8
    assert table_counts(db) == before
    result = runner.invoke(main, ["runs", "list"], env=env)
    assert "pending" in result.output and "morning" in result.output
    result = runner.invoke(main, ["runs", "plan", str(run_id)], env=env)
    assert result.exit_code == 0, result.output
    assert "planned" in result.output and "recipients: 8  kf: 0  mass: 4  skipped: 4" in result.output
    result = runner.invoke(main, ["runs", "show", str(run_id)], env=env)
    assert "skipped no_member: 3" in result.output and "task for lisi: 2 customers" in result.output
    assert runner.invoke(main, ["runs", "show", "999"], env=env).exit_code == 1
    result = runner.invoke(main, ["runs", "dry-run", "nope"], env=env)
    assert result.exit_code == 1 and "no campaign 'nope'" in result.output


def test_sending_commands_stop_resume_and_report(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    with services.db.transaction() as session:
        ensure_people(session)
    result = runner.invoke(main, ["sending", "status"], env=env)
    assert "sending: allowed" in result.output
    result = runner.invoke(main, ["sending", "stop", "--reason", "bad figures", "--as", "nobody"], env=env)
    assert result.exit_code == 1 and "no active account" in result.output
    result = runner.invoke(main, ["sending", "stop", "--reason", "bad figures", "--as", "olivia"], env=env)
    assert result.exit_code == 0 and "STOPPED" in result.output
    assert "bad figures" in runner.invoke(main, ["sending", "status"], env=env).output
    with services.db.read() as session:
        assert sending_stopped(session)
    result = runner.invoke(main, ["sending", "resume", "--as", "chen"], env=env)
    assert result.exit_code == 0 and "allowed (resumed by chen" in result.output
    with services.db.read() as session:
        assert not sending_stopped(session)


class Wakes:
    """Records the coordinator channels the planner wakes."""

    def __init__(self) -> None:
        self.channels: list[str] = []

    def wake(self, channel: str) -> None:
        self.channels.append(channel)


def test_planning_wakes_the_senders_when_there_is_something_to_send(
    db: Database, settings: Settings, scripts: None
) -> None:
    with db.transaction() as session:
        mixed_audience(session)
        camp = campaign(session)
        run_id, late_run = run(session, camp, TUESDAY), run(session, camp, sh("2026-11-24T22:00"))
    wakes = Wakes()
    plan_run(db, settings, run_id, now=TUESDAY, coordinator=wakes)  # type: ignore[arg-type]
    assert wakes.channels == ["outbox", "mass"]
    quiet = Wakes()
    plan_run(db, settings, late_run, now=sh("2026-11-24T22:00"), coordinator=quiet)  # type: ignore[arg-type]
    assert quiet.channels == []
