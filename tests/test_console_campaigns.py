"""Console campaign pages: create and edit, audience, dry runs, run history, pausing, kill switch, courses."""

from __future__ import annotations

import ast
import inspect
import io
import re
from collections.abc import Mapping
from datetime import timedelta
from types import ModuleType

from flask import Flask
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from bot.campaigns import catalog
from bot.campaigns import planner as planner_module
from bot.campaigns.controls import switch_state
from bot.campaigns.planner import plan_run
from bot.campaigns.previews import PreviewRunner
from bot.console import texts
from bot.console.blueprint import SHANGHAI
from bot.scheduler import service as scheduler_service
from bot.services import Services
from models.audit import AuditEntry
from models.base import utcnow
from models.campaigns import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Course,
    CourseAttendance,
    CourseRegistration,
)
from scripts_library import catalogue as cat
from tests.scripts_fixtures import approved
from tests.test_console_auth import Console, make_app
from tests.test_console_scripts import signed_in
from tests.test_planner import TUESDAY, body, campaign, lead, relate, run

# One text for every recipient: announcements cannot use per-customer variables such as lead.*.
ANNOUNCEMENT = (
    "{{ firm.name }}投资者教育：今晚八点更新ETF入门资料，资料仅供学习参考，不构成投资建议。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
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
    assert "morning" in page and "交易日 08:30" in page
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
    assert "已规划" in runs and "2026-11-23 08:30" in runs
    assert "排队中 8" in runs  # the eight member customers' mass-send deliveries
    assert signed_in(app, "olivia").get("/console/campaigns/nope").status_code == 404


def test_why_a_run_sent_nothing_is_worded_in_chinese(services: Services) -> None:
    app = _setup(services)
    saturday, sunday = TUESDAY + timedelta(days=4), TUESDAY + timedelta(days=5)
    with services.db.transaction() as session:
        camp = session.scalars(select(Campaign).where(Campaign.key == "morning")).one()
        holiday = run(session, camp, saturday)
        legacy = CampaignRun(
            campaign_id=camp.id,
            occurrence=sunday,
            status="skipped",
            reason="legacy reason text",
            created_by="t",
        )
        session.add(legacy)  # a run stored before reasons had codes keeps its own words
    plan_run(services.db, services.settings, holiday, now=saturday)
    with services.db.read() as session:
        stored = session.get(CampaignRun, holiday)
        assert stored is not None and stored.reason == "2026-11-28 is not a trading day"
        assert (stored.reason_code, stored.reason_params) == ("not_trading_day", {"day": "2026-11-28"})
    page = _text(signed_in(app, "olivia").get("/console/campaigns/morning"))
    reasons = re.findall(r'data-testid="run-reason">([^<]*)<', page)
    assert "2026-11-28 不是交易日" in reasons and "legacy reason text" in reasons
    assert "is not a trading day" not in page


def test_every_run_reason_code_the_planner_and_scheduler_store_has_a_console_text() -> None:
    sources = inspect.getsource(planner_module) + inspect.getsource(scheduler_service)
    stored = set(re.findall(r'code="([a-z_]+)"', sources)) | set(re.findall(r'code = "([a-z_]+)"', sources))
    assert {"not_trading_day", "blocked", "held_for_review", "campaign_paused", "missed"} <= stored
    assert stored <= set(texts.RUN_REASONS)


def test_preview_shows_the_exact_text_and_pages_recipients_masked_for_operators(services: Services) -> None:
    app = _setup(services, page_size=5)
    operator = signed_in(app, "olivia")
    operator.get("/console/campaigns/morning")
    preview = operator.post("/console/campaigns/morning/previews", {"at": "2026-11-24T08:30"}).location
    PreviewRunner(services.settings, services.db).run_once()  # what the worker does in the background
    first = _text(operator.get(preview))
    text = re.search(r'data-testid="preview-text">([^<]*)<', first)
    assert text is not None and "市场有风险" in text.group(1)
    recipients = first.split('data-testid="preview-recipients"')[1]
    assert "cust0" in recipients and "cust5" not in recipients
    last = _text(operator.get(f"{preview}?rpage=2"))
    shown = last.split('data-testid="preview-recipients"')[1]
    assert MASKED_ID in shown and PHONE_ID not in shown and "quiet" in shown
    admin = _text(signed_in(app, "ada").get(f"{preview}?rpage=2"))
    assert PHONE_ID in admin.split('data-testid="preview-recipients"')[1]
    bad = operator.post("/console/campaigns/morning/previews", {"at": "tomorrow"})
    assert bad.status_code == 302 and "YYYY-MM-DDTHH:MM" in _text(operator.get(bad.location))


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


def _later(**delta: float) -> str:
    """A Shanghai wall-clock time from now, as a datetime-local input sends it."""
    return (utcnow() + timedelta(**delta)).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


def _post(console: Console, path: str, data: Mapping[str, object]) -> TestResponse:
    """Submit a form the way a browser does: repeated fields for checkboxes, files as uploads."""
    console.get(path)
    return console.client.post(path, data={"csrf_token": console.token, **data})


def _campaign_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "key": "flash-news",
        "name": "盘中快讯",
        "kind": "announcement",
        "script_key": "flash",
        "schedule_kind": "once",
        "run_at": _later(days=2),
        "platforms": ["douyin", "xiaohongshu"],
        "tags": "ETF，新客",
        "stages": ["engaged"],
    }
    return {**fields, **changes}


