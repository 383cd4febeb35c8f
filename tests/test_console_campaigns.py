"""Console campaign pages: list, audience, dry-run preview, run history, pausing, kill switch, courses."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from bot.campaigns.controls import switch_state
from bot.campaigns.planner import plan_run
from bot.services import Services
from models.audit import AuditEntry
from models.campaigns import Campaign, CampaignStatus, Course, CourseAttendance, CourseRegistration
from tests.scripts_fixtures import approved
from tests.test_console_auth import make_app
from tests.test_console_scripts import signed_in
from tests.test_planner import TUESDAY, body, campaign, lead, relate, run

PHONE_ID = "wm13812345678"  # an external id that happens to carry a mobile number
MASKED_ID = "wm138****5678"


def _setup(services: Services, page_size: int = 25) -> Flask:
    """People of every role, an approved morning report, its campaign, an audience and one planned run."""
    services.settings = services.settings.replace(console={"page_size": page_size})
    app = make_app(services)
    with services.db.transaction() as session:
        approved(session, "morning_report", "morning_report", body("morning_report"))
        camp = campaign(session, key="morning", audience={"tags": []})
        for n in range(7):
            lead(session, f"cust{n}", owner="zhangsan")
            relate(session, "zhangsan", f"cust{n}")
        lead(session, PHONE_ID, owner="zhangsan")
        relate(session, "zhangsan", PHONE_ID)
        lead(session, "quiet")  # no member, no kf window: nothing is sent
        lead(session, "not_subscribed", subscribed=False)
        run_id = run(session, camp, TUESDAY - timedelta(days=1))
    plan_run(services.db, services.settings, run_id, now=TUESDAY - timedelta(days=1))
    return app


def _text(response: object) -> str:
    return str(response.get_data(as_text=True))  # type: ignore[attr-defined]


def test_list_shows_schedule_status_and_kill_switch_controls_by_role(services: Services) -> None:
    app = _setup(services)
    with services.db.transaction() as session:
        campaign(session, key="old-news", kind="announcement", script_key="morning_report", status="archived")
    operator = signed_in(app, "olivia")
    page = _text(operator.get("/console/campaigns"))
    assert "morning" in page and "trading days at 08:30 Asia/Shanghai" in page
    assert "old-news" not in page  # archived ones only on request
    assert 'data-testid="kill-switch"' in page and 'data-testid="sending-stop"' not in page
    archived = _text(operator.get("/console/campaigns?status=archived"))
    assert "old-news" in archived and "/console/campaigns/morning" not in archived
    compliance = signed_in(app, "chen")
    assert 'data-testid="sending-stop"' in _text(compliance.get("/console/campaigns"))
    assert signed_in(app, "mia").get("/console/campaigns").status_code == 403


def test_campaign_page_shows_audience_size_and_run_history_with_outcomes(services: Services) -> None:
    app = _setup(services)
    page = _text(signed_in(app, "olivia").get("/console/campaigns/morning"))
    size = re.search(r'data-testid="audience-size">([^<]*)<', page)
    assert size is not None and "9" in size.group(1)  # subscribed leads; the unsubscribed one is out
    runs = page.split('data-testid="runs"')[1]
    assert "planned" in runs and "2026-11-23 08:30" in runs
    assert "queued 8" in runs  # the eight member customers' mass-send deliveries
    assert signed_in(app, "olivia").get("/console/campaigns/nope").status_code == 404


def test_preview_shows_the_exact_text_and_pages_recipients_masked_for_operators(services: Services) -> None:
    app = _setup(services, page_size=5)
    at = "at=2026-11-24T08:30"
    operator = signed_in(app, "olivia")
    first = _text(operator.get(f"/console/campaigns/morning?{at}"))
    text = re.search(r'data-testid="preview-text">([^<]*)<', first)
    assert text is not None and "市场有风险" in text.group(1)
    recipients = first.split('data-testid="preview-recipients"')[1]
    assert "cust0" in recipients and "cust5" not in recipients
    last = _text(operator.get(f"/console/campaigns/morning?{at}&rpage=2"))
    shown = last.split('data-testid="preview-recipients"')[1]
    assert MASKED_ID in shown and PHONE_ID not in shown and "quiet" in shown
    admin = _text(signed_in(app, "ada").get(f"/console/campaigns/morning?{at}&rpage=2"))
    assert PHONE_ID in admin.split('data-testid="preview-recipients"')[1]
    bad = operator.get("/console/campaigns/morning?at=tomorrow")
    assert bad.status_code == 400 and 'data-testid="preview-recipients"' not in _text(bad)


def test_operator_pauses_and_resumes_with_a_reason_compliance_may_not(services: Services) -> None:
    app = _setup(services)
    compliance = signed_in(app, "chen")
    compliance.get("/console/campaigns/morning")
    assert compliance.post("/console/campaigns/morning/pause", {"reason": "x"}).status_code == 403
    operator = signed_in(app, "olivia")
    operator.get("/console/campaigns/morning")
    assert operator.post("/console/campaigns/morning/pause", {"reason": ""}).status_code == 302
    with services.db.read() as session:
        assert session.scalars(select(Campaign.status).where(Campaign.key == "morning")).one() == "active"
    assert operator.post("/console/campaigns/morning/pause", {"reason": "节假日调整"}).status_code == 302
    page = _text(operator.get("/console/campaigns/morning"))
    assert 'data-testid="campaign-status">' in page and "/console/campaigns/morning/resume" in page
    assert operator.post("/console/campaigns/morning/resume", {"reason": "恢复"}).status_code == 302
    with services.db.read() as session:
        assert session.scalars(select(Campaign.status).where(Campaign.key == "morning")).one() == (
            CampaignStatus.ACTIVE
        )
        audit = session.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.detail)
            .where(AuditEntry.target == "campaign:morning")
            .order_by(AuditEntry.id)
        ).all()
    assert [(a, who, d["reason"]) for a, who, d in audit] == [
        ("campaign.pause", "olivia", "节假日调整"),
        ("campaign.resume", "olivia", "恢复"),
    ]


def test_kill_switch_needs_a_reason_and_admin_or_compliance(services: Services) -> None:
    app = _setup(services)
    operator = signed_in(app, "olivia")
    operator.get("/console/campaigns/morning")
    assert operator.post("/console/sending/stop", {"reason": "x"}).status_code == 403
    reviewer = signed_in(app, "chen")
    reviewer.get("/console/campaigns/morning")
    refused = reviewer.post("/console/sending/stop?back=morning", {"reason": "  "})
    assert refused.status_code == 302 and refused.location.endswith("/console/campaigns/morning")
    with services.db.read() as session:
        assert not switch_state(session).on
    assert reviewer.post("/console/sending/stop?back=morning", {"reason": "监管检查"}).status_code == 302
    with services.db.read() as session:
        state = switch_state(session)
    assert state.on and state.changed_by == "chen" and state.reason == "监管检查"
    page = _text(operator.get("/console/campaigns/morning"))
    assert "监管检查" in page and 'data-testid="sending-resume"' not in page  # shown, not operable
    admin = signed_in(app, "ada")
    admin.get("/console/campaigns")
    resumed = admin.post("/console/sending/resume?back=no-such-campaign", {"reason": "检查结束"})
    assert resumed.location.endswith("/console/campaigns")
    with services.db.read() as session:
        assert not switch_state(session).on


def test_courses_list_counts_registrations_and_attendance(services: Services) -> None:
    app = _setup(services)
    with services.db.transaction() as session:
        course = Course(
            key="etf101",
            title="ETF 入门",
            speaker_name="王老师",
            speaker_sac_no="S1234567890123",
            starts_at=TUESDAY + timedelta(days=2),
            link="https://live.example.com/1",
            created_by="olivia",
        )
        session.add(course)
        session.flush()
        leads = [lead(session, f"student{n}") for n in range(3)]
        for row in leads:
            session.add(CourseRegistration(course_id=course.id, lead_id=row.id, channel="kf"))
        session.add(CourseAttendance(course_id=course.id, lead_id=leads[0].id, minutes=40))
    page = _text(signed_in(app, "olivia").get("/console/courses"))
    assert "ETF 入门" in page and "S1234567890123" in page
    assert re.search(r'data-testid="registrations">3<', page)
    assert re.search(r'data-testid="attendance">1<', page)
