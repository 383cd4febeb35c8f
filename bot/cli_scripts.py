"""`wecom-bot scripts …`: the maker–checker workflow from the command line (same rules as the console)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from scripts_library.compliance import LintResult


@contextmanager
def _workflow(ctx: click.Context) -> Iterator[tuple[Session, Any]]:
    """A transaction plus the lint policy; workflow errors become clean command errors."""
    from scripts_library.catalogue import WorkflowError, policy_from_settings
    from scripts_library.rendering import TemplateError

    root = ctx.find_root().obj
    services = root.services()
    policy = policy_from_settings(services.settings.compliance)
    try:
        with services.db.transaction() as session:
            yield session, policy
    except (WorkflowError, TemplateError) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_lint(result: LintResult, preview: str | None = None) -> None:
    color = {"pass": "green", "review": "yellow", "block": "red"}[result.verdict]
    click.secho(f"lint: {result.verdict} (lexicon {result.lexicon_version})", fg=color)
    for f in result.findings:
        click.echo(f"  [{f.severity}] {f.rule_id} {f.category} {f.start}-{f.end} {f.matched!r}: {f.message}")
    if preview is not None:
        click.echo("preview:\n" + preview)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or datetime", param_hint=name) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


as_option = click.option("--as", "username", required=True, help="Account acting (checked against its role).")


@click.group()
def scripts() -> None:
    """Manage message scripts: draft, submit, approve, reject, retire, A/B variants, export, import."""


@scripts.command("list")
@click.option("--kind", default=None)
@click.pass_context
def list_scripts(ctx: click.Context, kind: str | None) -> None:
    """List scripts with each version's status."""
    from models.scripts import Script

    with _workflow(ctx) as (session, _):
        stmt = select(Script).order_by(Script.kind, Script.key)
        if kind:
            stmt = stmt.where(Script.kind == kind)
        for script in session.scalars(stmt):
            states = " ".join(f"v{v.number}:{v.status}" for v in script.versions) or "(no versions)"
            click.echo(f"{script.key:<28} {script.kind:<20} {script.audience:<9} {states}")


@scripts.command("show")
@click.argument("key")
@click.option("--version", "number", type=int, default=None, help="Version number (default: newest).")
@click.pass_context
def show(ctx: click.Context, key: str, number: int | None) -> None:
    """Show a version's text, status, lint and decisions."""
    from models.scripts import Approval
    from scripts_library.catalogue import get_script, get_version

    with _workflow(ctx) as (session, _):
        script = get_script(session, key)
        if not script.versions:
            raise click.ClickException(f"{key} has no versions")
        version = get_version(session, key, number or script.versions[-1].number)
        click.echo(f"{key} v{version.number} [{version.status}] kind={script.kind} author={version.author}")
        click.echo(
            f"sha256 {version.content_hash}; lint {version.lint_verdict} (lexicon {version.lexicon_version})"
        )
        for a in session.scalars(select(Approval).where(Approval.version_id == version.id)):
            window = (
                f" valid {a.valid_from or '-'} .. {a.valid_until or '-'}"
                if a.valid_from or a.valid_until
                else ""
            )
            click.echo(
                f"{a.decision} by {a.reviewer} at {a.decided_at:%Y-%m-%d %H:%M}{window} {a.reason}".rstrip()
            )
        click.echo("---\n" + version.body)


@scripts.command("create")
@click.argument("key")
@click.option("--kind", required=True)
@click.option("--description", default="")
@as_option
@click.pass_context
def create(ctx: click.Context, key: str, kind: str, description: str, username: str) -> None:
    """Register a new script key."""
    from scripts_library.catalogue import create_script

    with _workflow(ctx) as (session, _):
        create_script(session, key, kind, username, description)
    click.echo(f"script {key} ({kind}) created")


@scripts.command("draft")
@click.argument("key")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@as_option
@click.pass_context
def draft(ctx: click.Context, key: str, file: Any, username: str) -> None:
    """Save FILE (or - for stdin) as your draft of KEY and show its lint."""
    from scripts_library.catalogue import save_draft

    with _workflow(ctx) as (session, policy):
        saved = save_draft(session, key, file.read(), username, policy)
        click.echo(f"saved {key} v{saved.version.number} (draft)")
        _echo_lint(saved.lint, saved.preview)


@scripts.command("submit")
@click.argument("key")
@click.argument("number", type=int)
@as_option
@click.pass_context
def submit_cmd(ctx: click.Context, key: str, number: int, username: str) -> None:
    """Submit your draft for compliance review."""
    from scripts_library.catalogue import submit

    with _workflow(ctx) as (session, policy):
        version = submit(session, key, number, username, policy)
        click.echo(f"{key} v{number} submitted (lint {version.lint_verdict})")


