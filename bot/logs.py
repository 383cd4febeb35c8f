"""Structured logs: JSON or text lines carrying request and event ids, with secrets and phone numbers hidden.

Every line passes `RedactingFilter` on the handler `configure_logging` installs: mainland mobile
numbers become 138****1234 (`bot.leads.masking`), `access_token=` / `corpsecret=` values in URLs
and passwords in database or Redis URLs become `***`, and the configured secrets themselves
(callback token, EncodingAESKey, app secrets, session key) are replaced wherever they appear.
`request_id` (one per HTTP request, answered as `X-Request-Id`) and `event_id` (the inbound event a
worker is handling) come from context variables, so every log call inside them carries the id.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from bot.leads.masking import mask

if TYPE_CHECKING:
    from bot.config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
EVENT_ID: ContextVar[int | Sequence[int] | None] = ContextVar("event_id", default=None)

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
REQUEST_ID_HEADER = "X-Request-Id"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
REDACTED = "***"

# A caller's own id is echoed only when it is short and plain, so it cannot forge log fields.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
_SECRET_PARAMS = re.compile(
    r"\b(access_token|[a-z_]*secret|encoding_aes_key|password)=[^&\s'\"]+", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide secret URL parameters, URL passwords, the given secret values and phone numbers."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return mask(text)


def secrets_of(settings: Settings) -> list[str]:
    """The configured secret values that must never appear in a log line."""
    w = settings.wecom
    return [
        w.token,
        w.encoding_aes_key,
        w.agent_secret,
        w.contact_secret,
        w.kf_secret,
        settings.web.secret_key,
        settings.metrics.token,
    ]


class RedactingFilter(logging.Filter):
    """Rewrites each record's message and traceback with `redact` before any formatter sees them."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class ContextFilter(logging.Filter):
    """Stamps each record with the request and event id bound when it was logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Copy the bound ids onto the record; never drops a record."""
        record.request_id = REQUEST_ID.get()
        record.event_id = EVENT_ID.get()
        return True


def _bound_ids(record: logging.LogRecord) -> tuple[str | None, int | Sequence[int] | None]:
    """The ids stamped on the record, else those bound now (a handler without ContextFilter)."""
    return getattr(record, "request_id", REQUEST_ID.get()), getattr(record, "event_id", EVENT_ID.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, the bound ids, any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line (non-ASCII kept readable)."""
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, event_id = _bound_ids(record)
        if request_id is not None:
            entry["request_id"] = request_id
        if event_id is not None:
            entry["event_id"] = event_id if isinstance(event_id, int) else list(event_id)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic text line, with the bound request or event id appended when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as text, suffixed with `request_id=` / `event_id=` when bound."""
        line = super().format(record)
        request_id, event_id = _bound_ids(record)
        first, sep, rest = line.partition("\n")  # the ids go on the message line, before a traceback
        if request_id is not None:
            first += f" request_id={request_id}"
        if event_id is not None:
            first += f" event_id={event_id if isinstance(event_id, int) else ','.join(map(str, event_id))}"
        return first + sep + rest


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time, so a replaced stderr is followed, not kept."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        """Emit to the current sys.stderr."""
        self.stream = sys.stderr
        super().emit(record)


_OWN_HANDLER = "wecom_bot_log_handler"


def configure_logging(
    fmt: str = "text", level: str = "info", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> logging.Handler | None:
    """Send the root logger's records through redaction to stderr (or `stream`) as `fmt` lines.

    Like `logging.basicConfig`, a root logger that something else already gave handlers (a test
    runner, an embedding application) is left alone and None is returned; a handler installed by
    an earlier call is replaced.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _OWN_HANDLER, False)]
    if len(ours) != len(root.handlers):
        return None
    for old in ours:
        root.removeHandler(old)
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    setattr(handler, _OWN_HANDLER, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def new_request_id(offered: str | None = None) -> str:
    """The id of an HTTP request: the caller's `X-Request-Id` when plain and short, else a new one."""
    if offered and _CLIENT_REQUEST_ID.match(offered):
        return offered
    return uuid.uuid4().hex


@contextmanager
def event_context(event_id: int | Sequence[int]) -> Iterator[None]:
    """Tag the log lines written while the worker handles this event (or batch of events)."""
    token = EVENT_ID.set(event_id)
    try:
        yield
    finally:
        EVENT_ID.reset(token)
