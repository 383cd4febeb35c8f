"""The command line: init, users, events, doctor, settling deliveries, alerts — on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.accounts import create_user
from bot.cli import main
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.delivery.outbox import enqueue
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.worker import Worker
from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.contacts import ContactRelation
from models.deliveries import Channel, Delivery
from models.inbox import EventStatus, InboundEvent
from models.leads import HookCode
from models.ledger import LedgerEntry
from models.users import User
from scripts_library import ledger
from tests.callbacks import envelope, params_of, text_message
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import POLICY, approved, ensure_people
from tests.test_dispatcher import REMINDER
from tests.test_dispatcher import values as reminder_values


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
    assert "FAIL" in lines["wecom contact"] and "40001" in lines["wecom contact"]  # set, so checked
    assert "OK" in lines["wecom kf"] and "not in use" in lines["wecom kf"]  # empty and unused: nothing to fix
    assert result.exit_code == 1
    assert simulator.gettoken_calls >= 2


def _doctor(runner: CliRunner, env: dict[str, str], **wecom: str) -> tuple[int, dict[str, str]]:
    """Run `doctor` with `[wecom]` keys set; the exit code and each line by its first words."""
    env = {**env, **{f"BOT_WECOM__{key.upper()}": value for key, value in wecom.items()}}
    result = runner.invoke(main, ["doctor"], env=env)
    lines = {line.split("  ")[0].strip(): line for line in result.output.splitlines()}
    return result.exit_code, lines


def test_doctor_checks_contact_and_kf_apis_only_as_far_as_the_firm_uses_them(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY,
        contact_apps=["contact"], kf_apps=["kf"],  # the app's own secret was not granted either API
    )  # fmt: skip
    with Simulator(config) as sim:
        wecom = {
            "corp_id": TEST_CORP_ID, "token": TEST_TOKEN, "encoding_aes_key": TEST_AES_KEY,
            "api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"],
        }  # fmt: skip
        code, lines = _doctor(runner, env, **wecom)
        contact, kf = lines["wecom contact token"], lines["wecom kf token"]
        assert code == 0, lines
        assert "OK" in contact and "customer contact not in use" in contact
        assert "OK" in kf and "WeChat Customer Service not in use" in kf
        with services.db.transaction() as session:
            session.add(
                HookCode(
                    code="XHS888",
                    platform="xiaohongshu",
                    members=["zhangsan"],
                    kf_open_kfid="wkKF01",
                    kf_url="https://work.weixin.qq.com/kfid/x",
                )
            )
            session.add(ContactRelation(user_id="zhangsan", external_user_id="wm1", status="active"))
        code, lines = _doctor(runner, env, **wecom)
        contact, kf = lines["wecom contact token"], lines["wecom kf token"]
        assert code == 1
        for line, setup in ((contact, "客户联系"), (kf, "微信客服")):
            assert "FAIL" in line and "48002" in line and f"grant the app the API under {setup}" in line
        assert "customers added to members: 1" in contact and "active hook codes with kf links: 1" in kf
        code, lines = _doctor(runner, env, **wecom, contact_secret=sim.config.secrets["contact"],
                              kf_secret=sim.config.secrets["kf"])  # fmt: skip
        contact, kf = lines["wecom contact token"], lines["wecom kf token"]
        assert code == 0, lines
        assert "OK" in contact and "wecom.contact_secret: API permitted" in contact
        assert "OK" in kf and "in use: active hook codes with kf links: 1" in kf
        code, lines = _doctor(runner, env, **{**wecom, "agent_secret": ""})
        assert code == 1
        assert (
            "in use (customers added to members: 1) and no secret serves it" in lines["wecom contact token"]
        )
    code, lines = _doctor(runner, {**env, "BOT_DATABASE__URL": "sqlite:////nonexistent/dir/bot.db"})
    assert "FAIL" in lines["database"]
    assert "WARN" in lines["wecom kf token"] and "database unavailable" in lines["wecom kf token"]


def test_doctor_names_a_config_error(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(main, ["doctor"], env={**env, "BOT_WECOM__AGENT_ID": "x"})
    assert result.exit_code == 1
    assert "wecom.agent_id: expected an integer" in result.output


def test_commands_refuse_an_unmigrated_database(runner: CliRunner, tmp_path: object) -> None:
    env = {"BOT_DATABASE__URL": f"sqlite:///{tmp_path}/empty.db", "BOT_CONFIG": ""}
    result = runner.invoke(main, ["worker"], env=env)
    assert result.exit_code == 1 and "run `wecom-bot init` first" in result.output


def _sender(services: Services, at: datetime, worker_id: str | None = None) -> DeliveryDispatcher:
    return DeliveryDispatcher(
        services.settings, services.db, services.coordinator, services.client, worker_id=worker_id,
        clock=lambda: at,
    )  # fmt: skip


def _unknown_deliveries(services: Services, count: int) -> list[int]:
    """`count` staff reminders whose sender died mid-call (unknown, alerted), then one not yet due."""
    with services.db.transaction() as session:
        approved(session, "staff_reminder", "staff_reminder", REMINDER)
        create_user(session, "adam", "admin", "admin-password1")
        ids = [
            enqueue(
                session, purpose_key=f"reminder:{n}", channel=Channel.APP_MESSAGE, recipient="zhangsan",
                script_key="staff_reminder", values=reminder_values(), policy=POLICY,
            ).id
            for n in range(count + 1)
        ]  # fmt: skip
    now = utcnow()
    assert _sender(services, now, worker_id="dead").claim(limit=count) == ids[:count]
    later = now + timedelta(seconds=services.settings.worker.lease_s + 1)
    with services.db.transaction() as session:
        waiting = session.get(Delivery, ids[-1])
        assert waiting is not None
        waiting.next_attempt_at = later + timedelta(hours=1)
    assert _sender(services, later).claim() == []  # the lapsed leases are flagged unknown
    return ids


def test_unknown_deliveries_are_settled_after_checking_wecom_never_resent(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    first, second, queued = _unknown_deliveries(services, 2)
    with services.db.transaction() as session:  # one customer of a mass-send task whose creation is unknown
        mass = Delivery(purpose_key="run:1:1", channel=Channel.MASS_TEMPLATE, recipient="wm1", script_key="x",
                        script_version=1, approval_id=1, content_hash="x", text="x", lint_verdict="pass",
                        status="unknown")  # fmt: skip
        session.add(mass)
        session.flush()
        mass_id = mass.id

    def settle(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["deliveries", "settle", *args], env=env)
        return result.exit_code, result.output

    reason = ["--reason", "成员聊天记录里有这条消息"]
    assert settle(str(first), *reason, "--as", "olivia")[0] == 2  # neither --sent nor --failed
    assert "not unknown" in settle(str(queued), "--sent", *reason, "--as", "olivia")[1]
    assert "it settles with its task" in settle(str(mass_id), "--sent", *reason, "--as", "olivia")[1]
    assert "no delivery 99999" in settle("99999", "--sent", *reason, "--as", "olivia")[1]
    assert "may not settle" in settle(str(first), "--sent", *reason, "--as", "chen")[1]
    assert "reason: 1-500" in settle(str(first), "--sent", "--reason", " ", "--as", "olivia")[1]
    code, out = settle(str(first), "--sent", *reason, "--as", "olivia")
    assert code == 0 and f"delivery {first}: sent (settled by olivia); acknowledged alert" in out
    assert "is sent, not unknown" in settle(str(first), "--failed", *reason, "--as", "olivia")[1]
    assert settle(str(second), "--failed", "--reason", "会话里没有", "--as", "adam")[0] == 0
    with services.db.read() as session:
        status = dict(session.execute(select(Delivery.id, Delivery.status)).all())
        assert (status[first], status[second], status[queued], status[mass_id]) == (
            "sent", "failed", "queued", "unknown",
        )  # fmt: skip
        outcomes = session.execute(
            select(LedgerEntry.outcome, LedgerEntry.detail).where(LedgerEntry.entry_type == "outcome")
            .order_by(LedgerEntry.seq)
        ).all()  # fmt: skip
        assert [o for o, _ in outcomes] == ["unknown", "unknown", "sent", "failed"]
        assert outcomes[2][1] == "settled as sent by olivia: 成员聊天记录里有这条消息"
        assert ledger.verify(session).ok
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "delivery.settle")).all()
        assert [(a.actor, a.target, a.detail["to"]) for a in audit] == [
            ("olivia", f"delivery:{first}", "sent"),
            ("adam", f"delivery:{second}", "failed"),
        ]
        alerts = session.scalars(select(Alert).order_by(Alert.id)).all()
        assert [(a.kind, a.acknowledged_by) for a in alerts] == [
            ("delivery.unknown", "olivia"),
            ("delivery.unknown", "adam"),
        ]
    # Settled either way, neither is ever sent again: only the message that was never leased is due.
    assert _sender(services, utcnow() + timedelta(days=1)).claim() == [queued]


ALERTS_AT = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)  # 08:30 in Shanghai


def _alert(session: Session, kind: str, severity: str, audience: str, minutes: int) -> int:
    row = Alert(raised_at=ALERTS_AT + timedelta(minutes=minutes), kind=kind, severity=severity,
                audience=audience, message=f"{kind} happened", detail={"n": minutes})  # fmt: skip
    session.add(row)
    session.flush()
    return row.id


def test_alerts_are_listed_and_acknowledged_by_those_they_are_for(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    with services.db.transaction() as session:
        ensure_people(session)
        create_user(session, "adam", "admin", "admin-password1")
        create_user(session, "mia", "manager", "manager-password")
        blocked = _alert(session, "send.blocked", "critical", "both", 1)
        run_held = _alert(session, "run.held", "warning", "compliance", 2)
        unknown = [_alert(session, "delivery.unknown", "warning", "operator", 3 + n) for n in range(2)]

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["alerts", *args], env=env)
        assert result.exit_code == code, result.output
        return result.output

    lines = cli("list").splitlines()
    assert [int(line.split()[0]) for line in lines] == [*reversed(unknown), run_held, blocked]
    assert "2026-11-24 08:31 critical both       send.blocked" in lines[-1]
    assert cli("list", "--severity", "critical").count("\n") == 1
    assert "run.held" in cli("list", "--audience", "compliance")
    assert '"n": 2' in cli("show", str(run_held))
    assert "no alert 99999" in cli("show", "99999", code=1)
    # Operators cannot silence what compliance must see; nothing is acknowledged when one is refused.
    out = cli("ack", str(unknown[0]), str(run_held), "--as", "olivia", code=1)
    assert "olivia may not acknowledge alerts for compliance (ask someone who can: admin, compliance)" in out
    assert "mia (manager) may not acknowledge" in cli("ack", str(blocked), "--as", "mia", code=1)
    assert "not both and not neither" in cli("ack", "--as", "olivia", code=1)
    assert "no alert 99999" in cli("ack", "99999", "--as", "olivia", code=1)
    assert "acknowledged 1 alert: " in cli("ack", str(run_held), "--note", "已批准新版本", "--as", "chen")
    assert f"already acknowledged: {run_held} (by chen)" in cli("ack", str(run_held), "--as", "adam", code=1)
    out = cli("ack", "--kind", "delivery.unknown", "--note", "已核对企业微信", "--as", "olivia")
    assert f"acknowledged 2 alerts: {unknown[0]}, {unknown[1]}" in out
    assert "no open alert of kind 'delivery.unknown'" in cli(
        "ack", "--kind", "delivery.unknown", "--as", "olivia", code=1
    )
    assert [int(line.split()[0]) for line in cli("list").splitlines()] == [blocked]
    everything = cli("list", "--all")
    assert "[acknowledged by chen]" in everything and everything.count("[acknowledged by olivia]") == 2
    cli("ack", str(blocked), "--as", "adam")
    assert cli("list") == "no open alerts\n"
    with services.db.read() as session:
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "alert.ack").order_by(AuditEntry.id)
        )
        assert [(a.actor, a.target, a.detail["note"]) for a in audit] == [
            ("chen", f"alert:{run_held}", "已批准新版本"),
            ("olivia", f"alert:{unknown[0]}", "已核对企业微信"),
            ("olivia", f"alert:{unknown[1]}", "已核对企业微信"),
            ("adam", f"alert:{blocked}", ""),
        ]
