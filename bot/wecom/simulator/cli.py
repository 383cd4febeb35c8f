"""`wecom-bot simulator`: run the WeCom simulator as its own process for demos and manual testing."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click

from bot.wecom.simulator.config import SimulatorConfig
from bot.wecom.simulator.server import Simulator


def describe_config(base_url: str, config: SimulatorConfig) -> str:
    """The settings a bot needs to talk to this simulator, as a `[wecom]` TOML section."""
    lines = [
        f"WeCom simulator listening on {base_url}",
        "",
        "[wecom]",
        f'api_base_url = "{base_url}"',
        f'corp_id = "{config.corp_id}"',
        f"agent_id = {config.agent_id}",
        f'token = "{config.token}"',
        f'encoding_aes_key = "{config.encoding_aes_key}"',
    ]
    lines += [f'{app}_secret = "{secret}"' for app, secret in config.secrets.items()]
    lines += ["", f"members: {', '.join(config.users)}", f"token TTL: {config.token_ttl_s} s"]
    lines.append(
        f"simulated clients: POST {base_url}/_sim/<action> (connect_bot, customer_scans, kf_customer_says…)"
    )
    return "\n".join(lines)


def run_simulator(host: str, port: int, config: SimulatorConfig, bot_url: str | None = None) -> None:
    """Serve the simulator until SIGINT or SIGTERM, after printing the settings the bot should use."""
    stop = threading.Event()
    sim = Simulator(config, host=host, port=port)
    base_url = sim.start()
    if bot_url:
        sim.connect_bot(bot_url)
    click.echo(describe_config(base_url, config))
    if bot_url:
        click.echo(f"callbacks from simulated customers go to {bot_url}")
    if threading.current_thread() is threading.main_thread():

        def handler(_signum: int, _frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


def _config_from_bot_settings(ctx: click.Context) -> SimulatorConfig:
    # When run as `wecom-bot [--config FILE] simulator`, mirror the bot's credentials so they match.
    defaults = SimulatorConfig()
    settings = getattr(ctx.find_root().obj, "settings", None)
    wecom = getattr(settings, "wecom", None)
    if wecom is None:
        return defaults
    app_secrets = {
        app: secret
        for app, secret in (
            ("agent", wecom.agent_secret),
            ("contact", wecom.contact_secret),
            ("kf", wecom.kf_secret),
        )
        if secret
    }
    return SimulatorConfig(
        corp_id=wecom.corp_id or defaults.corp_id,
        agent_id=wecom.agent_id or defaults.agent_id,
        secrets=app_secrets or defaults.secrets,
        token=wecom.token or defaults.token,
        encoding_aes_key=wecom.encoding_aes_key or defaults.encoding_aes_key,
    )


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--port", type=int, default=9999, show_default=True, help="Listen port (0 = any free port).")
@click.option(
    "--users", default="zhangsan,lisi,wangwu", show_default=True, help="Comma-separated member userids."
)
@click.option(
    "--token-ttl", type=int, default=7200, show_default=True, help="Access token lifetime in seconds."
)
@click.option(
    "--oversize-text",
    type=click.Choice(["truncate", "reject"]),
    default="truncate",
    show_default=True,
    help="What message/send does with text over 2048 bytes.",
)
@click.option("--bot-url", default=None, help="Deliver simulated customers' callbacks to this bot URL.")
@click.pass_context
def simulator(
    ctx: click.Context,
    host: str,
    port: int,
    users: str,
    token_ttl: int,
    oversize_text: str,
    bot_url: str | None,
) -> None:
    """Run a local WeCom API simulator (messages, customer contact, kf, rate limits, faults, callbacks)."""
    base = _config_from_bot_settings(ctx)
    try:
        config = SimulatorConfig(
            corp_id=base.corp_id,
            agent_id=base.agent_id,
            secrets=base.secrets,
            token=base.token,
            encoding_aes_key=base.encoding_aes_key,
            users=[u.strip() for u in users.split(",") if u.strip()],
            token_ttl_s=token_ttl,
            oversize_text="reject" if oversize_text == "reject" else "truncate",
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    run_simulator(host, port, config, bot_url)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point for `python -m bot.wecom.simulator`."""
    simulator.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="wecom-simulator")
