"""The data-review dashboard: funnel, daily adds, script results, risk words, handoff speed, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from bot.console import dashboard as dash
from bot.services import Services
from models.audit import AuditEntry
from models.campaigns import Course, CourseRegistration
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.inbox import InboundEvent
from models.kf import InboundRiskHit
from models.leads import Lead
from models.scoring import StageChange
from tests.test_console_auth import make_app
from tests.test_console_scripts import signed_in

NOVEMBER = dash.DateRange(date(2026, 11, 1), date(2026, 11, 30))
QUERY = "start=2026-11-01&end=2026-11-30"


def utc(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def _lead(
    session: Session,
    ext: str,
    platform: str | None,
    code: str | None,
    added: datetime,
    path: list[tuple[str, datetime]],
    subscribed: bool = False,
) -> Lead:
    """A lead added at `added` that moved along `path` (stage, when) and stays at its last stage."""
    lead = Lead(
        external_user_id=ext, platform=platform, hook_code=code, created_at=added, subscribed=subscribed
    )
    session.add(lead)
    session.flush()
    stage = "new"
    for to, at in path:
        session.add(StageChange(lead_id=lead.id, from_stage=stage, to_stage=to, at=at, actor="test"))
        stage = to
    lead.stage = stage
    return lead


def _delivery(
    session: Session,
    n: int,
    script: tuple[str, int],
    recipient: str,
    sent_at: datetime,
    status: str = DeliveryStatus.SENT,
    channel: str = Channel.CONTACT_WELCOME,
) -> None:
    session.add(
        Delivery(
            purpose_key=f"test:{n}",
            channel=channel,
            recipient=recipient,
            script_key=script[0],
            script_version=script[1],
            approval_id=1,
            content_hash="x" * 64,
            text="您好",
            lint_verdict="pass",
            status=status,
            created_at=sent_at,
            sent_at=sent_at if status == DeliveryStatus.SENT else None,
        )
    )


def _customer_message(session: Session, n: int, ext: str, at: datetime, kind: str = "kf_text") -> None:
    session.add(
        InboundEvent(dedupe_key=f"test:{n}", kind=kind, subject=ext, payload={}, raw_xml="", received_at=at)
    )


def seed_november(services: Services) -> None:
    """Leads on two platforms (three hook codes, one unattributed) and what followed, around November 2026."""
    with services.db.transaction() as session:
        # Added 00:30 on 3 November in Shanghai (still 2 November in UTC).
        a1 = _lead(
            session,
            "wm_a1",
            "douyin",
            "DY01",
            utc(11, 2, 16, 30),
            [
                ("engaged", utc(11, 3, 1)),
                ("qualified", utc(11, 5)),
                ("handed_off", utc(11, 5, 1)),
                ("accepted", utc(11, 5, 1, 30)),
                ("converted", utc(11, 20)),
            ],
            subscribed=True,
        )
        # Skipped straight to qualified; subscribed once, not any more.
        a2 = _lead(session, "wm_a2", "douyin", "DY01", utc(11, 3, 2), [("qualified", utc(11, 3, 2, 30))])
        session.add(AuditEntry(at=utc(11, 3, 2, 5), actor="kf", action="lead.subscribe", target="lead:wm_a2"))
        _lead(session, "wm_a3", "douyin", "DY02", utc(11, 5, 3), [])
        b1 = _lead(
            session,
            "wm_b1",
            "xiaohongshu",
            "XHS1",
            utc(11, 4),
            [
                ("engaged", utc(11, 4, 0, 30)),
                ("qualified", utc(11, 4, 6)),
                ("handed_off", utc(11, 4, 7)),
                ("accepted", utc(11, 4, 8, 30)),
            ],
        )
        _lead(session, "wm_b2", "xiaohongshu", "XHS1", utc(11, 4, 5), [("engaged", utc(11, 4, 6))])
        _lead(session, "wm_c1", None, None, utc(11, 6, 3), [("engaged", utc(11, 6, 4))])
        # 23:59 on 31 October in Shanghai: outside November however far it got.
        _lead(session, "wm_old", "douyin", "DY01", utc(10, 31, 15, 59), [("converted", utc(11, 10))])

        course = Course(
            key="c1",
            title="ETF 入门",
            speaker_name="王老师",
            speaker_sac_no="S0000000000001",
            starts_at=utc(11, 10, 11),
            link="https://example.com/live",
            created_by="test",
        )
        session.add(course)
        session.flush()
        for lead, at in ((a1, utc(11, 4)), (b1, utc(11, 4, 5))):
            session.add(
                CourseRegistration(course_id=course.id, lead_id=lead.id, channel="kf", registered_at=at)
            )

        welcome_v1, welcome_v2, xhs_v1 = ("welcome_dy", 1), ("welcome_dy", 2), ("welcome_xhs", 1)
        _delivery(session, 1, welcome_v1, "wm_a1", utc(11, 2, 17))
        _customer_message(session, 1, "wm_a1", utc(11, 3, 10))  # 17 hours later: a reply
        _delivery(session, 2, welcome_v1, "wm_a2", utc(11, 3, 3))  # qualified before it was sent
        _customer_message(session, 2, "wm_a2", utc(11, 5, 4))  # 49 hours later: too late to count
        _delivery(session, 3, welcome_v2, "wm_a3", utc(11, 5, 4))
        _customer_message(session, 3, "wm_a3", utc(11, 5, 5), kind="change_external_contact")
        _delivery(session, 4, welcome_v2, "wm_b2", utc(11, 5, 4), status=DeliveryStatus.FAILED)
        _delivery(session, 5, ("handoff_brief", 1), "mgr_li", utc(11, 5, 1), channel=Channel.APP_MESSAGE)
        _delivery(session, 6, xhs_v1, "wm_b1", utc(11, 4, 1))
        _customer_message(session, 6, "wm_b1", utc(11, 4, 2))
        _delivery(session, 7, xhs_v1, "wm_b2", utc(10, 31, 12))  # sent in October

        for day, category, count in (
            (date(2026, 10, 31), "C1", 5),
            (date(2026, 11, 1), "C1", 2),
            (date(2026, 11, 2), "C1", 1),
            (date(2026, 11, 3), "C1", 3),
            (date(2026, 11, 3), "C6", 1),
            (date(2026, 11, 30), "C2", 1),
            (date(2026, 12, 1), "C2", 4),
        ):
            session.add(InboundRiskHit(day=day, at=utc(11, 1), category=category, count=count))

        session.add(AccountManager(userid="mgr_li", name="李经理"))
        session.flush()
        for lead, status, offered, responded in (
            (a1, HandoffStatus.CLOSED, utc(11, 5, 1), utc(11, 5, 1, 30)),
            (a2, HandoffStatus.TIMED_OUT, utc(11, 3, 3), None),
            (b1, HandoffStatus.DECLINED, utc(11, 4, 6, 30), utc(11, 4, 6, 40)),
            (b1, HandoffStatus.ACCEPTED, utc(11, 4, 7), utc(11, 4, 8, 30)),
        ):
            session.add(
                Handoff(
                    lead_id=lead.id,
                    manager_userid="mgr_li",
                    status=status,
                    offered_at=offered,
                    responded_at=responded,
                )
            )


def test_funnels_count_each_step_per_platform_and_per_hook_code_best_converting_first(
    services: Services,
) -> None:
    seed_november(services)
    with services.db.read() as session:
        by_platform = dash.funnel_by_platform(session, NOVEMBER)
        by_code = dash.funnel_by_hook_code(session, NOVEMBER)
    assert by_platform == [
        dash.FunnelRow("douyin", "", 3, 2, 2, 1, 2, 1, 1),
        dash.FunnelRow("xiaohongshu", "", 2, 2, 0, 1, 1, 1, 0),
        dash.FunnelRow("", "", 1, 1, 0, 0, 0, 0, 0),
    ]
    assert by_code == [
        dash.FunnelRow("douyin", "DY01", 2, 2, 2, 1, 2, 1, 1),
        dash.FunnelRow("xiaohongshu", "XHS1", 2, 2, 0, 1, 1, 1, 0),
        dash.FunnelRow("", "", 1, 1, 0, 0, 0, 0, 0),
        dash.FunnelRow("douyin", "DY02", 1, 0, 0, 0, 0, 0, 0),
    ]
    assert by_code[0].conversion_rate == 0.5


def test_daily_adds_use_shanghai_days(services: Services) -> None:
    seed_november(services)
    with services.db.read() as session:
        rows = dash.daily_adds(session, NOVEMBER)
    assert rows == [
        dash.DailyAdds(date(2026, 11, 3), "douyin", 2),
        dash.DailyAdds(date(2026, 11, 4), "xiaohongshu", 2),
        dash.DailyAdds(date(2026, 11, 5), "douyin", 1),
        dash.DailyAdds(date(2026, 11, 6), "", 1),
    ]


def test_script_results_count_replies_within_48_hours_and_later_registrations_and_qualifications(
    services: Services,
) -> None:
    seed_november(services)
    with services.db.read() as session:
        rows = dash.script_results(session, NOVEMBER)
    assert rows == [
        dash.ScriptResult("welcome_dy", 1, "", sent=2, delivered=2, replied=1, registered=1, qualified=1),
        dash.ScriptResult("welcome_dy", 2, "", sent=2, delivered=1, replied=0, registered=0, qualified=0),
        dash.ScriptResult("welcome_xhs", 1, "", sent=1, delivered=1, replied=1, registered=1, qualified=1),
    ]


def test_risk_words_are_summed_per_iso_week_and_category_within_the_range(services: Services) -> None:
    seed_november(services)
    with services.db.read() as session:
        rows = dash.weekly_risk(session, NOVEMBER)
    assert [(r.iso_week, r.week, r.category, r.hits) for r in rows] == [
        ("2026-W44", date(2026, 10, 26), "C1", 2),
        ("2026-W45", date(2026, 11, 2), "C1", 4),
        ("2026-W45", date(2026, 11, 2), "C6", 1),
        ("2026-W49", date(2026, 11, 30), "C2", 1),
    ]


def test_handoff_speed_counts_offers_and_minutes_to_accept_per_platform(services: Services) -> None:
    seed_november(services)
    with services.db.read() as session:
        rows = dash.handoff_speed(session, NOVEMBER)
    assert rows == [
        dash.HandoffSpeed(
            "douyin",
            offered=2,
            accepted=1,
            timed_out=1,
            avg_minutes_to_accept=30.0,
            max_minutes_to_accept=30.0,
        ),
        dash.HandoffSpeed(
            "xiaohongshu",
            offered=2,
            accepted=1,
            timed_out=0,
            avg_minutes_to_accept=90.0,
            max_minutes_to_accept=90.0,
        ),
    ]


def test_range_defaults_to_this_shanghai_month_and_bad_ranges_are_refused() -> None:
    # 00:30 on 1 December in Shanghai is still 30 November in UTC.
    assert dash.this_month(datetime(2026, 11, 30, 16, 30, tzinfo=UTC)) == dash.DateRange(
        date(2026, 12, 1), date(2026, 12, 31)
    )
    now = datetime(2026, 2, 10, tzinfo=UTC)
    assert dash.parse_range(None, None, now) == dash.DateRange(date(2026, 2, 1), date(2026, 2, 28))
    assert dash.parse_range("2026-01-15", None, now) == dash.DateRange(date(2026, 1, 15), date(2026, 2, 28))
    for start, end in (("2026-13-01", None), ("2026-02-10", "2026-02-09"), ("2025-01-01", "2026-01-02")):
        with pytest.raises(dash.RangeError):
            dash.parse_range(start, end, now)


def test_dashboard_shows_the_best_platform_and_code_to_the_allowed_roles_only(services: Services) -> None:
    seed_november(services)
    app = make_app(services)
    for username in ("ada", "olivia", "chen"):
        page = signed_in(app, username).get(f"/console/dashboard?{QUERY}")
        html = page.get_data(as_text=True)
        assert page.status_code == 200, username
        assert 'data-testid="best-platform">抖音<' in html and 'data-testid="best-code">DY01<' in html
        assert "数据看板" in html and 'data-chart="funnel_platform"' in html
    assert signed_in(app, "mia").get(f"/console/dashboard?{QUERY}").status_code == 403
    assert "数据看板" not in signed_in(app, "mia").get("/console/scripts").get_data(as_text=True)


def test_dashboard_refuses_a_bad_range_and_shows_this_month_instead(services: Services) -> None:
    console = signed_in(make_app(services), "olivia")
    response = console.get("/console/dashboard?start=2026-11-30&end=2026-11-01")
    assert response.status_code == 400
    assert 'data-testid="range-error"' in response.get_data(as_text=True)
    assert console.get("/console/dashboard/export/funnel_platform.csv?start=bad").status_code == 400
    assert console.get(f"/console/dashboard/export/nothing.csv?{QUERY}").status_code == 404


def test_every_table_exports_as_excel_ready_csv(services: Services) -> None:
    seed_november(services)
    console = signed_in(make_app(services), "chen")
    response = console.get(f"/console/dashboard/export/funnel_platform.csv?{QUERY}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="funnel_platform_20261101_20261130.csv"' in response.headers["Content-Disposition"]
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows == [
        ["平台", "新增", "互动", "订阅", "报名", "合格", "已承接", "已转化", "转化率（%）"],
        ["抖音", "3", "2", "2", "1", "2", "1", "1", "33.3"],
        ["小红书", "2", "2", "0", "1", "1", "1", "0", "0.0"],
        ["未归因", "1", "1", "0", "0", "0", "0", "0", "0.0"],
    ]
    for name in ("funnel_code", "adds_per_day", "scripts", "risk_words", "handoffs"):
        exported = console.get(f"/console/dashboard/export/{name}.csv?{QUERY}").get_data()
        assert exported.startswith(b"\xef\xbb\xbf") and len(exported.decode("utf-8-sig").splitlines()) > 1, (
            name
        )
    scripts = console.get(f"/console/dashboard/export/scripts.csv?{QUERY}").get_data().decode("utf-8-sig")
    assert scripts.splitlines()[1] == "welcome_dy,1,,2,2,1,1,1"


def test_variant_performance_names_each_arm_and_exports_it(services: Services) -> None:
    from models.base import utcnow
    from scripts_library import catalogue as cat
    from tests.scripts_fixtures import POLICY
    from tests.test_console_scripts import CLEAN, _leads_sent

    console = signed_in(make_app(services), "olivia")
    with services.db.transaction() as session:
        cat.create_script(session, "welcome_xhs", "welcome", "olivia")
        for n, body in ((1, CLEAN), (2, CLEAN.replace("服务号", "公众号"))):
            cat.save_draft(session, "welcome_xhs", body, "olivia", POLICY)
            cat.submit(session, "welcome_xhs", n, "olivia", POLICY)
        cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
        cat.approve(session, "welcome_xhs", 2, "chen", POLICY, as_variant=True)
    sent = _leads_sent(services, "welcome_xhs", 30)
    counts = {n: sum(1 for v in sent.values() if v == n) for n in (1, 2)}
    today = dash.this_month(utcnow())
    with services.db.read() as session:
        rows = dash.script_results(session, today)
    assert [(r.version, r.variant, r.sent, r.delivered) for r in rows] == [
        (1, "#1 A", counts[1], counts[1]),
        (2, "#1 B", counts[2], counts[2]),
    ]
    query = f"start={today.start.isoformat()}&end={today.end.isoformat()}"
    exported = console.get(f"/console/dashboard/export/scripts.csv?{query}").get_data().decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(exported)))
    assert lines[0] == ["话术", "版本", "A/B 变体", "已发送", "已送达", "48 小时内回复", "报名", "合格"]
    assert lines[1][:4] == ["welcome_xhs", "1", "#1 A", str(counts[1])]
    assert "话术与变体效果" in console.get(f"/console/dashboard?{query}").get_data(as_text=True)
