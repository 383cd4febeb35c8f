"""`wecom-bot serve` runs `bot:create_app()` under gunicorn and answers encrypted callbacks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from sqlalchemy import func, select

from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig, external_contact_event
from models.inbox import InboundEvent
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_serves_the_callback(services: Services) -> None:
    port = free_port()
    s = services.settings
    env = {
        **os.environ,
        "BOT_CONFIG": "",
        "BOT_DATABASE__URL": s.database.url,
        "BOT_REDIS__URL": s.redis.url,
        "BOT_REDIS__NAMESPACE": s.redis.namespace,
        "BOT_WECOM__CORP_ID": TEST_CORP_ID,
        "BOT_WECOM__TOKEN": TEST_TOKEN,
        "BOT_WECOM__ENCODING_AES_KEY": TEST_AES_KEY,
        "BOT_WEB__SECRET_KEY": "x" * 32,
    }
    cmd = [
        sys.executable,
        "-m",
        "bot.cli",
        "serve",
        "--workers",
        "2",
        "--threads",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "gunicorn exited"
            try:
                if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
                pass
            assert time.monotonic() < deadline, "gunicorn never became ready"
            time.sleep(0.1)
        config = SimulatorConfig(corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY)
        with Simulator(config) as sim:
            assert sim.verify_url(f"{base}/wecom/callback").ok
            for i in range(10):
                xml = external_contact_event(
                    "add_external_contact", "zhangsan", f"wmG{i}", corp_id=TEST_CORP_ID
                )
                result = sim.send_callback(f"{base}/wecom/callback", xml, retry_interval_s=0, duplicate=True)
                assert result.status_codes[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr:
            proc.stderr.close()
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(InboundEvent)) == 10
