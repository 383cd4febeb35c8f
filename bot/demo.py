"""`wecom-bot demo`: a simulated corp and its customers talk to the embedded bot over real HTTP."""

from __future__ import annotations

import logging
import random
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import requests
from sqlalchemy import func, select

from bot.accounts import create_user
from bot.config import Settings
from bot.db import migrate
from bot.leads.hookcodes import create_code, provision_contact_way
from bot.leads.welcome import WELCOME_WINDOW
from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.crypto import CallbackCrypto, random_nonce
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.deliveries import Delivery, DeliveryStatus
from models.inbox import InboundEvent
from models.leads import Lead, LeadTag, Member
from models.scripts import ScriptVersion, VersionStatus
from scripts_library import catalogue, ledger
from scripts_library.files import DEFAULTS_DIR, SYSTEM_AUTHOR, import_scripts

# Hook codes as a brokerage would print them on each platform's profile.
HOOK_CODES = {
    "douyin": "DY2024",
    "xiaohongshu": "XHS888",
    "bilibili": "BILI01",
    "weibo": "WB666",
    "zhihu": "ZH100",
}
MEMBERS = {"zhangsan": "张经理", "lisi": "李经理", "wangwu": "王经理"}
DEMO_PASSWORD = "demo-password-1"


@dataclass
class DemoReport:
    """What the demo did and what the bot recorded."""

    customers: int
    stored: int
    refused: int
    by_status: dict[str, int]
    welcomes: int
    welcome_failures: dict[str, int]
    welcome_p50_ms: float
    welcome_max_ms: float
    by_code: dict[str, int]
    tags_in_wecom: int
    removed: int
    ledger_entries: int
    ledger_intact: bool
    seconds: float


def prepare(services: Services, sim: Simulator) -> dict[str, str]:
    """Migrate, seed and approve the default scripts, name the members, create the hook codes."""
    migrate(services.db.engine)
    policy = catalogue.policy_from_settings(services.settings.compliance)
    with services.db.transaction() as session:
        create_user(session, "demo_operator", "operator", DEMO_PASSWORD, actor="demo")
        create_user(session, "demo_compliance", "compliance", DEMO_PASSWORD, actor="demo")
        import_scripts(session, DEFAULTS_DIR, SYSTEM_AUTHOR, policy, only_missing=True)
        for version in session.scalars(
            select(ScriptVersion).where(ScriptVersion.status == VersionStatus.SUBMITTED)
        ):
            catalogue.approve(
                session, version.script.key, version.number, "demo_compliance", policy, reason="demo"
            )
        for userid, name in MEMBERS.items():
            session.add(Member(userid=userid, name=name))
        for i, (platform, code) in enumerate(HOOK_CODES.items()):
            member = list(MEMBERS)[i % len(MEMBERS)]
            create_code(session, code, platform, [member], "demo_operator", campaign=f"{platform} 投教引流")
    config_ids = {}
    for code in HOOK_CODES.values():
        row = provision_contact_way(services.db, services.client, code)
        config_ids[code] = str(row.contact_way_config_id)
    return config_ids


