"""`wecom-bot ledger`: verify the send ledger's hash chain and export it for regulators."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from bot.cli import Context
    from scripts_library.ledger import ExportFormat

_ANCHOR_RE = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _parse_anchor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    match = _ANCHOR_RE.match(value.strip().lower())
    if match is None:
        raise click.BadParameter("expected SEQ:HASH, e.g. 1042:<64 hex digits> as printed by verify")
    return int(match[1]), match[2]


def _parse_when(_ctx: click.Context, _param: click.Parameter, value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or datetime (e.g. 2026-01-31 or 2026-01-31T08:00+08:00)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@click.group()
def ledger() -> None:
    """Verify and export the append-only send ledger."""


@ledger.command("verify")
@click.option(
    "--anchor",
    callback=_parse_anchor,
    help="SEQ:HASH of a head recorded earlier outside the database; fails if that row is gone or changed.",
)
@click.pass_obj
def ledger_verify(ctx: Context, anchor: tuple[int, str] | None) -> None:
    """Check every entry's hash and link; exit 1 and list the problems if any row was altered or removed."""
    from bot.cli import _require_schema
    from scripts_library.ledger import verify

    services = ctx.services()
    _require_schema(services)
    with services.db.read() as session:
        report = verify(session, anchor=anchor)
    for problem in report.problems:
        click.echo(str(problem))
    click.echo(f"entries: {report.count}")
    click.echo(f"head: {report.head_seq}:{report.head_hash}")
    if not report.ok:
        click.echo(f"ledger verification FAILED: {len(report.problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo("ledger intact")


@ledger.command("export")
@click.option(
    "--since",
    required=True,
    callback=_parse_when,
    help="Start, inclusive: ISO date/datetime, UTC if no offset.",
)
@click.option(
    "--until",
    required=True,
    callback=_parse_when,
    help="End, exclusive: ISO date/datetime, UTC if no offset.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option(
    "--output", type=click.Path(dir_okay=False, writable=True), help="File to write (default stdout)."
)
@click.pass_obj
def ledger_export(ctx: Context, since: datetime, until: datetime, fmt: str, output: str | None) -> None:
    """Export entries recorded in [since, until) with every column and hash."""
    from bot.cli import _require_schema
    from scripts_library.ledger import export

    if since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    services = ctx.services()
    _require_schema(services)
    fmt_: ExportFormat = "csv" if fmt == "csv" else "jsonl"
    with services.db.read() as session:
        if output is None:
            count = export(session, since, until, fmt_, sys.stdout)
        else:
            # A BOM lets spreadsheet software recognise UTF-8 (names and texts are Chinese).
            encoding = "utf-8-sig" if fmt_ == "csv" else "utf-8"
            with open(output, "w", encoding=encoding, newline="") as out:
                count = export(session, since, until, fmt_, out)
    click.echo(f"exported {count} entries", err=True)
