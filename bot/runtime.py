"""Runs the web app and workers inside one process: the embedded default, the demo and tests."""

from __future__ import annotations

import logging
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from bot.app import create_app
from bot.campaigns.masssend import MASS_CHANNEL, MassTaskDispatcher
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.kf.syncer import KfSyncer
from bot.leads.tagsync import TagSyncer
from bot.scheduler import SchedulerService, default_planner
from bot.services import Services
from bot.worker import Worker
from handlers import build_dispatcher

log = logging.getLogger("wecom_bot.runtime")


class EmbeddedRuntime:
    """A threaded HTTP server plus worker threads sharing one Services (and one wake-up channel)."""

    def __init__(self, services: Services, host: str = "127.0.0.1", port: int = 0, workers: int = 1) -> None:
        self.services = services
        self.app = create_app(services=services)
        self.stop_event = threading.Event()
        self.server: BaseWSGIServer = make_server(host, port, self.app, threaded=True)
        self.dispatcher = DeliveryDispatcher(
            services.settings,
            services.db,
            services.coordinator,
            services.client,
            worker_id="embedded-dispatch",
        )
        self.workers = [
            Worker(
                services.settings,
                services.db,
                services.coordinator,
                build_dispatcher(),
                worker_id=f"embedded-{i}",
                sender=self.dispatcher,  # welcomes go out right after the event commits
            )
            for i in range(workers)
        ]
        self.tag_syncer = TagSyncer(services.db, services.coordinator, services.client)
        self.kf_syncer = KfSyncer(
            services.settings,
            services.db,
            services.coordinator,
            services.client,
            worker_id="embedded-kf-sync",
        )
        self.mass = MassTaskDispatcher(
            services.settings, services.db, services.coordinator, services.client, worker_id="embedded-mass"
        )
        # Campaign runs; with in-process coordination this process is the only scheduler.
        self.scheduler = SchedulerService(
            services.settings,
            services.db,
            services.coordinator,
            default_planner(services.db, services.settings, services.coordinator),
        )
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The base URL the server listens on."""
        return f"http://{self.server.host}:{self.server.server_port}"

    def start(self) -> EmbeddedRuntime:
        """Start serving and processing in background threads."""
        self._threads = [threading.Thread(target=self.server.serve_forever, name="web", daemon=True)]
        self._threads += [
            threading.Thread(target=w.run_forever, args=(self.stop_event,), name=w.worker_id, daemon=True)
            for w in self.workers
        ]
        self._threads.append(
            threading.Thread(
                target=self.dispatcher.run_forever, args=(self.stop_event,), name="dispatch", daemon=True
            )
        )
        self._threads.append(
            threading.Thread(
                target=self.kf_syncer.run_forever, args=(self.stop_event,), name="kf-sync", daemon=True
            )
        )
        self._threads.append(
            threading.Thread(
                target=self.tag_syncer.run_forever, args=(self.stop_event,), name="tag-sync", daemon=True
            )
        )
        self._threads.append(
            threading.Thread(
                target=self.mass.run_forever, args=(self.stop_event,), name="mass-send", daemon=True
            )
        )
        self._threads.append(
            threading.Thread(
                target=self.scheduler.run_forever, args=(self.stop_event,), name="scheduler", daemon=True
            )
        )
        for thread in self._threads:
            thread.start()
        log.info("serving on %s with %d worker(s)", self.url, len(self.workers))
        return self

    def stop(self) -> None:
        """Stop the server and let workers finish the event in hand."""
        self.stop_event.set()
        self.services.coordinator.wake("inbox")
        self.services.coordinator.wake("outbox")
        self.services.coordinator.wake("kf")
        self.services.coordinator.wake("tags")
        self.services.coordinator.wake(MASS_CHANNEL)
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.dispatcher.close()  # record the sends already handed over

    def __enter__(self) -> EmbeddedRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
