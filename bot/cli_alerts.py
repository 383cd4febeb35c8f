"""`wecom-bot alerts …`: list the alerts people must look at, and acknowledge them once dealt with."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.trading_calendar import SHANGHAI
from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.users import Role, User

if TYPE_CHECKING:
    from bot.cli import Context

SEVERITIES = ("info", "warning", "critical")
AUDIENCES = ("operator", "compliance", "both")
# Whose alerts each role may acknowledge: operators cannot silence what compliance must see.
ACK_AUDIENCES: dict[str, frozenset[str]] = {
    Role.ADMIN: frozenset(AUDIENCES),
    Role.OPERATOR: frozenset({"operator", "both"}),
    Role.COMPLIANCE: frozenset({"compliance", "both"}),
}
MAX_NOTE = 500


class AlertError(ValueError):
    """Alerts cannot be listed or acknowledged as asked; the message says why and nothing changed."""


def list_alerts(
    session: Session,
    *,
    include_acknowledged: bool = False,
    kind: str | None = None,
    severity: str | None = None,
    audience: str | None = None,
    limit: int = 50,
) -> list[Alert]:
    """Alerts newest first, open ones only unless `include_acknowledged`; optionally filtered."""
    if severity is not None and severity not in SEVERITIES:
        raise AlertError(f"severity: one of {', '.join(SEVERITIES)}")
    if audience is not None and audience not in AUDIENCES:
        raise AlertError(f"audience: one of {', '.join(AUDIENCES)}")
    if limit < 1:
        raise AlertError("limit: at least 1")
    stmt = select(Alert).order_by(Alert.raised_at.desc(), Alert.id.desc()).limit(limit)
    if not include_acknowledged:
        stmt = stmt.where(Alert.acknowledged.is_(False))
    if kind is not None:
        stmt = stmt.where(Alert.kind == kind)
    if severity is not None:
        stmt = stmt.where(Alert.severity == severity)
    if audience is not None:
        stmt = stmt.where(Alert.audience == audience)
    return list(session.scalars(stmt))


def _acknowledger(session: Session, username: str) -> frozenset[str]:
    """The audiences whose alerts the active account `username` may acknowledge, or refuse."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise AlertError(f"no active account named {username!r}")
    allowed = ACK_AUDIENCES.get(user.role, frozenset())
    if not allowed:
        raise AlertError(f"{username} ({user.role}) may not acknowledge alerts")
    return allowed


def _mark(session: Session, alert: Alert, username: str, note: str, now: datetime) -> None:
    alert.acknowledged, alert.acknowledged_by = True, username
    detail: dict[str, Any] = {"kind": alert.kind, "note": note}
    session.add(
        AuditEntry(at=now, actor=username, action="alert.ack", target=f"alert:{alert.id}", detail=detail)
    )


def acknowledge(
    session: Session,
    username: str,
    ids: Sequence[int] = (),
    kind: str | None = None,
    note: str = "",
    now: datetime | None = None,
) -> list[Alert]:
    """Acknowledge the alerts `ids`, or every open alert of `kind`, each audited; all or none.

    An alert already acknowledged, one that does not exist, or one for an audience the account does
    not belong to is refused and nothing is acknowledged.
    """
    now = now or utcnow()
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise AlertError(f"note: at most {MAX_NOTE} characters")
    if bool(ids) == (kind is not None):
        raise AlertError("give alert ids or --kind, not both and not neither")
    allowed = _acknowledger(session, username)
    if kind is not None:
        stmt = select(Alert).where(Alert.kind == kind, Alert.acknowledged.is_(False)).order_by(Alert.id)
        alerts = list(session.scalars(stmt.with_for_update()))
        if not alerts:
            raise AlertError(f"no open alert of kind {kind!r}")
    else:
        wanted = list(dict.fromkeys(ids))
        found = {
            a.id: a for a in session.scalars(select(Alert).where(Alert.id.in_(wanted)).with_for_update())
        }
        missing = [str(i) for i in wanted if i not in found]
        if missing:
            raise AlertError(f"no alert {', '.join(missing)}")
        alerts = [found[i] for i in wanted]
        done = [f"{a.id} (by {a.acknowledged_by})" for a in alerts if a.acknowledged]
        if done:
            raise AlertError(f"already acknowledged: {', '.join(done)}")
    forbidden = sorted({a.audience for a in alerts} - allowed)
    if forbidden:
        raise AlertError(
            f"{username} may not acknowledge alerts for {', '.join(forbidden)}"
            f" (ask someone who can: {', '.join(_roles_for(forbidden))})"
        )
    for alert in alerts:
        _mark(session, alert, username, note, now)
    return alerts


