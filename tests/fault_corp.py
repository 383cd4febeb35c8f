"""Shared set-up for the fault tests: a simulated corp with an approved welcome, and HTTP callbacks."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import requests
from sqlalchemy import func, select

from bot.leads.hookcodes import create_code, provision_contact_way
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.leads import HookCode, Member
from tests.callbacks import envelope
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved, ensure_people

HOOK_CODE = "XHS888"
WELCOME = (
    "{{ lead.display_name }}您好，欢迎从{{ hook.platform_name }}来到{{ firm.name }}，我是{{ manager.name }}。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)


def simulator_config() -> SimulatorConfig:
    """A simulated corp that shares the test callback credentials."""
    return SimulatorConfig(
        corp_id=TEST_CORP_ID,
        token=TEST_TOKEN,
        encoding_aes_key=TEST_AES_KEY,
        agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )


def wire_to_simulator(services: Services, sim: Simulator) -> None:
    """Point the bot at the simulator and give it an approved welcome and the QR of code XHS888."""
    secrets = sim.config.secrets
    services.settings = services.settings.replace(
        wecom={
            "api_base_url": sim.base_url,
            "agent_secret": secrets["agent"],
            "contact_secret": secrets["contact"],
        }
    )
    with services.db.transaction() as session:
        ensure_people(session)
        approved(session, "welcome_xiaohongshu", "welcome", WELCOME)
        session.add(Member(userid="zhangsan", name="张经理"))
        create_code(session, HOOK_CODE, "xiaohongshu", ["zhangsan"], "olivia")
    provision_contact_way(services.db, services.client, HOOK_CODE)


def scan_customers(
    services: Services, sim: Simulator, count: int, prefix: str
) -> tuple[list[str], list[str]]:
    """`count` customers scan the QR; returns their ids and the add callbacks the corp emitted."""
    with services.db.read() as session:
        config_id = session.scalars(
            select(HookCode.contact_way_config_id).where(HookCode.code == HOOK_CODE)
        ).one()
    assert config_id
    before = len(sim.emitted_callbacks)
    ids = [f"{prefix}{i:03d}" for i in range(count)]
    for ext in ids:
        sim.customer_scans(config_id, ext)
    return ids, sim.emitted_callbacks[before:]


def post_callback(url: str, plaintext: str, timeout_s: float = 5.0) -> int | None:
    """POST one freshly signed delivery of `plaintext`; its HTTP status, or None if unreachable."""
    query, body = envelope(plaintext)
    try:
        return requests.post(f"{url}?{query}", data=body, timeout=timeout_s).status_code
    except requests.RequestException:
        return None


def welcomes_per_customer(sim: Simulator) -> Counter[str]:
    """How many welcomes the simulated corp accepted for each customer."""
    return Counter(w.external_userid for w in sim.welcomes)


def count_rows(services: Services, model: type[Any], *where: Any) -> int:
    """The number of rows of `model` matching `where`."""
    with services.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def repeated(items: Iterable[str], times: int) -> list[str]:
    """Every item `times` times, interleaved (all first deliveries, then all second deliveries...)."""
    listed = list(items)
    return [item for _ in range(times) for item in listed]
