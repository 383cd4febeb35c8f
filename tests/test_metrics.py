"""Prometheus metrics: each subsystem's counters move by what happened, scraped through /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from click.testing import CliRunner
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.app import create_app
from bot.cli import main
from bot.config import Settings
from bot.db import Database
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.delivery.outbox import enqueue
from bot.ingest import Ingestor
from bot.routing import Dispatcher, HandlerContext, Router
from bot.services import Services
from bot.wecom.events import Event, TextMessage
from bot.wecom.simulator import Simulator, SimulatorConfig, external_contact_event
from bot.worker import Worker
from models.base import utcnow
from models.deliveries import Channel
from tests.callbacks import CRYPTO, contact_event, envelope, params_of, text_message
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import POLICY, approved
from tests.test_masssend import REMINDER, REPORT, befriend, mass, plan
from tests.test_masssend import Clock as MassClock

ROOT = Path(__file__).resolve().parent.parent
STAFF_REMINDER = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(services: Services, token: str = "") -> Samples:
    """Scrape a new app's /metrics, so queue depths are read afresh rather than from the cache."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = create_app(services=services).test_client().get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain")
    return parse(resp.get_data(as_text=True))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def client(services: Services) -> FlaskClient:
    return create_app(services=services).test_client()


def ingest_text(services: Services, content: str, msg_id: str) -> int:
    ingestor = services.ingestor
    assert isinstance(ingestor, Ingestor)
    query, body = envelope(text_message(content, msg_id))
    p = params_of(query)
    result = ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
    assert result.event_id is not None
    return result.event_id


# ---- callbacks ---------------------------------------------------------------------------------------


def test_callbacks_are_counted_by_kind_and_result_and_rejections_by_reason(
    client: FlaskClient, services: Services
) -> None:
    before = scrape(services)
    query, body = envelope(contact_event(external_user_id="wmM1"))
    for _ in range(2):  # WeCom's retry of the same callback
        assert client.post(f"/wecom/callback?{query}", data=body).status_code == 200
    ts, nonce = str(int(time.time())), "98765"
    echostr = CRYPTO.encrypt("4242")
    check = {"msg_signature": CRYPTO.sign(ts, nonce, echostr), "timestamp": ts, "nonce": nonce}
    assert client.get(f"/wecom/callback?{urlencode({**check, 'echostr': echostr})}").status_code == 200
    forged = urlencode({**params_of(query), "msg_signature": "0" * 40})
    assert client.post(f"/wecom/callback?{forged}", data=body).status_code == 403
    stale_query, stale_body = envelope(text_message(), timestamp=int(time.time()) - 3600)
    assert client.post(f"/wecom/callback?{stale_query}", data=stale_body).status_code == 403
    huge = b"<xml>" + b"x" * services.settings.web.max_body_bytes + b"</xml>"
    assert client.post(f"/wecom/callback?{query}", data=huge).status_code == 413
    after = scrape(services)

    received = "wecom_bot_callbacks_received_total"
    assert delta(before, after, received, kind="change_external_contact", result="stored") == 1
    assert delta(before, after, received, kind="change_external_contact", result="duplicate") == 1
    assert delta(before, after, received, kind="url_verification", result="verified") == 1
    rejected = "wecom_bot_callbacks_rejected_total"
    assert delta(before, after, rejected, reason="bad_signature") == 1
    assert delta(before, after, rejected, reason="stale_timestamp") == 1
    assert delta(before, after, rejected, reason="too_large") == 1
    assert value(after, "wecom_bot_queue_depth", queue="inbound_events", status="pending") == 1


# ---- worker ------------------------------------------------------------------------------------------


