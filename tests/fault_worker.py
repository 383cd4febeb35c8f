"""A worker process whose handler hangs after writing, so a test can kill it mid-event."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bot.config import load_settings
from bot.routing import Dispatcher, HandlerContext, Router
from bot.services import Services
from bot.wecom.events import Event
from bot.worker import Worker

router = Router("hang")


@router.on(Event)
def write_then_hang(event: Event, ctx: HandlerContext) -> None:
    """Write an effect, flush it inside the open transaction, signal, then hang forever."""
    ctx.audit("test.handled", f"event:{ctx.event_id}")
    ctx.session.flush()
    Path(sys.argv[1]).write_text("in handler")
    time.sleep(600)


if __name__ == "__main__":
    services = Services(load_settings())
    worker = Worker(
        services.settings, services.db, services.coordinator, Dispatcher([router]), worker_id="doomed"
    )
    worker.run_once()
