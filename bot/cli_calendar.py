"""`wecom-bot calendar …`: which days the Shanghai Stock Exchange trades, and operator overrides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.trading_calendar import (
    COVERAGE_WARN_DAYS,
    EXCHANGE,
    CalendarError,
    DaySource,
    DayStatus,
    TradingCalendar,
    add_override,
    remove_override,
    shanghai_today,
)
from models.base import utcnow
from models.calendar import CalendarOverride

if TYPE_CHECKING:
    from bot.cli import Context

UPCOMING_DAYS = 10
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class _DateType(click.ParamType):
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a date like 2026-10-09", param, ctx)


DATE = _DateType()


def _services(ctx: Context) -> Any:
    from bot.cli import _require_schema

    services = ctx.services()
    _require_schema(services)
    return services


def _load(ctx: Context) -> TradingCalendar:
    with _services(ctx).db.read() as session:
        return TradingCalendar.load(session)


@contextmanager
def _writing(ctx: Context, username: str) -> Iterator[Session]:
    from scripts_library.catalogue import WorkflowError, actor

    try:
        with _services(ctx).db.transaction() as session:
            actor(session, username)
            yield session
    except (CalendarError, WorkflowError) as exc:
        raise click.ClickException(str(exc)) from None


def _describe(status: DayStatus, calendar: TradingCalendar) -> str:
    verdict = "trading" if status.trading else "closed"
    if status.source == DaySource.OVERRIDE:
        source = f"override: {status.reason}"
    elif status.source == DaySource.FALLBACK:
        source = f"fallback: weekday rule, no {EXCHANGE} exchange data after {calendar.coverage_end}"
    else:
        source = f"{EXCHANGE} exchange data"
    return f"{status.day} {_WEEKDAYS[status.day.weekday()]}  {verdict:<7}  {source}"


actor_option = click.option(
    "--actor", "--as", "username", required=True, help="Active account making the change (audited)."
)


@click.group()
def calendar() -> None:
    """Trading days of the Shanghai Stock Exchange for scheduled reports, with operator overrides."""


@calendar.command("status")
@click.option("--today", type=DATE, default=None, help="Shanghai date to reckon from (default: now).")
@click.pass_obj
def status(ctx: Context, today: date | None) -> None:
    """Exchange data coverage, days left, and the next trading days with where each answer came from."""
    calendar_ = _load(ctx)
    today = today or shanghai_today(utcnow())
    left = calendar_.days_of_coverage_left(today)
    click.echo(f"exchange data: {EXCHANGE} {calendar_.coverage_start} .. {calendar_.coverage_end}")
    click.echo(f"days of coverage left: {left} (from {today})")
    if left < COVERAGE_WARN_DAYS:
        click.echo(
            f"warning: after {calendar_.coverage_end} the calendar falls back to weekdays minus 'closed'"
            " plus 'open' overrides; upgrade exchange-calendars for newer exchange data"
        )
    click.echo(f"overrides: {len(calendar_.overrides)}")
    click.echo(f"today: {_describe(calendar_.status(today), calendar_)}")
    click.echo(f"next {UPCOMING_DAYS} trading days:")
    for day in calendar_.upcoming(today, UPCOMING_DAYS):
        click.echo(f"  {_describe(day, calendar_)}")


@calendar.command("check")
@click.argument("day", type=DATE)
@click.pass_obj
def check(ctx: Context, day: date) -> None:
    """Whether DAY (YYYY-MM-DD, Shanghai) trades, and on whose word."""
    calendar_ = _load(ctx)
    click.echo(_describe(calendar_.status(day), calendar_))


@calendar.group()
def overrides() -> None:
    """Extra closures and make-up trading days set by operators; they win over exchange data."""


@overrides.command("list")
@click.pass_obj
def overrides_list(ctx: Context) -> None:
    """Every override, by day."""
    with _services(ctx).db.read() as session:
        rows = list(session.scalars(select(CalendarOverride).order_by(CalendarOverride.day)))
        for row in rows:
            click.echo(
                f"{row.day} {_WEEKDAYS[row.day.weekday()]}  {row.kind:<6}  {row.reason}"
                f"  (by {row.created_by} at {row.created_at:%Y-%m-%d %H:%M} UTC)"
            )
    if not rows:
        click.echo("no overrides")


@overrides.command("add")
@click.argument("day", type=DATE)
@click.option("--closed", "kind", flag_value="closed", help="An extra closure of a day that would trade.")
@click.option(
    "--open", "kind", flag_value="open", help="A make-up trading day on a day that would be closed."
)
@click.option("--reason", required=True, help="Why, e.g. the exchange notice.")
@actor_option
@click.pass_obj
def overrides_add(ctx: Context, day: date, kind: str | None, reason: str, username: str) -> None:
    """Override DAY (YYYY-MM-DD, Shanghai) as --closed or --open."""
    if kind is None:
        raise click.UsageError("say --closed or --open")
    with _writing(ctx, username) as session:
        add_override(session, day, kind, reason, username)
    click.echo(f"{day} overridden as {kind}")


@overrides.command("remove")
@click.argument("day", type=DATE)
@actor_option
@click.pass_obj
def overrides_remove(ctx: Context, day: date, username: str) -> None:
    """Remove the override on DAY; exchange data (or the weekday fallback) decides again."""
    with _writing(ctx, username) as session:
        remove_override(session, day, username)
    click.echo(f"override on {day} removed")
