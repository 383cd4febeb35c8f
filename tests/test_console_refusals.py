"""Service refusals the console shows outside forms (audience filters, the kill switch) in Chinese."""

from __future__ import annotations

import pytest

from bot.campaigns.controls import MAX_REASON_LENGTH, ControlError, resume_sending, stop_sending
from bot.console import texts
from bot.services import Services
from tests.test_console_auth import make_app
from tests.test_console_scripts import signed_in
from tests.test_planner import campaign


def test_campaign_page_words_an_unusable_audience_filter_in_chinese(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as session:
        campaign(session, key="orphan", kind="course_reminder", script_key="course_reminder")
        campaign(session, key="odd", audience={"bogus": 1})
    reader = signed_in(app, "olivia")
    orphan = reader.get("/console/campaigns/orphan").get_data(as_text=True)
    size = orphan.split('data-testid="audience-size"')[1].split("</dd>")[0]
    assert "此活动发给课程报名者，但没有关联课程。" in size and "has no course" not in orphan
    odd = reader.get("/console/campaigns/odd").get_data(as_text=True)
    size = odd.split('data-testid="audience-size"')[1].split("</dd>")[0]
    assert "未知的受众筛选条件：bogus。" in size and "unknown key" not in odd


@pytest.mark.parametrize(
    ("actor", "reason", "chinese", "english"),
    [
        ("", "检查", "请注明由谁操作开关。", "name who changes"),
        ("chen", " ", "请说明停止发送的原因。", "say why"),
        ("chen", "原" * (MAX_REASON_LENGTH + 1), f"原因最多 {MAX_REASON_LENGTH} 个字符。", "at most"),
    ],
)
def test_kill_switch_refusals_are_worded_in_chinese(
    services: Services, actor: str, reason: str, chinese: str, english: str
) -> None:
    app = make_app(services)
    with services.db.transaction() as session, pytest.raises(ControlError) as refused:
        stop_sending(session, actor, reason)
    assert english in str(refused.value)  # the CLI keeps its English
    with app.test_request_context("/console/"):
        worded = texts.refusal(refused.value)
    assert worded == chinese


def test_resuming_with_an_overlong_reason_is_refused_by_code(services: Services) -> None:
    with services.db.transaction() as session, pytest.raises(ControlError) as refused:
        resume_sending(session, "chen", "x" * (MAX_REASON_LENGTH + 1))
    assert refused.value.code == "switch.reason_length" and refused.value.params == {"max": MAX_REASON_LENGTH}