@scripts.command("approve")
@click.argument("key")
@click.argument("number", type=int)
@as_option
@click.option("--valid-from", default=None, help="ISO date/time the approval starts (UTC if no offset).")
@click.option("--valid-until", default=None, help="ISO date/time the approval ends (exclusive).")
@click.option("--reason", default="")
@click.option("--as-variant", is_flag=True, help="Put it live as an A/B variant next to the version in use.")
@click.option(
    "--weight", type=int, default=50, show_default=True, help="The variant's weight (with --as-variant)."
)
@click.pass_context
def approve_cmd(
    ctx: click.Context,
    key: str,
    number: int,
    username: str,
    valid_from: str | None,
    valid_until: str | None,
    reason: str,
    as_variant: bool,
    weight: int,
) -> None:
    """Approve a submitted version (compliance only; never your own; never over a block)."""
    from scripts_library.catalogue import approve

    start, end = _when(valid_from, "--valid-from"), _when(valid_until, "--valid-until")
    with _workflow(ctx) as (session, policy):
        approval = approve(
            session, key, number, username, policy, start, end, reason, as_variant=as_variant, weight=weight
        )
        kind = f" as an A/B variant with weight {weight}" if as_variant else ""
        click.echo(f"{key} v{number} approved{kind} (approval {approval.id})")


@scripts.command("reject")
@click.argument("key")
@click.argument("number", type=int)
@as_option
@click.option("--reason", required=True)
@click.pass_context
def reject_cmd(ctx: click.Context, key: str, number: int, username: str, reason: str) -> None:
    """Reject a submitted version with a reason."""
    from scripts_library.catalogue import reject

    with _workflow(ctx) as (session, _):
        reject(session, key, number, username, reason)
    click.echo(f"{key} v{number} rejected")


@scripts.command("retire")
@click.argument("key")
@click.argument("number", type=int)
@as_option
@click.pass_context
def retire_cmd(ctx: click.Context, key: str, number: int, username: str) -> None:
    """Withdraw a version from use (a live A/B variant leaves its test; one left ends the test)."""
    from scripts_library.catalogue import retire

    with _workflow(ctx) as (session, _):
        retire(session, key, number, username)
    click.echo(f"{key} v{number} retired")


@scripts.command("variants")
@click.argument("key")
@click.pass_context
def variants_cmd(ctx: click.Context, key: str) -> None:
    """List KEY's A/B tests: each variant's weight, leads assigned and what its messages led to."""
    from scripts_library.variants import report

    with _workflow(ctx) as (session, _):
        tests = report(session, key)
        if not tests:
            click.echo(f"{key} has no A/B tests")
        for test in tests:
            e = test.experiment
            when = (
                f"since {e.started_at:%Y-%m-%d %H:%M}Z"
                if e.ended_at is None
                else (f"{e.started_at:%Y-%m-%d %H:%M}Z .. {e.ended_at:%Y-%m-%d %H:%M}Z: {e.outcome}")
            )
            click.echo(f"test #{e.id} [{e.status}] {when}")
            click.echo("  variant version status      weight share% leads   sent deliv replied regist qualif")
            for arm in test.arms:
                n = arm.numbers
                click.echo(
                    f"  {arm.variant.label:<7} v{arm.version.number:<6} {arm.variant.status:<11} "
                    f"{arm.variant.weight:>6} {arm.share:>6} {arm.assigned:>5} {n.sent:>6} {n.delivered:>5} "
                    f"{n.replied:>7} {n.registered:>6} {n.qualified:>6}"
                )


@scripts.command("weight")
@click.argument("key")
@click.argument("number", type=int)
@click.argument("weight", type=int)
@as_option
@click.pass_context
def weight_cmd(ctx: click.Context, key: str, number: int, weight: int, username: str) -> None:
    """Set a live variant's weight for new leads (0-1000; assigned leads keep their variant)."""
    from scripts_library.variants import set_weight

    with _workflow(ctx) as (session, _):
        set_weight(session, key, number, weight, username)
    click.echo(f"{key} v{number} weight {weight}")


@scripts.command("promote")
@click.argument("key")
@click.argument("number", type=int)
@as_option
@click.pass_context
def promote_cmd(ctx: click.Context, key: str, number: int, username: str) -> None:
    """End KEY's A/B test with variant NUMBER as the version in use; the others are superseded."""
    from scripts_library.variants import promote

    with _workflow(ctx) as (session, _):
        experiment = promote(session, key, number, username)
        click.echo(f"{key} v{number} promoted; A/B test #{experiment.id} ended")


@scripts.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def export_cmd(ctx: click.Context, directory: Path) -> None:
    """Write every script's current text to DIRECTORY as TOML files."""
    from scripts_library.files import export_scripts

    with _workflow(ctx) as (session, _):
        written = export_scripts(session, directory)
    click.echo(f"exported {len(written)} script(s) to {directory}")


@scripts.command("import")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@as_option
@click.pass_context
def import_cmd(ctx: click.Context, directory: Path, username: str) -> None:
    """Import TOML script files as submitted versions awaiting approval (unchanged ones are skipped)."""
    from scripts_library.catalogue import actor
    from scripts_library.files import import_scripts

    with _workflow(ctx) as (session, policy):
        actor(session, username)
        changed = import_scripts(session, directory, username, policy)
    click.echo(f"imported {len(changed)} version(s)" + (": " + ", ".join(changed) if changed else ""))
    sys.stdout.flush()
