"""Settings: a TOML file, then `BOT_<SECTION>__<KEY>` environment overrides, validated at start."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

ENV_PREFIX = "BOT_"
CONFIG_ENV = "BOT_CONFIG"
_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")


class ConfigError(ValueError):
    """Configuration is missing, malformed, or names an unknown key."""


class ConfigWarning(FutureWarning):
    """Configuration sets a key that was removed: it is ignored, and should be deleted from the file."""


# Keys a release removed, and why: an older file still starts, with a warning naming each one.
REMOVED_KEYS: dict[tuple[str, str], str] = {
    ("web", "dedupe_ttl_s"): "callbacks are deduplicated by a unique key in the database; nothing read it",
}


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
    """The HTTP side: session signing key, body limits, listen address, trusted proxies."""

    secret_key: str = ""
    max_body_bytes: int = 65536
    host: str = "127.0.0.1"
    port: int = 8080
    trusted_proxies: int = 0  # reverse-proxy hops whose X-Forwarded-For/-Proto are believed


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


_QUIET_HOURS_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_quiet_hours(value: str) -> tuple[int, int] | None:
    """Quiet hours "HH:MM-HH:MM" (Shanghai, may wrap midnight) as minutes of the day; "" means none."""
    value = value.strip()
    if not value:
        return None
    match = _QUIET_HOURS_RE.match(value)
    if match is None:
        raise ConfigError(f"campaigns.quiet_hours: expected HH:MM-HH:MM or empty, got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ConfigError("campaigns.quiet_hours: start and end are equal; leave it empty for none")
    return start, end


@dataclass(frozen=True)
class CampaignSettings:
    """What scheduled sends to customers must respect: quiet hours, per-customer caps, task size."""

    quiet_hours: str = "21:00-08:00"
    cap_per_day: int = 1
    cap_per_week: int = 5
    cap_per_month: int = 20
    mass_task_max: int = 10000
    # Mass-send tasks: WeCom reminders while unsent, and when an unconfirmed task is given up.
    mass_remind_after_s: float = 3600.0
    mass_reminders_max: int = 3
    mass_expire_after_s: float = 259200.0

    def quiet_window(self) -> tuple[int, int] | None:
        """Quiet hours as (start, end) minutes of the Shanghai day, or None when there are none."""
        return parse_quiet_hours(self.quiet_hours)


@dataclass(frozen=True)
class SchedulerSettings:
    """The campaign scheduler: leader lock timing, reconciliation, misfire grace and catch-up look-back."""

    lock_ttl_s: float = 30.0
    renew_s: float = 10.0
    reconcile_s: float = 30.0
    misfire_grace_s: int = 600
    lookback_h: int = 24


@dataclass(frozen=True)
class ConsoleSettings:
    """The operator console: language, session cookie and the sign-in limits that stop password guessing."""

    default_locale: str = "zh_Hans_CN"
    # Set on TLS deployments so the session cookie is only ever sent over HTTPS.
    secure_cookies: bool = False
    session_lifetime_min: int = 480
    # Wrong passwords in a row that lock an account, and for how long.
    max_failed_logins: int = 5
    lockout_min: int = 15
    # Sign-in attempts one client address may make per window, whatever the account.
    ip_max_attempts: int = 30
    ip_window_min: int = 10
    page_size: int = 25


SCORE_KINDS = ("subscribed", "replied", "registered", "attended", "clicked", "intent")


@dataclass(frozen=True)
class ScoringSettings:
    """Lead scoring: points and caps per event kind, decay, the fit part and what qualifies a lead."""

    points_subscribed: int = 5
    points_replied: int = 3
    points_registered: int = 20
    points_attended: int = 30
    points_clicked: int = 5
    points_intent: int = 25
    cap_subscribed: int = 5
    cap_replied: int = 15
    cap_registered: int = 40
    cap_attended: int = 60
    cap_clicked: int = 15
    cap_intent: int = 50
    half_life_days: float = 14.0
    # "platform=points"; platforms not listed score 0.
    fit_platform_points: tuple[str, ...] = (
        "wechat_official_account=10",
        "xiaohongshu=8",
        "zhihu=8",
        "douyin=5",
        "bilibili=5",
        "channels=5",
        "kuaishou=3",
        "weibo=3",
        "offline=10",
    )
    # "declared experience=points" (e.g. "over_3y=10"); used once leads declare their experience.
    fit_experience_points: tuple[str, ...] = ("none=0", "under_1y=3", "1_3y=6", "over_3y=10")
    cap_fit: int = 20
    qualify_threshold: int = 60
    # Intents (open_account…) or intent keywords (开户…) that qualify a lead at once.
    qualify_intents: tuple[str, ...] = ("开户", "两融", "佣金")

    def points(self, kind: str) -> int:
        """Points one event of this kind is awarded (fit events take theirs from the fit tables)."""
        value: int = getattr(self, f"points_{kind}")
        return value

    def cap(self, kind: str) -> int:
        """Most points all events of this kind may add up to, after decay."""
        value: int = getattr(self, f"cap_{kind}")
        return value

    def platform_points(self) -> dict[str, int]:
        """Fit points per platform, parsed from fit_platform_points."""
        return _pairs("scoring.fit_platform_points", self.fit_platform_points)

    def experience_points(self) -> dict[str, int]:
        """Fit points per declared experience, parsed from fit_experience_points."""
        return _pairs("scoring.fit_experience_points", self.fit_experience_points)

    def instant_intents(self) -> frozenset[str]:
        """The intents that qualify at once, with keywords resolved to their intent."""
        from bot.kf.keywords import INTENTS

        resolved: set[str] = set()
        for item in self.qualify_intents:
            if item in INTENTS:
                resolved.add(item)
                continue
            intent = next((name for name, words in INTENTS.items() if item in words), None)
            if intent is None:
                known = ", ".join(sorted(INTENTS))
                raise ConfigError(
                    f"scoring.qualify_intents: {item!r} is neither an intent ({known})"
                    " nor one of their keywords"
                )
            resolved.add(intent)
        return frozenset(resolved)


@dataclass(frozen=True)
class HandoffSettings:
    """Handing qualified leads to account managers: answer time, escalation, channel moves on accept."""

    # Qualified leads are offered to an account manager automatically.
    enabled: bool = True
    # A manager who neither accepts nor declines within this many minutes loses the lead to the next one.
    sla_minutes: int = 30
    # After this many unanswered offers in a row the lead is offered to the last manager's supervisor.
    escalate_after_misses: int = 2
    # Intents (or their keywords) that make a lead's question advice-type: only licensed managers take it.
    advice_intents: tuple[str, ...] = ("advice",)
    # On accept: a kf conversation is transferred to the manager as its servicer.
    kf_transfer: bool = True
    # On accept: a contact owned by one of intake_members moves to the manager with transfer_customer
    # (WeCom: completes after 24 h, customer may refuse, at most twice per customer per 90 days).
    transfer_customer: bool = False
    intake_members: tuple[str, ...] = ()
    transfer_success_msg: str = ""
    # How many of the lead's latest messages the brief quotes (masked).
    brief_messages: int = 3
    # Where members find their leads, quoted in notes to them (empty: the WeCom client).
    console_url: str = ""

    def advice_intent_names(self) -> frozenset[str]:
        """The advice-type intents, with keywords resolved to their intent."""
        from bot.kf.keywords import INTENTS

        resolved: set[str] = set()
        for item in self.advice_intents:
            intent = item if item in INTENTS else next((n for n, ws in INTENTS.items() if item in ws), None)
            if intent is None:
                known = ", ".join(sorted(INTENTS))
                raise ConfigError(
                    f"handoff.advice_intents: {item!r} is neither an intent ({known})"
                    " nor one of their keywords"
                )
            resolved.add(intent)
        return frozenset(resolved)


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus endpoint `/metrics`: served or not, and the bearer token a scraper must send."""

    enabled: bool = True
    # Empty: no token asked (keep /metrics off the public network then).
    token: str = ""


