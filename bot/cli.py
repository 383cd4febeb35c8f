"""The `wecom-bot` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Any

import click
from sqlalchemy import func, select

from bot.config import ConfigError, Settings, load_settings

log = logging.getLogger("wecom_bot.cli")


class Context:
    """Lazily loaded settings and services for one command invocation."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings from --config / BOT_CONFIG / the environment; exits with the error on failure."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(f"configuration error: {exc}") from None
        return self._settings

    def services(self) -> Any:
        """Build the process's services (imports the heavy parts only when a command needs them)."""
        from bot.services import Services

        services = Services(self.settings)
        click.get_current_context().call_on_close(services.close)
        return services


pass_ctx = click.make_pass_decorator(Context)


def _setup_logging(context: Context, level: str | None) -> None:
    """Log as `[logging]` says; with a broken configuration, as text (the command then reports it)."""
    from bot.logs import configure_logging, secrets_of

    try:
        settings = context.settings
    except click.ClickException:
        settings = Settings()
    try:
        configure_logging(settings.logging.format, level or settings.logging.level, secrets_of(settings))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-level") from None


def _metrics_options(fn: Any) -> Any:
    """--metrics-port / --metrics-host: serve this process's own /metrics."""
    fn = click.option(
        "--metrics-host", default=None, help="Address of the --metrics-port listener (default web.host)."
    )(fn)
    return click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Serve this process's Prometheus metrics on this port (not with PROMETHEUS_MULTIPROC_DIR).",
    )(fn)


def _serve_metrics(services: Any, host: str | None, port: int | None) -> None:
    """Start the --metrics-port listener, if one was asked for, until the command ends."""
    if port is None:
        return
    from bot import metrics

    settings = services.settings
    if not settings.metrics.enabled:
        raise click.ClickException("--metrics-port: metrics are disabled ([metrics] enabled = false)")
    try:
        server = metrics.serve_metrics(
            host or settings.web.host, port, metrics.scrape_registry(services.db), settings.metrics.token
        )
    except ValueError as exc:
        raise click.ClickException(f"--metrics-port: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"--metrics-port {port}: {exc.strerror or exc}") from None
    click.get_current_context().call_on_close(server.shutdown)


@click.group()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="TOML settings file (or $BOT_CONFIG)."
)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("BOT_LOG_LEVEL"),
    help="debug, info, warning, error or critical (default $BOT_LOG_LEVEL, else [logging] level).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str | None) -> None:
    """WeCom private-domain conversion bot."""
    ctx.obj = Context(config_path)
    _setup_logging(ctx.obj, log_level)


def _require_schema(services: Any) -> None:
    from bot.db import schema_status

    current, head = schema_status(services.db.engine)
    if current != head:
        raise click.ClickException(
            f"database schema is at {current}, expected {head}: run `wecom-bot init` first"
        )


@main.command()
@click.option(
    "--no-input", is_flag=True, help="Never prompt; take the admin from options or the environment."
)
@click.option(
    "--admin-username", envvar="BOT_ADMIN_USERNAME", help="First admin's name ($BOT_ADMIN_USERNAME)."
)
@click.option(
    "--admin-password", envvar="BOT_ADMIN_PASSWORD", help="First admin's password ($BOT_ADMIN_PASSWORD)."
)
@pass_ctx
def init(ctx: Context, no_input: bool, admin_username: str | None, admin_password: str | None) -> None:
    """Migrate the database and create the first admin (safe to run again)."""
    from bot.accounts import AccountError, create_user, has_admin
    from bot.db import migrate

    services = ctx.services()
    migrate(services.db.engine)
    click.echo(f"database migrated: {services.db.engine.url.render_as_string(hide_password=True)}")
    from scripts_library.catalogue import policy_from_settings
    from scripts_library.files import DEFAULTS_DIR, SYSTEM_AUTHOR, import_scripts

    with services.db.transaction() as session:
        policy = policy_from_settings(services.settings.compliance)
        seeded = import_scripts(session, DEFAULTS_DIR, SYSTEM_AUTHOR, policy, only_missing=True)
    if seeded:
        click.echo(f"default scripts awaiting compliance approval: {len(seeded)}")
    with services.db.transaction() as session:
        if has_admin(session):
            click.echo("admin account present; nothing else to do")
            return
        if not admin_username or not admin_password:
            if no_input:
                raise click.ClickException(
                    "no admin exists: pass --admin-username/--admin-password"
                    " or set BOT_ADMIN_USERNAME/BOT_ADMIN_PASSWORD"
                )
            admin_username = admin_username or click.prompt("admin username", default="admin")
            admin_password = admin_password or click.prompt(
                "admin password", hide_input=True, confirmation_prompt=True
            )
        try:
            create_user(session, admin_username, "admin", admin_password, actor="init")
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"admin {admin_username!r} created")


