"""Campaigns as data: validated creation and changes, status transitions, audit, the command line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.accounts import create_user
from bot.campaigns.audience import AudienceFilter
from bot.campaigns.catalog import (
    CampaignError,
    Schedule,
    archive_campaign,
    course_campaigns,
    create_campaign,
    get_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
    update_campaign,
)
from bot.campaigns.courses import create_course
from bot.campaigns.planner import dry_run_campaign
from bot.cli import main
from bot.config import ComplianceSettings, Settings
from bot.db import Database
from bot.leads.hookcodes import create_code
from bot.services import Services
from models.audit import AuditEntry
from models.campaigns import Campaign, CampaignRun, Course
from models.users import User
from scripts_library import catalogue as cat
from tests.scripts_fixtures import POLICY, approved
from tests.test_planner import body as planner_body

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # Friday 10:00 in Shanghai
COURSE_START = NOW + timedelta(days=3)
SCRIPTS = {
    "morning_report": "morning_report",
    "course_invite": "course_invite",
    "course_reminder": "course_reminder",
    "news_flash": "keyword_reply",
    "welcome_default": "welcome",
}


def seed(session: Session) -> None:
    """People, one script of each kind a campaign may name, a hook code and a course."""
    create_user(session, "olivia", "operator", "operator-password")
    create_user(session, "adam", "admin", "admin-password1")
    create_user(session, "chen", "compliance", "compliance-password")
    create_user(session, "gone", "operator", "operator-password")
    session.scalars(select(User).where(User.username == "gone")).one().active = False
    for key, kind in SCRIPTS.items():
        cat.create_script(session, key, kind, "olivia")
    create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia")
    create_course(
        session,
        "etf-101",
        "ETF定投入门",
        "张老师",
        "S0570516010001",
        COURSE_START,
        "https://work.weixin.qq.com/live/abc",
        "olivia",
        ComplianceSettings(),
        now=NOW,
    )


@pytest.fixture
def session(services: Services) -> Iterator[Session]:
    with services.db.sessions() as s:
        seed(s)
        s.commit()
        yield s


def counts(session: Session) -> tuple[int, int]:
    session.flush()
    campaigns = session.scalar(select(func.count()).select_from(Campaign)) or 0
    audits = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    return campaigns, audits


def audits(session: Session, prefix: str = "campaign.") -> list[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.action.startswith(prefix)).order_by(AuditEntry.id)
    return list(session.scalars(stmt))


def morning(session: Session, key: str = "morning", **kw: Any) -> Campaign:
    args: dict[str, Any] = {
        "name": "交易日早报",
        "kind": "morning_report",
        "script_key": "morning_report",
        "schedule": Schedule.trading_days("08:30"),
        "actor": "olivia",
        "now": NOW,
    }
    args.update(kw)
    return create_campaign(session, key, **args)


def test_morning_report_campaign_goes_to_subscribers_by_default_and_is_audited(session: Session) -> None:
    campaign = morning(session, audience={"platforms": ["xiaohongshu", "douyin", "xiaohongshu"]})
    assert (campaign.status, campaign.schedule_kind, campaign.time_of_day) == (
        "active",
        "trading_days",
        "08:30",
    )
    assert campaign.run_at is None and campaign.course_id is None and campaign.offset_minutes is None
    assert campaign.audience == {"platforms": ["xiaohongshu", "douyin"], "subscribed_only": True}
    assert (campaign.created_by, campaign.created_at, campaign.updated_at) == ("olivia", NOW, NOW)
    (entry,) = audits(session)
    assert (entry.action, entry.actor, entry.target) == ("campaign.create", "olivia", "campaign:morning")
    assert entry.detail["script"] == "morning_report" and entry.detail["audience"] == campaign.audience
    with pytest.raises(CampaignError, match="subscribers only"):
        morning(session, "morning-all", audience={"subscribed_only": False}, actor="adam")
    assert [c.key for c in list_campaigns(session)] == ["morning"]
    assert len(audits(session)) == 1


@pytest.mark.parametrize(
    ("kind", "script", "schedule", "message"),
    [
        ("morning_report", "news_flash", Schedule.trading_days("08:30"), "keyword_reply script"),
        (
            "announcement",
            "morning_report",
            Schedule.daily("09:00"),
            "announcement campaigns send keyword_reply",
        ),
        ("course_invite", "course_reminder", Schedule.course("etf-101", -60), "course_reminder script"),
        ("course_reminder", "course_invite", Schedule.course("etf-101", -30), "course_invite script"),
        ("announcement", "welcome_default", Schedule.daily("09:00"), "welcome script"),
        ("announcement", "no_such_script", Schedule.daily("09:00"), "no script 'no_such_script'"),
        ("newsletter", "news_flash", Schedule.daily("09:00"), "kind: one of"),
    ],
)
def test_each_kind_sends_scripts_of_its_own_kind(
    session: Session, kind: str, script: str, schedule: Schedule, message: str
) -> None:
    before = counts(session)
    with pytest.raises(CampaignError, match=message):
        create_campaign(session, "c1", "c1", kind, script, schedule, "olivia", now=NOW)
    assert counts(session) == before and not session.new


@pytest.mark.parametrize(
    ("kind", "schedule", "message"),
    [
        ("morning_report", Schedule.daily("08:30"), "morning reports run on trading days"),
        ("morning_report", Schedule.trading_days("8:30"), "not HH:MM"),
        ("morning_report", Schedule.trading_days("24:00"), "not HH:MM"),
        ("morning_report", Schedule.trading_days("08:60"), "not HH:MM"),
        ("morning_report", Schedule("trading_days"), "trading_days needs time_of_day"),
        ("announcement", Schedule("daily", "09:00", run_at=NOW + timedelta(days=1)), "not run_at"),
        ("announcement", Schedule("weekly", "09:00"), "schedule: one of"),
        ("announcement", Schedule.once(datetime(2026, 12, 1, 9, 0)), "needs a time zone"),
        ("announcement", Schedule.once(NOW - timedelta(minutes=1)), "has passed"),
        ("announcement", Schedule.once(NOW), "has passed"),
        ("announcement", Schedule("once"), "once needs run_at"),
        ("announcement", Schedule("course", course_key="etf-101"), "needs offset_minutes"),
        ("announcement", Schedule.course("nope", -30), "no course 'nope'"),
        ("announcement", Schedule.course("etf-101", 31 * 24 * 60), "within"),
        ("course_invite", Schedule.once(NOW + timedelta(days=1)), "scheduled relative to a course"),
        ("course_reminder", Schedule.trading_days("08:30"), "scheduled relative to a course"),
        ("course_reminder", Schedule.course("etf-101", 10), "before the course starts"),
        ("course_invite", Schedule.course("etf-101", -4 * 24 * 60), "which has passed"),
    ],
)
def test_inconsistent_schedules_are_refused_and_change_nothing(
    session: Session, kind: str, schedule: Schedule, message: str
) -> None:
    script = {"announcement": "news_flash"}.get(kind, kind)
    before = counts(session)
    with pytest.raises(CampaignError, match=message):
        create_campaign(session, "c1", "c1", kind, script, schedule, "olivia", now=NOW)
    assert counts(session) == before and not session.new


@pytest.mark.parametrize(
    ("audience", "message"),
    [
        ({"platform": ["douyin"]}, "unknown platform; allowed"),
        ({"platforms": ["tiktok"]}, "unknown platforms tiktok"),
        ({"platforms": "douyin"}, "platforms is a list of strings"),
        ({"platforms": []}, "platforms is empty; leave it out"),
        ({"hook_codes": ["XHS888", "NOPE1"]}, "no hook code NOPE1"),
        ({"tags": [1]}, "tags is a list of strings"),
        ({"tags": ["x" * 65]}, "1-64 characters"),
        ({"stages": [""]}, "1-16 characters"),
        ({"subscribed_only": "yes"}, "subscribed_only is true or false"),
        ({"registrants_only": True}, "registrants_only applies to course invites and reminders only"),
        (["platforms"], "a JSON object"),
    ],
)
def test_bad_audiences_are_refused_and_change_nothing(session: Session, audience: Any, message: str) -> None:
    before = counts(session)
    with pytest.raises(CampaignError, match=message):
        morning(session, audience=audience)
    assert counts(session) == before and not session.new


def test_full_audience_is_kept_and_read_by_the_planner_filter(session: Session) -> None:
    audience = {
        "platforms": ["xiaohongshu"],
        "hook_codes": ["XHS888"],
        "tags": ["code:XHS888", "vip"],
        "stages": ["new", "qualified"],
        "subscribed_only": True,
        "registrants_only": True,
    }
    invite = create_campaign(
        session, "inv", "邀请", "course_invite", "course_invite", Schedule.course("etf-101", -60), "olivia",
        audience, now=NOW,
    )  # fmt: skip
    assert invite.audience == audience
    course = session.scalars(select(Course)).one()
    assert (invite.course_id, invite.offset_minutes) == (course.id, -60)
    planned = AudienceFilter.for_campaign(invite)
    assert (planned.hook_codes, planned.tags, planned.registrants_only) == (
        ("XHS888",),
        ("code:XHS888", "vip"),
        True,
    )


@pytest.mark.parametrize(
    ("actor", "message"),
    [
        ("chen", "chen \\(compliance\\) may not manage"),
        ("gone", "no active account"),
        ("nobody", "no active"),
    ],
)
def test_only_active_admins_and_operators_manage_campaigns(
    session: Session, actor: str, message: str
) -> None:
    morning(session)
    before = counts(session)
    with pytest.raises(CampaignError, match=message):
        morning(session, "other", actor=actor)
    with pytest.raises(CampaignError, match=message):
        pause_campaign(session, "morning", actor, now=NOW)
    with pytest.raises(CampaignError, match=message):
        update_campaign(session, "morning", actor, name="x", now=NOW)
    assert counts(session) == before and get_campaign(session, "morning").status == "active"


@pytest.mark.parametrize("key", ["a", "has space", "x" * 65, "早报", "a/b"])
def test_campaign_keys_are_short_ascii_names(session: Session, key: str) -> None:
    with pytest.raises(CampaignError, match="key: 2-64 characters"):
        morning(session, key)


def test_a_key_names_one_campaign(session: Session) -> None:
    morning(session)
    with pytest.raises(CampaignError, match="campaign 'morning' exists"):
        morning(session)
    with pytest.raises(CampaignError, match="name: 1-128"):
        morning(session, "blank", name="  ")


def test_update_replaces_each_part_whole_and_audits_only_what_changed(session: Session) -> None:
    later = NOW + timedelta(hours=1)
    news = create_campaign(
        session, "news", "快讯", "announcement", "news_flash", Schedule.daily("09:00"), "olivia",
        {"platforms": ["douyin"], "subscribed_only": True}, now=NOW,
    )  # fmt: skip
    update_campaign(
        session, "news", "adam", schedule=Schedule.once(NOW + timedelta(days=2)),
        audience={"stages": ["new"]}, name=" 快讯 ", now=later,
    )  # fmt: skip
    assert (news.schedule_kind, news.time_of_day, news.run_at) == ("once", None, NOW + timedelta(days=2))
    assert news.audience == {"stages": ["new"], "subscribed_only": True}
    assert news.name == "快讯" and news.updated_at == later
    (_, entry) = audits(session)
    assert entry.action == "campaign.update" and entry.actor == "adam"
    assert set(entry.detail["changed"]) == {"schedule_kind", "time_of_day", "run_at", "audience"}
    assert entry.detail["changed"]["time_of_day"] == ["09:00", None]
    update_campaign(session, "news", "adam", name="快讯", now=later)  # no change, no audit
    assert len(audits(session)) == 2
    before = counts(session)
    with pytest.raises(CampaignError, match="welcome script"):
        update_campaign(session, "news", "adam", script_key="welcome_default", name="新名字", now=later)
    with pytest.raises(CampaignError, match="nothing to change"):
        update_campaign(session, "news", "adam", now=later)
    assert counts(session) == before and news.name == "快讯" and news.script_key == "news_flash"


def test_pause_resume_archive_follow_the_status_rules_and_archived_is_final(session: Session) -> None:
    campaign = morning(session)
    pause_campaign(session, "morning", "olivia", reason="研究所休假", now=NOW)
    assert campaign.status == "paused"
    with pytest.raises(CampaignError, match="is paused; it cannot become paused"):
        pause_campaign(session, "morning", "olivia", now=NOW)
    resume_campaign(session, "morning", "adam", now=NOW)
    with pytest.raises(CampaignError, match="is active; it cannot become active"):
        resume_campaign(session, "morning", "adam", now=NOW)
    archive_campaign(session, "morning", "olivia", now=NOW + timedelta(minutes=5))
    assert campaign.status == "archived" and campaign.updated_at == NOW + timedelta(minutes=5)
    for change in (pause_campaign, resume_campaign, archive_campaign):
        with pytest.raises(CampaignError, match="archived campaigns do not change"):
            change(session, "morning", "olivia", now=NOW)
    with pytest.raises(CampaignError, match="archived campaigns do not change"):
        update_campaign(session, "morning", "olivia", name="x", now=NOW)
    actions = [(a.action, a.detail.get("previous"), a.detail.get("reason")) for a in audits(session)][1:]
    assert actions == [
        ("campaign.pause", "active", "研究所休假"),
        ("campaign.resume", "paused", ""),
        ("campaign.archive", "active", ""),
    ]
    assert list_campaigns(session) == [] and list_campaigns(session, status="archived") == [campaign]
    with pytest.raises(CampaignError, match="no campaign 'nope'"):
        pause_campaign(session, "nope", "olivia", now=NOW)


def test_course_campaigns_invite_subscribers_and_remind_registrants(session: Session) -> None:
    course = session.scalars(select(Course)).one()
    invite, reminder = course_campaigns(session, course, "olivia", now=NOW)
    assert (invite.key, invite.kind, invite.script_key) == (
        "etf-101-invite",
        "course_invite",
        "course_invite",
    )
    assert (invite.offset_minutes, invite.audience) == (-24 * 60, {"subscribed_only": True})
    assert (reminder.key, reminder.kind, reminder.offset_minutes) == (
        "etf-101-reminder",
        "course_reminder",
        -30,
    )
    assert reminder.audience == {"registrants_only": True} and reminder.course_id == course.id
    assert "ETF定投入门" in invite.name
    assert [a.target for a in audits(session)] == ["campaign:etf-101-invite", "campaign:etf-101-reminder"]
    assert [c.key for c in list_campaigns(session, course_id=course.id)] == [
        "etf-101-invite",
        "etf-101-reminder",
    ]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"invite_lead_minutes": 5 * 24 * 60}, "which has passed"),  # the course is 3 days away
        ({"invite_lead_minutes": 30, "reminder_minutes": 30}, "invite must go out before the reminder"),
        ({"reminder_minutes": 0}, "positive number of minutes"),
        ({"reminder_script": "course_invite"}, "course_invite script"),
        ({"invite_audience": {"tags": []}}, "tags is empty"),
    ],
)
def test_course_campaigns_are_made_both_or_neither(
    session: Session, kw: dict[str, Any], message: str
) -> None:
    course = session.scalars(select(Course)).one()
    before = counts(session)
    with pytest.raises(CampaignError, match=message):
        course_campaigns(session, course, "olivia", now=NOW, **kw)
    assert counts(session) == before and not session.new


def invoke(runner: CliRunner, env: dict[str, str], *args: str, code: int = 0) -> str:
    result = runner.invoke(main, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def test_campaigns_from_the_command_line(runner: CliRunner, env: dict[str, str], services: Services) -> None:
    with services.db.transaction() as s:
        seed(s)
    out = invoke(
        runner, env, "campaigns", "create", "morning", "--name", "交易日早报", "--kind", "morning_report",
        "--script", "morning_report", "--schedule", "trading_days", "--time-of-day", "08:30",
        "--platform", "xiaohongshu", "--as", "olivia",
    )  # fmt: skip
    assert "campaign morning created: morning_report, trading days at 08:30 Asia/Shanghai" in out
    out = invoke(
        runner, env, "campaigns", "create", "bad", "--name", "x", "--kind", "morning_report",
        "--script", "morning_report", "--schedule", "daily", "--time-of-day", "08:30", "--as", "olivia",
        code=1,
    )  # fmt: skip
    assert "morning reports run on trading days" in out
    out = invoke(
        runner, env, "campaigns", "create", "flash", "--name", "快讯", "--kind", "announcement",
        "--script", "news_flash", "--schedule", "once", "--run-at", "2099-01-05T09:00",
        "--hook-code", "XHS888", "--as", "adam",
    )  # fmt: skip
    assert "once at 2099-01-05 09:00 Asia/Shanghai" in out  # a time without offset is Shanghai time
    with services.db.transaction() as s:
        flash = get_campaign(s, "flash")
        assert flash.run_at == datetime(2099, 1, 5, 1, 0, tzinfo=UTC)
        assert flash.audience == {"hook_codes": ["XHS888"], "subscribed_only": True}
        s.add(
            CampaignRun(
                campaign_id=flash.id,
                occurrence=flash.run_at,
                status="skipped",
                reason="kill switch",
                created_by="t",
            )
        )
    out = invoke(runner, env, "campaigns", "update", "morning", "--time-of-day", "08:45", "--as", "olivia")
    assert "trading days at 08:45" in out
    invoke(runner, env, "campaigns", "pause", "morning", "--reason", "节假日调整", "--as", "olivia")
    out = invoke(runner, env, "campaigns", "pause", "morning", "--as", "olivia", code=1)
    assert "is paused; it cannot become paused" in out
    out = invoke(runner, env, "campaigns", "list")
    assert "morning" in out and "paused" in out and "flash" in out
    invoke(runner, env, "campaigns", "resume", "morning", "--as", "olivia")
    out = invoke(runner, env, "campaigns", "show", "flash")
    assert '{"hook_codes": ["XHS888"], "subscribed_only": true}' in out
    assert "2099-01-05 09:00  skipped (kill switch)" in out
    out = invoke(runner, env, "campaigns", "archive", "flash", "--as", "chen", code=1)
    assert "may not manage campaigns" in out
    invoke(runner, env, "campaigns", "archive", "flash", "--as", "adam")
    assert "flash" not in invoke(runner, env, "campaigns", "list")
    assert "flash" in invoke(runner, env, "campaigns", "list", "--status", "archived")
    with services.db.transaction() as s:
        actions = [a.action for a in audits(s)]
    assert actions == [
        "campaign.create", "campaign.create", "campaign.update", "campaign.pause", "campaign.resume",
        "campaign.archive",
    ]  # fmt: skip


PER_LEAD = (
    "{{ lead.display_name }}您好，{{ firm.name }}投资者教育资料已更新，仅供学习参考，不构成投资建议。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
FOR_ALL = (
    "{{ firm.name }}投资者教育资料已更新，仅供学习参考，不构成投资建议。市场有风险，投资需谨慎。"
    "{{ firm.opt_out }}"
)


def test_a_script_with_per_customer_variables_is_refused_for_one_text_campaigns(session: Session) -> None:
    cat.save_draft(session, "news_flash", PER_LEAD, "olivia", POLICY)
    before = counts(session)
    with pytest.raises(CampaignError, match=r"'news_flash' v1 \(draft\) uses \{\{ lead.display_name \}\}"):
        create_campaign(session, "news", "快讯", "announcement", "news_flash", Schedule.daily("09:00"),
                        "olivia", now=NOW)  # fmt: skip
    assert counts(session) == before and not session.new
    cat.create_script(session, "plain_flash", "keyword_reply", "olivia")
    cat.save_draft(session, "plain_flash", FOR_ALL, "olivia", POLICY)
    news = create_campaign(session, "news", "快讯", "announcement", "plain_flash", Schedule.daily("09:00"),
                           "olivia", now=NOW)  # fmt: skip
    before = counts(session)
    with pytest.raises(CampaignError, match="render one text for all their recipients and fill only firm"):
        update_campaign(session, "news", "olivia", script_key="news_flash", now=NOW)
    assert counts(session) == before and news.script_key == "plain_flash"


def test_only_versions_that_may_still_be_sent_are_checked(session: Session) -> None:
    saved = cat.save_draft(session, "news_flash", PER_LEAD, "olivia", POLICY)
    cat.submit(session, "news_flash", saved.version.number, "olivia", POLICY)
    cat.reject(session, "news_flash", saved.version.number, "chen", "请勿称呼个人")
    cat.save_draft(session, "news_flash", FOR_ALL, "olivia", POLICY)
    news = create_campaign(session, "news", "快讯", "announcement", "news_flash", Schedule.daily("09:00"),
                           "olivia", now=NOW)  # fmt: skip
    assert news.script_key == "news_flash"


@pytest.mark.parametrize("kind", ["morning_report", "course_invite", "course_reminder"])
def test_the_default_campaign_scripts_fill_from_run_values(session: Session, kind: str) -> None:
    cat.save_draft(session, kind, planner_body(kind), "olivia", POLICY)
    schedule = Schedule.trading_days("08:30") if kind == "morning_report" else Schedule.course("etf-101", -60)
    assert create_campaign(session, "c1", "c1", kind, kind, schedule, "olivia", now=NOW).script_key == kind


def test_a_run_cannot_fill_lead_variables(db: Database, settings: Settings) -> None:
    """Why the catalogue refuses them: a run renders once, so an existing such campaign fails closed."""
    with db.transaction() as session:
        seed(session)
        approved(session, "greeting", "keyword_reply", PER_LEAD)
        session.add(Campaign(key="legacy", name="legacy", kind="announcement", script_key="greeting",
                             schedule_kind="daily", time_of_day="10:00", audience={"subscribed_only": True},
                             created_by="olivia"))  # fmt: skip
    plan = dry_run_campaign(db, settings, "legacy", NOW + timedelta(days=1), now=NOW)
    assert plan.status == "failed" and "no attribute 'display_name'" in str(plan.reason)
