"""`wecom-bot doctor`: checks each dependency of a deployment and says what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import text

from bot.config import ConfigError, Settings, load_settings
from bot.trading_calendar import (
    COVERAGE_WARN_DAYS,
    EXCHANGE,
    TradingCalendar,
    exchange_data,
    shanghai_today,
)
from models.base import utcnow


@dataclass(frozen=True)
class CheckResult:
    """One item's verdict: ok, warn or fail, with a human explanation."""

    name: str
    verdict: str
    detail: str


def _check_database(settings: Settings) -> CheckResult:
    from bot.db import Database, schema_status

    db = Database(settings.database)
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = schema_status(db.engine)
    except Exception as exc:
        return CheckResult("database", "fail", f"cannot connect: {type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        db.dispose()
    url = db.engine.url.render_as_string(hide_password=True)
    if current != head:
        return CheckResult(
            "database", "fail", f"{url}: schema at {current}, expected {head} (run `wecom-bot init`)"
        )
    return CheckResult("database", "ok", f"{url}: schema at {current}")


def _check_redis(settings: Settings) -> CheckResult:
    if not settings.redis.url:
        return CheckResult("redis", "ok", "not configured: in-process coordination (single process only)")
    from bot.coordination.redis import RedisCoordinator

    coordinator = RedisCoordinator(settings.redis.url, settings.redis.namespace)
    try:
        coordinator.ping()
    except Exception as exc:
        return CheckResult("redis", "fail", f"{settings.redis.url}: {type(exc).__name__}: {exc}")
    finally:
        coordinator.close()
    return CheckResult("redis", "ok", f"{settings.redis.url}: answering")


def _check_wecom_token(settings: Settings) -> list[CheckResult]:
    from bot.coordination import MemoryCoordinator
    from bot.wecom.client import WeComClient
    from bot.wecom.errors import WeComAPIError

    results = []
    client = WeComClient.from_settings(settings.wecom, MemoryCoordinator())
    secrets = {
        "agent": settings.wecom.agent_secret,
        "contact": settings.wecom.contact_secret,
        "kf": settings.wecom.kf_secret,
    }
    try:
        for app, secret in secrets.items():
            name = f"wecom {app} token"
            if not secret:
                verdict = "fail" if app == "agent" else "warn"
                results.append(CheckResult(name, verdict, f"wecom.{app}_secret is empty"))
                continue
            try:
                client.access_token(app)
            except WeComAPIError as exc:
                results.append(
                    CheckResult(name, "fail", f"{exc.errcode}: {exc.errmsg} ({settings.wecom.api_base_url})")
                )
                continue
            results.append(CheckResult(name, "ok", f"token issued by {settings.wecom.api_base_url}"))
    finally:
        client.close()
    return results


def _check_trading_calendar(today: date) -> CheckResult:
    """Warn while exchange data runs short; after it ends the calendar falls back to weekdays."""
    try:
        calendar = TradingCalendar(exchange_data())
    except Exception as exc:
        return CheckResult(
            "calendar", "fail", f"{EXCHANGE} exchange data unavailable: {type(exc).__name__}: {exc}"
        )
    end = calendar.coverage_end
    left = calendar.days_of_coverage_left(today)
    if left < COVERAGE_WARN_DAYS:
        return CheckResult(
            "calendar",
            "warn",
            f"{EXCHANGE} exchange data ends {end} ({left} days left): after {end} the calendar falls back"
            " to weekdays minus 'closed' plus 'open' overrides (`wecom-bot calendar overrides`);"
            " upgrade exchange-calendars for newer exchange data",
        )
    return CheckResult("calendar", "ok", f"{EXCHANGE} exchange data through {end} ({left} days left)")


def run_checks(config_path: str | None) -> list[CheckResult]:
    """Run every check in order; a broken configuration stops the rest."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        return [CheckResult("config", "fail", str(exc))]
    results = [CheckResult("config", "ok", config_path or "defaults and environment")]
    problems = settings.check_wecom()
    if problems:
        results.append(CheckResult("callback", "fail", "; ".join(problems)))
    else:
        results.append(
            CheckResult("callback", "ok", f"corp {settings.wecom.corp_id}, token and AES key valid")
        )
    results.append(_check_database(settings))
    results.append(_check_redis(settings))
    results.extend(_check_wecom_token(settings))
    results.append(_check_trading_calendar(shanghai_today(utcnow())))
    return results
