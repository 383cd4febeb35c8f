"""The command line: init, users, events, doctor — each against the real test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.worker import Worker
from models.inbox import EventStatus, InboundEvent
from models.users import User
from tests.callbacks import envelope, params_of, text_message
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN


def usernames(services: Services) -> list[tuple[str, str]]:
    with services.db.transaction() as session:
        return [(u.username, u.role) for u in session.scalars(select(User).order_by(User.id))]


def test_init_without_input_needs_an_admin_then_is_idempotent(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    result = runner.invoke(main, ["init", "--no-input"], env=env)
    assert result.exit_code == 1 and "BOT_ADMIN_USERNAME" in result.output
    env = {**env, "BOT_ADMIN_USERNAME": "root", "BOT_ADMIN_PASSWORD": "correct horse battery"}
    result = runner.invoke(main, ["init", "--no-input"], env=env)
    assert result.exit_code == 0, result.output
    assert "admin 'root' created" in result.output
    result = runner.invoke(main, ["init", "--no-input"], env=env)
    assert result.exit_code == 0 and "admin account present" in result.output
    assert usernames(services) == [("root", "admin")]


def test_init_refuses_a_weak_password(runner: CliRunner, env: dict[str, str], services: Services) -> None:
    result = runner.invoke(
        main, ["init", "--no-input", "--admin-username", "root", "--admin-password", "short"], env=env
    )
    assert result.exit_code == 1 and "at least 10 characters" in result.output
    assert usernames(services) == []


def test_users_add_validates_and_refuses_duplicates(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    args = ["users", "add", "wang.li", "--role", "compliance", "--password", "a-long-password"]
    assert runner.invoke(main, args, env=env).exit_code == 0
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 1 and "taken" in result.output
    result = runner.invoke(
        main, ["users", "add", "x y", "--role", "operator", "--password", "a-long-password"], env=env
    )
    assert result.exit_code == 1 and "username" in result.output
    assert usernames(services) == [("wang.li", "compliance")]


def test_events_list_show_and_replay(runner: CliRunner, env: dict[str, str], services: Services) -> None:
    ingestor = services.ingestor
    assert ingestor is not None
    query, body = envelope(text_message("nobody handles app text yet", "42"))
    p = params_of(query)
    event_id = ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body).event_id
    from handlers import build_dispatcher

    Worker(services.settings, services.db, services.coordinator, build_dispatcher()).drain()
    result = runner.invoke(main, ["events", "list"], env=env)
    assert result.exit_code == 0 and "ignored=1" in result.output and "text" in result.output
    result = runner.invoke(main, ["events", "show", str(event_id)], env=env)
    assert '"kind": "text"' in result.output and "nobody handles" in result.output
    assert runner.invoke(main, ["events", "show", "999999"], env=env).exit_code == 1
    result = runner.invoke(main, ["events", "replay", str(event_id), "--as", "ops"], env=env)
    assert result.exit_code == 0 and "replayed 1" in result.output
    with services.db.transaction() as session:
        assert session.get(InboundEvent, event_id).status == EventStatus.PENDING  # type: ignore[union-attr]
    result = runner.invoke(main, ["events", "replay", str(event_id)], env=env)
    assert result.exit_code == 1 and "not replayable" in result.output


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    config = SimulatorConfig(corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY)
    with Simulator(config) as sim:
        yield sim


def test_doctor_reports_each_item(runner: CliRunner, env: dict[str, str], simulator: Simulator) -> None:
    env = {
        **env,
        "BOT_WECOM__CORP_ID": TEST_CORP_ID,
        "BOT_WECOM__TOKEN": TEST_TOKEN,
        "BOT_WECOM__ENCODING_AES_KEY": TEST_AES_KEY,
        "BOT_WECOM__API_BASE_URL": simulator.base_url,
        "BOT_WECOM__AGENT_SECRET": simulator.config.secrets["agent"],
        "BOT_WECOM__CONTACT_SECRET": "wrong-secret",
    }
    result = runner.invoke(main, ["doctor"], env=env)
    lines = {
        line.split()[0] + (" " + line.split()[1] if line.startswith("wecom") else ""): line
        for line in result.output.splitlines()
    }
    assert "OK" in lines["config"] and "OK" in lines["callback"] and "OK" in lines["database"]
    assert "OK" in lines["redis"]
    assert "OK" in lines["wecom agent"]
    assert "FAIL" in lines["wecom contact"] and "40001" in lines["wecom contact"]
    assert "WARN" in lines["wecom kf"]
    assert result.exit_code == 1
    assert simulator.gettoken_calls >= 2


def test_doctor_names_a_config_error(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(main, ["doctor"], env={**env, "BOT_WECOM__AGENT_ID": "x"})
    assert result.exit_code == 1
    assert "wecom.agent_id: expected an integer" in result.output


def test_commands_refuse_an_unmigrated_database(runner: CliRunner, tmp_path: object) -> None:
    env = {"BOT_DATABASE__URL": f"sqlite:///{tmp_path}/empty.db", "BOT_CONFIG": ""}
    result = runner.invoke(main, ["worker"], env=env)
    assert result.exit_code == 1 and "run `wecom-bot init` first" in result.output
