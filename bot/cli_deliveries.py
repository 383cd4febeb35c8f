"""`wecom-bot deliveries …`: the outbox, the review queue of held messages, settling unknown outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.users import Role, User

SETTLED_AS = (DeliveryStatus.SENT, DeliveryStatus.FAILED)
SETTLER_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})
MAX_REASON = 500


class SettleError(ValueError):
    """An unknown delivery cannot be settled as asked; the message says why and nothing changed."""


def settle_unknown(
    session: Session, delivery_id: int, outcome: str, reason: str, username: str, now: datetime | None = None
) -> tuple[Delivery, list[int]]:
    """Record what a person found in WeCom for an `unknown` delivery: sent or failed, never resent.

    The outcome goes into the send ledger and the audit trail, and the delivery's open
    `delivery.unknown` alerts are acknowledged; returns the delivery and those alerts' ids.
    """
    from bot.cli_alerts import acknowledge
    from bot.delivery.outbox import message_identity
    from scripts_library import ledger

    now = now or utcnow()
    if outcome not in SETTLED_AS:
        raise SettleError(f"outcome: one of {', '.join(SETTLED_AS)}")
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise SettleError(f"reason: 1-{MAX_REASON} characters saying what was checked in WeCom")
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise SettleError(f"no active account named {username!r}")
    if user.role not in SETTLER_ROLES:
        raise SettleError(f"{username} ({user.role}) may not settle deliveries; admins and operators may")
    row = session.get(Delivery, delivery_id, with_for_update=True)
    if row is None:
        raise SettleError(f"no delivery {delivery_id}")
    if row.status != DeliveryStatus.UNKNOWN:
        raise SettleError(
            f"delivery {delivery_id} is {row.status}, not unknown; only unknown deliveries are settled"
        )
    if row.channel == Channel.MASS_TEMPLATE:
        raise SettleError(
            f"delivery {delivery_id} is one customer of a mass-send task; it settles with its task"
        )
    row.status, row.lease_until, row.locked_by = outcome, None, None
    row.error = f"settled as {outcome} by {username}: {reason}"
    if row.ledger_seq is not None:
        ledger.append_outcome(
            session, row.ledger_seq, outcome, detail=row.error, now=now, message=message_identity(row)
        )
    session.add(
        AuditEntry(
            at=now,
            actor=username,
            action="delivery.settle",
            target=f"delivery:{row.id}",
            detail={"from": DeliveryStatus.UNKNOWN, "to": outcome, "reason": reason},
        )
    )
    open_alerts = session.scalars(
        select(Alert).where(Alert.kind == "delivery.unknown", Alert.acknowledged.is_(False))
    )
    mine = [a.id for a in open_alerts if (a.detail or {}).get("delivery") == row.id]
    if mine:
        acknowledge(
            session, username, mine, note=f"delivery {row.id} settled as {outcome}: {reason}", now=now
        )
    return row, mine


@click.group()
def deliveries() -> None:
    """Outbound messages: counts, held messages, release or discard after review, settle unknown ones."""


def _services(ctx: click.Context) -> Any:
    return ctx.find_root().obj.services()


@deliveries.command("list")
@click.option("--status", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def list_deliveries(ctx: click.Context, status: str | None, limit: int) -> None:
    """Counts per status, then recent deliveries."""
    services = _services(ctx)
    with services.db.read() as session:
        counts = dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
        click.echo("  ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no deliveries")
        stmt = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(Delivery.status == status)
        for d in session.scalars(stmt):
            error = f"  {d.errcode or ''} {d.error}" if d.error else ""
            click.echo(
                f"{d.id:>7} {d.status:<9} {d.channel:<16} {d.recipient:<32}"
                f" {d.script_key} v{d.script_version}{error}"
            )


@deliveries.command("held")
@click.pass_context
def list_held(ctx: click.Context) -> None:
    """Messages the final-text lint held for review, with their text."""
    from bot.delivery.review import held

    services = _services(ctx)
    with services.db.read() as session:
        rows = held(session)
        for d in rows:
            click.echo(
                f"--- delivery {d.id} to {d.recipient}"
                f" ({d.script_key} v{d.script_version}, lint {d.lint_verdict})"
            )
            click.echo(d.text)
        if not rows:
            click.echo("nothing held for review")


@deliveries.command("release")
@click.argument("delivery_id", type=int)
@click.option("--as", "username", required=True)
@click.pass_context
def release_cmd(ctx: click.Context, delivery_id: int, username: str) -> None:
    """Release a held message for sending (compliance only)."""
    from bot.delivery.review import release
    from scripts_library.catalogue import WorkflowError

    services = _services(ctx)
    try:
        with services.db.transaction() as session:
            row = release(session, delivery_id, username)
            status = row.status
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None
    services.coordinator.wake("outbox")
    click.echo(f"delivery {delivery_id}: {status}")


@deliveries.command("discard")
@click.argument("delivery_id", type=int)
@click.option("--as", "username", required=True)
@click.option("--reason", required=True)
@click.pass_context
def discard_cmd(ctx: click.Context, delivery_id: int, username: str, reason: str) -> None:
    """Refuse a held message (compliance only)."""
    from bot.delivery.review import discard
    from scripts_library.catalogue import WorkflowError

    services = _services(ctx)
    try:
        with services.db.transaction() as session:
            discard(session, delivery_id, username, reason)
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"delivery {delivery_id} discarded")


@deliveries.command("settle")
@click.argument("delivery_id", type=int)
@click.option(
    "--sent", "outcome", flag_value=DeliveryStatus.SENT, help="WeCom shows the message was delivered."
)
@click.option("--failed", "outcome", flag_value=DeliveryStatus.FAILED, help="WeCom shows it never arrived.")
@click.option("--reason", required=True, help="What was checked in WeCom (kept in the ledger and audit).")
@click.option("--as", "--actor", "username", required=True, help="Active admin or operator (audited).")
@click.pass_context
def settle_cmd(ctx: click.Context, delivery_id: int, outcome: str | None, reason: str, username: str) -> None:
    """Settle an unknown delivery after checking WeCom; it is never sent again either way."""
    if outcome is None:
        raise click.UsageError("say what WeCom shows: --sent or --failed")
    services = _services(ctx)
    try:
        with services.db.transaction() as session:
            _, alerts = settle_unknown(session, delivery_id, str(outcome), reason, username)
    except SettleError as exc:
        raise click.ClickException(str(exc)) from None
    acked = f"; acknowledged alert {', '.join(map(str, alerts))}" if alerts else ""
    click.echo(f"delivery {delivery_id}: {outcome} (settled by {username}){acked}")
