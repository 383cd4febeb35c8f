"""Console lead search and lead page, the handoff queue with SLA states, role scoping and masking."""

from __future__ import annotations

import ast
import html
import inspect
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.campaigns.planner import SkipReason
from bot.config import ScoringSettings
from bot.console import leads as q
from bot.console import texts
from bot.handoff import flow
from bot.handoff.flow import time_out
from bot.leads import stages
from bot.leads.stages import Stage, transition
from bot.leads.timeline import TEXTS, timeline
from bot.services import Services
from models.audit import AuditEntry
from models.base import utcnow
from models.deliveries import Delivery, DeliveryStatus
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.inbox import InboundEvent
from models.leads import Lead, LeadTag, LeadTouch
from models.scoring import ScoreEvent, ScoreKind, StageChange
from models.users import Role, User
from tests import test_handoff_flow as flow_tests
from tests.test_console_auth import make_app
from tests.test_console_scripts import signed_in

PHONE = "13812345678"
MASKED_PHONE = "138****5678"
EXT = {n: f"wm{letter * 16}{n}{n}{n}{n}" for n, letter in zip("12345", "ABCDE", strict=True)}


@dataclass(frozen=True)
class Seeded:
    """Lead ids by their number in EXT, and the moment the handoff clocks were set against."""

    ids: dict[str, int]
    now: datetime


def _lead(session: Session, n: str, name: str, platform: str, code: str, stage: str, **extra: object) -> Lead:
    lead = Lead(
        external_user_id=EXT[n],
        display_name=name,
        platform=platform,
        hook_code=code,
        stage=stage,
        created_at=utcnow() - timedelta(days=10 - int(n)),
        **extra,
    )
    session.add(lead)
    session.flush()
    return lead


def _handoff(
    session: Session, lead: Lead, manager: str, status: str, offered: datetime, **extra: object
) -> None:
    is_open = status in (HandoffStatus.OFFERED, HandoffStatus.ACCEPTED)
    session.add(
        Handoff(
            lead_id=lead.id,
            manager_userid=manager,
            status=status,
            open_lead_id=lead.id if is_open else None,
            offered_at=offered,
            **extra,
        )
    )


def _scored(
    session: Session, lead: Lead, kind: str, ref: str, detail: str, points: int, at: datetime
) -> None:
    session.add(ScoreEvent(lead_id=lead.id, kind=kind, source_ref=ref, detail=detail, points=points, at=at))


def seed(services: Services) -> Seeded:
    """Five leads on two platforms, held by two managers, with handoffs in every SLA state."""
    now = utcnow()
    with services.db.transaction() as session:
        session.add_all(
            [
                AccountManager(userid="li", name="李经理", licensed=True),
                AccountManager(userid="wang", name="王经理"),
            ]
        )
        session.flush()
        one = _lead(session, "1", f"张三 {PHONE}", "xiaohongshu", "XHS1", "handed_off", subscribed=True)
        two = _lead(session, "2", "李四", "douyin", "DY01", "accepted")
        three = _lead(session, "3", "王五", "douyin", "DY02", "qualified", opted_out=True)
        four = _lead(session, "4", "赵六", "xiaohongshu", "XHS1", "handed_off")
        five = _lead(session, "5", "孙七", "xiaohongshu", "XHS2", "handed_off")

        # 1: fit 8 + course 20 = 28; 2: fit 5 + intent 25 + attended 30 = 60.
        _scored(session, one, "fit", "platform", "platform:xiaohongshu", 8, now - timedelta(days=9))
        _scored(session, one, "registered", "course:1", "ETF 入门", 20, now - timedelta(minutes=5))
        _scored(session, two, "fit", "platform", "platform:douyin", 5, now - timedelta(days=8))
        _scored(session, two, "intent", "open_account:today", "开户", 25, now - timedelta(minutes=5))
        _scored(session, two, "attended", "course:1", "ETF 入门", 30, now - timedelta(minutes=5))

        for frm, to, minutes, why in (
            ("new", "qualified", 60, f"意向「开户」 call {PHONE}"),
            ("qualified", "handed_off", 50, "offered"),
        ):
            session.add(
                StageChange(
                    lead_id=one.id,
                    from_stage=frm,
                    to_stage=to,
                    at=now - timedelta(minutes=minutes),
                    actor="scoring",
                    reason=why,
                )
            )
        session.add(
            InboundEvent(
                dedupe_key="t:1",
                kind="kf_text",
                subject=EXT["1"],
                payload={"text": {"content": f"我的电话 {PHONE}"}},
                raw_xml="",
                received_at=now - timedelta(minutes=70),
            )
        )
        session.add(
            AuditEntry(
                at=now - timedelta(minutes=65), actor="kf", action="lead.subscribe", target=f"lead:{EXT['1']}"
            )
        )

        _handoff(
            session,
            one,
            "li",
            "offered",
            now - timedelta(minutes=10),
            due_at=now + timedelta(minutes=20),
            reason="得分 28",
        )
        _handoff(
            session, two, "wang", "accepted", now - timedelta(hours=2), responded_at=now - timedelta(hours=1)
        )
        _handoff(
            session,
            three,
            "wang",
            "declined",
            now - timedelta(hours=3),
            closed_at=now - timedelta(hours=2),
            note="忙",
        )
        _handoff(
            session,
            four,
            "li",
            "timed_out",
            now - timedelta(hours=2),
            closed_at=now - timedelta(hours=1),
            note="无应答",
        )
        _handoff(
            session,
            four,
            "wang",
            "offered",
            now - timedelta(hours=1),
            due_at=now - timedelta(minutes=5),
            escalated=True,
            attempt=2,
        )
        _handoff(session, five, "li", "offered", now - timedelta(hours=1), due_at=now - timedelta(minutes=15))
        ids = {n: lead.id for n, lead in zip("12345", (one, two, three, four, five), strict=True)}
    return Seeded(ids, now)


