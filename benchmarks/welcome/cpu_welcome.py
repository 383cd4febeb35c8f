"""CPU per welcome, in-process: the worker's batch of stored adds, and the simulator serving it.

The end-to-end welcome benchmark shares two cores between every process, so its latencies move
with the machine's speed. This measures what each welcome costs instead: a simulator process lets
customers scan the QR (its add callbacks are kept, not POSTed), the bot stores them as the webhook
does, then one worker with the production sender drains them on PostgreSQL + Redis while CPU time
is read for the worker (`time.process_time`, all its threads), the simulator, PostgreSQL and Redis.
Each round uses new customers; a fixed single-core probe before each round shows the machine's
speed that minute (lower is faster). Separately, the simulator's CPU per callback it POSTs to a
bot web app running in this process is measured (callback encryption, signature, HTTP).

Run: .venv/bin/python benchmarks/welcome/cpu_welcome.py [--adds 400 --rounds 5 --profile out.prof]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import multiprocessing as mp
import os
import pstats
import secrets
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import bench_welcome as bw  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.wecom.simulator import Simulator, SimulatorConfig  # noqa: E402


def _sim_main(conn: Connection, aes_key: str) -> None:
    """Child process: the stock simulator, answering `scan`, `connect`, `welcomes` and `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    bw._die_with_parent()
    config = SimulatorConfig(
        corp_id=bw.CORP_ID, token=bw.TOKEN, encoding_aes_key=aes_key, agent_id=bw.AGENT_ID,
        users=[bw.MEMBER, "lisi"],
    )  # fmt: skip
    sim = Simulator(config)
    conn.send(sim.start())
    try:
        while True:
            command = conn.recv()
            if command[0] == "scan":  # customers scan; return the add callbacks they caused
                before = len(sim.emitted_callbacks)
                for ext in command[2]:
                    sim.customer_scans(command[1], ext, name="客户")
                conn.send([item for item in sim.emitted_callbacks[before:]])
            elif command[0] == "connect":
                sim.connect_bot(command[1])
                conn.send(True)
            elif command[0] == "welcomes":
                conn.send(len(sim.welcomes))
            else:
                break
    finally:
        sim.stop()


@dataclass
class _Sim:
    proc: mp.process.BaseProcess
    conn: Connection
    base_url: str

    def ask(self, *command: Any) -> Any:
        self.conn.send(command)
        if not self.conn.poll(120):
            raise RuntimeError(f"simulator did not answer {command[0]!r}")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.conn.send(("stop",))
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


def _start_sim(aes_key: str) -> _Sim:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sim_main, args=(child, aes_key), name="cpu-sim", daemon=True)
    proc.start()
    if not parent.poll(30):
        proc.terminate()
        raise RuntimeError("simulator did not start")
    return _Sim(proc, parent, str(parent.recv()))


def _xml_of(item: Any) -> str:
    return str(getattr(item, "xml", item))


@contextlib.contextmanager
def _bot(args: argparse.Namespace) -> Iterator[tuple[Any, _Sim, str]]:
    """A seeded PostgreSQL schema, a Redis namespace, the simulator, and the bot's Services."""
    from bot.leads.hookcodes import create_code, provision_contact_way
    from bot.services import Services
    from models.leads import HookCode, Member

    aes_key = secrets.token_urlsafe(40).replace("-", "A").replace("_", "B")[:43]
    namespace = f"cpu-welcome-{secrets.token_hex(4)}"
    sim = _start_sim(aes_key)
    services = None
    try:
        with bw.postgres_store(args.database_url) as url:
            bw.seed(url)
            env = bw.bot_env(url, args.redis_url, namespace, sim.base_url, aes_key)
            env["BOT_WORKER__BATCH_SIZE"] = str(args.batch)
            settings = load_settings(None, environ=env)
            services = Services(settings)
            with services.db.transaction() as session:
                session.add(Member(userid=bw.MEMBER, name="张经理"))
                create_code(session, bw.HOOK_CODE, "xiaohongshu", [bw.MEMBER], "olivia")
            provision_contact_way(services.db, services.client, bw.HOOK_CODE)
            with services.db.read() as session:
                code = session.scalars(sa.select(HookCode)).one()
                config_id = str(code.contact_way_config_id)
            yield services, sim, config_id
            services.close()
            services = None
    finally:
        if services is not None:
            services.close()
        sim.stop()
        with contextlib.suppress(Exception):
            bw.drop_namespace(args.redis_url, namespace)


def _store(services: Any, xmls: Sequence[str]) -> None:
    """Store callbacks as the webhook does (signature checked, decrypted, persisted)."""
    from bot.wecom.crypto import CallbackCrypto, random_nonce
    from bot.wecom.simulator.callbacks import envelope

    wecom = services.settings.wecom
    crypto = CallbackCrypto(wecom.token, wecom.encoding_aes_key, wecom.corp_id)
    for xml in xmls:
        encrypt, timestamp, nonce = crypto.encrypt(xml), str(int(time.time())), random_nonce()
        body = envelope(wecom.corp_id, encrypt, None).encode()
        services.ingestor.ingest(crypto.sign(timestamp, nonce, encrypt), timestamp, nonce, body)


def _others(sim_pid: int) -> dict[str, float]:
    return bw.cpu_seconds({}, {"simulator": sim_pid})


@dataclass(frozen=True)
class Round:
    """CPU ms per welcome in one round, and the probe's seconds just before it."""

    probe_s: float
    worker_ms: float
    simulator_ms: float
    postgresql_ms: float
    redis_ms: float
    wall_s: float


class _ThreadProfiles:
    """cProfile on CPU time (`time.thread_time`), one profiler per thread, merged at the end.

    cProfile sees only the thread that enabled it; the sender's pool and finisher threads do the
    API calls and record the outcomes, so their entry points are wrapped too.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _mine(self) -> cProfile.Profile:
        profiler = getattr(self._local, "profiler", None)
        if profiler is None:
            profiler = self._local.profiler = cProfile.Profile(time.thread_time)
            with self._lock:
                self._all.append(profiler)
        return profiler

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` under this thread's profiler."""
        profiler = self._mine()
        profiler.enable()
        try:
            return fn(*args)
        finally:
            profiler.disable()

    def dump(self, path: str) -> pstats.Stats:
        """Merge every thread's profile into `path` and return the stats."""
        stats = pstats.Stats(self._all[0])
        for profiler in self._all[1:]:
            stats.add(profiler)
        stats.dump_stats(path)
        return stats


