"""`wecom-bot runs …` and `wecom-bot sending …`: campaign runs, their plans, dry runs, the kill switch."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select

from bot.trading_calendar import SHANGHAI
from models.base import utcnow
from models.campaigns import Campaign, CampaignRun

if TYPE_CHECKING:
    from bot.campaigns.controls import SwitchState
    from bot.campaigns.planner import PlannedRecipient, RunPlan
    from bot.cli import Context

RUN_STATUSES = ("pending", "planned", "skipped", "failed")


class _InstantType(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a time like 2026-11-25T08:30 (Shanghai unless it has an offset)")
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=SHANGHAI)


INSTANT = _InstantType()


def _services(ctx: Context) -> Any:
    from bot.cli import _require_schema

    services = ctx.services()
    _require_schema(services)
    return services


def _shanghai(at: datetime | None) -> str:
    return f"{at.astimezone(SHANGHAI):%Y-%m-%d %H:%M}" if at is not None else "-"


def _summary(counts: dict[str, Any]) -> str:
    if not counts:
        return ""
    parts = [f"{name}={counts.get(name, 0)}" for name in ("kf", "mass", "none")]
    parts += [f"{reason}={n}" for reason, n in sorted(counts.get("skipped", {}).items())]
    return " ".join(parts)


def _echo_plan(plan: RunPlan, err: bool = False) -> None:
    """The plan's head: status, reason, message, counts and tasks (to stderr when stdout holds data)."""
    from bot.campaigns.planner import SKIP_DESCRIPTIONS

    def out(line: str) -> None:
        click.echo(line, err=err)

    run = f"run {plan.run_id}" if plan.run_id is not None else "hypothetical run"
    dry = " (dry run: nothing written)" if plan.dry_run else ""
    out(f"{run} of {plan.campaign_key} at {_shanghai(plan.occurrence)} Shanghai: {plan.status}{dry}")
    if plan.reason:
        out(f"reason: {plan.reason}")
    if plan.message is not None:
        m = plan.message
        out(f"script: {m.script_key} v{m.script_version} (approval {m.approval_id}, lint {m.lint_verdict})")
        out("text:")
        for line in m.text.splitlines():
            out(f"  {line}")
    if plan.counts:
        c = plan.counts
        out(
            f"recipients: {c.get('recipients', 0)}  kf: {c.get('kf', 0)}  mass: {c.get('mass', 0)}"
            f"  skipped: {c.get('none', 0)}  mass tasks: {c.get('mass_tasks', 0)}"
        )
        for reason, n in sorted(c.get("skipped", {}).items()):
            out(f"  skipped {reason}: {n} ({SKIP_DESCRIPTIONS.get(reason, reason)})")
    for task in plan.tasks:
        out(f"  task for {task.sender}: {task.recipients} customers")


class _CsvOut:
    """Writes a dry run's recipients to stdout as CSV batch by batch, the header first."""

    def __init__(self) -> None:
        from bot.campaigns.planner import CSV_FIELDS

        self.fields = CSV_FIELDS
        self.started = False

    def __call__(self, batch: list[PlannedRecipient]) -> None:
        out = io.StringIO()
        writer = csv.writer(out)
        if not self.started:
            writer.writerow(self.fields)
            self.started = True
        writer.writerows(
            [r.lead_id, r.external_user_id, r.channel, r.skip_reason or "", r.sender, r.open_kfid]
            for r in batch
        )
        click.echo(out.getvalue(), nl=False)


@click.group()
def runs() -> None:
    """Campaign runs: what each occurrence sent, or why it sent nothing; plans and dry runs."""


@runs.command("list")
@click.option("--campaign", "campaign_key", default=None, help="Only this campaign's runs.")
@click.option("--status", type=click.Choice(RUN_STATUSES), default=None)
@click.option("--limit", type=int, default=30, show_default=True)
@click.pass_obj
def list_runs(ctx: Context, campaign_key: str | None, status: str | None, limit: int) -> None:
    """Most recent runs first: occurrence (Shanghai), status, counts or reason."""
    with _services(ctx).db.read() as session:
        stmt = (
            select(CampaignRun, Campaign.key)
            .join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .order_by(CampaignRun.occurrence.desc(), CampaignRun.id.desc())
            .limit(limit)
        )
        if campaign_key:
            stmt = stmt.where(Campaign.key == campaign_key)
        if status:
            stmt = stmt.where(CampaignRun.status == status)
        rows = session.execute(stmt).all()
        for run, key in rows:
            detail = _summary(run.counts or {}) if run.status == "planned" else (run.reason or "")
            click.echo(f"{run.id:>6}  {key:<24} {_shanghai(run.occurrence)}  {run.status:<8} {detail}")
    if not rows:
        click.echo("no runs")