def _link_manager(services: Services, username: str, userid: str | None) -> None:
    with services.db.transaction() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        user.wecom_userid = userid


@pytest.fixture
def app(services: Services) -> Flask:
    return make_app(services)


def _names(
    services: Services, filters: dict[str, str], role: Role = Role.ADMIN, userid: str | None = None
) -> list[str]:
    viewer = q.Viewer(role, userid)
    with services.db.read() as session:
        found = q.list_leads(
            session, q.parse_filters(filters), viewer, 1, 50, settings=ScoringSettings(), now=utcnow()
        )
    return [row.name for row in found.page.items]


def test_every_filter_narrows_the_lead_list(services: Services) -> None:
    seed(services)
    assert _names(services, {}) == ["孙七", "赵六", "王五", "李四", f"张三 {PHONE}"]
    assert _names(services, {"platform": "douyin"}) == ["王五", "李四"]
    assert _names(services, {"code": "XHS1"}) == ["赵六", f"张三 {PHONE}"]
    assert _names(services, {"stage": "handed_off"}) == ["孙七", "赵六", f"张三 {PHONE}"]
    assert _names(services, {"opted_out": "yes"}) == ["王五"]
    assert _names(services, {"opted_out": "no", "platform": "douyin"}) == ["李四"]
    assert _names(services, {"manager": "li"}) == ["孙七", f"张三 {PHONE}"]
    assert _names(services, {"manager": "wang"}) == ["赵六", "李四"]
    assert _names(services, {"min_score": "20", "max_score": "59"}) == [f"张三 {PHONE}"]
    assert _names(services, {"min_score": "60"}) == ["李四"]
    assert _names(services, {"max_score": "0"}) == ["孙七", "赵六", "王五"]
    assert _names(services, {"q": "李"}) == ["李四"]
    assert _names(services, {"q": EXT["2"][:10]}) == ["李四"]
    assert _names(services, {"q": "100%"}) == []


def test_masked_roles_search_the_masked_name_and_only_the_visible_id_head(services: Services) -> None:
    seed(services)
    assert _names(services, {"q": PHONE}) == [f"张三 {PHONE}"]
    assert _names(services, {"q": PHONE}, Role.OPERATOR) == []
    assert _names(services, {"q": "1234"}, Role.OPERATOR) == []
    assert _names(services, {"q": MASKED_PHONE}, Role.OPERATOR) == [f"张三 {MASKED_PHONE}"]
    assert _names(services, {"q": "张三"}, Role.OPERATOR) == [f"张三 {MASKED_PHONE}"]
    # The first six characters of an id are shown to operators, so they may search by them, not more.
    assert len(_names(services, {"q": "wmAAAA"}, Role.OPERATOR)) == 1
    assert _names(services, {"q": EXT["1"][:10]}, Role.OPERATOR) == []


