"""Crash safety: a worker killed mid-event leaves the event to be retried, never lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from bot.routing import Dispatcher, HandlerContext, Router
from bot.services import Services
from bot.wecom.events import Event
from bot.worker import Worker
from models.audit import AuditEntry
from models.base import utcnow
from models.inbox import EventStatus, InboundEvent
from tests.callbacks import contact_event, envelope, params_of

ROOT = Path(__file__).resolve().parent.parent


def test_worker_killed_mid_event_leaves_it_to_be_retried(services: Services, tmp_path: Path) -> None:
    ingestor = services.ingestor
    assert ingestor is not None
    query, body = envelope(contact_event())
    params = params_of(query)
    event_id = ingestor.ingest(params["msg_signature"], params["timestamp"], params["nonce"], body).event_id

    marker = tmp_path / "in-handler"
    env = {
        **os.environ,
        "BOT_DATABASE__URL": services.settings.database.url,
        "BOT_REDIS__URL": services.settings.redis.url,
        "BOT_REDIS__NAMESPACE": services.settings.redis.namespace,
        "BOT_WORKER__LEASE_S": str(services.settings.worker.lease_s),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_worker", str(marker)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, "fault worker exited early"
            assert time.monotonic() < deadline, "fault worker never reached its handler"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    with services.db.transaction() as session:
        row = session.get(InboundEvent, event_id)
        assert row is not None
        assert (row.status, row.locked_by, row.attempts) == (EventStatus.PROCESSING, "doomed", 1)
        assert (
            session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "test.handled")
            )
            == 0
        )

    calls: list[int] = []
    router = Router("recover")

    @router.on(Event)
    def handle(event: Event, ctx: HandlerContext) -> None:
        calls.append(ctx.event_id)
        ctx.audit("test.handled", f"event:{ctx.event_id}")

    later = utcnow() + timedelta(seconds=services.settings.worker.lease_s + 1)
    worker = Worker(
        services.settings, services.db, services.coordinator, Dispatcher([router]), clock=lambda: later
    )
    assert Worker(services.settings, services.db, services.coordinator, Dispatcher([router])).claim() == []
    outcomes = worker.drain()
    assert [(o.event_id, o.status) for o in outcomes] == [(event_id, "done")]
    assert calls == [event_id]
    with services.db.transaction() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "test.handled")
            )
            == 1
        )
