"""Structured logs: JSON fields, request and event ids, masked phone numbers, never a secret."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

from bot import logs
from bot.app import create_app
from bot.cli import main
from bot.coordination import MemoryCoordinator
from bot.routing import Dispatcher, HandlerContext, Router
from bot.services import Services
from bot.wecom.client import WeComClient
from bot.wecom.errors import WeComAPIError
from bot.wecom.events import Event, TextMessage
from bot.worker import Worker
from tests.callbacks import envelope, params_of, text_message


class Captured:
    """A handler set up as `configure_logging` sets up its own, writing to a buffer."""

    def __init__(self, fmt: logging.Formatter, secrets: tuple[str, ...] = ()) -> None:
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(fmt)
        self.handler.addFilter(logs.ContextFilter())
        self.handler.addFilter(logs.RedactingFilter(secrets))

    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines() if line.startswith("{")]


@pytest.fixture
def capture() -> Iterator[Captured]:
    """JSON lines of every `wecom_bot.*` logger, at debug level."""
    captured = Captured(logs.JsonFormatter(), secrets=("callback-token-value", "agent-secret-for-tests"))
    logger = logging.getLogger("wecom_bot")
    level = logger.level
    logger.addHandler(captured.handler)
    logger.setLevel(logging.DEBUG)
    yield captured
    logger.removeHandler(captured.handler)
    logger.setLevel(level)


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without pytest's handlers, as in a fresh process; restored afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    for handler in saved:
        root.removeHandler(handler)
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_bound_ids(capture: Captured) -> None:
    log = logging.getLogger("wecom_bot.test")
    log.info("plain %s", "line")
    token = logs.REQUEST_ID.set("req-abc-123")
    try:
        with logs.event_context(42):
            log.warning("inside an event")
        with logs.event_context([7, 8]):
            log.error("inside a batch")
    finally:
        logs.REQUEST_ID.reset(token)
    plain, event, batch = capture.json()
    assert set(plain) == {"timestamp", "level", "logger", "message"}
    assert (
        plain["level"] == "info" and plain["logger"] == "wecom_bot.test" and plain["message"] == "plain line"
    )
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", str(plain["timestamp"]))
    assert event["request_id"] == "req-abc-123" and event["event_id"] == 42 and event["level"] == "warning"
    assert batch["event_id"] == [7, 8]


def test_text_lines_name_the_bound_ids() -> None:
    captured = Captured(logs.TextFormatter())
    log = logging.getLogger("wecom_bot.text_test")
    log.addHandler(captured.handler)
    log.propagate = False
    try:
        with logs.event_context(5):
            log.warning("handled")
    finally:
        log.removeHandler(captured.handler)
        log.propagate = True
    [line] = captured.lines()
    assert line.endswith("WARNING wecom_bot.text_test handled event_id=5")


def test_phone_numbers_are_masked_and_secrets_never_written(capture: Captured) -> None:
    log = logging.getLogger("wecom_bot.test")
    log.info("customer left %s as their number (or %s)", "13812345678", "+86 15900001111")
    log.info("GET https://qyapi.weixin.qq.com/cgi-bin/message/send?access_token=AT-SECRET-1&debug=1")
    log.info("gettoken?corpid=ww1&corpsecret=CORP-SECRET-2 and agent_secret=AGENT-3")
    log.info("database postgresql://bot:db-password-4@db:5432/bot, redis redis://:redis-pw-5@cache:6379/0")
    log.info("token %s and key %s", "callback-token-value", "agent-secret-for-tests")
    try:
        raise RuntimeError("failed calling /cgi-bin/kf/send_msg?access_token=AT-SECRET-6 for 13700001234")
    except RuntimeError:
        log.exception("send failed")
    text = capture.buffer.getvalue()
    for secret in ("AT-SECRET-1", "CORP-SECRET-2", "AGENT-3", "db-password-4", "redis-pw-5", "AT-SECRET-6"):
        assert secret not in text
    for secret in (
        "callback-token-value",
        "agent-secret-for-tests",
        "13812345678",
        "15900001111",
        "13700001234",
    ):
        assert secret not in text
    lines = capture.json()
    assert "138****5678" in str(lines[0]["message"]) and "159****1111" in str(lines[0]["message"])
    assert "access_token=***&debug=1" in str(lines[1]["message"])
    assert "corpsecret=***" in str(lines[2]["message"]) and "agent_secret=***" in str(lines[2]["message"])
    assert "postgresql://bot:***@db:5432/bot" in str(lines[3]["message"])
    assert "redis://:***@cache" in str(lines[3]["message"])
    assert lines[4]["message"] == "token *** and key ***"
    assert "access_token=***" in str(lines[5]["exception"]) and "137****1234" in str(lines[5]["exception"])


def test_configured_secrets_include_every_credential(services: Services) -> None:
    settings = services.settings.replace(metrics={"token": "metrics-token-9"})
    secrets = logs.secrets_of(settings)
    assert {"test-callback-token", "agent-secret-for-tests", "test-secret-key", "metrics-token-9"} <= set(
        secrets
    )
    assert settings.wecom.encoding_aes_key in secrets


def test_configure_logging_replaces_its_own_handler_and_leaves_a_configured_root_alone() -> None:
    out = io.StringIO()
    with bare_root() as root:
        first = logs.configure_logging("json", "warning", stream=out)
        second = logs.configure_logging("json", "debug", secrets=("s3cr3t-value",), stream=out)
        assert root.handlers == [second] and first is not second
        assert root.level == logging.DEBUG
        logging.getLogger("wecom_bot.x").debug("value s3cr3t-value")
        assert json.loads(out.getvalue())["message"] == "value ***"
        foreign = logging.StreamHandler(io.StringIO())
        root.addHandler(foreign)
        assert logs.configure_logging("text", "info") is None
        assert root.handlers == [second, foreign]
    with pytest.raises(ValueError, match="log format"):
        logs.configure_logging("xml", "info")
    with pytest.raises(ValueError, match="log level"):
        logs.configure_logging("json", "loud")


def test_command_line_applies_the_logging_settings(runner: CliRunner, env: dict[str, str]) -> None:
    env = {**env, "BOT_LOGGING__FORMAT": "json", "BOT_LOGGING__LEVEL": "warning", "BOT_LOG_LEVEL": ""}
    with bare_root() as root:
        result = runner.invoke(main, ["lint", "-"], input="今日收盘，仅供参考。\n", env=env)
        assert result.exit_code == 0 and "verdict: pass" in result.output, result.output
        [handler] = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter) and root.level == logging.WARNING
        assert any(isinstance(f, logs.RedactingFilter) for f in handler.filters)
        runner.invoke(main, ["--log-level", "debug", "lint", "-"], input="收盘\n", env=env)
        assert root.handlers != [handler] and len(root.handlers) == 1 and root.level == logging.DEBUG
        result = runner.invoke(main, ["--log-level", "loud", "lint", "-"], input="x\n", env=env)
    assert result.exit_code == 2 and "log level must be one of" in result.output


def test_every_response_carries_a_request_id_that_its_log_lines_share(
    services: Services, capture: Captured
) -> None:
    client = create_app(services=services).test_client()
    first, second = client.get("/healthz"), client.get("/healthz")
    assert re.match(r"^[0-9a-f]{32}$", first.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
    given = client.get("/healthz", headers={"X-Request-Id": "lb-7f3a-0001"})
    assert given.headers["X-Request-Id"] == "lb-7f3a-0001"
    forged = client.get("/healthz", headers={"X-Request-Id": 'x" level="critical'})
    assert re.match(r"^[0-9a-f]{32}$", forged.headers["X-Request-Id"])
    query, body = envelope(text_message())
    forged = urlencode({**params_of(query), "msg_signature": "0" * 40})
    refused = client.post(f"/wecom/callback?{forged}", data=body)
    assert refused.status_code == 403
    [line] = [entry for entry in capture.json() if entry["logger"] == "wecom_bot.callback"]
    assert line["request_id"] == refused.headers["X-Request-Id"] and "rejected" in str(line["message"])
    assert logs.REQUEST_ID.get() is None  # nothing leaks past the request


def test_worker_log_lines_carry_the_event_id(services: Services, capture: Captured) -> None:
    router = Router("logs")

    @router.on(TextMessage)
    def fail(event: Event, ctx: HandlerContext) -> None:
        raise RuntimeError("cannot reach 13812345678")

    ingestor = services.ingestor
    assert ingestor is not None
    query, body = envelope(text_message("hi", "log-1"))
    p = params_of(query)
    stored = ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
    worker = Worker(services.settings, services.db, services.coordinator, Dispatcher([router]), worker_id="l")
    worker.drain()
    [failure] = [entry for entry in capture.json() if entry["logger"] == "wecom_bot.worker"]
    assert failure["event_id"] == stored.event_id and failure["level"] == "error"
    assert "138****5678" in str(failure["exception"]) and "13812345678" not in str(failure["exception"])
    assert logs.EVENT_ID.get() is None


def test_network_errors_do_not_carry_the_secret_in_the_url() -> None:
    client = WeComClient(
        "ww1", {"agent": "agent-secret-value-1"}, 1000002, MemoryCoordinator(), "http://127.0.0.1:9"
    )
    with pytest.raises(WeComAPIError) as failed:
        client.get("user/get", {"userid": "zhangsan"})
    client.close()
    assert failed.value.errcode == -1 and "network error" in failed.value.errmsg
    assert "agent-secret-value-1" not in failed.value.errmsg and "corpsecret=***" in failed.value.errmsg
