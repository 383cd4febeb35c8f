"""Script library pages: drafting with live lint, submit, maker–checker decisions, diffs, the review queue."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import select

from bot.delivery.outbox import enqueue
from bot.services import Services
from models.audit import AuditEntry
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.scripts import VersionStatus
from models.users import User
from scripts_library import catalogue as cat
from scripts_library import variants
from tests.scripts_fixtures import POLICY
from tests.test_console_auth import Console, make_app

CLEAN = (
    "{{ lead.display_name }}您好，欢迎关注{{ firm.name }}投资者教育服务号，我是{{ manager.name }}。"
    "回复“订阅”接收交易日早报。市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
RED_LINE = CLEAN.replace("回复“订阅”接收交易日早报。", "跟着老师操作保本稳赚！")


def signed_in(app: Flask, username: str) -> Console:
    console = Console(app.test_client())
    assert console.login(username).status_code == 302
    return console


def draft(console: Console, key: str, body: str, kind: str = "welcome") -> str:
    """Create `key` if needed and save `body` as a draft; return the page it lands on."""
    if console.get(f"/console/scripts/{key}").status_code == 404:
        console.get("/console/scripts/new")
        assert console.post("/console/scripts/new", {"key": key, "kind": kind}).status_code == 302
    console.get(f"/console/scripts/{key}/edit")
    response = console.post(f"/console/scripts/{key}/edit", {"body": body})
    assert response.status_code == 302, response.get_data(as_text=True)
    return str(response.location)


def test_live_lint_returns_verdict_findings_and_spans_on_the_preview(services: Services) -> None:
    operator = signed_in(make_app(services), "olivia")
    draft(operator, "welcome_xhs", CLEAN)
    response = operator.client.post(
        "/console/scripts/welcome_xhs/lint", json={"body": RED_LINE}, headers={"X-CSRFToken": operator.token}
    )
    result = response.get_json()
    assert response.status_code == 200 and result["verdict"] == "block"
    assert "".join(s["text"] for s in result["segments"]) == result["preview"]
    marked = {s["text"] for s in result["segments"] if s["severity"] == "block"}
    assert "保本稳" in "".join(marked) and result["preview"].startswith("王先生您好")
    blocking = [f for f in result["findings"] if f["severity"] == "block"]
    assert {f["rule_id"] for f in blocking} >= {"C1.principal"}
    assert all(result["preview"][f["start"] : f["end"]] == f["matched"] for f in blocking)
    bad = operator.client.post(
        "/console/scripts/welcome_xhs/lint",
        json={"body": "{{ nope }}"},
        headers={"X-CSRFToken": operator.token},
    )
    assert "unknown variable 'nope'" in bad.get_json()["error"]
    assert (
        operator.client.post(
            "/console/scripts/welcome_xhs/lint", data="x", headers={"X-CSRFToken": operator.token}
        ).status_code
        == 400
    )


def test_blocked_draft_is_saved_highlighted_and_script_text_is_escaped(services: Services) -> None:
    operator = signed_in(make_app(services), "olivia")
    hostile = RED_LINE + "<script>alert(1)</script>"
    page = operator.get(draft(operator, "welcome_xhs", hostile)).get_data(as_text=True)
    assert '<mark class="sev-block" title="C1.principal">保本稳赚</mark>' in page.replace("\n", "")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "verdict-block" in page


def test_template_errors_are_shown_next_to_the_text_and_nothing_is_saved(services: Services) -> None:
    operator = signed_in(make_app(services), "olivia")
    draft(operator, "welcome_xhs", CLEAN)
    operator.get("/console/scripts/welcome_xhs/edit")
    response = operator.post("/console/scripts/welcome_xhs/edit", {"body": "{{ lead.phone }}"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'class="field has-error"' in page
    assert "lead.phone is not available in welcome" in page
    with services.db.read() as session:
        assert cat.get_version(session, "welcome_xhs", 1).body == CLEAN


def test_submit_then_compliance_approves_and_history_shows_the_decision(services: Services) -> None:
    app = make_app(services)
    operator = signed_in(app, "olivia")
    operator.get(draft(operator, "welcome_xhs", CLEAN))
    assert operator.post("/console/scripts/welcome_xhs/v/1/submit").status_code == 302
    reviewer = signed_in(app, "chen")
    queue = reviewer.get("/console/review").get_data(as_text=True)
    assert "/console/scripts/welcome_xhs/v/1" in queue
    reviewer.get("/console/scripts/welcome_xhs/v/1")
    response = reviewer.post(
        "/console/scripts/welcome_xhs/v/1/approve",
        {"valid_from": "2026-11-24T08:00", "valid_until": "2026-11-25T08:00", "reason": "措辞合规"},
    )
    assert "v1 已批准" in reviewer.get(response.location).get_data(as_text=True)
    with services.db.read() as session:
        _, _, approval = cat.sendable(session, "welcome_xhs", approval_time(2026, 11, 24, 12))
        assert approval.reviewer == "chen" and approval.valid_from == approval_time(2026, 11, 24, 8)
    history = reviewer.get("/console/scripts/welcome_xhs").get_data(as_text=True)
    assert "措辞合规" in history and "2026-11-24 08:00 – 2026-11-25 08:00" in history


def approval_time(year: int, month: int, day: int, hour: int) -> datetime:
    """A Shanghai wall-clock time, as reviewers type it."""
    return datetime(year, month, day, hour, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_reviewer_cannot_approve_their_own_version_and_sees_why(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as session:
        chen = session.scalars(select(User).where(User.username == "chen")).one()
        chen.role = "operator"
        cat.create_script(session, "fallback_x", "fallback", "chen")
        cat.save_draft(
            session,
            "fallback_x",
            "{{ lead.display_name }}您好，消息已收到。{{ firm.opt_out }}",
            "chen",
            POLICY,
        )
        cat.submit(session, "fallback_x", 1, "chen", POLICY)
        chen.role = "compliance"
    reviewer = signed_in(app, "chen")
    page = reviewer.get("/console/scripts/fallback_x/v/1").get_data(as_text=True)
    assert "此版本由您撰写" in page
    response = reviewer.post("/console/scripts/fallback_x/v/1/approve", {})
    page = reviewer.get(response.location).get_data(as_text=True)
    assert "未批准：chen wrote fallback_x v1 and may not review it" in page
    with services.db.read() as session:
        assert cat.get_version(session, "fallback_x", 1).status == VersionStatus.SUBMITTED


def test_blocked_version_cannot_be_approved_and_rejection_needs_a_reason(services: Services) -> None:
    app = make_app(services)
    operator = signed_in(app, "olivia")
    draft(operator, "welcome_xhs", RED_LINE)
    operator.get("/console/scripts/welcome_xhs/v/1")
    operator.post("/console/scripts/welcome_xhs/v/1/submit")
    reviewer = signed_in(app, "chen")
    reviewer.get("/console/scripts/welcome_xhs/v/1")
    page = reviewer.get(reviewer.post("/console/scripts/welcome_xhs/v/1/approve").location).get_data(
        as_text=True
    )
    assert "fails the compliance lint and cannot be approved" in page
    page = reviewer.get(
        reviewer.post("/console/scripts/welcome_xhs/v/1/reject", {"reason": ""}).location
    ).get_data(as_text=True)
    assert "驳回需要填写理由" in page
    reviewer.post("/console/scripts/welcome_xhs/v/1/reject", {"reason": "含保本承诺"})
    with services.db.read() as session:
        assert cat.get_version(session, "welcome_xhs", 1).status == VersionStatus.REJECTED
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "chen")))
        assert "script.reject" in actions


def test_new_version_is_diffed_against_the_approved_one(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as session:
        cat.create_script(session, "welcome_xhs", "welcome", "olivia")
        cat.save_draft(session, "welcome_xhs", CLEAN, "olivia", POLICY)
        cat.submit(session, "welcome_xhs", 1, "olivia", POLICY)
        cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    operator = signed_in(app, "olivia")
    location = draft(operator, "welcome_xhs", CLEAN.replace("服务号", "公众号") + "\n新增一行")
    page = operator.get(location).get_data(as_text=True)
    assert "<del>服务</del>" in page and "<ins>公众</ins>" in page
    assert '<tr class="diff-insert">' in page and "<ins>新增一行</ins>" in page


def test_list_filters_by_kind_and_status_and_pages(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as session:
        for n in range(30):
            cat.create_script(session, f"kw_{n:02d}", "keyword_reply", "olivia")
        cat.create_script(session, "daily_brief", "morning_report", "olivia")
        cat.save_draft(session, "kw_05", "{{ lead.display_name }}您好。{{ firm.opt_out }}", "olivia", POLICY)
        cat.submit(session, "kw_05", 1, "olivia", POLICY)
    manager = signed_in(app, "mia")
    first = manager.get("/console/scripts?kind=keyword_reply").get_data(as_text=True)
    assert (
        "kw_00" in first
        and "kw_25" not in first
        and "daily_brief" not in first
        and "第 1 页，共 2 页" in first
    )
    second = manager.get("/console/scripts?kind=keyword_reply&page=2").get_data(as_text=True)
    assert "kw_29" in second and "kw_00" not in second
    waiting = manager.get("/console/scripts?status=submitted").get_data(as_text=True)
    assert "kw_05" in waiting and "kw_06" not in waiting


def test_held_message_is_released_or_discarded_from_the_queue(services: Services) -> None:
    app = make_app(services)
    body = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"
    with services.db.transaction() as session:
        cat.create_script(session, "staff_reminder", "staff_reminder", "olivia")
        cat.save_draft(session, "staff_reminder", body, "olivia", POLICY)
        cat.submit(session, "staff_reminder", 1, "olivia", POLICY)
        cat.approve(session, "staff_reminder", 1, "chen", POLICY)
        ids = [
            enqueue(
                session, purpose_key=f"p{n}", channel=Channel.APP_MESSAGE, recipient="zhangsan",
                script_key="staff_reminder", policy=POLICY,
                values={"manager": {"name": "张三"}, "task": {"title": "确认全市场最佳的方案", "due": "9点"}},
            ).id
            for n in range(2)
        ]  # fmt: skip
    reviewer = signed_in(app, "chen")
    page = reviewer.get("/console/review").get_data(as_text=True)
    assert page.count('data-testid="held"') == 2 and '<mark class="sev-warn"' in page
    reviewer.post(f"/console/review/held/{ids[0]}/release")
    response = reviewer.post(f"/console/review/held/{ids[1]}/discard", {"reason": ""})
    assert "作废需要填写理由" in reviewer.get(response.location).get_data(as_text=True)
    reviewer.post(f"/console/review/held/{ids[1]}/discard", {"reason": "绝对化用语"})
    with services.db.read() as session:
        statuses = [session.get(Delivery, i).status for i in ids]  # type: ignore[union-attr]
    assert statuses == [DeliveryStatus.QUEUED, DeliveryStatus.CANCELLED]
    manager = signed_in(app, "mia")
    manager.get("/console/review")
    assert manager.post(f"/console/review/held/{ids[0]}/release").status_code == 403


def _leads_sent(services: Services, key: str, count: int) -> dict[str, int]:
    """`count` leads each sent `key` through the outbox and marked delivered; their versions by WeCom id."""
    from models.base import utcnow
    from models.leads import Lead

    sent: dict[str, int] = {}
    with services.db.transaction() as session:
        now = utcnow()
        for n in range(count):
            ext = f"wmAB{n:03d}"
            session.add(Lead(external_user_id=ext))
            session.flush()
            row = enqueue(
                session, purpose_key=f"ab:{n}", channel=Channel.KF_TEXT, recipient=ext, script_key=key,
                values={"lead": {"display_name": "陈女士"}, "manager": {"name": "李经理"},
                        "firm": {"name": "示例证券", "opt_out": "回复TD退订"}},
                policy=POLICY, now=now,
            )  # fmt: skip
            row.status, row.sent_at = DeliveryStatus.SENT, now
            sent[ext] = row.script_version
    return sent


def test_compliance_approves_a_variant_and_the_test_is_run_and_ended_from_the_script_page(
    services: Services,
) -> None:
    app = make_app(services)
    with services.db.transaction() as session:
        cat.create_script(session, "welcome_xhs", "welcome", "olivia")
        for n, body in ((1, CLEAN), (2, CLEAN.replace("服务号", "公众号"))):
            cat.save_draft(session, "welcome_xhs", body, "olivia", POLICY)
            cat.submit(session, "welcome_xhs", n, "olivia", POLICY)
        cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    operator = signed_in(app, "olivia")
    operator.get("/console/scripts/welcome_xhs/v/2")
    assert operator.post("/console/scripts/welcome_xhs/v/2/approve-variant", {}).status_code == 403
    reviewer = signed_in(app, "chen")
    page = reviewer.get("/console/scripts/welcome_xhs/v/2").get_data(as_text=True)
    assert 'data-testid="approve-variant-form"' in page and "批准为 A/B 变体" in page
    token = reviewer.token
    bad = reviewer.post(
        "/console/scripts/welcome_xhs/v/2/approve-variant",
        {"variant-csrf_token": token, "variant-weight": "0"},
    )
    assert "新变体的权重为 1 到 1000" in reviewer.get(bad.location).get_data(as_text=True)
    done = reviewer.post(
        "/console/scripts/welcome_xhs/v/2/approve-variant",
        {"variant-csrf_token": token, "variant-weight": "50", "variant-reason": "对照测试"},
    )
    page = reviewer.get(done.location).get_data(as_text=True)
    assert "v2 已批准为 A/B 变体，权重 50" in page and "测试 #1 的进行中变体 B，权重 50" in page

    sent = _leads_sent(services, "welcome_xhs", 40)
    per_version = {n: sum(1 for v in sent.values() if v == n) for n in (1, 2)}
    assert per_version[1] > 0 and per_version[2] > 0
    page = operator.get("/console/scripts/welcome_xhs").get_data(as_text=True)
    assert "当前使用：v1 (A), v2 (B) 的 A/B 测试" in page
    for n in (1, 2):
        row = page.split(f'data-testid="arm-{n}">', 1)[1].split("</tr>", 1)[0]
        cells = [c.split("</td>")[0].strip() for c in row.split("<td>")[1:]]
        assert cells[3:8] == ["50", "50.0", str(per_version[n]), str(per_version[n]), str(per_version[n])], (
            cells
        )
    manager = signed_in(app, "mia")
    manager.get("/console/scripts/welcome_xhs")
    assert manager.post("/console/scripts/welcome_xhs/v/2/promote").status_code == 403
    operator.get("/console/scripts/welcome_xhs")
    operator.post("/console/scripts/welcome_xhs/v/1/weight", {"weight": "20"})
    with services.db.read() as session:
        assert {
            a.version.number: a.variant.weight for a in variants.report(session, "welcome_xhs")[0].arms
        } == {
            1: 20,
            2: 50,
        }
    response = operator.post("/console/scripts/welcome_xhs/v/2/promote")
    page = operator.get(response.location).get_data(as_text=True)
    assert "已采用 v2：A/B 测试已结束" in page and "当前使用：v2" in page and "v2 promoted" in page
    with services.db.read() as session:
        assert cat.get_version(session, "welcome_xhs", 1).status == VersionStatus.SUPERSEDED
        actions = set(session.scalars(select(AuditEntry.action)))
    assert {
        "script.variant_live",
        "script.variant_weight",
        "script.variant_promote",
        "script.experiment_end",
    } <= (actions)


def test_retiring_the_last_other_variant_ends_the_test_from_the_console(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as session:
        cat.create_script(session, "welcome_xhs", "welcome", "olivia")
        for n, body in ((1, CLEAN), (2, CLEAN.replace("服务号", "公众号"))):
            cat.save_draft(session, "welcome_xhs", body, "olivia", POLICY)
            cat.submit(session, "welcome_xhs", n, "olivia", POLICY)
        cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
        cat.approve(session, "welcome_xhs", 2, "chen", POLICY, as_variant=True)
    reviewer = signed_in(app, "chen")
    reviewer.get("/console/scripts/welcome_xhs")
    response = reviewer.post("/console/scripts/welcome_xhs/v/1/retire-variant")
    page = reviewer.get(response.location).get_data(as_text=True)
    assert "v1 已退出 A/B 测试" in page and "当前使用：v2" in page and "测试后保留" in page
    again = reviewer.post("/console/scripts/welcome_xhs/v/2/retire-variant")
    assert "未停用：welcome_xhs v2 is not a live variant" in reviewer.get(again.location).get_data(
        as_text=True
    )
