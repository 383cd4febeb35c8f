"""`wecom-bot managers add|list|update|disable`: the account managers qualified leads are handed to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.orm import Session

from models.handoff import AccountManager
from models.leads import Platform

PLATFORMS = click.Choice([p.value for p in Platform])


@contextmanager
def _session(ctx: click.Context) -> Iterator[Session]:
    from bot.handoff.managers import ManagerError

    services = ctx.find_root().obj.services()
    try:
        with services.db.transaction() as session:
            yield session
    except ManagerError as exc:
        raise click.ClickException(str(exc)) from None


def _now() -> Any:
    from models.base import utcnow

    return utcnow()


def _describe(m: AccountManager) -> str:
    sac = f" {m.sac_number}" if m.sac_number else ""
    licence = f"licensed{sac}" if m.licensed else f"not licensed{sac}"
    platforms = ",".join(m.platforms) or "all platforms"
    supervisor = m.supervisor_userid or "-"
    state = "" if m.active else " DISABLED"
    return (
        f"{m.userid:<16} {m.name:<10} {licence:<30} open {m.open_count}/{m.capacity:<4}"
        f" days {m.work_days} {m.work_start}-{m.work_end}  {platforms}  supervisor {supervisor}{state}"
    )


def _manager_options(fn: Any) -> Any:
    options = [
        click.option("--name", default=None, help="Name shown to colleagues."),
        click.option(
            "--sac", "sac_number", default=None, help="SAC registration number, e.g. S0260612345678."
        ),
        click.option("--licensed/--not-licensed", default=None, help="Licensed to give investment advice."),
        click.option("--capacity", type=int, default=None, help="Most open leads at once (0 = none)."),
        click.option("--days", "work_days", default=None, help="Working days, ISO weekdays: 1-5, 1,3,5…"),
        click.option(
            "--start", "work_start", default=None, help="Start of working hours, HH:MM Asia/Shanghai."
        ),
        click.option("--end", "work_end", default=None, help="End of working hours, HH:MM Asia/Shanghai."),
        click.option(
            "--platform",
            "platforms",
            multiple=True,
            type=PLATFORMS,
            help="Platform served (repeat); none = every platform.",
        ),
        click.option("--supervisor", default=None, help="Userid of the supervisor escalations go to."),
        click.option("--as", "username", required=True, help="Admin or operator making the change."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fields(values: dict[str, Any], clear_platforms: bool = False) -> Any:
    from bot.handoff.managers import ManagerFields

    platforms = values.pop("platforms")
    return ManagerFields(**values, platforms=tuple(platforms) if platforms or clear_platforms else None)


@click.group()
def managers() -> None:
    """Account managers: licence, capacity, working hours, platforms and supervisor."""


@managers.command("add")
@click.argument("userid")
@_manager_options
@click.pass_context
def managers_add(ctx: click.Context, userid: str, username: str, **values: Any) -> None:
    """Register a WeCom member as an account manager."""
    from bot.handoff.managers import add_manager, require_admin

    with _session(ctx) as session:
        require_admin(session, username)
        manager = add_manager(session, userid, _fields(values), actor=username, now=_now())
        click.echo(f"added {_describe(manager)}")


@managers.command("update")
@click.argument("userid")
@_manager_options
@click.option("--all-platforms", is_flag=True, help="Serve every platform again.")
@click.option("--enable", is_flag=True, help="Take leads again after being disabled.")
@click.pass_context
def managers_update(
    ctx: click.Context, userid: str, username: str, all_platforms: bool, enable: bool, **values: Any
) -> None:
    """Change some of a manager's fields."""
    from bot.handoff.managers import require_admin, update_manager

    if all_platforms and values["platforms"]:
        raise click.ClickException("give either --platform or --all-platforms")
    with _session(ctx) as session:
        require_admin(session, username)
        fields = _fields(values, clear_platforms=all_platforms)
        active = True if enable else None
        manager = update_manager(session, userid, fields, actor=username, now=_now(), active=active)
        click.echo(f"updated {_describe(manager)}")


@managers.command("disable")
@click.argument("userid")
@click.option("--as", "username", required=True, help="Admin or operator making the change.")
@click.pass_context
def managers_disable(ctx: click.Context, userid: str, username: str) -> None:
    """Stop offering leads to a manager (open offers stay until answered or timed out)."""
    from bot.handoff.managers import disable_manager, require_admin

    with _session(ctx) as session:
        require_admin(session, username)
        manager = disable_manager(session, userid, actor=username, now=_now())
        click.echo(f"disabled {manager.userid} ({manager.open_count} open)")


@managers.command("list")
@click.option("--all", "include_inactive", is_flag=True, help="Include disabled managers.")
@click.pass_context
def managers_list(ctx: click.Context, include_inactive: bool) -> None:
    """Account managers with licence, load, hours, platforms and supervisor."""
    from bot.handoff.managers import list_managers

    with _session(ctx) as session:
        rows = list_managers(session, include_inactive)
        if not rows:
            click.echo("no account managers (add one with `wecom-bot managers add`)")
        for manager in rows:
            click.echo(_describe(manager))