@pytest.mark.parametrize(
    "args",
    [
        {"platform": "myspace"},
        {"stage": "happy"},
        {"opted_out": "maybe"},
        {"min_score": "ten"},
        {"min_score": "-1"},
        {"min_score": "50", "max_score": "40"},
        {"q": "x" * 65},
    ],
)
def test_unusable_filters_are_refused(args: dict[str, str]) -> None:
    with pytest.raises(q.FilterError):
        q.parse_filters(args)


def test_lead_list_page_masks_for_operators_and_shows_everything_to_admin_and_compliance(
    services: Services, app: Flask
) -> None:
    seed(services)
    for username in ("ada", "chen"):
        page = signed_in(app, username).get("/console/leads").get_data(as_text=True)
        assert PHONE in page and EXT["1"] in page
    page = signed_in(app, "olivia").get("/console/leads").get_data(as_text=True)
    assert PHONE not in page and EXT["1"] not in page
    assert MASKED_PHONE in page and f"{EXT['1'][:6]}…{EXT['1'][-4:]}" in page
    for name in ("孙七", "赵六", "王五", "李四"):
        assert name in page


def test_bad_filter_on_the_page_says_so_and_lists_without_filters(app: Flask, services: Services) -> None:
    seed(services)
    response = signed_in(app, "olivia").get("/console/leads?min_score=abc&platform=douyin")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'data-testid="filter-error"' in page and "孙七" in page  # the douyin filter was not applied either


def test_managers_see_only_the_leads_they_hold(services: Services, app: Flask) -> None:
    seeded = seed(services)
    mia = signed_in(app, "mia")
    unlinked = mia.get("/console/leads").get_data(as_text=True)
    assert not any(name in unlinked for name in ("张三", "李四", "孙七"))

    _link_manager(services, "mia", "li")
    page = mia.get("/console/leads").get_data(as_text=True)
    assert "孙七" in page and MASKED_PHONE in page and PHONE not in page
    assert "赵六" not in page  # li's offer for this lead timed out: no longer held
    assert "李四" not in page
    # Filtering by another manager changes nothing for a manager.
    assert "李四" not in mia.get("/console/leads?manager=wang").get_data(as_text=True)
    assert mia.get(f"/console/leads/{seeded.ids['1']}").status_code == 200
    assert mia.get(f"/console/leads/{seeded.ids['4']}").status_code == 404
    assert mia.get(f"/console/leads/{seeded.ids['2']}").status_code == 404


def test_lead_page_explains_the_score_and_shows_stage_and_handoff_history_and_timeline(
    services: Services, app: Flask
) -> None:
    seeded = seed(services)
    url = f"/console/leads/{seeded.ids['1']}"
    page = signed_in(app, "chen").get(url).get_data(as_text=True)
    score_section = page.split('data-testid="score"')[1].split("</section>")[0]
    assert "28" in score_section and "/ 60" in score_section
    explanation = score_section.split('data-testid="score-explanation"')[1]
    assert explanation.index("报名直播课「ETF 入门」 +20") < explanation.index("来自小红书 +8")
    stages = page.split('data-testid="stages"')[1].split("</section>")[0]
    assert f"意向「开户」 call {PHONE}" in stages and "scoring" in stages
    handoffs = page.split('data-testid="lead-handoffs"')[1].split("</section>")[0]
    assert "李经理 (li)" in handoffs and "得分 28" in handoffs
    timeline = page.split('data-testid="timeline"')[1].split("</section>")[0]
    assert f"客户：我的电话 {MASKED_PHONE}" in timeline  # customer messages are always masked
    assert "lead.subscribe（操作人 kf）" in timeline and "转交 #" in timeline
    assert EXT["1"] in page

    operator = signed_in(app, "olivia").get(url).get_data(as_text=True)
    assert PHONE not in operator and EXT["1"] not in operator
    assert f"意向「开户」 call {MASKED_PHONE}" in operator
    assert signed_in(app, "ada").get("/console/leads/999999").status_code == 404


