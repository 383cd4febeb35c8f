"""Prometheus metrics of every process: callbacks, handlers, deliveries, WeCom calls, queues, lint verdicts.

Labels are low-cardinality only (routes, channels, outcomes, API paths, errcodes), never user ids.

One process (`wecom-bot run`, or one worker with `--metrics-port`): metrics live in the process's
default registry. Several processes on a host (gunicorn's web workers, `wecom-bot worker`s,
`wecom-bot scheduler`): set `PROMETHEUS_MULTIPROC_DIR` to an empty directory writable by all of
them before they start (and empty it again on every restart of the deployment). Each process then
writes its counters to files there and `/metrics` on any web worker reports the sum over all of
them. `wecom-bot serve` installs gunicorn's `child_exit` hook itself; with your own gunicorn
configuration add it there::

    from prometheus_client import multiprocess

    def child_exit(server, worker):
        multiprocess.mark_process_dead(worker.pid)

Queue depths are not counted by any process: `QueueDepthCollector` asks the database when scraped
and remembers the answer for a few seconds, so frequent or parallel scrapes stay cheap.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, SessionTransaction
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from bot.db import Database
from bot.wecom.errors import WeComAPIError
from models.campaigns import MassTask, MassTaskStatus
from models.deliveries import Delivery, DeliveryStatus
from models.inbox import EventStatus, InboundEvent

log = logging.getLogger("wecom_bot.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
QUEUE_DEPTH_CACHE_S = 5.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

CALLBACKS_RECEIVED = Counter(
    "wecom_bot_callbacks_received",
    "Authenticated callbacks by event kind and result (stored, duplicate, verified URL check).",
    ["kind", "result"],
)
CALLBACKS_REJECTED = Counter("wecom_bot_callbacks_rejected", "Callbacks refused, by reason.", ["reason"])
HANDLER_SECONDS = Histogram(
    "wecom_bot_handler_duration_seconds",
    "Time to handle one event (mode=single) or one batch of events (mode=batch), by route and outcome.",
    ["route", "outcome", "mode"],
    buckets=_LATENCY_BUCKETS,
)
EVENTS_HANDLED = Counter(
    "wecom_bot_events_handled",
    "Inbound events by route and the status they were left in (done, ignored, pending = retry, dead).",
    ["route", "outcome"],
)
DELIVERIES = Counter(
    "wecom_bot_deliveries", "Delivery attempts recorded, by channel and outcome.", ["channel", "outcome"]
)
WECOM_API_ERRORS = Counter(
    "wecom_bot_wecom_api_errors",
    "Failed WeCom API calls by API and errcode (-1: transport).",
    ["api", "errcode"],
)
WECOM_API_SECONDS = Histogram(
    "wecom_bot_wecom_api_duration_seconds",
    "Time of one WeCom API call, token fetch and token retry included, by API.",
    ["api"],
    buckets=_LATENCY_BUCKETS,
)
LINT_VERDICTS = Counter(
    "wecom_bot_lint_verdicts", "Compliance verdicts on final message texts, by verdict.", ["verdict"]
)


def multiprocess_dir() -> str:
    """The multiprocess directory when that mode is on, else ""."""
    return os.environ.get(MULTIPROC_ENV, "")


def gunicorn_child_exit(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook in multiprocess mode: retire the exited worker's live metric files."""
    multiprocess.mark_process_dead(worker.pid)


# ---- recording --------------------------------------------------------------------------------------


def callback_received(kind: str, result: str) -> None:
    """Count one authenticated callback."""
    CALLBACKS_RECEIVED.labels(kind, result).inc()


def callback_rejected(reason: str) -> None:
    """Count one refused callback; `reason` is a short code, not the message."""
    CALLBACKS_REJECTED.labels(reason).inc()


def handler_time(route: str, outcome: str, seconds: float, mode: str) -> None:
    """Record how long one event (mode "single") or one batch of events (mode "batch") took."""
    HANDLER_SECONDS.labels(route, outcome, mode).observe(seconds)


def events_handled(route: str, outcome: str, count: int = 1) -> None:
    """Count events by route and the status they were left in."""
    EVENTS_HANDLED.labels(route, outcome).inc(count)


def lint_verdict(verdict: str) -> None:
    """Count one compliance verdict on a final text."""
    LINT_VERDICTS.labels(verdict).inc()


_PENDING = "metrics.pending"  # session.info key: counts that wait for the transaction to commit


