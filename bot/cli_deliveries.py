"""`wecom-bot deliveries …`: the outbox, and the review queue of held messages."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import func, select

from models.deliveries import Delivery


@click.group()
def deliveries() -> None:
    """Outbound messages: counts, held messages, release or discard after review."""


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