def _announcement_script(services: Services) -> None:
    with services.db.transaction() as session:
        approved(session, "flash", "keyword_reply", ANNOUNCEMENT)
        cat.create_script(session, "flash-draft", "keyword_reply", "olivia")  # never approved


def test_operator_creates_a_campaign_with_schedule_and_audience_audited(services: Services) -> None:
    app = _setup(services)
    _announcement_script(services)
    operator = signed_in(app, "olivia")
    assert 'data-testid="campaign-new"' in _text(operator.get("/console/campaigns"))
    form = _text(operator.get("/console/campaigns/new"))
    assert '<option value="flash">' in form and "flash-draft" not in form  # approved scripts only
    response = _post(operator, "/console/campaigns/new", _campaign_fields())
    assert response.status_code == 302 and response.location.endswith("/console/campaigns/flash-news")
    with services.db.read() as session:
        made = session.scalars(select(Campaign).where(Campaign.key == "flash-news")).one()
        audit = session.scalars(select(AuditEntry).where(AuditEntry.target == "campaign:flash-news")).one()
    assert (made.kind, made.schedule_kind, made.created_by) == ("announcement", "once", "olivia")
    assert made.audience == {
        "platforms": ["douyin", "xiaohongshu"],
        "tags": ["ETF", "新客"],
        "stages": ["engaged"],
        "subscribed_only": True,
    }
    assert audit.action == "campaign.create" and audit.actor == "olivia"
    page = _text(operator.get("/console/campaigns/flash-news"))
    assert "一次，于" in page and 'data-testid="campaign-edit"' in page


def test_refusals_appear_next_to_their_fields_and_change_nothing(services: Services) -> None:
    app = _setup(services)
    _announcement_script(services)
    operator = signed_in(app, "olivia")
    cases = [
        (_campaign_fields(run_at=_later(days=-1)), "已过。", "has passed", "run_at"),
        (
            _campaign_fields(kind="morning_report"),
            "此活动只发送「早报」类型的话术",
            "campaigns send morning_report scripts",
            "script_key",
        ),
        (_campaign_fields(key="x"), "标识为 2-64 个字符", "2-64 characters", "key"),
        (_campaign_fields(key="morning"), "标识为 morning 的活动已存在", "exists", "key"),
        (_campaign_fields(hook_codes="NOPE1"), "没有引流码 NOPE1", "no hook code", "hook_codes"),
        (
            _campaign_fields(schedule_kind="daily", time_of_day="25:00"),
            "「25:00」不是有效时间",
            "is not HH:MM",
            "time_of_day",
        ),
        (_campaign_fields(script_key="flash-draft"), "请选择有已审批版本的话术", "", "script_key"),
    ]
    for fields, message, english, field_name in cases:
        response = _post(operator, "/console/campaigns/new", fields)
        assert response.status_code == 400, message
        page = _text(response)
        block = page.split(f'id="{field_name}"')[1].split('class="field')[0]
        assert message in block, (message, field_name)
        assert not english or english not in page  # the catalogue's English wording stays in the CLI
    with services.db.read() as session:
        assert session.scalars(select(Campaign.key).order_by(Campaign.key)).all() == ["morning"]
    compliance = signed_in(app, "chen")
    assert compliance.get("/console/campaigns/new").status_code == 403
    assert 'data-testid="campaign-new"' not in _text(compliance.get("/console/campaigns"))


def test_edit_changes_schedule_and_audience_but_never_key_or_kind(services: Services) -> None:
    app = _setup(services)
    operator = signed_in(app, "olivia")
    form = _text(operator.get("/console/campaigns/morning/edit"))
    assert 'value="08:30"' in form and "morning" in form
    response = _post(
        operator,
        "/console/campaigns/morning/edit",
        {
            "key": "hijack",
            "kind": "announcement",
            "name": "早报（新）",
            "script_key": "morning_report",
            "schedule_kind": "trading_days",
            "time_of_day": "09:00",
            "stages": ["engaged", "nurtured"],
        },
    )
    assert response.status_code == 302
    with services.db.read() as session:
        made = session.scalars(select(Campaign).where(Campaign.key == "morning")).one()
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.update")).one()
        assert session.scalars(select(Campaign).where(Campaign.key == "hijack")).first() is None
    assert (made.kind, made.name, made.time_of_day) == ("morning_report", "早报（新）", "09:00")
    assert made.audience["stages"] == ["engaged", "nurtured"]
    assert audit.detail["changed"]["time_of_day"] == ["08:30", "09:00"]
    daily = _post(
        operator,
        "/console/campaigns/morning/edit",
        {"name": "早报", "script_key": "morning_report", "schedule_kind": "daily", "time_of_day": "09:00"},
    )
    assert daily.status_code == 400 and "早报只能在交易日的固定时间发送" in _text(daily)


