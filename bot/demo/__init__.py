"""`wecom-bot demo`: a simulated corp and its customers talk to the embedded bot over real HTTP."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import click

from bot.config import Settings
from bot.db import migrate
from bot.demo.arrival import MEMBERS, demo_logins, run_journey, settle
from bot.demo.journey import run_stages
from bot.demo.summary import print_logins, print_report
from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig

__all__ = ["demo"]


@click.command()
@click.option("--data-dir", default="var/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--customers", default=200, show_default=True, type=click.IntRange(10, 5000))
@click.option("--port", default=8080, show_default=True, type=int, help="Bot port (0 = any free port).")
@click.option("--once", is_flag=True, help="Exit after the summary instead of serving on.")
def demo(data_dir: str, customers: int, port: int, once: bool) -> None:
    """Run the bot on the embedded default against the WeCom simulator and show the result."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log over the progress bar
    path = Path(data_dir)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    sim_config = SimulatorConfig(users=list(MEMBERS))
    with Simulator(sim_config) as sim:
        settings = Settings().replace(
            wecom={
                "corp_id": sim_config.corp_id,
                "token": sim_config.token,
                "encoding_aes_key": sim_config.encoding_aes_key,
                "agent_id": sim_config.agent_id,
                "agent_secret": sim_config.secrets["agent"],
                "contact_secret": sim_config.secrets["contact"],
                "kf_secret": sim_config.secrets["kf"],
                "api_base_url": sim.base_url,
            },
            database={"url": f"sqlite:///{path.resolve() / 'demo.db'}"},
        )
        services = Services(settings)
        migrate(services.db.engine)
        with EmbeddedRuntime(services, port=port, workers=2) as runtime:
            bot_url = f"{runtime.url}/wecom/callback"
            click.echo(f"WeCom simulator on {sim.base_url}; bot on {runtime.url} ({settings.database.url})")
            check = sim.verify_url(bot_url)
            click.echo(f"URL verification (GET echostr): {'passed' if check.ok else 'FAILED'}")
            started = time.monotonic()
            logins = demo_logins()
            arrival, stayed = run_journey(services, sim, bot_url, customers, logins)
            journey = run_stages(services, sim, runtime, stayed, lambda: settle(services))
            print_report(arrival, journey, time.monotonic() - started)
            print_logins(f"{runtime.url}/console", logins)
            if once:
                return
            click.echo(f"Still serving {bot_url} and the console. Ctrl-C stops.")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
