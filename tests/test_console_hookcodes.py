"""Hook code pages: the list per platform with funnel numbers, creating a code with its QR, disabling it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import select

from bot.leads.hookcodes import create_code
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.leads import HookCode, Lead
from models.scoring import StageChange
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.test_console_auth import audit_actions, make_app
from tests.test_console_scripts import signed_in


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


@pytest.fixture
def app(services: Services, sim: Simulator) -> Flask:
    secrets = sim.config.secrets
    services.settings = services.settings.replace(
        wecom={
            "api_base_url": sim.base_url,
            "agent_secret": secrets["agent"],
            "contact_secret": secrets["contact"],
            "kf_secret": secrets["kf"],
        }
    )
    return make_app(services)


def _leads_of(services: Services, code: str, platform: str, stages: list[list[str]]) -> None:
    """One lead per entry, moved along the listed stages (the last is where it stays)."""
    with services.db.transaction() as session:
        for n, path in enumerate(stages):
            added = datetime(2026, 11, 2, tzinfo=UTC)
            lead = Lead(
                external_user_id=f"wm{code}{n}", platform=platform, hook_code=code, created_at=added,
                subscribed=n == 0,
            )  # fmt: skip
            session.add(lead)
            session.flush()
            stage = "new"
            for to in path:
                session.add(
                    StageChange(lead_id=lead.id, from_stage=stage, to_stage=to, at=added, actor="test")
                )
                stage = to
            lead.stage = stage


def test_list_groups_codes_by_platform_with_their_numbers(services: Services, app: Flask) -> None:
    with services.db.transaction() as session:
        create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia", "双十一")
        create_code(session, "DY01", "douyin", ["lisi"], "olivia")
    _leads_of(services, "XHS888", "xiaohongshu", [["engaged", "qualified"], ["engaged"], []])
    viewer = signed_in(app, "chen")
    page = viewer.get("/console/hookcodes").get_data(as_text=True)
    assert "小红书" in page and "抖音" in page and "双十一" in page
    assert 'data-testid="hookcodes-xiaohongshu"' in page and 'data-testid="hookcodes-douyin"' in page
    xhs = page.split('data-testid="hookcodes-xiaohongshu"')[1].split("</table>")[0]
    cells = [c.split("</td>")[0] for c in xhs.split("<td>")[1:]]
    assert cells[-4:] == ["3", "1", "1", "0"]  # added, subscribed, qualified, converted
    assert 'data-testid="new-hookcode"' not in page  # compliance looks but does not create
    only_dy = viewer.get("/console/hookcodes?platform=douyin").get_data(as_text=True)
    assert "DY01" in only_dy and "XHS888" not in only_dy
    assert signed_in(app, "mia").get("/console/hookcodes").status_code == 403


def test_operator_creates_a_code_with_qr_and_kf_link(services: Services, app: Flask) -> None:
    open_kfid = services.client.post("kf/account/add", {"name": "开户咨询", "media_id": "M"}, app="kf")[
        "open_kfid"
    ]
    operator = signed_in(app, "olivia")
    operator.get("/console/hookcodes")
    response = operator.post(
        "/console/hookcodes",
        {
            "code": "BILI2026",
            "platform": "bilibili",
            "members": "zhangsan, lisi",
            "campaign": "年终直播",
            "keyword": "B站福利",
            "open_kfid": open_kfid,
        },
    )
    assert response.status_code == 302 and response.location.endswith("/console/hookcodes/BILI2026")
    with services.db.read() as session:
        row = session.scalars(select(HookCode).where(HookCode.code == "BILI2026")).one()
        assert row.members == ["zhangsan", "lisi"] and row.created_by == "olivia" and row.keyword == "B站福利"
        qr, kf_url = row.qr_code_url, row.kf_url
    assert qr and kf_url and kf_url.endswith("&scene_param=BILI2026")
    page = operator.get("/console/hookcodes/BILI2026").get_data(as_text=True)
    assert f'<img src="{qr}"' in page and "哔哩哔哩" in page and "年终直播" in page
    assert f'data-testid="profile-link">{kf_url.replace("&", "&amp;")}' in page
    assert audit_actions(services, "hookcode:BILI2026") == [
        "hookcode.create",
        "hookcode.contact_way",
        "hookcode.kf_link",
    ]


def field_block(page: str, name: str) -> str:
    """The console form field whose input is named `name`: its label, input and errors."""
    before, after = page.split(f'name="{name}"', 1)
    return '<div class="field' + before.rsplit('<div class="field', 1)[1] + after.split("</div>", 1)[0]


def test_bad_code_is_refused_and_nothing_is_created(services: Services, app: Flask) -> None:
    with services.db.transaction() as session:
        create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia", keyword="小红书福利")
    operator = signed_in(app, "olivia")
    operator.get("/console/hookcodes")
    for data, message, english in [
        ({"code": "有中文", "platform": "douyin", "members": "zhangsan"}, "2-30 个字母", "characters"),
        ({"code": "XHS888", "platform": "douyin", "members": "zhangsan"}, "钩子码 XHS888 已存在。", "exists"),
        (
            {"code": "DY02", "platform": "douyin", "members": " , "},
            "请填写 1-100 个成员 userid。",
            "members: 1-100",
        ),
    ]:
        response = operator.post("/console/hookcodes", data)
        page = response.get_data(as_text=True)
        assert response.status_code == 400 and message in page and english not in page, data
    taken = {"code": "DY04", "platform": "douyin", "members": "zhangsan", "keyword": "小红书福利"}
    page = operator.post("/console/hookcodes", taken).get_data(as_text=True)
    keyword = field_block(page, "keyword")
    assert "has-error" in keyword and "关键词 小红书福利 已用于另一个钩子码。" in keyword
    assert "has-error" not in field_block(page, "code") and "already names" not in page
    with services.db.read() as session:
        assert session.scalars(select(HookCode.code)).all() == ["XHS888"]
    compliance = signed_in(app, "chen")
    compliance.get("/console/hookcodes")
    assert (
        compliance.post(
            "/console/hookcodes", {"code": "C1", "platform": "douyin", "members": "a"}
        ).status_code
        == 403
    )


def test_disable_a_code_and_retry_its_qr(services: Services, app: Flask) -> None:
    with services.db.transaction() as session:
        create_code(session, "ZH01", "zhihu", ["zhangsan"], "olivia")
    operator = signed_in(app, "olivia")
    page = operator.get("/console/hookcodes/ZH01").get_data(as_text=True)
    assert 'data-testid="qr"' not in page and 'data-testid="profile-link"' not in page
    assert operator.post("/console/hookcodes/ZH01/provision").status_code == 302
    with services.db.read() as session:
        assert session.scalars(select(HookCode.qr_code_url).where(HookCode.code == "ZH01")).one()
    assert operator.post("/console/hookcodes/ZH01/disable").status_code == 302
    page = operator.get("/console/hookcodes/ZH01").get_data(as_text=True)
    assert 'data-state="disabled"' in page and 'data-testid="disable"' not in page
    assert 'data-testid="qr"' in page
    assert audit_actions(services, "hookcode:ZH01") == [
        "hookcode.create",
        "hookcode.contact_way",
        "hookcode.disable",
    ]
    assert operator.post("/console/hookcodes/ZH01/disable", csrf=False).status_code == 400
    compliance = signed_in(app, "chen")
    compliance.get("/console/hookcodes/ZH01")
    assert compliance.post("/console/hookcodes/ZH01/disable").status_code == 403
    assert operator.get("/console/hookcodes/NOPE").status_code == 404