def _stop_on_signal(stop: threading.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT; install it before starting threads that may be signalled."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _wait_for_signal(stop: threading.Event) -> None:
    """Block until `stop` is set (by the handler `_stop_on_signal` installed)."""
    while not stop.wait(0.5):
        pass


@main.command()
@click.option("--host", default=None, help="Listen address (default web.host).")
@click.option("--port", type=int, default=None, help="Listen port (default web.port).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker threads.")
@_metrics_options
@pass_ctx
def run(
    ctx: Context,
    host: str | None,
    port: int | None,
    workers: int,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Run web and workers in one process (the embedded default)."""
    from bot.runtime import EmbeddedRuntime

    services = ctx.services()
    _require_schema(services)
    settings = services.settings
    _serve_metrics(services, metrics_host, metrics_port)
    runtime = EmbeddedRuntime(services, host or settings.web.host, port or settings.web.port, workers=workers)
    stop = threading.Event()
    _stop_on_signal(stop)  # before anything starts: a signal that comes early still stops cleanly
    runtime.start()
    click.echo(
        f"wecom-bot serving on {runtime.url} (callback URL {runtime.url}/wecom/callback); Ctrl-C stops"
    )
    try:
        _wait_for_signal(stop)
    finally:
        runtime.stop()


@main.command()
@click.option("--bind", default=None, help="host:port (default web.host:web.port).")
@click.option(
    "--workers", type=int, default=lambda: 2 * (os.cpu_count() or 1) + 1, help="gunicorn processes."
)
@click.option("--threads", type=int, default=4, show_default=True)
@pass_ctx
def serve(ctx: Context, bind: str | None, workers: int, threads: int) -> None:
    """Serve the web app with gunicorn (production)."""
    from gunicorn.app.base import BaseApplication

    settings = ctx.settings
    bind = bind or f"{settings.web.host}:{settings.web.port}"

    from bot.metrics import gunicorn_child_exit, multiprocess_dir

    class _App(BaseApplication):
        def load_config(self) -> None:
            for key, value in {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "accesslog": None,
            }.items():
                self.cfg.set(key, value)
            if multiprocess_dir():  # a web worker that exits leaves its metric files to the others
                self.cfg.set("child_exit", gunicorn_child_exit)

        def load(self) -> Any:
            from bot.app import create_app

            return create_app(settings)

    _App().run()


@main.command()
@click.option(
    "--threads", type=int, default=1, show_default=True, help="Event worker threads in this process."
)
@click.option(
    "--dispatchers", type=int, default=1, show_default=True, help="Delivery sender threads (0 = none)."
)
@_metrics_options
@pass_ctx
def worker(
    ctx: Context, threads: int, dispatchers: int, metrics_port: int | None, metrics_host: str | None
) -> None:
    """Handle stored events and send queued deliveries until stopped."""
    from bot.campaigns.masssend import MASS_CHANNEL, MassTaskDispatcher
    from bot.delivery.dispatcher import DeliveryDispatcher
    from bot.kf.syncer import KfSyncer
    from bot.leads.tagsync import TagSyncer
    from bot.worker import Worker
    from handlers import build_dispatcher

    services = ctx.services()
    _require_schema(services)
    _serve_metrics(services, metrics_host, metrics_port)
    stop = threading.Event()
    sender = DeliveryDispatcher(services.settings, services.db, services.coordinator, services.client)
    loops = [
        Worker(services.settings, services.db, services.coordinator, build_dispatcher(), sender=sender)
        for _ in range(threads)
    ]
    runners = [threading.Thread(target=w.run_forever, args=(stop,), daemon=True) for w in loops]
    if dispatchers:
        runners += [
            threading.Thread(target=sender.run_forever, args=(stop,), daemon=True) for _ in range(dispatchers)
        ]
        syncer = KfSyncer(services.settings, services.db, services.coordinator, services.client)
        runners.append(threading.Thread(target=syncer.run_forever, args=(stop,), name="kf-sync", daemon=True))
        tagger = TagSyncer(services.db, services.coordinator, services.client)
        runners.append(
            threading.Thread(target=tagger.run_forever, args=(stop,), name="tag-sync", daemon=True)
        )
        mass = MassTaskDispatcher(services.settings, services.db, services.coordinator, services.client)
        runners.append(threading.Thread(target=mass.run_forever, args=(stop,), name="mass-send", daemon=True))
    _stop_on_signal(stop)  # before the threads start: a signal that comes early still stops cleanly
    for thread in runners:
        thread.start()
    try:
        _wait_for_signal(stop)
    finally:
        services.coordinator.wake("inbox")
        services.coordinator.wake("outbox")
        services.coordinator.wake("kf")
        services.coordinator.wake("tags")
        services.coordinator.wake(MASS_CHANNEL)
        for thread in runners:
            thread.join(timeout=30)
        sender.close()  # record the sends already handed over


@main.command()
@_metrics_options
@pass_ctx
def scheduler(ctx: Context, metrics_port: int | None, metrics_host: str | None) -> None:
    """Turn campaigns into runs on schedule; with several replicas one leads and the others stand by."""
    from bot.scheduler import SchedulerService, default_planner

    services = ctx.services()
    _require_schema(services)
    _serve_metrics(services, metrics_host, metrics_port)
    if not services.settings.redis.url:
        log.warning("no [redis] url: this scheduler cannot see other replicas; run only one per database")
    service = SchedulerService(
        services.settings,
        services.db,
        services.coordinator,
        default_planner(services.db, services.settings, services.coordinator),
    )
    stop = threading.Event()
    _stop_on_signal(stop)  # before the thread can announce leadership to anyone about to signal
    thread = threading.Thread(target=service.run_forever, args=(stop,), name="scheduler", daemon=True)
    thread.start()
    try:
        _wait_for_signal(stop)
    finally:
        thread.join(timeout=30)


@main.command()
@pass_ctx
def doctor(ctx: Context) -> None:
    """Check configuration, database, Redis and WeCom credentials; one verdict per item."""
    from bot.doctor import run_checks

    results = run_checks(ctx.config_path)
    width = max(len(r.name) for r in results)
    for r in results:
        click.echo(f"{r.name.ljust(width)}  {r.verdict.upper():4}  {r.detail}")
    if any(r.verdict == "fail" for r in results):
        sys.exit(1)


@main.group()
def events() -> None:
    """Inspect and replay stored callback events."""


@events.command("list")
@click.option("--status", type=click.Choice(["pending", "processing", "done", "ignored", "dead"]))
@click.option("--limit", type=int, default=50, show_default=True)
@pass_ctx
def events_list(ctx: Context, status: str | None, limit: int) -> None:
    """List recent events, newest first, with counts per status."""
    from models.inbox import InboundEvent

    services = ctx.services()
    with services.db.transaction() as session:
        counts = dict(
            session.execute(select(InboundEvent.status, func.count()).group_by(InboundEvent.status)).all()
        )
        click.echo("  ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no events")
        stmt = select(InboundEvent).order_by(InboundEvent.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(InboundEvent.status == status)
        for row in session.scalars(stmt):
            error = f"  error={row.last_error.splitlines()[0][:80]}" if row.last_error else ""
            click.echo(
                f"{row.id:>8}  {row.received_at:%Y-%m-%d %H:%M:%S}  {row.status:<10} {row.kind:<24}"
                f" attempts={row.attempts}{error}"
            )


@events.command("show")
@click.argument("event_id", type=int)
@pass_ctx
def events_show(ctx: Context, event_id: int) -> None:
    """Show one event with its payload and last error."""
    from models.inbox import InboundEvent

    services = ctx.services()
    with services.db.transaction() as session:
        row = session.get(InboundEvent, event_id)
        if row is None:
            raise click.ClickException(f"no event {event_id}")
        data = {
            "id": row.id,
            "kind": row.kind,
            "status": row.status,
            "attempts": row.attempts,
            "received_at": row.received_at.isoformat(),
            "handled_by": row.handled_by,
            "last_error": row.last_error,
            "payload": row.payload,
        }
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@events.command("replay")
@click.argument("event_ids", type=int, nargs=-1)
@click.option("--all-dead", is_flag=True, help="Replay every dead-lettered event.")
@click.option(
    "--as", "actor", default=lambda: os.environ.get("USER", "operator"), help="Who replays (audited)."
)
@pass_ctx
def events_replay(ctx: Context, event_ids: tuple[int, ...], all_dead: bool, actor: str) -> None:
    """Queue dead-lettered or ignored events again."""
    from bot.worker import replay
    from models.inbox import EventStatus, InboundEvent

    services = ctx.services()
    ids = list(event_ids)
    if all_dead:
        with services.db.transaction() as session:
            ids += list(
                session.scalars(select(InboundEvent.id).where(InboundEvent.status == EventStatus.DEAD))
            )
    if not ids:
        raise click.ClickException("name event ids or pass --all-dead")
    failed = [i for i in ids if not replay(services.db, i, actor)]
    click.echo(f"replayed {len(ids) - len(failed)} event(s)")
    if failed:
        raise click.ClickException(f"not replayable (missing, or not dead/ignored): {failed}")
    services.coordinator.wake("inbox")


@main.group()
def users() -> None:
    """Manage console accounts."""


@users.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(["admin", "operator", "compliance", "manager"]))
@click.option(
    "--password", envvar="BOT_USER_PASSWORD", help="Password ($BOT_USER_PASSWORD); prompted if absent."
)
@pass_ctx
def users_add(ctx: Context, username: str, role: str, password: str | None) -> None:
    """Create an account."""
    from bot.accounts import AccountError, create_user

    services = ctx.services()
    _require_schema(services)
    password = password or click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        with services.db.transaction() as session:
            create_user(session, username, role, password)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {username!r} ({role}) created")


def _register_commands() -> None:
    from bot.cli_alerts import alerts
    from bot.cli_api import api_tokens
    from bot.cli_calendar import calendar
    from bot.cli_campaigns import campaigns, courses
    from bot.cli_deliveries import deliveries
    from bot.cli_leads import hookcodes, leads, members
    from bot.cli_ledger import ledger
    from bot.cli_lint import lint
    from bot.cli_managers import managers
    from bot.cli_runs import runs, sending
    from bot.cli_scripts import scripts
    from bot.demo import demo
    from bot.wecom.simulator.cli import simulator

    main.add_command(alerts)
    main.add_command(api_tokens)
    main.add_command(calendar)
    main.add_command(campaigns)
    main.add_command(courses)
    main.add_command(deliveries)
    main.add_command(demo)
    main.add_command(hookcodes)
    main.add_command(leads)
    main.add_command(ledger)
    main.add_command(members)
    main.add_command(lint)
    main.add_command(managers)
    main.add_command(runs)
    main.add_command(scripts)
    main.add_command(sending)
    main.add_command(simulator)


_register_commands()


if __name__ == "__main__":
    main()