def _queue(services: Services, viewer: q.Viewer, manager: str = "", state: str = "") -> list[tuple[str, str]]:
    with services.db.read() as session:
        page = q.handoff_queue(session, viewer, manager, state, 1, 50, utcnow())
    return [(row.lead_name, row.state) for row in page.items]


def test_handoff_queue_shows_sla_state_grouped_by_manager_and_filters(services: Services) -> None:
    seed(services)
    admin = q.Viewer(Role.ADMIN, None)
    assert _queue(services, admin) == [
        (f"张三 {PHONE}", "due"),
        ("孙七", "overdue"),
        ("赵六", "timed_out"),
        ("赵六", "escalated"),
        ("李四", "accepted"),
        ("王五", "declined"),
    ]
    assert _queue(services, admin, manager="wang", state="accepted") == [("李四", "accepted")]
    for state, expected in (
        ("due", "张三"),
        ("overdue", "孙七"),
        ("escalated", "赵六"),
        ("declined", "王五"),
    ):
        assert [name.split()[0] for name, _ in _queue(services, admin, state=state)] == [expected]
    assert _queue(services, admin, state="offered") == []

    manager = q.Viewer(Role.MANAGER, "li")
    assert [s for _, s in _queue(services, manager, manager="wang")] == ["due", "overdue", "timed_out"]
    assert _queue(services, manager)[0][0] == f"张三 {MASKED_PHONE}"
    assert _queue(services, q.Viewer(Role.MANAGER, None)) == []


def test_minutes_left_rounds_toward_the_deadline() -> None:
    now = utcnow()
    waiting = Handoff(
        status=HandoffStatus.OFFERED, escalated=False, due_at=now + timedelta(minutes=19, seconds=1)
    )
    late = Handoff(
        status=HandoffStatus.OFFERED, escalated=False, due_at=now - timedelta(minutes=4, seconds=30)
    )
    done = Handoff(status=HandoffStatus.ACCEPTED, escalated=False, due_at=now + timedelta(minutes=5))
    assert (q.sla_state(waiting, now), q.minutes_left(waiting, now)) == ("due", 20)
    assert (q.sla_state(late, now), q.minutes_left(late, now)) == ("overdue", -5)
    assert (q.sla_state(done, now), q.minutes_left(done, now)) == ("accepted", None)


def test_handoff_page_refuses_unknown_states_and_limits_managers_to_their_own(
    services: Services, app: Flask
) -> None:
    seed(services)
    response = signed_in(app, "ada").get("/console/handoffs?state=lost")
    assert response.status_code == 400 and 'data-testid="filter-error"' in response.get_data(as_text=True)

    page = signed_in(app, "olivia").get("/console/handoffs?manager=li").get_data(as_text=True)
    assert "孙七" in page and "李四" not in page and PHONE not in page

    _link_manager(services, "mia", "wang")
    mia = signed_in(app, "mia").get("/console/handoffs?manager=li").get_data(as_text=True)
    assert "李四" in mia and "王五" in mia and "孙七" not in mia and "张三" not in mia


