"""Run real `wecom-bot` processes for the fault tests, and kill them the hard way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bot.services import Services
from bot.wecom.simulator import Simulator
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def bot_env(services: Services, sim: Simulator | None = None, **overrides: str) -> dict[str, str]:
    """Environment for a `wecom-bot` process using the test database, Redis namespace and simulator."""
    s = services.settings
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BOT_CONFIG": "",
        "BOT_DATABASE__URL": s.database.url,
        "BOT_REDIS__URL": s.redis.url,
        "BOT_REDIS__NAMESPACE": s.redis.namespace,
        "BOT_WECOM__CORP_ID": TEST_CORP_ID,
        "BOT_WECOM__TOKEN": TEST_TOKEN,
        "BOT_WECOM__ENCODING_AES_KEY": TEST_AES_KEY,
        "BOT_WECOM__AGENT_ID": str(TEST_AGENT_ID),
        "BOT_WEB__SECRET_KEY": "x" * 32,
    }
    if sim is not None:
        secrets = sim.config.secrets
        env["BOT_WECOM__API_BASE_URL"] = sim.base_url
        env["BOT_WECOM__AGENT_SECRET"] = secrets["agent"]
        env["BOT_WECOM__CONTACT_SECRET"] = secrets["contact"]
    env.update(overrides)
    return env


@contextmanager
def bot_process(
    args: Sequence[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A `wecom-bot <args>` process writing its log to `log_path`; killed on exit if still running."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """Kill `proc` with SIGKILL (no clean-up runs) and reap it."""
    assert proc.poll() is None, "the process had already exited"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def wait_while_running(
    proc: subprocess.Popen[bytes], predicate: Callable[[], bool], timeout_s: float, log_path: Path
) -> None:
    """Wait until `predicate` holds; fail at once, with the process log, if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"the process exited early:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"timed out; process log:\n{log_path.read_text()}"
        time.sleep(0.05)