def test_worker_times_each_event_by_route_and_outcome(services: Services) -> None:
    router = Router("metrics")

    @router.on(TextMessage)
    def answer(event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, TextMessage)
        if event.content == "boom":
            raise RuntimeError("handler failed")

    before = scrape(services)
    ingest_text(services, "hello", "m-1")
    ingest_text(services, "boom", "m-2")
    ids = ingest_text(services, "again", "m-3")
    ignored_query, ignored_body = envelope(contact_event(external_user_id="wmIgnored"))
    p = params_of(ignored_query)
    assert services.ingestor is not None
    services.ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], ignored_body)
    worker = Worker(services.settings, services.db, services.coordinator, Dispatcher([router]), worker_id="m")
    outcomes = worker.drain()
    assert sorted(str(o.status) for o in outcomes) == ["done", "done", "ignored", "pending"]
    assert ids in {o.event_id for o in outcomes}
    after = scrape(services)

    handled = "wecom_bot_events_handled_total"
    assert delta(before, after, handled, route="metrics.answer", outcome="done") == 2
    assert delta(before, after, handled, route="metrics.answer", outcome="pending") == 1
    assert delta(before, after, handled, route="none", outcome="ignored") == 1
    timed = "wecom_bot_handler_duration_seconds_count"
    assert delta(before, after, timed, route="metrics.answer", outcome="done", mode="single") == 2
    assert delta(before, after, timed, route="metrics.answer", outcome="pending", mode="single") == 1
    seconds = "wecom_bot_handler_duration_seconds_sum"
    assert delta(before, after, seconds, route="metrics.answer", outcome="done", mode="single") > 0
    assert value(after, "wecom_bot_queue_depth", queue="inbound_events", status="pending") == 1


def test_a_batch_is_timed_once_and_each_of_its_events_counted(services: Services) -> None:
    router = Router("metrics")

    @router.on_batch(TextMessage)
    def many(items: object) -> None:
        pass

    before = scrape(services)
    for i in range(3):
        ingest_text(services, f"hi {i}", f"b-{i}")
    worker = Worker(services.settings, services.db, services.coordinator, Dispatcher([router]), worker_id="b")
    assert [str(o.status) for o in worker.drain()] == ["done"] * 3
    after = scrape(services)
    assert delta(before, after, "wecom_bot_events_handled_total", route="metrics.many", outcome="done") == 3
    timed = "wecom_bot_handler_duration_seconds_count"
    assert delta(before, after, timed, route="metrics.many", outcome="done", mode="batch") == 1
    assert delta(before, after, timed, route="metrics.many", outcome="done", mode="single") == 0


# ---- deliveries, WeCom calls, lint -------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


@pytest.fixture
def wired(services: Services, sim: Simulator) -> Services:
    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"]}
    )
    with services.db.transaction() as session:
        approved(session, "staff_reminder", "staff_reminder", STAFF_REMINDER)
    return services


def queue_reminder(services: Services, purpose: str, recipient: str, name: str = "张三") -> None:
    values = {"manager": {"name": name}, "task": {"title": "确认早报群发", "due": "08:30", "link": ""}}
    with services.db.transaction() as session:
        enqueue(
            session, purpose_key=purpose, channel=Channel.APP_MESSAGE, recipient=recipient,
            script_key="staff_reminder", values=values, policy=POLICY,
        )  # fmt: skip