def test_score_filter_over_too_many_leads_searches_only_the_newest_and_says_so(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(services)
    monkeypatch.setattr(q, "MAX_SCANNED", 3)
    with services.db.read() as session:
        found = q.list_leads(
            session,
            q.parse_filters({"max_score": "100"}),
            q.Viewer(Role.ADMIN, None),
            1,
            50,
            settings=ScoringSettings(),
            now=utcnow(),
        )
    assert found.too_many and [row.name for row in found.page.items] == ["孙七", "赵六", "王五"]


def _busy_timeline(services: Services, seeded: Seeded) -> None:
    """More of lead 1's history: an arrival, tags in and out of WeCom, a failed message, a moved chat."""
    lead_id, now = seeded.ids["1"], seeded.now
    with services.db.transaction() as session:
        session.add_all(
            [
                LeadTouch(lead_id=lead_id, at=now - timedelta(minutes=80), source="contact_way", code="XHS1"),
                LeadTag(
                    lead_id=lead_id, name="新客", wecom_synced=True, created_at=now - timedelta(minutes=79)
                ),
                LeadTag(
                    lead_id=lead_id,
                    name="ETF",
                    sync_error="errcode 40068",
                    created_at=now - timedelta(minutes=78),
                ),
                Delivery(
                    purpose_key="welcome:1",
                    channel="welcome",
                    recipient=EXT["1"],
                    script_key="welcome_xiaohongshu",
                    script_version=1,
                    approval_id=1,
                    content_hash="0" * 64,
                    text="欢迎",
                    lint_verdict="pass",
                    status="failed",
                    errcode=41051,
                    created_at=now - timedelta(minutes=77),
                ),
                Handoff(
                    lead_id=lead_id,
                    manager_userid="wang",
                    status="closed",
                    offered_at=now - timedelta(minutes=40),
                    responded_at=now - timedelta(minutes=39),
                    closed_at=now - timedelta(minutes=30),
                    reason="得分 20",
                    note="已开户",
                    channel_action="kf_transfer",
                    channel_status="done",
                ),
            ]
        )


def test_lead_timeline_is_in_chinese_with_no_english_service_sentence_left(
    services: Services, app: Flask
) -> None:
    seeded = seed(services)
    _busy_timeline(services, seeded)
    with services.db.read() as session:
        english = [item.summary for item in timeline(session, EXT["1"])]
    page = html.unescape(
        signed_in(app, "chen").get(f"/console/leads/{seeded.ids['1']}?tpage=1").get_data(as_text=True)
    )
    section = page.split('data-testid="timeline"')[1].split("</section>")[0]
    # The CLI's wording of the very entries shown: none of it may reach the Chinese page.
    for known in (
        "arrived via contact_way code XHS1",
        "新客 (in WeCom)",
        "ETF (not in WeCom: errcode 40068)",
        "welcome_xiaohongshu v1 [failed 41051]",
        "lead.subscribe by kf",
        "stage new → qualified by scoring",
        "accepted by wang",
        "kf_transfer: done",
        "offered to li (attempt 1), answer due",
        "customer: 我的电话",
    ):
        assert any(known in line for line in english), known  # the data does produce the sentence
        assert known not in section, known
    for translated in (
        "通过「联系我」二维码添加，引流码 XHS1，成员 -",
        "新客（已同步到企业微信）",
        "ETF（未同步到企业微信：errcode 40068）",
        "welcome_xiaohongshu v1【失败，错误码 41051】：欢迎",
        "lead.subscribe（操作人 kf）",
        "阶段 新客户 → 合格（操作人 scoring）",
        "转交 #",
        "已被 wang 接受",
        "客服会话已转给客户经理：完成",
        "客户：我的电话",
    ):
        assert translated in section, translated


def test_lead_timeline_pages_keep_the_lead_in_their_links(services: Services) -> None:
    seeded = seed(services)
    _busy_timeline(services, seeded)
    small = Services(
        services.settings.replace(console={"page_size": 5}), db=services.db, coordinator=services.coordinator
    )
    browser = signed_in(make_app(small), "chen")
    url = f"/console/leads/{seeded.ids['1']}"
    first = html.unescape(browser.get(url).get_data(as_text=True))
    pager = first.split('data-testid="pager-tpage"')[1].split("</nav>")[0]
    assert f'href="{url}?tpage=2#timeline"' in pager and "第 1 页" in pager
    second = html.unescape(browser.get(f"{url}?tpage=2").get_data(as_text=True))
    rows = second.split('data-testid="timeline"')[1].split("</section>")[0].count("<tr><td>")
    assert rows == 5 and f'href="{url}?tpage=1#timeline"' in second
    assert "通过「联系我」二维码添加" in first and "通过「联系我」二维码添加" not in second  # oldest first


def test_the_console_words_every_timeline_code_and_every_value_code_it_labels() -> None:
    assert set(texts.TIMELINE_TEXTS) == set(TEXTS)
    assert set(texts.SKIP_LABELS) == set(SkipReason)
    assert set(texts.DELIVERY_STATUS_LABELS) == set(DeliveryStatus)
    assert set(texts.STAGE_LABELS) == set(Stage)
    assert set(texts.SCORE_KIND_LABELS) == set(ScoreKind)


def test_lead_page_words_score_fragments_stage_reasons_and_handoff_notes_in_chinese(
    services: Services, app: Flask
) -> None:
    settings = services.settings.replace(handoff={"sla_minutes": 30}, scoring={"half_life_days": 14})
    with services.db.sessions() as session:
        for key in ("handoff_brief", "handoff_note"):
            flow_tests.load_default(session, key)
        flow_tests.manager(session, "li", name="李经理", capacity=1)
        row = flow_tests._intent_lead(session, "wm_flow1")
        handoff = flow_tests.qualify(session, settings, row)
        assert handoff is not None and handoff.manager_userid == "li"
        flow_tests.delivered(session, handoff)
        # Nobody else is free: the miss sends the lead back to wait for a manager.
        assert (
            time_out(flow_tests.desk(session, settings, flow_tests.NOW + timedelta(minutes=31)), handoff.id)
            is not None
        )
        now = utcnow()
        for ref, at in (
            ("click:1", now),
            ("click:2", now - timedelta(minutes=1)),
            ("click:3", now - timedelta(days=14)),
        ):
            _scored(session, row, "clicked", ref, "开户指南", 10, at)
        session.add(  # a reason written before reasons had codes, or typed by a person: shown as stored
            StageChange(
                lead_id=row.id, from_stage="new", to_stage="new", at=now, actor="ada", reason="by hand"
            )
        )
        lead_id = row.id
        session.commit()
    page = html.unescape(signed_in(app, "chen").get(f"/console/leads/{lead_id}").get_data(as_text=True))
    changes = page.split('data-testid="stages"')[1].split("</section>")[0]
    assert "已分配给 李经理" in changes and "等待客户经理：没有其他符合条件的客户经理空闲" in changes
    assert "by hand" in changes and "offered to" not in changes and "waiting for a manager" not in changes
    handoffs = page.split('data-testid="lead-handoffs"')[1].split("</section>")[0]
    assert "30 分钟内未应答" in handoffs and "no answer within" not in handoffs
    queue = signed_in(app, "chen").get("/console/handoffs").get_data(as_text=True)
    assert "30 分钟内未应答" in queue and "no answer within" not in queue
    explanation = page.split('data-testid="score-explanation"')[1].split("</ol>")[0]
    assert "点击「开户指南」 +10</li>" in explanation
    assert "点击「开户指南」 +5（已达上限 15）" in explanation
    assert "点击「开户指南」 +0（由 10 衰减；已达上限 15）" in explanation
    assert "decayed" not in explanation and "reached" not in explanation


def test_a_lead_that_converts_ends_its_handoff_with_a_coded_note(services: Services, app: Flask) -> None:
    seeded = seed(services)
    with services.db.transaction() as session:
        lead = session.get(Lead, seeded.ids["2"])
        assert lead is not None
        transition(session, lead, Stage.CONVERTED, "manager:wang", "成交 (#1)", utcnow())
    page = html.unescape(
        signed_in(app, "chen").get(f"/console/leads/{seeded.ids['2']}").get_data(as_text=True)
    )
    handoffs = page.split('data-testid="lead-handoffs"')[1].split("</section>")[0]
    assert "线索已转化" in handoffs and "lead converted" not in handoffs


def test_every_stage_reason_and_handoff_note_code_the_bot_stores_has_a_console_text() -> None:
    reasons: set[str] = set()
    notes: set[str] = set()
    for module in (flow, stages):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "transition":
                for keyword in node.keywords:
                    if keyword.arg == "code":
                        reasons |= _constants(keyword.value)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_end" and len(node.args) > 4:
                notes |= _constants(node.args[4])
            if isinstance(node, ast.Assign) and "note_code" in ast.unparse(node.targets[0]):
                value = node.value.elts[0] if isinstance(node.value, ast.Tuple) else node.value
                notes |= _constants(value)
    assert reasons and reasons == set(texts.STAGE_REASONS)
    assert notes == set(texts.HANDOFF_NOTES)


def _constants(node: ast.AST) -> set[str]:
    """The literal strings in an expression that names a code (a constant or a choice between two)."""
    found = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return {c for c in found if c.replace("_", "").replace(".", "").isalpha()}