def delivery_outcome(session: Session, channel: str, outcome: str) -> None:
    """Count a delivery outcome once the session's transaction commits (never if it rolls back)."""
    session.info.setdefault(_PENDING, []).append(DELIVERIES.labels(channel, outcome))


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: the outer transaction may still roll back
        return
    for child in session.info.pop(_PENDING, ()):
        child.inc()


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


@contextmanager
def wecom_api_call(api: str) -> Iterator[None]:
    """Time one WeCom API call and count it by errcode if it fails."""
    started = time.perf_counter()
    try:
        yield
    except WeComAPIError as exc:
        wecom_api_error(exc.api or api, exc.errcode)
        raise
    finally:
        WECOM_API_SECONDS.labels(api).observe(time.perf_counter() - started)


def wecom_api_error(api: str, errcode: int) -> None:
    """Count one WeCom API error (also the token errors that are retried)."""
    WECOM_API_ERRORS.labels(api, str(errcode)).inc()


# ---- queue depth ------------------------------------------------------------------------------------

QUEUES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "inbound_events": (InboundEvent, (EventStatus.PENDING, EventStatus.PROCESSING, EventStatus.DEAD)),
    "deliveries": (
        Delivery,
        (DeliveryStatus.QUEUED, DeliveryStatus.HELD, DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN),
    ),
    "mass_tasks": (MassTask, (MassTaskStatus.QUEUED, MassTaskStatus.CREATED, MassTaskStatus.UNKNOWN)),
}


class QueueDepthCollector:
    """Rows waiting in each queue by status, read from the database at most once per `cache_s`."""

    def __init__(
        self, db: Database, cache_s: float = QUEUE_DEPTH_CACHE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.cache_s = cache_s
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._depths: dict[tuple[str, str], int] | None = None

    def depths(self) -> dict[tuple[str, str], int] | None:
        """(queue, status) → rows, or None when the database could not be read; cached."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.cache_s:
                self._depths = self._read()
                self._read_at = now
            return self._depths

    def _read(self) -> dict[tuple[str, str], int] | None:
        depths: dict[tuple[str, str], int] = {}
        try:
            with self.db.read() as session:
                for queue, (model, statuses) in QUEUES.items():
                    counts: dict[str, int] = dict(
                        session.execute(
                            select(model.status, func.count())
                            .where(model.status.in_([str(s) for s in statuses]))
                            .group_by(model.status)
                        ).all()
                    )
                    for status in statuses:
                        depths[(queue, str(status))] = int(counts.get(str(status), 0))
        except Exception as exc:
            log.warning("queue depth unavailable: %s", type(exc).__name__)
            return None
        return depths

    def collect(self) -> Iterable[Metric]:
        """The depth gauge, plus whether the database answered."""
        depths = self.depths()
        up = GaugeMetricFamily(
            "wecom_bot_queue_depth_up", "Whether the queue depths could be read from the database."
        )
        up.add_metric([], 0 if depths is None else 1)
        yield up
        if depths is None:
            return
        gauge = GaugeMetricFamily(
            "wecom_bot_queue_depth",
            "Rows waiting in a queue, by queue and status.",
            labels=["queue", "status"],
        )
        for (queue, status), count in depths.items():
            gauge.add_metric([queue, status], count)
        yield gauge


class _ProcessMetrics:
    """This process's metrics (the default registry) as one collector of a scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_registry(db: Database | None) -> CollectorRegistry:
    """What a scrape reports: this process's (or every process's) metrics, and the queue depths."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessMetrics())
    if db is not None:
        registry.register(QueueDepthCollector(db))
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and content type the scraper asked for (text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def authorized(authorization: str | None, token: str) -> bool:
    """Whether the Authorization header carries the bearer token (always, when no token is set)."""
    if not token:
        return True
    scheme, _, offered = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode())


class _QuietRequestHandler(WSGIRequestHandler):
    """Serves scrapes without an access-log line for each one."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Scrapes are not logged."""


def serve_metrics(host: str, port: int, registry: CollectorRegistry, token: str = "") -> BaseWSGIServer:
    """Serve `registry` on host:port from a background thread (worker and scheduler processes)."""
    if multiprocess_dir():
        raise ValueError(
            f"{MULTIPROC_ENV} is set: every process's metrics are reported by the web app's /metrics"
        )
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not authorized(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"a bearer token is required\n"]
        body: Iterable[bytes] = exposition(environ, start_response)
        return body

    server = make_server(host, port, app, threaded=True, request_handler=_QuietRequestHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%s/metrics", host, server.server_port)
    return server