def test_deliveries_wecom_errors_and_lint_verdicts_are_counted(wired: Services, sim: Simulator) -> None:
    before = scrape(wired)
    queue_reminder(wired, "m:sent", "zhangsan")
    queue_reminder(wired, "m:ghost", "nobody_here")  # WeCom: 81013 all recipients invalid
    queue_reminder(wired, "m:busy", "lisi")
    queue_reminder(wired, "m:blocked", "lisi", name="稳赚不赔内幕消息")  # the final text is blocked
    mid = scrape(wired)
    assert value(mid, "wecom_bot_queue_depth", queue="deliveries", status="queued") == 3
    sim.inject_fault("message/send", -1, times=1)
    now = utcnow()
    sender = DeliveryDispatcher(wired.settings, wired.db, wired.coordinator, wired.client, clock=lambda: now)
    sender.run_once()
    after = scrape(wired)

    deliveries = "wecom_bot_deliveries_total"
    assert delta(before, after, deliveries, channel="app_message", outcome="sent") == 1
    assert delta(before, after, deliveries, channel="app_message", outcome="failed") == 1
    assert delta(before, after, deliveries, channel="app_message", outcome="requeued") == 1
    errors = "wecom_bot_wecom_api_errors_total"
    assert delta(before, after, errors, api="message/send", errcode="81013") == 1
    assert delta(before, after, errors, api="message/send", errcode="-1") == 1
    calls = "wecom_bot_wecom_api_duration_seconds_count"
    assert delta(before, after, calls, api="message/send") == 3
    verdicts = "wecom_bot_lint_verdicts_total"
    assert delta(before, after, verdicts, verdict="block") == 1
    composed = sum(delta(before, after, verdicts, verdict=v) for v in ("pass", "review", "block"))
    assert composed == 4
    assert value(after, "wecom_bot_queue_depth", queue="deliveries", status="queued") == 1


def test_mass_send_outcomes_are_counted_per_recipient(services: Services, sim: Simulator) -> None:
    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"]}
    )
    with services.db.transaction() as session:
        approved(session, "morning_report", "morning_report", REPORT)
        approved(session, "mass_task_reminder", "staff_reminder", REMINDER)
    clock = MassClock()
    sim.config.groupmsg_quota_mode = "day1"
    befriend(services, sim, "zhangsan", "wmA", "wmB")
    sim.member_sends_personal_mass("zhangsan", ["wmA", "wmB"])  # today's one message each
    plan(services, clock, ["wmA", "wmB"])
    before = scrape(services)
    assert value(before, "wecom_bot_queue_depth", queue="mass_tasks", status="queued") == 1
    assert [o.status for o in mass(services, clock).drain()] == ["failed"]
    after = scrape(services)
    assert delta(before, after, "wecom_bot_deliveries_total", channel="mass_template", outcome="failed") == 2
    errors = "wecom_bot_wecom_api_errors_total"
    assert delta(before, after, errors, api="externalcontact/add_msg_template", errcode="41048") == 1
    assert value(after, "wecom_bot_queue_depth", queue="mass_tasks", status="queued") == 0


def test_delivery_outcomes_count_only_when_their_transaction_commits(services: Services) -> None:
    def sent() -> float:
        return metrics.DELIVERIES.labels("app_message", "sent")._value.get()

    start = sent()
    with pytest.raises(RuntimeError), services.db.transaction() as session:
        metrics.delivery_outcome(session, "app_message", "sent")
        raise RuntimeError("rolled back")
    assert sent() == start
    with pytest.raises(RuntimeError), services.db.transaction() as session:
        savepoint = session.begin_nested()
        metrics.delivery_outcome(session, "app_message", "sent")
        savepoint.commit()  # the savepoint commits, the transaction around it does not
        raise RuntimeError("rolled back")
    assert sent() == start
    with services.db.transaction() as session:
        metrics.delivery_outcome(session, "app_message", "sent")
        metrics.delivery_outcome(session, "app_message", "sent")
        assert sent() == start
    assert sent() == start + 2


# ---- queue depth -------------------------------------------------------------------------------------


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def depth(collector: metrics.QueueDepthCollector, queue: str, status: str) -> float:
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
    }
    return value(samples, "wecom_bot_queue_depth", queue=queue, status=status)


def test_queue_depth_is_read_at_scrape_time_and_cached_briefly(services: Services) -> None:
    ticks = Ticks()
    collector = metrics.QueueDepthCollector(services.db, cache_s=5.0, clock=ticks)
    ingest_text(services, "one", "q-1")
    assert depth(collector, "inbound_events", "pending") == 1
    assert depth(collector, "deliveries", "queued") == 0 and depth(collector, "mass_tasks", "created") == 0
    ingest_text(services, "two", "q-2")
    ticks.now += 4.9
    assert depth(collector, "inbound_events", "pending") == 1  # still the cached answer
    ticks.now += 0.1
    assert depth(collector, "inbound_events", "pending") == 2