def _roles_for(audiences: Sequence[str]) -> list[str]:
    return sorted({str(role) for role, allowed in ACK_AUDIENCES.items() if set(audiences) <= allowed})


def _line(alert: Alert) -> str:
    when = f"{alert.raised_at.astimezone(SHANGHAI):%Y-%m-%d %H:%M}"
    state = f"  [acknowledged by {alert.acknowledged_by}]" if alert.acknowledged else ""
    head = f"{alert.id:>6} {when} {alert.severity:<8} {alert.audience:<10} {alert.kind:<26}"
    return f"{head} {alert.message}{state}"


@click.group()
def alerts() -> None:
    """Alerts for operators and compliance: list them, acknowledge them once dealt with."""


def _services(ctx: Context) -> Any:
    from bot.cli import _require_schema

    services = ctx.services()
    _require_schema(services)
    return services


@alerts.command("list")
@click.option("--all", "include_acknowledged", is_flag=True, help="Acknowledged alerts too.")
@click.option("--kind", default=None, help="Only alerts of this kind, e.g. delivery.unknown.")
@click.option("--severity", type=click.Choice(SEVERITIES), default=None)
@click.option("--audience", type=click.Choice(AUDIENCES), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_obj
def list_cmd(
    ctx: Context,
    include_acknowledged: bool,
    kind: str | None,
    severity: str | None,
    audience: str | None,
    limit: int,
) -> None:
    """Open alerts, newest first (times in Asia/Shanghai)."""
    with _services(ctx).db.read() as session:
        rows = list_alerts(
            session,
            include_acknowledged=include_acknowledged,
            kind=kind,
            severity=severity,
            audience=audience,
            limit=limit,
        )
        for alert in rows:
            click.echo(_line(alert))
    if not rows:
        click.echo("no alerts" if include_acknowledged else "no open alerts")


@alerts.command("show")
@click.argument("alert_id", type=int)
@click.pass_obj
def show_cmd(ctx: Context, alert_id: int) -> None:
    """One alert with its details."""
    with _services(ctx).db.read() as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise click.ClickException(f"no alert {alert_id}")
        click.echo(_line(alert))
        click.echo(json.dumps(alert.detail or {}, ensure_ascii=False, indent=2, sort_keys=True))


@alerts.command("ack")
@click.argument("alert_ids", type=int, nargs=-1)
@click.option("--kind", default=None, help="Every open alert of this kind instead of ids.")
@click.option("--note", default="", help="What was done (kept in the audit trail).")
@click.option("--as", "--actor", "username", required=True, help="Active account acknowledging (audited).")
@click.pass_obj
def ack_cmd(ctx: Context, alert_ids: tuple[int, ...], kind: str | None, note: str, username: str) -> None:
    """Acknowledge alerts once dealt with; they stay on record and leave the open list."""
    try:
        with _services(ctx).db.transaction() as session:
            done = [a.id for a in acknowledge(session, username, alert_ids, kind, note)]
    except AlertError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"acknowledged {len(done)} alert{'s' if len(done) != 1 else ''}: {', '.join(map(str, done))}")
