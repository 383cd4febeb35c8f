"""`wecom-bot doctor`: checks each dependency of a deployment and says what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, literal, select, text

from bot.config import ConfigError, Settings, load_settings
from bot.trading_calendar import (
    COVERAGE_WARN_DAYS,
    EXCHANGE,
    TradingCalendar,
    exchange_data,
    shanghai_today,
)
from models.base import utcnow

if TYPE_CHECKING:
    from bot.wecom.client import WeComClient


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


USAGE_COUNT_CAP = 1000


@dataclass(frozen=True)
class Feature:
    """A WeCom API family the bot may use, and a read-only call that only an app granted it may make."""

    app: str
    label: str
    setup: str  # where in the WeCom admin console the app is granted the API
    probe: Callable[[WeComClient], object]


FEATURES = (
    Feature(
        "contact",
        "customer contact",
        "客户联系 → API → 可调用接口的应用",
        lambda client: client.get("externalcontact/get_follow_user_list", app="contact"),
    ),
    Feature(
        "kf",
        "WeChat Customer Service",
        "微信客服 → API → 可调用接口的应用",
        lambda client: client.post("kf/account/list", {"offset": 0, "limit": 1}, app="kf"),
    ),
)


def feature_usage(settings: Settings) -> dict[str, list[str]] | None:
    """What in the database needs each API family (app -> reasons); None when the database cannot say."""
    from bot.db import Database
    from models.contacts import ContactRelation, RelationStatus
    from models.kf import KfConversation, KfCursor
    from models.leads import HookCode

    db = Database(settings.database)
    active = HookCode.active.is_(True)
    wheres: dict[str, dict[str, tuple[Any, ...]]] = {
        "contact": {
            "active hook codes with 「联系我」 QR codes": (
                active,
                HookCode.contact_way_config_id.is_not(None),
            ),
            "active acquisition links": (active, HookCode.acquisition_link_id.is_not(None)),
            "customers added to members": (ContactRelation.status == RelationStatus.ACTIVE,),
        },
        "kf": {
            "active hook codes with kf links": (active, HookCode.kf_open_kfid.is_not(None)),
            "kf accounts synced": (KfCursor.open_kfid.is_not(None),),
            "kf conversations": (KfConversation.id.is_not(None),),
        },
    }

    def count(conn: Any, where: tuple[Any, ...]) -> str:
        # Counted up to a cap: a large table answers as fast as a small one.
        found = conn.scalar(
            select(func.count()).select_from(
                select(literal(1)).where(*where).limit(USAGE_COUNT_CAP).subquery()
            )
        )
        return "" if not found else f"{found}+" if found >= USAGE_COUNT_CAP else str(found)

    try:
        with db.engine.connect() as conn:
            return {
                app: [f"{what}: {n}" for what, where in queries.items() if (n := count(conn, where))]
                for app, queries in wheres.items()
            }
    except Exception:
        return None
    finally:
        db.dispose()


def _check_feature(
    client: WeComClient, settings: Settings, feature: Feature, used_by: list[str] | None
) -> CheckResult:
    """A token check for the app; when the feature is in use, also a call that needs its permission."""
    from bot.wecom.errors import WeComAPIError

    name = f"wecom {feature.app} token"
    own = getattr(settings.wecom, f"{feature.app}_secret")
    source = f"wecom.{feature.app}_secret" if own else "the app's own secret (agent_secret)"
    base = settings.wecom.api_base_url
    if not own and used_by is None:
        return CheckResult(
            name, "warn", f"cannot tell whether {feature.label} is in use: database unavailable"
        )
    if not own and not used_by:
        return CheckResult(
            name,
            "ok",
            f"{feature.label} not in use, nothing to check (when it is, the app's own secret serves it"
            f" unless wecom.{feature.app}_secret is set)",
        )
    if not own and not settings.wecom.agent_secret:
        return CheckResult(name, "fail", f"in use ({'; '.join(used_by or [])}) and no secret serves it")
    try:
        client.access_token(feature.app)
        if used_by:
            feature.probe(client)
    except WeComAPIError as exc:
        hint = f"; grant the app the API under {feature.setup}" if exc.errcode == 48002 else ""
        used = f" ({feature.label} in use: {'; '.join(used_by)})" if used_by else ""
        return CheckResult(name, "fail", f"{source}: {exc.errcode}: {exc.errmsg} ({base}){used}{hint}")
    if used_by:
        return CheckResult(name, "ok", f"{source}: API permitted ({base}); in use: {'; '.join(used_by)}")
    return CheckResult(name, "ok", f"{source}: token issued by {base}; {feature.label} not in use yet")


def _check_wecom_token(settings: Settings) -> list[CheckResult]:
    """The agent secret must work; the contact and kf APIs are checked as far as the firm uses them."""
    from bot.coordination import MemoryCoordinator
    from bot.wecom.client import WeComClient
    from bot.wecom.errors import WeComAPIError

    usage = feature_usage(settings)
    results = []
    client = WeComClient.from_settings(settings.wecom, MemoryCoordinator())
    try:
        if not settings.wecom.agent_secret:
            results.append(CheckResult("wecom agent token", "fail", "wecom.agent_secret is empty"))
        else:
            try:
                client.access_token("agent")
                results.append(
                    CheckResult("wecom agent token", "ok", f"token issued by {settings.wecom.api_base_url}")
                )
            except WeComAPIError as exc:
                results.append(
                    CheckResult(
                        "wecom agent token",
                        "fail",
                        f"{exc.errcode}: {exc.errmsg} ({settings.wecom.api_base_url})",
                    )
                )
        for feature in FEATURES:
            used_by = None if usage is None else usage.get(feature.app, [])
            results.append(_check_feature(client, settings, feature, used_by))
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