def test_unreachable_database_is_reported_not_raised(tmp_path: Path) -> None:
    settings = Settings().replace(database={"url": f"sqlite:///{tmp_path}/missing/dir/x.db"})
    db = Database(settings.database)
    try:
        families = {family.name: family for family in metrics.QueueDepthCollector(db).collect()}
    finally:
        db.dispose()
    assert families["wecom_bot_queue_depth_up"].samples[0].value == 0
    assert "wecom_bot_queue_depth" not in families


# ---- access ------------------------------------------------------------------------------------------


def test_metrics_endpoint_asks_for_the_bearer_token_and_can_be_disabled(services: Services) -> None:
    services.settings = services.settings.replace(metrics={"token": "scrape-token-123"})
    client = create_app(services=services).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic scrape-token-123"}).status_code == 401
    assert "wecom_bot_queue_depth_up" in {name for name, _ in scrape(services, "scrape-token-123")}
    services.settings = services.settings.replace(metrics={"enabled": False})
    assert create_app(services=services).test_client().get("/metrics").status_code == 404


def test_metrics_port_serves_this_process_behind_the_token(services: Services) -> None:
    registry = metrics.scrape_registry(services.db)
    server = metrics.serve_metrics("127.0.0.1", 0, registry, token="port-token-123")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert requests.get(url, timeout=5).status_code == 401
        resp = requests.get(url, headers={"Authorization": "Bearer port-token-123"}, timeout=5)
        assert resp.status_code == 200
        samples = parse(resp.text)
        assert value(samples, "wecom_bot_queue_depth_up") == 1
        assert any(name.startswith("process_") or name.startswith("python_") for name, _ in samples)
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_port_is_refused_in_multiprocess_mode(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    result = runner.invoke(
        main, ["worker", "--metrics-port", "9"], env={**env, metrics.MULTIPROC_ENV: str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "every process's metrics are reported by the web app's /metrics" in result.output


# ---- several processes -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_workers_report_one_sum_in_multiprocess_mode(services: Services, tmp_path: Path) -> None:
    port = free_port()
    s = services.settings
    token = "multi-token-123"
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
        "BOT_METRICS__TOKEN": token,
        metrics.MULTIPROC_ENV: str(tmp_path),
    }
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--workers", "2", "--threads", "2"]
    cmd += ["--bind", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "gunicorn exited"
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still booting
                pass
            assert time.monotonic() < deadline, "gunicorn never became ready"
            time.sleep(0.1)
        config = SimulatorConfig(corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY)
        with Simulator(config) as simulator:
            for i in range(8):
                xml = external_contact_event(
                    "add_external_contact", "zhangsan", f"wmP{i}", corp_id=TEST_CORP_ID
                )
                result = simulator.send_callback(
                    f"{base}/wecom/callback", xml, retry_interval_s=0, duplicate=i == 0
                )
                assert result.status_codes[0] == 200
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        for _ in range(6):  # whichever worker answers reports every worker's counts
            resp = requests.get(f"{base}/metrics", headers=headers, timeout=5)
            assert resp.status_code == 200
            samples = parse(resp.text)
            received = "wecom_bot_callbacks_received_total"
            assert value(samples, received, kind="change_external_contact", result="stored") == 8
            assert value(samples, received, kind="change_external_contact", result="duplicate") == 1
            assert value(samples, "wecom_bot_queue_depth", queue="inbound_events", status="pending") == 8
        assert list(tmp_path.glob("counter_*.db"))  # the workers wrote their counts to files
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr:
            proc.stderr.close()