@dataclass(frozen=True)
class LoggingSettings:
    """Log lines: "text" for people, "json" for log collectors; the lowest level written."""

    format: str = "text"
    level: str = "info"


def _pairs(where: str, items: tuple[str, ...]) -> dict[str, int]:
    parsed: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            points = int(value)
        except ValueError:
            points = -1
        if not sep or not name or points < 0:
            raise ConfigError(f"{where}: expected name=points with points >= 0, got {item!r}")
        if name in parsed:
            raise ConfigError(f"{where}: {name!r} is listed twice")
        parsed[name] = points
    return parsed


@dataclass(frozen=True)
class Settings:
    """All settings of one deployment."""

    wecom: WeComSettings = field(default_factory=WeComSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    web: WebSettings = field(default_factory=WebSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    compliance: ComplianceSettings = field(default_factory=ComplianceSettings)
    campaigns: CampaignSettings = field(default_factory=CampaignSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

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
        (0 <= settings.web.trusted_proxies <= 5, "web.trusted_proxies: must be 0-5"),
        (settings.worker.max_attempts >= 1, "worker.max_attempts: must be at least 1"),
        (settings.worker.lease_s >= 5, "worker.lease_s: must be at least 5 seconds"),
        (settings.worker.batch_size >= 1, "worker.batch_size: must be at least 1"),
        (1 <= settings.worker.send_concurrency <= 64, "worker.send_concurrency: must be 1-64"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _validate_campaigns(settings.campaigns)
    _validate_scheduler(settings.scheduler)
    _validate_scoring(settings.scoring)
    _validate_handoff(settings.handoff)
    _validate_console(settings.console)
    _validate_logging(settings.logging)


CONSOLE_LOCALES = ("zh_Hans_CN", "en")


def _validate_logging(g: LoggingSettings) -> None:
    if g.format not in ("text", "json"):
        raise ConfigError(f"logging.format: must be text or json, got {g.format!r}")
    if g.level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"logging.level: must be debug, info, warning, error or critical, got {g.level!r}")


def _validate_console(c: ConsoleSettings) -> None:
    if c.default_locale not in CONSOLE_LOCALES:
        raise ConfigError(f"console.default_locale: must be one of {', '.join(CONSOLE_LOCALES)}")
    if not 5 <= c.session_lifetime_min <= 7 * 24 * 60:
        raise ConfigError("console.session_lifetime_min: must be 5 minutes to 7 days")
    if c.max_failed_logins < 1 or c.lockout_min < 1:
        raise ConfigError("console.max_failed_logins/lockout_min: must be at least 1")
    if c.ip_max_attempts < 1 or c.ip_window_min < 1:
        raise ConfigError("console.ip_max_attempts/ip_window_min: must be at least 1")
    if not 5 <= c.page_size <= 200:
        raise ConfigError("console.page_size: must be 5-200")


def _validate_scoring(s: ScoringSettings) -> None:
    for kind in SCORE_KINDS:
        if s.points(kind) < 0 or s.cap(kind) < 0:
            raise ConfigError(f"scoring.points_{kind}/cap_{kind}: must be 0 or more")
    if s.cap_fit < 0:
        raise ConfigError("scoring.cap_fit: must be 0 or more")
    if s.half_life_days < 0:
        raise ConfigError("scoring.half_life_days: must be 0 (no decay) or more days")
    if s.qualify_threshold < 1:
        raise ConfigError("scoring.qualify_threshold: must be at least 1")
    from models.leads import Platform

    unknown = sorted(set(s.platform_points()) - {p.value for p in Platform})
    if unknown:
        raise ConfigError(f"scoring.fit_platform_points: unknown platform {', '.join(unknown)}")
    s.experience_points()
    s.instant_intents()


def _validate_handoff(h: HandoffSettings) -> None:
    if h.sla_minutes < 1:
        raise ConfigError("handoff.sla_minutes: must be at least 1 minute")
    if h.escalate_after_misses < 1:
        raise ConfigError("handoff.escalate_after_misses: must be at least 1")
    if not 0 <= h.brief_messages <= 10:
        raise ConfigError("handoff.brief_messages: must be 0-10")
    if len(h.transfer_success_msg) > 200:
        raise ConfigError("handoff.transfer_success_msg: at most 200 characters (WeCom's limit)")
    if h.transfer_customer and not h.intake_members:
        raise ConfigError("handoff.intake_members: name the intake members whose contacts may be transferred")
    h.advice_intent_names()


def _validate_scheduler(s: SchedulerSettings) -> None:
    if not s.lock_ttl_s > 0:
        raise ConfigError("scheduler.lock_ttl_s: must be positive")
    if not 0 < s.renew_s <= s.lock_ttl_s / 2:
        raise ConfigError("scheduler.renew_s: must be positive and at most half of lock_ttl_s")
    if not s.reconcile_s > 0:
        raise ConfigError("scheduler.reconcile_s: must be positive")
    if s.misfire_grace_s < 0:
        raise ConfigError("scheduler.misfire_grace_s: must be 0 or more seconds")
    if s.lookback_h < 1 or s.lookback_h * 3600 < s.misfire_grace_s:
        raise ConfigError("scheduler.lookback_h: must be at least 1 hour and cover misfire_grace_s")


# The shortest month's WeCom cap (one mass message a day): our own caps stay at or below it.
MAX_CAMPAIGN_CAP_PER_MONTH = 28


def _validate_campaigns(c: CampaignSettings) -> None:
    c.quiet_window()
    if not 1 <= c.cap_per_day <= c.cap_per_week <= c.cap_per_month <= MAX_CAMPAIGN_CAP_PER_MONTH:
        raise ConfigError(
            "campaigns.cap_per_day/cap_per_week/cap_per_month: need 1 <= day <= week <= month"
            f" <= {MAX_CAMPAIGN_CAP_PER_MONTH} (below WeCom's own monthly cap)"
        )
    if not 1 <= c.mass_task_max <= 10000:
        raise ConfigError("campaigns.mass_task_max: must be 1-10000 (WeCom's limit per task)")
    if not 0 <= c.mass_reminders_max <= 3:
        raise ConfigError("campaigns.mass_reminders_max: must be 0-3 (WeCom allows 3 per task per 24 h)")
    if not 0 < c.mass_remind_after_s < c.mass_expire_after_s:
        raise ConfigError("campaigns.mass_remind_after_s: must be positive and below mass_expire_after_s")


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
        for key in [k for k in values if (name, k) in REMOVED_KEYS]:
            del values[key]
            warnings.warn(
                f"{name}.{key} is no longer a setting and is ignored ({REMOVED_KEYS[name, key]});"
                f" delete it from the file (or unset {ENV_PREFIX}{name.upper()}__{key.upper()})",
                ConfigWarning,
                stacklevel=3,
            )
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
