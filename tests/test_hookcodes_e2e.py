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
from models.leads import CorpTag, HookCode, Lead, LeadTag
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

        def marked() -> list[str]:
            relation = sim.relation("zhangsan", "wmNEW1")
            return list(relation.tags) if relation else []

        while len(marked()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with services.db.transaction() as session:
            corp_tags = {t.local_name: t for t in session.scalars(select(CorpTag))}
        assert set(corp_tags) == {"platform:xiaohongshu", "code:XHS888"}
        assert sorted(marked()) == sorted(t.wecom_tag_id for t in corp_tags.values())
        assert (corp_tags["platform:xiaohongshu"].group_name, corp_tags["platform:xiaohongshu"].tag_name) == (
            "来源平台",
            "小红书",
        )
        sim.admin_deletes_tag(corp_tags["code:XHS888"].wecom_tag_id)  # an admin tidies tags in the console
        while time.monotonic() < deadline:
            with services.db.transaction() as session:
                if session.get(CorpTag, "code:XHS888") is None:
                    break
            time.sleep(0.02)
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


def test_tags_for_a_customer_without_a_relationship_are_given_up_not_retried(
    services: Services, sim: Simulator
) -> None:
    from bot.leads.tagsync import TagSyncer

    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"],
               "contact_secret": sim.config.secrets["contact"]}
    )  # fmt: skip
    with services.db.transaction() as session:
        lead = Lead(external_user_id="wmNOREL", owner_userid="zhangsan")
        session.add(lead)
        session.flush()
        session.add(LeadTag(lead_id=lead.id, name="platform:douyin"))
    syncer = TagSyncer(services.db, services.coordinator, services.client)
    report = syncer.sync()
    assert (report.marked, report.given_up) == (0, 1)
    with services.db.transaction() as session:
        tag = session.scalars(select(LeadTag)).one()
        assert not tag.wecom_synced and tag.sync_error and tag.sync_error.split(":")[0] in {"84061", "40096"}
    assert syncer.sync().given_up == 0  # not tried again


def test_a_corp_tag_recorded_meanwhile_by_another_process_does_not_stop_the_round(
    services: Services, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.leads.tagsync import TagSyncer

    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"],
               "contact_secret": sim.config.secrets["contact"]}
    )  # fmt: skip
    way = services.client.post(
        "externalcontact/add_contact_way", {"type": 1, "scene": 2, "user": ["zhangsan"]}, app="contact"
    )
    sim.customer_scans(way["config_id"], "wmRACE")  # a live relationship to mark the tag on
    with services.db.transaction() as session:
        lead = Lead(external_user_id="wmRACE", owner_userid="zhangsan")
        session.add(lead)
        session.flush()
        session.add(LeadTag(lead_id=lead.id, name="platform:douyin"))
    client = services.client
    real_post = client.post

    def post_while_another_process_records_the_tag(api: str, payload: dict, app: str = "agent") -> dict:  # type: ignore[type-arg]
        result = real_post(api, payload, app=app)
        if api == "externalcontact/add_corp_tag":
            tag = result["tag_group"]["tag"][0]
            with services.db.transaction() as session:
                session.add(
                    CorpTag(local_name="platform:douyin", group_name=result["tag_group"]["group_name"],
                            tag_name=tag["name"], wecom_tag_id=str(tag["id"]))
                )  # fmt: skip
        return result

    monkeypatch.setattr(client, "post", post_while_another_process_records_the_tag)
    report = TagSyncer(services.db, services.coordinator, client).sync()
    assert (report.marked, report.given_up, report.retry_later) == (1, 0, 0)