@runs.command("show")
@click.argument("run_id", type=int)
@click.pass_obj
def show_run(ctx: Context, run_id: int) -> None:
    """One run: status, reason, counts per channel and skip reason, its mass-send tasks."""
    from bot.campaigns.planner import PlanError, load_plan

    with _services(ctx).db.read() as session:
        try:
            plan = load_plan(session, run_id)
        except PlanError as exc:
            raise click.ClickException(str(exc)) from None
        run = session.get(CampaignRun, run_id)
        assert run is not None
        created, planned = run.created_by, run.planned_at
    _echo_plan(plan)
    click.echo(f"created by: {created}  planned at: {_shanghai(planned)}")


@runs.command("plan")
@click.argument("run_id", type=int)
@click.pass_obj
def plan_command(ctx: Context, run_id: int) -> None:
    """Plan a pending run now (a run already planned or skipped is shown as it is)."""
    from bot.campaigns.planner import PlanError, plan_run

    services = _services(ctx)
    try:
        plan = plan_run(services.db, services.settings, run_id, coordinator=services.coordinator)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    _echo_plan(plan)


@runs.command("dry-run")
@click.argument("campaign_key")
@click.option(
    "--at", "at", type=INSTANT, default=None, help="Occurrence, ISO 8601 (Shanghai by default; now)."
)
@click.option("--format", "fmt", type=click.Choice(("csv", "json")), default="csv", show_default=True)
@click.pass_obj
def dry_run(ctx: Context, campaign_key: str, at: datetime | None, fmt: str) -> None:
    """Plan a hypothetical occurrence without writing: recipients, channels, skip reasons and the text.

    CSV rows go to stdout batch by batch as they are decided (nothing is held in memory) and the
    summary to stderr; JSON carries everything on stdout.
    """
    from bot.campaigns.planner import PlanError, dry_run_campaign

    services = _services(ctx)
    occurrence = at or utcnow()
    try:
        if fmt == "json":
            click.echo(dry_run_campaign(services.db, services.settings, campaign_key, occurrence).to_json())
            return
        sink = _CsvOut()
        plan = dry_run_campaign(services.db, services.settings, campaign_key, occurrence, sink=sink)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    if not sink.started:
        sink([])  # nobody in the audience: the header alone
    _echo_plan(plan, err=True)


@click.group()
def sending() -> None:
    """The kill switch: stop every send at once, and resume."""


actor_option = click.option(
    "--as", "--actor", "username", required=True, help="Active account making the change (audited)."
)


def _switch_line(state: SwitchState) -> str:
    if state.changed_at is None:
        return "sending: allowed (the kill switch has never been used)"
    verb = "STOPPED" if state.on else "allowed"
    action = "stopped" if state.on else "resumed"
    reason = f": {state.reason}" if state.reason else ""
    return (
        f"sending: {verb} ({action} by {state.changed_by} at {_shanghai(state.changed_at)} Shanghai{reason})"
    )


def _change(ctx: Context, username: str, stop: bool, reason: str) -> None:
    from bot.campaigns.controls import ControlError, resume_sending, stop_sending
    from scripts_library.catalogue import WorkflowError, actor

    try:
        with _services(ctx).db.transaction() as session:
            actor(session, username)
            state = (
                stop_sending(session, username, reason) if stop else resume_sending(session, username, reason)
            )
    except (ControlError, WorkflowError) as exc:
        raise click.ClickException(str(exc)) from None
    if not state.changed:
        click.echo("no change: " + _switch_line(state))
        return
    click.echo(_switch_line(state))


@sending.command("stop")
@click.option("--reason", required=True, help="Why sending stops (shown to everyone who checks).")
@actor_option
@click.pass_obj
def stop(ctx: Context, reason: str, username: str) -> None:
    """Turn the kill switch on: no run is planned and nothing is sent until `sending resume`."""
    _change(ctx, username, True, reason)


@sending.command("resume")
@click.option("--reason", default="", help="Optional note for the audit trail.")
@actor_option
@click.pass_obj
def resume(ctx: Context, reason: str, username: str) -> None:
    """Turn the kill switch off; queued messages go out again within a second."""
    _change(ctx, username, False, reason)


@sending.command("status")
@click.pass_obj
def status(ctx: Context) -> None:
    """Whether sending is stopped, by whom, when and why."""
    from bot.campaigns.controls import switch_state

    with _services(ctx).db.read() as session:
        state = switch_state(session)
    click.echo(_switch_line(state))
