"""From `hookcodes create` to a welcomed, attributed lead, through the simulator over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.deliveries import Delivery, DeliveryStatus
from models.leads import HookCode, Lead
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved

WELCOME = (
    "{{ lead.display_name }}您好，欢迎从{{ hook.platform_name }}来到{{ firm.name }}，我是{{ manager.name }}。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


def test_hook_code_to_welcomed_lead(
    services: Services, sim: Simulator, env: dict[str, str], runner: CliRunner
) -> None:
    secrets = sim.config.secrets
    services.settings = services.settings.replace(
        wecom={
            "api_base_url": sim.base_url,
            "agent_secret": secrets["agent"],
            "contact_secret": secrets["contact"],
            "kf_secret": secrets["kf"],
        }
    )
    env = {
        **env,
        "BOT_WECOM__API_BASE_URL": sim.base_url,
        "BOT_WECOM__AGENT_SECRET": secrets["agent"],
        "BOT_WECOM__CONTACT_SECRET": secrets["contact"],
        "BOT_WECOM__CORP_ID": TEST_CORP_ID,
    }

    def cli(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    with services.db.transaction() as session:
        approved(session, "welcome_xiaohongshu", "welcome", WELCOME)
    cli("members", "add", "zhangsan", "--name", "张经理")
    out = cli(
        "hookcodes", "create", "XHS888", "--platform", "xiaohongshu", "--member", "zhangsan", "--as", "olivia"
    )
    assert "contact way" in out and "ready" in out
    bad = runner.invoke(
        main,
        ["hookcodes", "create", "X" * 31, "--platform", "douyin", "--member", "u", "--as", "olivia"],
        env=env,
    )
    assert bad.exit_code == 1 and "2-30 characters" in bad.output
    with services.db.transaction() as session:
        code = session.scalars(select(HookCode)).one()
        config_id = code.contact_way_config_id
    assert config_id and sim.relation("zhangsan", "wmNEW1") is None

    with EmbeddedRuntime(services) as runtime:
        sim.connect_bot(f"{runtime.url}/wecom/callback", retry_interval_s=0)
        started = time.monotonic()
        sim.customer_scans(config_id, "wmNEW1")
        deadline = time.monotonic() + 15
        while not sim.welcomes and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    assert sim.welcomes, "no welcome reached WeCom"
    welcome = sim.welcomes[0]
    assert welcome.external_userid == "wmNEW1" and "欢迎从小红书来到示例证券，我是张经理" in (
        welcome.text or ""
    )
    assert elapsed < 20
    with services.db.transaction() as session:
        lead = session.scalars(select(Lead)).one()
        assert (lead.platform, lead.hook_code) == ("xiaohongshu", "XHS888")
        assert session.scalars(select(Delivery.status)).one() == DeliveryStatus.SENT
    assert "XHS888" in cli("hookcodes", "list") and "leads=1" in cli("hookcodes", "list")
    cli("hookcodes", "disable", "XHS888", "--as", "olivia")
    assert "disabled" in cli("hookcodes", "list")


def test_acquisition_link_attributes_and_quota_events_alert(
    services: Services, sim: Simulator, env: dict[str, str], runner: CliRunner
) -> None:
    from models.alerts import Alert

    secrets = sim.config.secrets
    settings = {
        "api_base_url": sim.base_url,
        "agent_secret": secrets["agent"],
        "contact_secret": secrets["contact"],
    }
    services.settings = services.settings.replace(wecom=settings)
    env = {
        **env,
        **{f"BOT_WECOM__{k.upper()}": v for k, v in settings.items()},
        "BOT_WECOM__CORP_ID": TEST_CORP_ID,
    }
    with services.db.transaction() as session:
        approved(
            session,
            "welcome_default",
            "welcome",
            "您好，欢迎来到{{ firm.name }}。市场有风险，投资需谨慎。{{ firm.opt_out }}",
        )
    args = ["hookcodes", "create", "DY001", "--platform", "douyin", "--member", "lisi", "--no-contact-way"]
    result = runner.invoke(main, [*args, "--acquisition-link", "--as", "olivia"], env=env)
    assert result.exit_code == 0, result.output
    with services.db.transaction() as session:
        url = session.scalars(select(HookCode.acquisition_url)).one()
    assert url and url.endswith("?customer_channel=DY001")

    def alerts() -> list[str]:
        with services.db.transaction() as session:
            return sorted(session.scalars(select(Alert.kind)))

    with EmbeddedRuntime(services) as runtime:
        sim.connect_bot(f"{runtime.url}/wecom/callback", retry_interval_s=0)
        sim.customer_scans(url, "wmACQ1")
        sim.set_acquisition_balance(5)
        sim.set_acquisition_balance(0)
        deadline = time.monotonic() + 15
        while len(alerts()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    with services.db.transaction() as session:
        lead = session.scalars(select(Lead)).one()
    assert (lead.platform, lead.hook_code, lead.external_user_id) == ("douyin", "DY001", "wmACQ1")
    assert alerts() == ["acquisition.balance_exhausted", "acquisition.balance_low"]