def _sender(services: Any, profiles: _ThreadProfiles | None) -> Any:
    from bot.delivery.dispatcher import DeliveryDispatcher

    s = services
    if profiles is None:
        return DeliveryDispatcher(s.settings, s.db, s.coordinator, s.client)

    class Profiled(DeliveryDispatcher):
        def _attempt(self, *args: Any) -> Any:
            return profiles.call(super()._attempt, *args)

        def _finish(self, results: Any) -> Any:
            return profiles.call(super()._finish, results)

    return Profiled(s.settings, s.db, s.coordinator, s.client)


def _round(services: Any, sim: _Sim, config_id: str, n: int, profiles: _ThreadProfiles | None) -> Round:
    from bot.worker import Worker
    from handlers import build_dispatcher

    tag = secrets.token_hex(3)
    ids = [f"wmC{tag}{i:05d}" for i in range(n)]
    before_welcomes = sim.ask("welcomes")
    _store(services, [_xml_of(item) for item in sim.ask("scan", config_id, ids)])
    s = services
    sender = _sender(services, profiles)
    worker = Worker(s.settings, s.db, s.coordinator, build_dispatcher(), sender=sender)
    probe = bw.cpu_probe()
    others = _others(sim.proc.pid or 0)
    started, wall = time.process_time(), time.monotonic()
    outcomes = worker.drain() if profiles is None else profiles.call(worker.drain)
    used, wall = time.process_time() - started, time.monotonic() - wall
    after = _others(sim.proc.pid or 0)
    sender.close()
    welcomed = sim.ask("welcomes") - before_welcomes
    if welcomed != n or len(outcomes) != n:
        raise RuntimeError(f"expected {n} welcomes, got {welcomed} ({len(outcomes)} events handled)")
    per = 1000.0 / n
    return Round(
        probe,
        used * per,
        (after["simulator"] - others["simulator"]) * per,
        (after["postgresql"] - others["postgresql"]) * per,
        (after["redis"] - others["redis"]) * per,
        wall,
    )


def _callback_cost(services: Any, sim: _Sim, config_id: str, n: int) -> tuple[float, float]:
    """Simulator CPU ms per add callback POSTed to a bot web app served here; and this process's.

    The app is served with keep-alive, as gunicorn serves it in production.
    """
    from bot.app import create_app
    from bot.wecom.simulator.keepalive import KeepAliveServer

    app = create_app(services.settings, services)
    server = KeepAliveServer("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sim.ask("connect", f"http://127.0.0.1:{server.server_port}/wecom/callback")
        ids = [f"wmH{secrets.token_hex(3)}{i:05d}" for i in range(n)]
        before, mine = _others(sim.proc.pid or 0), time.process_time()
        sim.ask("scan", config_id, ids)
        after, mine = _others(sim.proc.pid or 0), time.process_time() - mine
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return (after["simulator"] - before["simulator"]) * 1000 / n, mine * 1000 / n


def _summary(rounds: Sequence[Round], reference_probe_s: float) -> dict[str, Any]:
    """Medians per welcome, raw and scaled to the reference probe time (the machine's speed)."""

    def med(values: Sequence[float]) -> float:
        return round(statistics.median(values), 3)

    out: dict[str, Any] = {"rounds": len(rounds), "probe_s": med([r.probe_s for r in rounds])}
    for name in ("worker_ms", "simulator_ms", "postgresql_ms", "redis_ms"):
        raw = [getattr(r, name) for r in rounds]
        scaled = [getattr(r, name) * reference_probe_s / r.probe_s for r in rounds]
        out[name] = {"median": med(raw), "scaled": med(scaled), "all": [round(v, 2) for v in raw]}
    out["wall_s"] = med([r.wall_s for r in rounds])
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--adds", type=int, default=400, help="stored adds drained per round")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (after one warm-up round)")
    p.add_argument("--batch", type=int, default=20, help="worker.batch_size")
    p.add_argument("--callbacks", type=int, default=200, help="callbacks POSTed for the simulator's cost")
    p.add_argument(
        "--reference-probe", type=float, default=0.23, help="probe seconds the scaled figures assume"
    )
    p.add_argument("--profile", help="write the worker's cProfile stats (all measured rounds) to this file")
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Warm up, measure the rounds, print a JSON summary."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    args = parse_args(argv)
    profiles = _ThreadProfiles() if args.profile else None
    with _bot(args) as (services, sim, config_id):
        _round(services, sim, config_id, min(args.adds, 100), None)  # warm-up: caches, token, pools
        rounds = [_round(services, sim, config_id, args.adds, profiles) for _ in range(args.rounds)]
        callback_sim_ms, callback_bot_ms = _callback_cost(services, sim, config_id, args.callbacks)
    summary = _summary(rounds, args.reference_probe)
    summary["callback"] = {"simulator_ms": round(callback_sim_ms, 3), "bot_web_ms": round(callback_bot_ms, 3)}
    print(json.dumps(summary, indent=1))
    if profiles is not None:
        profiles.dump(args.profile).sort_stats("tottime").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