def _settle(services: Services, timeout_s: float = 60.0) -> None:
    """Wait until every event is handled, every delivery has an outcome and every tag is in WeCom."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with services.db.read() as session:
            open_events = session.scalar(
                select(func.count())
                .select_from(InboundEvent)
                .where(InboundEvent.status.in_(["pending", "processing"]))
            )
            open_sends = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]))
            )
            open_tags = session.scalar(
                select(func.count())
                .select_from(LeadTag)
                .join(Lead, Lead.id == LeadTag.lead_id)
                .where(
                    LeadTag.wecom_synced.is_(False), LeadTag.sync_error.is_(None), Lead.reachable.is_(True)
                )
            )
        if not open_events and not open_sends and not open_tags:
            return
        time.sleep(0.05)


def run_journey(
    services: Services, sim: Simulator, bot_url: str, customers: int, seed: int = 7
) -> DemoReport:
    """Customers scan platform QR codes; some leave again; a forged callback is refused."""
    rng = random.Random(seed)
    config_ids = prepare(services, sim)
    sim.connect_bot(bot_url, retry_interval_s=0)
    started = time.monotonic()
    added: list[tuple[str, str]] = []
    with click.progressbar(range(customers), label="customers scanning hook-code QR codes") as bar:
        for i in bar:
            code = rng.choice(list(HOOK_CODES.values()))
            result = sim.customer_scans(config_ids[code], f"wm{i:06d}demo")
            added.append((result.userid, result.external_userid))
    leaving = rng.sample(added, k=max(1, customers // 20))
    for member, external in leaving:
        sim.customer_deletes_member(member, external)
    refused = _send_forged(sim.config, bot_url)
    _settle(services)
    return _report(services, sim, customers, refused, len(leaving), time.monotonic() - started)


def _report(
    services: Services, sim: Simulator, customers: int, refused: int, removed: int, secs: float
) -> DemoReport:
    with services.db.read() as session:
        stored = int(session.scalar(select(func.count()).select_from(InboundEvent)) or 0)
        by_status = {str(k): int(v) for k, v in session.execute(
            select(InboundEvent.status, func.count()).group_by(InboundEvent.status)
        ).all()}  # fmt: skip
        welcomes = list(
            session.execute(
                select(Delivery.status, Delivery.errcode, Delivery.sent_at, Delivery.deadline).where(
                    Delivery.purpose_key.like("welcome:%")
                )
            ).all()
        )
        by_code = Counter(code or "(unattributed)" for code in session.scalars(select(Lead.hook_code)))
        tags = int(
            session.scalar(select(func.count()).select_from(LeadTag).where(LeadTag.wecom_synced.is_(True)))
            or 0
        )
        check = ledger.verify(session)
    # A welcome's deadline is the callback's arrival + 20 s, so arrival = deadline - 20 s.
    latencies = sorted(
        (sent - (deadline - WELCOME_WINDOW)).total_seconds() * 1000
        for _, _, sent, deadline in welcomes
        if sent is not None and deadline is not None
    )
    failures = Counter(
        f"{status} {errcode or ''}".strip() for status, errcode, _, _ in welcomes if status != "sent"
    )
    return DemoReport(
        customers=customers,
        stored=stored,
        refused=refused,
        by_status=by_status,
        welcomes=len(sim.welcomes),
        welcome_failures=dict(failures),
        welcome_p50_ms=statistics.median(latencies) if latencies else 0.0,
        welcome_max_ms=latencies[-1] if latencies else 0.0,
        by_code=dict(by_code),
        tags_in_wecom=tags,
        removed=removed,
        ledger_entries=check.count,
        ledger_intact=check.ok,
        seconds=secs,
    )


def _send_forged(config: SimulatorConfig, bot_url: str) -> int:
    """POST a callback signed with the wrong token; the bot must refuse it and store nothing."""
    forger = CallbackCrypto("not-the-token", config.encoding_aes_key, config.corp_id)
    ts, nonce = str(int(time.time())), random_nonce()
    encrypt = forger.encrypt("<xml><MsgType>text</MsgType><Content>forged</Content></xml>")
    resp = requests.post(
        bot_url,
        params={"msg_signature": forger.sign(ts, nonce, encrypt), "timestamp": ts, "nonce": nonce},
        data=f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
        timeout=5,
    )
    return 1 if resp.status_code == 403 else 0


def print_report(report: DemoReport) -> None:
    """Show what happened as a small table."""
    click.echo("")
    click.secho("What the bot recorded", bold=True)
    rows: list[tuple[str, object]] = [
        ("customers who scanned a hook-code QR", report.customers),
        ("callback events stored (each exactly once)", report.stored),
        ("forged callbacks refused", report.refused),
        ("approved welcomes delivered to WeCom", report.welcomes),
        ("welcome latency p50 ms (WeCom event → sent)", round(report.welcome_p50_ms)),
        ("welcome latency max ms (WeCom allows 20000)", round(report.welcome_max_ms)),
        ("lead tags marked in WeCom", report.tags_in_wecom),
        ("customers who removed their member", report.removed),
        (
            "send-ledger entries (hash chain intact)"
            if report.ledger_intact
            else "send-ledger entries (BROKEN)",
            report.ledger_entries,
        ),
    ]
    rows += [(f"events {status}", count) for status, count in sorted(report.by_status.items())]
    rows += [(f"welcomes {outcome}", count) for outcome, count in sorted(report.welcome_failures.items())]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"  {label.ljust(width)}  {value!s:>6}")
    click.secho("Leads by hook code", bold=True)
    for code, count in sorted(report.by_code.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {code.ljust(16)} {count:>5}")
    click.echo(f"  (all settled in {report.seconds:.1f} s)")


@click.command()
@click.option("--data-dir", default="var/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--customers", default=200, show_default=True, type=click.IntRange(1, 5000))
@click.option("--port", default=8080, show_default=True, type=int, help="Bot port (0 = any free port).")
@click.option("--once", is_flag=True, help="Exit after the summary instead of serving on.")
def demo(data_dir: str, customers: int, port: int, once: bool) -> None:
    """Run the bot on the embedded default against the WeCom simulator and show the result."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log over the progress bar
    path = Path(data_dir)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    sim_config = SimulatorConfig(users=list(MEMBERS))
    with Simulator(sim_config) as sim:
        settings = Settings().replace(
            wecom={
                "corp_id": sim_config.corp_id,
                "token": sim_config.token,
                "encoding_aes_key": sim_config.encoding_aes_key,
                "agent_id": sim_config.agent_id,
                "agent_secret": sim_config.secrets["agent"],
                "contact_secret": sim_config.secrets["contact"],
                "kf_secret": sim_config.secrets["kf"],
                "api_base_url": sim.base_url,
            },
            database={"url": f"sqlite:///{path.resolve() / 'demo.db'}"},
        )
        services = Services(settings)
        migrate(services.db.engine)
        with EmbeddedRuntime(services, port=port, workers=2) as runtime:
            bot_url = f"{runtime.url}/wecom/callback"
            click.echo(f"WeCom simulator on {sim.base_url}; bot on {runtime.url} ({settings.database.url})")
            check = sim.verify_url(bot_url)
            click.echo(f"URL verification (GET echostr): {'passed' if check.ok else 'FAILED'}")
            report = run_journey(services, sim, bot_url, customers)
            print_report(report)
            click.echo(f"\nAccounts: demo_operator / demo_compliance, password {DEMO_PASSWORD}")
            if once:
                return
            click.echo(f"Still serving {bot_url}. Ctrl-C stops.")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