def _course_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "key": "etf201",
        "title": "ETF 进阶",
        "speaker_name": "王老师",
        "speaker_sac_no": "S0260612345678",
        "starts_at": _later(days=3),
        "link": "https://work.weixin.qq.com/live/1",
        "invite_lead_minutes": "1440",
        "reminder_minutes": "30",
    }
    return {**fields, **changes}


def test_course_with_campaigns_is_created_and_bad_sac_numbers_are_refused(services: Services) -> None:
    app = _setup(services)
    with services.db.transaction() as session:
        approved(session, "course_invite", "course_invite", body("course_invite"))
        approved(session, "course_reminder", "course_reminder", body("course_reminder"))
    operator = signed_in(app, "olivia")
    bad = _post(operator, "/console/courses/new", _course_fields(speaker_sac_no="12345"))
    assert bad.status_code == 400
    field_error = _text(bad).split('id="speaker_sac_no"')[1]
    assert "12345 不是证券业协会执业注册编号" in field_error and "13 digits" not in field_error
    link = _post(operator, "/console/courses/new", _course_fields(link="https://evil.example.com/x"))
    link_error = _text(link).split('id="link"')[1]
    assert "evil.example.com 不是允许的链接域名" in link_error and "allowed domain" not in link_error
    made = _post(operator, "/console/courses/new", _course_fields(with_campaigns="y"))
    assert made.status_code == 302
    with services.db.read() as session:
        course = session.scalars(select(Course).where(Course.key == "etf201")).one()
        keys = session.scalars(select(Campaign.key).where(Campaign.course_id == course.id)).all()
    assert course.speaker_sac_no == "S0260612345678" and sorted(keys) == ["etf201-invite", "etf201-reminder"]
    page = _text(operator.get("/console/courses"))
    assert "ETF 进阶" in page and "etf201-invite" in page
    assert signed_in(app, "chen").get("/console/courses/new").status_code == 403


def test_course_campaign_refusal_rolls_the_course_back_too(services: Services) -> None:
    app = _setup(services)  # no course_invite script exists
    operator = signed_in(app, "olivia")
    response = _post(operator, "/console/courses/new", _course_fields(with_campaigns="y"))
    assert response.status_code == 400
    assert "没有话术 course_invite" in _text(response).split('id="with_campaigns"')[1]
    with services.db.read() as session:
        assert session.scalars(select(Course)).first() is None


def test_attendance_import_shows_what_was_stored_and_the_unusable_lines(services: Services) -> None:
    app = _setup(services)
    with services.db.transaction() as session:
        session.add(
            Course(
                key="past",
                title="往期直播",
                speaker_name="王老师",
                speaker_sac_no="S1234567890123",
                starts_at=utcnow() - timedelta(days=1),
                link="https://work.weixin.qq.com/live/0",
                created_by="olivia",
            )
        )
    operator = signed_in(app, "olivia")
    assert 'data-testid="attendance-import"' in _text(operator.get("/console/courses"))
    csv_text = f"\ufeffexternal_userid,minutes\ncust0,45\n{PHONE_ID},30\nstranger,5\ncust1,lots\n"
    upload = {"file": (io.BytesIO(csv_text.encode()), "attendance.csv")}
    response = _post(operator, "/console/courses/past/attendance", upload)
    page = _text(response)
    assert response.status_code == 200
    assert re.search(r'data-testid="import-created">2<', page)
    problems = page.split('data-testid="import-problems"')[1]
    assert "stranger" in problems and "观看分钟数「lots」不是 0 到 1440 之间的整数。" in problems
    again = _post(
        operator, "/console/courses/past/attendance", {"file": (io.BytesIO(csv_text.encode()), "a.csv")}
    )
    assert re.search(r'data-testid="import-unchanged">2<', _text(again))
    with services.db.read() as session:
        assert session.scalars(select(func.count()).select_from(CourseAttendance)).one() == 2
    no_header = _post(
        operator, "/console/courses/past/attendance", {"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")}
    )
    assert no_header.status_code == 400 and "external_userid" in _text(no_header)
    assert operator.get("/console/courses/nope/attendance").status_code == 404


def _coded_refusals(module: ModuleType) -> tuple[set[str], list[int]]:
    """The literal codes of the CampaignErrors raised in `module`, and the lines raising one without."""
    codes: set[str] = set()
    uncoded: list[int] = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "CampaignError":
            if len(node.args) < 2:
                uncoded.append(node.lineno)
            elif isinstance(node.args[1], ast.Constant):
                codes.add(node.args[1].value)
    return codes, uncoded


def test_every_campaign_refusal_has_a_code_and_the_console_words_each_code() -> None:
    codes, uncoded = _coded_refusals(catalog)
    assert uncoded == []
    # The two course lead times are refused in a loop, their codes taken from its tuple.
    assert set(texts.CAMPAIGN_REFUSALS) - codes == {"course.invite_minutes", "course.reminder_minutes"}
    assert codes <= set(texts.CAMPAIGN_REFUSALS)
