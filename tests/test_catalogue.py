"""Maker–checker: drafts, submission, approval rules, validity windows, final-text lint, hostile values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.accounts import create_user
from bot.config import ComplianceSettings
from bot.services import Services
from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.scripts import ScriptVersion, VersionStatus
from scripts_library import catalogue as cat
from scripts_library.rendering import TemplateError

POLICY = cat.policy_from_settings(ComplianceSettings())
CLEAN_WELCOME = (
    "{{ lead.display_name }}您好，欢迎关注{{ firm.name }}投资者教育服务号，我是{{ manager.name }}。"
    "回复“订阅”接收交易日早报。市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
VALUES = {
    "lead": {"display_name": "陈女士"},
    "manager": {"name": "李经理"},
    "firm": {"name": "示例证券", "opt_out": "回复TD退订"},
    "hook": {"platform_name": "小红书"},
}


@pytest.fixture
def session(services: Services) -> Session:
    with services.db.sessions() as s:
        create_user(s, "olivia", "operator", "operator-password")
        create_user(s, "omar", "operator", "operator-password")
        create_user(s, "chen", "compliance", "compliance-password")
        create_user(s, "carl", "compliance", "compliance-password")
        create_user(s, "mia", "manager", "manager-password")
        s.commit()
        cat.create_script(s, "welcome_xhs", "welcome", "olivia")
        s.commit()
        yield s


def draft_and_submit(
    session: Session, body: str, author: str = "olivia", key: str = "welcome_xhs"
) -> ScriptVersion:
    saved = cat.save_draft(session, key, body, author, POLICY)
    return cat.submit(session, key, saved.version.number, author, POLICY)


def test_clean_draft_is_approved_and_composed(session: Session) -> None:
    saved = cat.save_draft(session, "welcome_xhs", CLEAN_WELCOME, "olivia", POLICY)
    assert saved.lint.verdict == "pass", saved.lint.to_dict()
    assert "王先生" in saved.preview  # sample values
    cat.submit(session, "welcome_xhs", 1, "olivia", POLICY)
    approval = cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    assert approval.content_hash == cat.content_hash(CLEAN_WELCOME)
    composed = cat.compose(session, "welcome_xhs", VALUES, POLICY, recipient="wm1")
    assert (
        composed.text.startswith("陈女士您好") and composed.approval.id == approval.id and not composed.held
    )


def test_red_line_draft_cannot_be_approved(session: Session) -> None:
    body = CLEAN_WELCOME.replace("回复“订阅”接收交易日早报。", "跟着老师操作保本稳赚，月收益20%！")
    saved = cat.save_draft(session, "welcome_xhs", body, "olivia", POLICY)
    assert saved.lint.verdict == "block"
    cat.submit(session, "welcome_xhs", 1, "olivia", POLICY)
    with pytest.raises(cat.WorkflowError, match="cannot be approved"):
        cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    assert cat.get_version(session, "welcome_xhs", 1).status == VersionStatus.SUBMITTED


def test_author_cannot_approve_own_version_and_roles_are_enforced(session: Session) -> None:
    cat.create_script(session, "fallback_x", "fallback", "olivia")
    from models.users import User

    chen = session.scalars(select(User).where(User.username == "chen")).one()
    chen.role = "operator"  # a reviewer who also authors: still never approves their own
    cat.save_draft(
        session, "fallback_x", "{{ lead.display_name }}您好，消息已收到。{{ firm.opt_out }}", "chen", POLICY
    )
    cat.submit(session, "fallback_x", 1, "chen", POLICY)
    chen.role = "compliance"
    with pytest.raises(cat.PermissionDenied, match="may not review"):
        cat.approve(session, "fallback_x", 1, "chen", POLICY)
    with pytest.raises(cat.PermissionDenied, match="not a compliance reviewer"):
        cat.approve(session, "fallback_x", 1, "omar", POLICY)
    with pytest.raises(cat.PermissionDenied, match="may not edit"):
        cat.save_draft(session, "welcome_xhs", CLEAN_WELCOME, "mia", POLICY)
    with pytest.raises(cat.PermissionDenied, match="only the author"):
        cat.save_draft(session, "welcome_xhs", CLEAN_WELCOME, "olivia", POLICY)
        cat.submit(session, "welcome_xhs", 1, "omar", POLICY)
    cat.approve(session, "fallback_x", 1, "carl", POLICY)


def test_submitted_versions_are_frozen_and_edits_make_new_versions(session: Session) -> None:
    v1 = draft_and_submit(session, CLEAN_WELCOME)
    with pytest.raises(cat.WorkflowError, match="only drafts"):
        cat.submit(session, "welcome_xhs", 1, "olivia", POLICY)
    saved = cat.save_draft(session, "welcome_xhs", CLEAN_WELCOME + "\n", "olivia", POLICY)
    assert (v1.number, saved.version.number) == (1, 2)
    again = cat.save_draft(session, "welcome_xhs", CLEAN_WELCOME + "\n\n", "olivia", POLICY)
    assert again.version.number == 2  # the author's open draft is edited in place


def test_tampered_body_is_neither_reviewed_nor_sent(session: Session) -> None:
    version = draft_and_submit(session, CLEAN_WELCOME)
    cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    version.body = CLEAN_WELCOME.replace("投资者教育", "稳赚")  # a direct database edit
    with pytest.raises(cat.NotSendable, match="does not match its approval"):
        cat.compose(session, "welcome_xhs", VALUES, POLICY)


def test_newer_approval_supersedes_and_retire_stops_sending(session: Session) -> None:
    draft_and_submit(session, CLEAN_WELCOME)
    cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    draft_and_submit(session, CLEAN_WELCOME.replace("服务号", "公众号"), author="omar")
    cat.approve(session, "welcome_xhs", 2, "chen", POLICY)
    assert cat.get_version(session, "welcome_xhs", 1).status == VersionStatus.SUPERSEDED
    assert "公众号" in cat.compose(session, "welcome_xhs", VALUES, POLICY).text
    cat.retire(session, "welcome_xhs", 2, "chen")
    with pytest.raises(cat.NotSendable):
        cat.compose(session, "welcome_xhs", VALUES, POLICY)


def test_morning_report_approved_for_one_day_is_not_sendable_the_next(session: Session) -> None:
    cat.create_script(session, "morning_report", "morning_report", "olivia")
    body = (
        "【{{ firm.name }}早报】{{ report.date }}\n今日关注：央行公开市场操作。\n"
        "数据来源：上海证券交易所，截至{{ report.date }}。\n"
        "以上内容仅供参考，不构成投资建议。{{ firm.opt_out }}"
    )
    draft_and_submit(session, body, key="morning_report")
    day = datetime(2026, 11, 24, tzinfo=UTC)
    cat.approve(
        session, "morning_report", 1, "chen", POLICY, valid_from=day, valid_until=day + timedelta(days=1)
    )
    values = {"firm": VALUES["firm"], "report": {"date": "2026年11月24日", "weekday": "星期二"}}
    assert cat.compose(session, "morning_report", values, POLICY, at=day + timedelta(hours=8))
    with pytest.raises(cat.NotSendable, match="no approved version"):
        cat.compose(session, "morning_report", values, POLICY, at=day + timedelta(days=1, hours=8))
    with pytest.raises(cat.WorkflowError, match="valid_until must be after"):
        draft_and_submit(session, body + "\n", key="morning_report")
        cat.approve(session, "morning_report", 2, "chen", POLICY, valid_from=day, valid_until=day)


def test_hostile_nickname_is_blocked_before_sending_and_alerts(session: Session) -> None:
    draft_and_submit(session, CLEAN_WELCOME)
    cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    hostile = {**VALUES, "lead": {"display_name": "保本稳赚内幕消息群主"}}
    with pytest.raises(cat.MessageBlocked) as caught:
        cat.compose(session, "welcome_xhs", hostile, POLICY, recipient="wmHOSTILE")
    assert caught.value.result.blocked
    alert = session.scalars(select(Alert)).one()
    assert alert.kind == "send.blocked" and "wmHOSTILE" in alert.message


def test_template_injection_is_refused_at_save_time(session: Session) -> None:
    for body in (
        "{{ lead.__class__.__mro__ }}",
        "{{ lead.phone }}",
        "{{ config }}",
        "{% for x in lead %}{{ x }}{% endfor %}",
        "{{ lead.display_name.upper() }}",
        "{{ report.date }}",  # a morning-report variable is not available in a welcome
    ):
        with pytest.raises(TemplateError):
            cat.save_draft(session, "welcome_xhs", body, "olivia", POLICY)
    assert session.scalars(select(ScriptVersion)).all() == []


def test_rejection_needs_a_reason_and_every_change_is_audited(session: Session) -> None:
    draft_and_submit(session, CLEAN_WELCOME)
    with pytest.raises(cat.WorkflowError, match="reason"):
        cat.reject(session, "welcome_xhs", 1, "chen", " ")
    cat.reject(session, "welcome_xhs", 1, "chen", "请补充来源平台说明")
    stmt = select(AuditEntry.action).where(AuditEntry.action.like("script.%")).order_by(AuditEntry.id)
    actions = list(session.scalars(stmt))
    assert actions == ["script.create", "script.save_draft", "script.submit", "script.reject"]


def test_changes_in_the_same_transaction_are_seen_by_the_next_send(session: Session) -> None:
    at = utcnow()
    draft_and_submit(session, CLEAN_WELCOME)
    with pytest.raises(cat.NotSendable):
        cat.sendable(session, "welcome_xhs", at)  # remembered for this transaction...
    cat.approve(session, "welcome_xhs", 1, "chen", POLICY)
    assert cat.sendable(session, "welcome_xhs", at)[1].number == 1  # ...until an approval changes it
    cat.retire(session, "welcome_xhs", 1, "chen")
    with pytest.raises(cat.NotSendable):
        cat.sendable(session, "welcome_xhs", at)
