"""The demo's first stage: customers scan platform hook codes over real HTTP and are welcomed."""

from __future__ import annotations

import random
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import click
import requests
from sqlalchemy import func, select

from bot.accounts import create_user
from bot.db import migrate
from bot.demo.journey import Customer
from bot.leads.hookcodes import create_code, provision_contact_way
from bot.leads.welcome import WELCOME_WINDOW
from bot.services import Services
from bot.wecom.crypto import CallbackCrypto, random_nonce
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.base import utcnow
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
# Console accounts the demo creates, by role; their passwords are generated each run.
DEMO_ACCOUNTS = {"demo_operator": "operator", "demo_compliance": "compliance"}


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


def demo_logins() -> dict[str, str]:
    """A fresh password for each demo console account."""
    return {username: secrets.token_urlsafe(12) for username in DEMO_ACCOUNTS}


def prepare(services: Services, sim: Simulator, logins: dict[str, str]) -> dict[str, str]:
    """Migrate, create the console accounts, approve the default scripts, name members, create hook codes."""
    migrate(services.db.engine)
    policy = catalogue.policy_from_settings(services.settings.compliance)
    with services.db.transaction() as session:
        for username, password in logins.items():
            create_user(session, username, DEMO_ACCOUNTS[username], password, actor="demo")
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


def settle(services: Services, timeout_s: float = 60.0, quiet_s: float = 0.5) -> None:
    """Wait until every event is handled, every due delivery has an outcome and every tag is in WeCom.

    The state must stay so for `quiet_s`: a kf callback is handled before the syncer stores the
    messages it announces, so one quiet look can come between the two.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
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
                .where(
                    Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
                    Delivery.next_attempt_at <= utcnow(),  # later sends wait for their moment
                )
            )
            open_tags = session.scalar(
                select(func.count())
                .select_from(LeadTag)
                .join(Lead, Lead.id == LeadTag.lead_id)
                .where(
                    LeadTag.wecom_synced.is_(False), LeadTag.sync_error.is_(None), Lead.reachable.is_(True)
                )
            )
        if open_events or open_sends or open_tags:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.05)


def run_journey(
    services: Services, sim: Simulator, bot_url: str, customers: int, logins: dict[str, str], seed: int = 7
) -> tuple[DemoReport, list[Customer]]:
    """Customers scan platform QR codes; some leave again; a forged callback is refused.

    Returns the report and the customers who stayed, for the later stages.
    """
    rng = random.Random(seed)
    config_ids = prepare(services, sim, logins)
    sim.connect_bot(bot_url, retry_interval_s=0)
    started = time.monotonic()
    added: list[Customer] = []
    with click.progressbar(range(customers), label="customers scanning hook-code QR codes") as bar:
        for i in bar:
            code = rng.choice(list(HOOK_CODES.values()))
            result = sim.customer_scans(config_ids[code], f"wm{i:06d}demo")
            added.append(Customer(result.userid, result.external_userid, code))
    leaving = rng.sample(added, k=max(1, customers // 20))
    for customer in leaving:
        sim.customer_deletes_member(customer.member, customer.external_userid)
    refused = _send_forged(sim.config, bot_url)
    settle(services)
    report = _report(services, sim, customers, refused, len(leaving), time.monotonic() - started)
    return report, [c for c in added if c not in leaving]


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
