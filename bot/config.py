"""Settings: a TOML file, then `BOT_<SECTION>__<KEY>` environment overrides, validated at start."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

ENV_PREFIX = "BOT_"
CONFIG_ENV = "BOT_CONFIG"
_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")


class ConfigError(ValueError):
    """Configuration is missing, malformed, or names an unknown key."""


@dataclass(frozen=True)
class WeComSettings:
    """Credentials and endpoints of the corp's self-built WeCom app."""

    corp_id: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    agent_id: int = 0
    agent_secret: str = ""
    contact_secret: str = ""
    kf_secret: str = ""
    api_base_url: str = "https://qyapi.weixin.qq.com"
    max_clock_skew_s: int = 300
    request_timeout_s: float = 10.0


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the database lives."""

    url: str = "sqlite:///wecom-bot.db"
    pool_size: int = 10
    echo: bool = False


@dataclass(frozen=True)
class RedisSettings:
    """Redis for multi-process coordination; empty means in-process."""

    url: str = ""
    namespace: str = "wecom-bot"


@dataclass(frozen=True)
class WebSettings:
    """The HTTP side: session signing key, body limits and dedupe cache."""

    secret_key: str = ""
    max_body_bytes: int = 65536
    dedupe_ttl_s: int = 86400
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker claims, retries and dead-letters stored events."""

    batch_size: int = 20
    lease_s: int = 60
    max_attempts: int = 6
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    idle_poll_s: float = 5.0
    send_concurrency: int = 8


@dataclass(frozen=True)
class ComplianceSettings:
    """Firm-specific inputs of the compliance checks on every outbound text."""

    firm_name: str = "示例证券"
    opt_out_instruction: str = "回复TD退订"
    allowed_link_domains: tuple[str, ...] = ("work.weixin.qq.com", "weixin.qq.com")
    not_advice_phrase: str = "仅供参考，不构成投资建议"


@dataclass(frozen=True)
class Settings:
    """All settings of one deployment."""

    wecom: WeComSettings = field(default_factory=WeComSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    web: WebSettings = field(default_factory=WebSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    compliance: ComplianceSettings = field(default_factory=ComplianceSettings)

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """Return a copy with some keys of some sections changed (used by tests and commands)."""
        data = {name: dict(values) for name, values in sections.items()}
        return _build(data, base=self)

    def check_wecom(self) -> list[str]:
        """Return the problems that stop the callback endpoint from working with these credentials."""
        problems = []
        w = self.wecom
        if not w.corp_id:
            problems.append("wecom.corp_id is empty")
        if not w.token:
            problems.append("wecom.token is empty")
        if not _AES_KEY_RE.match(w.encoding_aes_key):
            problems.append("wecom.encoding_aes_key must be 43 characters from [A-Za-z0-9]")
        return problems


def _coerce(section: str, key: str, kind: Any, value: Any) -> Any:
    where = f"{section}.{key}"
    if get_origin(kind) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(i.strip() for i in items if i.strip())
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.strip().lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _validate(settings: Settings) -> None:
    checks: list[tuple[bool, str]] = [
        (settings.wecom.max_clock_skew_s >= 0, "wecom.max_clock_skew_s: must be 0 (disabled) or positive"),
        (settings.wecom.request_timeout_s > 0, "wecom.request_timeout_s: must be positive"),
        (
            settings.wecom.api_base_url.startswith(("http://", "https://")),
            "wecom.api_base_url: must start with http:// or https://",
        ),
        (
            not settings.wecom.encoding_aes_key or bool(_AES_KEY_RE.match(settings.wecom.encoding_aes_key)),
            "wecom.encoding_aes_key: must be 43 characters from [A-Za-z0-9]",
        ),
        (bool(settings.database.url), "database.url: must not be empty"),
        (
            settings.redis.url == "" or settings.redis.url.startswith(("redis://", "rediss://", "unix://")),
            "redis.url: must be empty or a redis:// URL",
        ),
        (
            1024 <= settings.web.max_body_bytes <= 10 * 1024 * 1024,
            "web.max_body_bytes: must be 1 KiB..10 MiB",
        ),
        (settings.worker.max_attempts >= 1, "worker.max_attempts: must be at least 1"),
        (settings.worker.lease_s >= 5, "worker.lease_s: must be at least 5 seconds"),
        (settings.worker.batch_size >= 1, "worker.batch_size: must be at least 1"),
        (1 <= settings.worker.send_concurrency <= 64, "worker.send_concurrency: must be 1-64"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _build(data: Mapping[str, Mapping[str, Any]], base: Settings | None = None) -> Settings:
    base = base or Settings()
    sections: dict[str, Any] = {}
    known = {f.name: f for f in fields(Settings)}
    for name in data:
        if name not in known:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(sorted(known))})")
    for name in known:
        current = getattr(base, name)
        hints = get_type_hints(type(current))
        values = dict(data.get(name, {}))
        for key in values:
            if key not in hints:
                raise ConfigError(f"{name}.{key}: unknown key")
        coerced = {key: _coerce(name, key, hints[key], value) for key, value in values.items()}
        sections[name] = dataclasses.replace(current, **coerced)
    settings = Settings(**sections)
    _validate(settings)
    return settings


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Collect `BOT_<SECTION>__<KEY>` variables into a nested mapping."""
    data: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        data.setdefault(section.lower(), {})[key.lower()] = value
    return data


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from `path` (or $BOT_CONFIG, or defaults), then apply environment overrides."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    data: dict[str, dict[str, Any]] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a [section] table")
            data[section] = dict(values)
    for section, values in env_overrides(environ).items():
        data.setdefault(section, {}).update(values)
    return _build(data)
