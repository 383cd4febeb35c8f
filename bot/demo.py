"""`wecom-bot demo`: a simulated corp talks to the embedded bot over real HTTP and real crypto."""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import requests
from sqlalchemy import func, select

from bot.config import Settings
from bot.db import migrate
from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.crypto import CallbackCrypto, random_nonce
from bot.wecom.simulator import (
    Simulator,
    SimulatorConfig,
    external_contact_event,
    external_tag_event,
    text_message,
)
from models.contacts import ContactRelation
from models.inbox import InboundEvent

# Hook codes as a brokerage would print them on each platform's profile.
HOOK_CODES = {
    "douyin": "DY2024",
    "xiaohongshu": "XHS888",
    "bilibili": "BILI01",
    "weibo": "WB666",
    "zhihu": "ZH100",
}
MEMBERS = ["zhangsan", "lisi", "wangwu"]


@dataclass
class DemoReport:
    """What the demo did and what the bot recorded."""

    callbacks_sent: int
    deliveries: int
    refused: int
    stored: int
    by_status: dict[str, int]
    by_code: dict[str, int]
    removed: int
    seconds: float


def _wait_for_workers(services: Services, expected: int, timeout_s: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        with services.db.transaction() as session:
            rows = session.execute(
                select(InboundEvent.status, func.count()).group_by(InboundEvent.status)
            ).all()
        by_status = {str(status): int(count) for status, count in rows}
        settled = sum(v for k, v in by_status.items() if k in ("done", "ignored", "dead"))
        if settled >= expected or time.monotonic() > deadline:
            return by_status
        time.sleep(0.05)


def run_journey(
    services: Services, sim: Simulator, bot_url: str, customers: int, seed: int = 7
) -> DemoReport:
    """Customers arrive through hook codes; some retry, some leave; a forged callback is refused."""
    rng = random.Random(seed)
    corp = sim.config.corp_id
    started = time.monotonic()
    sent = deliveries = 0
    owners: list[str] = []
    with click.progressbar(range(customers), label="customers arriving") as bar:
        for i in bar:
            platform = rng.choice(list(HOOK_CODES))
            state = HOOK_CODES[platform] if rng.random() > 0.08 else None  # re-adds lose their state
            owners.append(rng.choice(MEMBERS))
            xml = external_contact_event(
                "add_external_contact",
                owners[i],
                f"wm{i:06d}demo",
                corp_id=corp,
                state=state,
                welcome_code=f"WC{i:06d}",
            )
            result = sim.send_callback(bot_url, xml, retry_interval_s=0, duplicate=rng.random() < 0.1)
            sent += 1
            deliveries += len(result.attempts)
    for i in rng.sample(range(customers), k=max(1, customers // 20)):
        leave = external_contact_event("del_follow_user", owners[i], f"wm{i:06d}demo", corp_id=corp)
        sim.send_callback(bot_url, leave, retry_interval_s=0)
        sent += 1
    sim.send_callback(
        bot_url, external_tag_event("create", "etDEMO1", corp_id=corp, tag_type="tag"), retry_interval_s=0
    )
    sim.send_callback(
        bot_url,
        text_message("zhangsan", "我的线索", corp_id=corp, agent_id=sim.config.agent_id),
        retry_interval_s=0,
    )
    sent += 2
    refused = _send_forged(sim.config, bot_url)
    with services.db.transaction() as session:
        stored = int(session.scalar(select(func.count()).select_from(InboundEvent)) or 0)
    by_status = _wait_for_workers(services, stored)
    with services.db.transaction() as session:
        relations = list(session.scalars(select(ContactRelation)))
    by_code = Counter(r.first_state or "(unattributed)" for r in relations)
    removed = sum(1 for r in relations if r.status == "removed_by_customer")
    return DemoReport(
        sent, deliveries, refused, stored, by_status, dict(by_code), removed, time.monotonic() - started
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
    rows = [
        ("callbacks sent by the simulated corp", report.callbacks_sent),
        ("HTTP deliveries (including WeCom-style duplicates)", report.deliveries),
        ("events stored (each exactly once)", report.stored),
        ("forged callbacks refused", report.refused),
        ("customers who removed their member", report.removed),
    ]
    rows += [(f"events {status}", count) for status, count in sorted(report.by_status.items())]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"  {label.ljust(width)}  {value:>6}")
    click.secho("Customers by hook code", bold=True)
    for code, count in sorted(report.by_code.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {code.ljust(16)} {count:>5}")
    click.echo(f"  (all processed in {report.seconds:.1f} s)")


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
    sim_config = SimulatorConfig()
    settings = Settings().replace(
        wecom={
            "corp_id": sim_config.corp_id,
            "token": sim_config.token,
            "encoding_aes_key": sim_config.encoding_aes_key,
            "agent_id": sim_config.agent_id,
            "agent_secret": sim_config.secrets["agent"],
        },
        database={"url": f"sqlite:///{path.resolve() / 'demo.db'}"},
    )
    with Simulator(sim_config) as sim:
        settings = settings.replace(wecom={"api_base_url": sim.base_url})
        services = Services(settings)
        migrate(services.db.engine)
        with EmbeddedRuntime(services, port=port, workers=2) as runtime:
            bot_url = f"{runtime.url}/wecom/callback"
            click.echo(f"WeCom simulator on {sim.base_url}; bot on {runtime.url} ({settings.database.url})")
            check = sim.verify_url(bot_url)
            click.echo(f"URL verification (GET echostr): {'passed' if check.ok else 'FAILED'}")
            report = run_journey(services, sim, bot_url, customers)
            print_report(report)
            if once:
                return
            click.echo(f"\nStill serving {bot_url}. Try `wecom-bot --config ... events list`. Ctrl-C stops.")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
