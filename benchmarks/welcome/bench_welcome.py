"""Welcome benchmark: WeCom add callback to send_welcome_msg, per customer, under a burst of adds.

A WeCom simulator runs in its own process; client processes ask it (`POST /_sim/customer_scans`) to
let customers scan a 「联系我」 QR at a fixed rate, so the simulator raises `add_external_contact`
callbacks with a WelcomeCode. The bot must answer each with `externalcontact/send_welcome_msg`
within WeCom's 20 s window. Two setups are measured in one run, each on a fresh store:

* embedded: `wecom-bot run` (web + event worker + dispatcher threads in one process) on SQLite;
* production: `wecom-bot serve` (gunicorn) + `wecom-bot worker` process(es) on PostgreSQL + Redis.

Per customer the simulator records when it started POSTing the callback and when it accepted the
welcome; the bot's tables give when the callback was stored, handled, and the welcome marked sent.

Run: .venv/bin/python benchmarks/welcome/bench_welcome.py [--rate 200 --seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import hashlib
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa

from bot.config import ComplianceSettings, DatabaseSettings
from bot.db import Database, migrate
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.wecom.simulator.api import JSON, ApiCall, ApiError
from bot.wecom.simulator.callbacks import CallbackSender
from bot.wecom.simulator.parts import Outgoing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

DOCS = ROOT / "docs" / "BENCHMARKS.md"
CLI = str(ROOT / ".venv" / "bin" / "wecom-bot")
CORP_ID = "ww_bench_welcome"
TOKEN = "bench-welcome-token"
AGENT_ID = 1000002
MEMBER = "zhangsan"
HOOK_CODE = "XHS888"
WINDOW_S = 20.0
TARGET_P99_S = 1.0
WELCOME = (
    "{{ lead.display_name }}您好，欢迎从{{ hook.platform_name }}来到{{ firm.name }}，我是{{ manager.name }}。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
_EXT_RE = re.compile(r"<ExternalUserID><!\[CDATA\[([^\]]+)\]\]>")
_ADDRESS_OPTS = {"--bind", "--host", "--port"}
_stopping = False


# ---------------------------------------------------------------- simulator process


class BenchSimulator(Simulator):
    """The stock simulator, timing each callback and welcome, and POSTing callbacks concurrently.

    The stock `_flush` delivers one callback at a time (whoever holds the delivery lock drains the
    queue), which caps adds at 1 / ack latency; WeCom's servers push callbacks in parallel, so here
    each callback goes to a pool of sender threads, each with its own HTTP session.
    """

    def __init__(self, config: SimulatorConfig, senders: int) -> None:
        super().__init__(config)
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="sim-callback")
        self._local = threading.local()
        self._record_lock = threading.Lock()
        self.sends: dict[str, tuple[float, float, list[int | None]]] = {}
        self.api_errors: list[tuple[str, int, float]] = []

    def _deliver(self, item: Outgoing) -> None:
        """Hand the callback to a sender thread (WeCom does not wait for one bot answer to send the next)."""
        with self._lock:
            url, options = self._bot_url, dict(self._bot_options)
        if url is not None and not self._stopping.is_set():
            self._pool.submit(self._post_callback, url, item, options)

    def _post_callback(self, url: str, item: Outgoing, options: dict[str, Any]) -> None:
        """Encrypt, sign and POST one callback with retries; record its start and final answer times."""
        sender = getattr(self._local, "sender", None)
        if sender is None:
            sender = self._local.sender = CallbackSender(self.crypto, self.config.corp_id, self._stopping)
        match = _EXT_RE.search(item.xml)
        started = time.time()
        result = sender.send(
            url, item.xml, agent_id=self.config.agent_id if item.with_agent_id else None, **options
        )
        if match:
            with self._record_lock:
                self.sends[match.group(1)] = (started, time.time(), result.status_codes)

    def _send_welcome_msg(self, call: ApiCall) -> JSON:
        """The stock handler, also recording every refusal's errcode."""
        try:
            return super()._send_welcome_msg(call)
        except ApiError as exc:
            with self._record_lock:
                self.api_errors.append((str(call.json().get("welcome_code", "")), exc.errcode, time.time()))
            raise

    def results(self) -> dict[str, Any]:
        """Everything recorded so far, picklable."""
        with self._record_lock:
            sends = dict(self.sends)
            errors = list(self.api_errors)
        welcomes = [(w.external_userid, w.at, w.welcome_code) for w in self.welcomes]
        return {"sends": sends, "api_errors": errors, "welcomes": welcomes}

    def stop(self) -> None:
        """Stop serving, then the sender pool."""
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def simulator_main(conn: Connection, aes_key: str, senders: int) -> None:
    """Child process: serve the simulator and answer the parent's `count`, `results` and `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    config = SimulatorConfig(
        corp_id=CORP_ID, token=TOKEN, encoding_aes_key=aes_key, agent_id=AGENT_ID, users=[MEMBER, "lisi"]
    )
    sim = BenchSimulator(config, senders)
    conn.send(sim.start())
    try:
        while True:
            command = conn.recv()
            if isinstance(command, tuple) and command[0] == "burst":
                conn.send(scan_schedule(sim, command[1], command[2]))
            elif command == "count":
                conn.send(len(sim.welcomes))
            elif command == "results":
                conn.send(sim.results())
            else:
                break
    finally:
        sim.stop()


@dataclass
class SimProcess:
    """The simulator child process and its command pipe."""

    proc: mp.process.BaseProcess
    conn: Connection
    base_url: str

    @property
    def port(self) -> int:
        """The simulator's HTTP port."""
        return int(self.base_url.rsplit(":", 1)[1])

    def ask(self, command: str) -> Any:
        """Send a command and return the answer."""
        self.conn.send(command)
        if not self.conn.poll(30):
            raise RuntimeError(f"simulator did not answer {command!r}")
        return self.conn.recv()

    def control(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a /_sim/ control and return its JSON answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", f"/_sim/{action}", json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            data: dict[str, Any] = json.loads(response.read() or b"{}")
            if response.status != 200:
                raise RuntimeError(f"/_sim/{action}: HTTP {response.status} {data}")
            return data
        finally:
            conn.close()

    def stop(self) -> None:
        """Ask the child to stop; terminate it if it does not."""
        with contextlib.suppress(OSError, EOFError):
            self.conn.send("stop")
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)


def start_simulator(aes_key: str, senders: int) -> SimProcess:
    """Fork the simulator process and wait for its base URL."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=simulator_main, args=(child, aes_key, senders), name="bench-sim", daemon=True)
    proc.start()
    if not parent.poll(30):
        proc.terminate()
        raise RuntimeError("simulator did not start")
    return SimProcess(proc, parent, str(parent.recv()))


# ---------------------------------------------------------------- load generator


@dataclass(frozen=True)
class Scan:
    """One customer's scan as the client saw it (Unix times)."""

    external_userid: str
    scheduled: float
    started: float
    ended: float
    error: str


def scan_schedule(sim: Simulator, config_id: str, schedule: Sequence[tuple[str, float]]) -> list[Scan]:
    """In the simulator process: at each scheduled time a customer scans the QR; record each scan.

    Generating the load inside the simulator keeps client processes and their HTTP requests off
    the machine's two cores: they are not part of what is measured.
    """
    out: list[Scan] = []
    for external_userid, at in schedule:
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        started = time.time()
        error = ""
        try:
            if not sim.customer_scans(config_id, external_userid, name="客户").welcome_code:
                error = "no welcome code"
        except Exception as exc:  # recorded per scan, reported in the table
            error = f"{type(exc).__name__}: {exc}"
        out.append(Scan(external_userid, at, started, time.time(), error))
    return out


def burst(sim: SimProcess, config_id: str, ids: Sequence[str], rate: float) -> list[Scan]:
    """Scan `ids` at `rate` per second on a fixed schedule (run inside the simulator); return every scan."""
    start = time.time() + 0.5
    schedule = [(ext, start + i / rate) for i, ext in enumerate(ids)]
    sim.conn.send(("burst", config_id, schedule))
    if not sim.conn.poll(len(ids) / rate + 60):
        raise RuntimeError("the simulator did not finish the scans in time")
    scans: list[Scan] = sim.conn.recv()
    return scans


# ---------------------------------------------------------------- bot processes


def _free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Get SIGTERM when the benchmark process dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class BotProcess:
    """One `wecom-bot` command in its own process group, logging to a file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where the command's output goes."""
        return self.log_dir / f"{self.name}.log"

    @property
    def shown(self) -> str:
        """The command line without its (per-run) listen address."""
        args = [a for i, a in enumerate(self.args) if not {a, self.args[i - 1] if i else ""} & _ADDRESS_OPTS]
        return " ".join(["wecom-bot", *args])

    def start(self) -> None:
        """Start the command in a new session (so its whole group can be stopped)."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [CLI, *self.args],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def wait_healthy(port: int, procs: Sequence[BotProcess], timeout: float = 30) -> None:
    """Wait until GET /healthz answers 200, failing early when a process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.proc is not None and p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited at start:\n{p.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.1)
    raise RuntimeError("bot did not become healthy:\n" + "\n".join(p.log_tail() for p in procs))


def cli(args: Sequence[str], env: dict[str, str]) -> str:
    """Run one `wecom-bot` command to completion; return its output."""
    done = subprocess.run(
        [CLI, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"wecom-bot {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def cpu_seconds(groups: dict[str, int], pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds per process group (pgid) and per single process (pid), plus all
    PostgreSQL processes and redis-server, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    by_pgid = {pgid: name for name, pgid in groups.items()}
    by_pid = {pid: name for name, pid in pids.items()}
    totals = dict.fromkeys([*groups, *pids, "postgresql", "redis"], 0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            pgid, used = int(fields[2]), int(fields[11]) + int(fields[12])
            name = by_pid.get(int(entry.name)) or by_pgid.get(pgid)
            name = name or {"postgres": "postgresql", "redis-server": "redis"}.get(comm)
            if name:
                totals[name] += used
    return {name: ticks / tick for name, ticks in totals.items()}


# ---------------------------------------------------------------- stores


def _schema_url(base: str, schema: str) -> str:
    """The database URL with psycopg as driver and `schema` as the search path."""
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://") :]
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def postgres_store(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema with the bot's tables; dropped afterwards."""
    schema = f"bench_welcome_{secrets.token_hex(4)}"
    admin = sa.create_engine(_schema_url(base_url, "public"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _schema_url(base_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def drop_namespace(redis_url: str, namespace: str) -> None:
    """Delete this run's Redis keys."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def seed(url: str) -> None:
    """Migrate, then approve the Xiaohongshu welcome as people do (operator drafts, compliance approves)."""
    from bot.accounts import create_user
    from scripts_library import catalogue as cat

    db = Database(DatabaseSettings(url=url))
    try:
        migrate(db.engine)
        policy = cat.policy_from_settings(ComplianceSettings())
        with db.transaction() as session:
            create_user(session, "olivia", "operator", "operator-password")
            create_user(session, "chen", "compliance", "compliance-password")
        with db.transaction() as session:
            cat.create_script(session, "welcome_xiaohongshu", "welcome", "olivia")
            saved = cat.save_draft(session, "welcome_xiaohongshu", WELCOME, "olivia", policy)
            cat.submit(session, "welcome_xiaohongshu", saved.version.number, "olivia", policy)
            cat.approve(session, "welcome_xiaohongshu", saved.version.number, "chen", policy)
    finally:
        db.engine.dispose()


@dataclass(frozen=True)
class BotRow:
    """What the bot stored about one customer (Unix times; None when absent)."""

    received: float | None = None
    processed: float | None = None
    queued: float | None = None
    sent: float | None = None
    status: str = "missing"
    errcode: int | None = None


def wait_for_outcomes(url: str, timeout_s: float) -> None:
    """Wait until no welcome is mid-send, so every API call the simulator saw has its outcome row."""
    from models.deliveries import Delivery, DeliveryStatus

    db = Database(DatabaseSettings(url=url))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with db.transaction() as session:
                stmt = sa.select(sa.func.count()).select_from(Delivery)
                if not session.scalar(stmt.where(Delivery.status == DeliveryStatus.SENDING)):
                    return
            time.sleep(0.05)
    finally:
        db.dispose()


def bot_rows(url: str, external_ids: set[str]) -> dict[str, BotRow]:
    """Per customer: inbox received/processed times and the welcome delivery's outcome."""
    from models.deliveries import Channel, Delivery
    from models.inbox import InboundEvent

    def ts(value: dt.datetime | None) -> float | None:
        """Unix time of a stored UTC datetime."""
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()

    db = Database(DatabaseSettings(url=url))
    rows: dict[str, BotRow] = {}
    try:
        with db.transaction() as session:
            events: dict[str, tuple[float | None, float | None]] = {}
            for ev in session.scalars(sa.select(InboundEvent)):
                ext = str((ev.payload or {}).get("ExternalUserID", ""))
                if ext in external_ids:
                    events[ext] = (ts(ev.received_at), ts(ev.processed_at))
            deliveries = {
                d.recipient: d
                for d in session.scalars(
                    sa.select(Delivery).where(Delivery.channel == Channel.CONTACT_WELCOME)
                )
            }
            for ext in external_ids:
                received, processed = events.get(ext, (None, None))
                d = deliveries.get(ext)
                rows[ext] = BotRow(
                    received=received,
                    processed=processed,
                    queued=ts(d.created_at) if d else None,
                    sent=ts(d.sent_at) if d else None,
                    status=str(d.status) if d else ("no delivery" if ext in events else "missing"),
                    errcode=d.errcode if d else None,
                )
    finally:
        db.engine.dispose()
    return rows


# ---------------------------------------------------------------- one setup


@dataclass
class PhaseResult:
    """Everything one setup's burst produced."""

    name: str
    shape: str
    adds: int
    scans: list[Scan]
    sim: dict[str, Any]
    rows: dict[str, BotRow]
    cpu: dict[str, float]
    burst_s: float
    drain_s: float
    ids: list[str] = field(default_factory=list)


def bot_env(url: str, redis_url: str, namespace: str, sim_url: str, aes_key: str) -> dict[str, str]:
    """The environment every `wecom-bot` command of one setup gets."""
    return {
        "BOT_CONFIG": "",
        "BOT_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        "BOT_DATABASE__URL": url,
        "BOT_REDIS__URL": redis_url,
        "BOT_REDIS__NAMESPACE": namespace,
        "BOT_WECOM__CORP_ID": CORP_ID,
        "BOT_WECOM__TOKEN": TOKEN,
        "BOT_WECOM__ENCODING_AES_KEY": aes_key,
        "BOT_WECOM__AGENT_ID": str(AGENT_ID),
        "BOT_WECOM__API_BASE_URL": sim_url,
        "BOT_WECOM__AGENT_SECRET": "sim-agent-secret",
        "BOT_WECOM__CONTACT_SECRET": "sim-contact-secret",
        "BOT_WECOM__KF_SECRET": "sim-kf-secret",
    }


def run_phase(args: argparse.Namespace, name: str, url: str, redis_url: str, log_dir: Path) -> PhaseResult:
    """Simulator + bot processes on a fresh store: warm up, burst, drain, collect, stop everything."""
    aes_key = secrets.token_urlsafe(40).replace("-", "A").replace("_", "B")[:43]
    namespace = f"bench-welcome-{secrets.token_hex(4)}"
    sim = start_simulator(aes_key, args.sim_senders)
    procs: list[BotProcess] = []
    try:
        seed(url)
        env = bot_env(url, redis_url, namespace, sim.base_url, aes_key)
        cli(["members", "add", MEMBER, "--name", "张经理"], env)
        cli(
            [
                "hookcodes",
                "create",
                HOOK_CODE,
                "--platform",
                "xiaohongshu",
                "--member",
                MEMBER,
                "--as",
                "olivia",
            ],
            env,
        )
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            config_id = str(
                conn.execute(sa.text("SELECT contact_way_config_id FROM hook_codes")).scalar_one()
            )
        engine.dispose()
        port = _free_port()
        if name == "production":
            procs.append(
                BotProcess(
                    "serve",
                    ["serve", "--bind", f"127.0.0.1:{port}", "--workers", str(args.web_workers),
                     "--threads", str(args.web_threads)],
                    env, log_dir,
                )
            )  # fmt: skip
            for i in range(args.worker_procs):
                procs.append(
                    BotProcess(
                        f"worker-{i}",
                        ["worker", "--threads", str(args.worker_threads),
                         "--dispatchers", str(args.dispatchers)],
                        env, log_dir,
                    )
                )  # fmt: skip
        else:
            procs.append(
                BotProcess(
                    "run",
                    ["run", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", str(args.embedded_workers)],
                    env, log_dir,
                )
            )  # fmt: skip
        for p in procs:
            p.start()
        wait_healthy(port, procs)
        sim.control(
            "connect_bot", {"url": f"http://127.0.0.1:{port}/wecom/callback", "retry_interval_s": 0.5}
        )
        tag = secrets.token_hex(3)
        warm = [f"wmW{tag}{i:04d}" for i in range(args.warmup)]
        for ext in warm:
            sim.control("customer_scans", {"target": config_id, "external_userid": ext})
        deadline = time.monotonic() + 20
        while sim.ask("count") < len(warm) and time.monotonic() < deadline:
            time.sleep(0.05)
        ids = [f"wmB{tag}{i:05d}" for i in range(int(args.rate * args.seconds))]
        groups = {p.name: p.proc.pid for p in procs if p.proc is not None}
        pids = {"simulator": sim.proc.pid or 0}
        before = cpu_seconds(groups, pids)
        t0 = time.monotonic()
        scans = burst(sim, config_id, ids, args.rate)
        burst_s = time.monotonic() - t0
        target = len(warm) + len(ids)
        drain_deadline = time.monotonic() + WINDOW_S + 5
        while sim.ask("count") < target and time.monotonic() < drain_deadline:
            time.sleep(0.1)
        drain_s = time.monotonic() - t0 - burst_s
        wait_for_outcomes(url, timeout_s=10.0)
        after = cpu_seconds(groups, pids)
        results = sim.ask("results")
        rows = bot_rows(url, set(ids))
        cpu = {k: after[k] - before[k] for k in after}
    finally:
        for p in procs:
            p.stop()
        for p in procs:
            if "Traceback" in p.log_tail(400):
                print(f"--- {p.name} log tail ({p.log_path}) ---\n{p.log_tail()}", file=sys.stderr)
        sim.stop()
        if name == "production":
            with contextlib.suppress(Exception):
                drop_namespace(redis_url, namespace)
    shape = " + ".join(p.shown for p in procs)
    return PhaseResult(name, shape, len(ids), scans, results, rows, cpu, burst_s, drain_s, ids)


# ---------------------------------------------------------------- report


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class Summary:
    """The figures of one setup."""

    name: str
    adds: int
    scans_ok: int
    achieved_rate: float
    welcomed: int
    e2e: list[float]
    from_received: list[float]
    stages: dict[str, list[float]]
    late: int
    statuses: Counter[str]
    errcodes: Counter[int]
    peak_welcomes_per_s: int
    welcome_rate: float
    callback_failures: int

    def q(self, values: Sequence[float], p: float) -> float:
        """Percentile p of values, in milliseconds."""
        return pct(sorted(values), p) * 1000


def summarize(ph: PhaseResult) -> Summary:
    """Join the simulator's and the bot's records per customer."""
    sends: dict[str, tuple[float, float, list[int | None]]] = ph.sim["sends"]
    welcomes = {ext: at for ext, at, _ in ph.sim["welcomes"]}
    ids = set(ph.ids)
    ok_scans = [s for s in ph.scans if not s.error]
    starts = sorted(s.started for s in ok_scans)
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else float("nan")
    e2e, from_received, late = [], [], 0
    stages: dict[str, list[float]] = {k: [] for k in ("ingest", "wait", "handle+send", "ack")}
    for ext in ph.ids:
        send = sends.get(ext)
        at = welcomes.get(ext)
        row = ph.rows.get(ext, BotRow())
        if send and at:
            e2e.append(at - send[0])
            late += at - send[0] > WINDOW_S
        if row.received and at:
            from_received.append(at - row.received)
        if send and row.received:
            stages["ingest"].append(row.received - send[0])
            stages["ack"].append(send[1] - send[0])
        if row.received and row.processed:
            stages["wait"].append(row.processed - row.received)
        if row.processed and at:
            stages["handle+send"].append(at - row.processed)
    per_second = Counter(int(at) for ext, at in welcomes.items() if ext in ids)
    times = sorted(at for ext, at in welcomes.items() if ext in ids)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return Summary(
        name=ph.name,
        adds=ph.adds,
        scans_ok=len(ok_scans),
        achieved_rate=achieved,
        welcomed=sum(1 for ext in ph.ids if ext in welcomes),
        e2e=e2e,
        from_received=from_received,
        stages=stages,
        late=late,
        statuses=Counter(r.status for r in ph.rows.values()),
        errcodes=Counter(code for _, code, _ in ph.sim["api_errors"]),
        peak_welcomes_per_s=max(per_second.values(), default=0),
        welcome_rate=rate,
        callback_failures=sum(1 for ext in ph.ids if ext in sends and 200 not in sends[ext][2]),
    )


def cpu_probe() -> float:
    """Seconds one core takes for a fixed pure-Python workload: this VM's speed varies run to run."""
    started = time.process_time()
    digest = b"x" * 64
    for _ in range(200_000):
        digest = hashlib.sha256(digest).digest()
    total = 0
    for i in range(2_000_000):
        total += i * i
    return time.process_time() - started


def machine_facts(pg_url: str, redis_url: str) -> dict[str, str]:
    """CPU, Python, gunicorn, PostgreSQL and Redis versions, load average."""
    import gunicorn
    import redis

    facts = {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "gunicorn": gunicorn.__version__,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    engine = sa.create_engine(_schema_url(pg_url, "public"))
    try:
        with engine.connect() as conn:
            facts["postgresql"] = str(conn.execute(sa.text("SHOW server_version")).scalar()).split()[0]
            facts["synchronous_commit"] = str(conn.execute(sa.text("SHOW synchronous_commit")).scalar())
    finally:
        engine.dispose()
    client = redis.Redis.from_url(redis_url)
    try:
        facts["redis"] = str(client.info("server")["redis_version"])
    finally:
        client.close()
    import sqlite3

    facts["sqlite"] = sqlite3.sqlite_version
    facts["loadavg_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["probe_before"] = f"{cpu_probe():.2f}"
    return facts


def _ms(value: float) -> str:
    """Milliseconds, no decimals above 100."""
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def render(
    args: argparse.Namespace,
    command: str,
    facts: dict[str, str],
    phases: list[PhaseResult],
    sums: list[Summary],
) -> str:
    """The markdown body of the `## Welcome` section (also printed)."""
    lines = [
        f"Run {facts['date']}: `{command}`",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts.get('cpu', '?')}), Python {facts['python']}, gunicorn "
        f"{facts['gunicorn']}, PostgreSQL {facts['postgresql']} (synchronous_commit="
        f"{facts['synchronous_commit']}), Redis {facts['redis']}, SQLite {facts['sqlite']}; load average "
        f"before {facts['loadavg_before']}, after {facts['loadavg_after']}; CPU probe (a fixed "
        f"single-core workload, lower is faster) {facts['probe_before']} s "
        f"before, {facts['probe_after']} s after. Everything on 127.0.0.1.",
        "",
        f"Workload per setup: {int(args.rate * args.seconds)} customers scan a 「联系我」 QR of hook code "
        f"{HOOK_CODE} at {args.rate:g} adds/s for {args.seconds:g} s (the simulator's `customer_scans`, "
        "called on a fixed schedule inside the simulator process, so no load clients compete for the "
        "CPUs), after "
        f"{args.warmup} unmeasured warm-up adds. The simulator (own process, "
        f"`bot.wecom.simulator.Simulator` subclassed only to timestamp and to POST callbacks from "
        f"{args.sim_senders} threads in parallel, as WeCom does, instead of one at a time) raises "
        "`add_external_contact` with a WelcomeCode (valid 20 s) for each; the bot stores it; a worker "
        "takes the waiting adds as one batch, attributes and tags the leads and queues each approved "
        "welcome (deadline = WeCom's send time + 20 s) in one transaction, and right after the commit "
        "calls `externalcontact/send_welcome_msg` for them, several at once.",
        "",
        "Setups (each on a fresh store, same run):",
        "",
    ]
    for ph in phases:
        store = (
            "SQLite file, in-process coordination"
            if ph.name == "embedded"
            else "fresh PostgreSQL schema + Redis namespace"
        )
        lines.append(f"* **{ph.name}**: `{ph.shape}`; {store}.")
    lines += [
        "",
        "Latency = simulator starts POSTing the callback → simulator accepts `send_welcome_msg` "
        "(both clocks are the same host's `time.time()`; the simulator's clock was not advanced). "
        "“From stored” starts at the bot's `inbound_events.received_at` instead.",
        "",
        "| setup | adds | achieved add rate /s | welcomed | p50 ms | p95 ms | p99 ms | max ms "
        "| from stored p50 / p99 ms | > 20 s | welcome rate /s (peak 1 s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sums:
        lines.append(
            f"| {s.name} | {s.adds} | {s.achieved_rate:.1f} | {s.welcomed} | {_ms(s.q(s.e2e, 50))} | "
            f"{_ms(s.q(s.e2e, 95))} | {_ms(s.q(s.e2e, 99))} | {_ms(s.q(s.e2e, 100))} | "
            f"{_ms(s.q(s.from_received, 50))} / {_ms(s.q(s.from_received, 99))} | {s.late} | "
            f"{s.welcome_rate:.0f} ({s.peak_welcomes_per_s}) |"
        )
    lines += [
        "",
        "Outcomes (bot's delivery status per customer; errcodes are the simulator's refusals of "
        "`send_welcome_msg`, 41050 = WelcomeCode expired):",
        "",
        "| setup | scan errors | callbacks not acked | delivery statuses | send_welcome_msg errcodes |",
        "|---|---:|---:|---|---|",
    ]
    for s in sums:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()))
        codes = ", ".join(f"{k}×{v}" for k, v in sorted(s.errcodes.items())) or "none"
        lines.append(f"| {s.name} | {s.adds - s.scans_ok} | {s.callback_failures} | {statuses} | {codes} |")
    lines += [
        "",
        "Where the time goes, p50 / p99 ms per stage: ingest = callback POST start → `received_at`; "
        "ack = callback POST start → bot's HTTP 200; event wait = `received_at` → `processed_at` (the "
        "worker's clock as it starts the event: inbox queueing); handle + send = `processed_at` → welcome "
        "accepted (batch handler, commit, rate limiter, API call, the batch's other calls).",
        "",
        "| setup | ingest | ack | event wait | handle + send | CPU s during burst + drain |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for ph, s in zip(phases, sums, strict=True):
        st = s.stages
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in ph.cpu.items() if v > 0.05)
        lines.append(
            f"| {s.name} | {_ms(s.q(st['ingest'], 50))} / {_ms(s.q(st['ingest'], 99))} | "
            f"{_ms(s.q(st['ack'], 50))} / {_ms(s.q(st['ack'], 99))} | "
            f"{_ms(s.q(st['wait'], 50))} / {_ms(s.q(st['wait'], 99))} | "
            f"{_ms(s.q(st['handle+send'], 50))} / {_ms(s.q(st['handle+send'], 99))} | {cpu} |"
        )
    prod = next((s for s in sums if s.name == "production"), sums[-1])
    p99 = prod.q(prod.e2e, 99) / 1000
    met = p99 < TARGET_P99_S and prod.welcomed == prod.adds
    lines += [
        "",
        f"Target: p99 under {TARGET_P99_S:g} s in the production shape, every add welcomed: "
        + (
            f"met (p99 {p99:.2f} s)."
            if met
            else f"**missed** (p99 {p99:.2f} s, {prod.welcomed}/{prod.adds} welcomed)."
        ),
    ]
    return "\n".join(lines) + "\n"


BEGIN, END = (
    "<!-- welcome:begin (generated by benchmarks/welcome/bench_welcome.py) -->",
    "<!-- welcome:end -->",
)


def write_docs(body: str, path: Path = DOCS) -> None:
    """Replace the generated block of `## Welcome` (keeping other sections and hand-written notes)."""
    block = f"{BEGIN}\n{body}{END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "## Welcome"), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n## Welcome\n\n" + block
    else:
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        section = "".join(lines[start:stop])
        if BEGIN in section and END in section:
            head, _, rest = section.partition(BEGIN)
            _, _, tail = rest.partition(END)
            section = head + block.rstrip("\n") + tail
        else:
            section = "## Welcome\n\n" + block
        if stop < len(lines) and not section.endswith("\n\n"):
            section = section.rstrip("\n") + "\n\n"
        text = "".join(lines[:start]) + section + "".join(lines[stop:])
    path.write_text(text)


# ---------------------------------------------------------------- main


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM or the watchdog's SIGALRM into SystemExit so `finally` blocks clean up."""
    global _stopping
    if not _stopping:
        _stopping = True
        if signum == signal.SIGALRM:
            print("benchmark exceeded --timeout; cleaning up", file=sys.stderr)
        raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=200.0, help="adds per second during the burst")
    p.add_argument("--seconds", type=float, default=10.0, help="burst length")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured adds before the burst")
    p.add_argument("--sim-senders", type=int, default=32, help="simulator threads POSTing callbacks")
    p.add_argument("--web-workers", type=int, default=2, help="production: gunicorn processes")
    p.add_argument("--web-threads", type=int, default=4, help="production: gunicorn threads per process")
    p.add_argument("--worker-procs", type=int, default=2, help="production: `wecom-bot worker` processes")
    p.add_argument("--worker-threads", type=int, default=2, help="production: event threads per worker")
    p.add_argument("--dispatchers", type=int, default=1, help="production: dispatcher threads per worker")
    p.add_argument("--embedded-workers", type=int, default=1, help="embedded: `wecom-bot run --workers`")
    p.add_argument("--setups", default="embedded,production", help="comma list of setups to run, in order")
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--timeout", type=int, default=175, help="abort (and clean up) after this many seconds")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        p.error("need positive --rate and --seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every setup; 0 when the production target is met, 2 when missed, 1 on lost welcomes."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.timeout)
    given = list(argv if argv is not None else sys.argv[1:])
    command = " ".join([".venv/bin/python", os.path.relpath(__file__, ROOT), *given])
    facts = machine_facts(args.database_url, args.redis_url)
    facts["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-welcome-"))
    print(f"logs in {log_dir}")
    phases: list[PhaseResult] = []
    for name in [s.strip() for s in args.setups.split(",") if s.strip()]:
        if name == "embedded":
            url = f"sqlite:///{log_dir / 'embedded.db'}"
            phases.append(run_phase(args, name, url, "", log_dir))
        elif name == "production":
            with postgres_store(args.database_url) as url:
                phases.append(run_phase(args, name, url, args.redis_url, log_dir))
        else:
            raise SystemExit(f"unknown setup {name!r}")
        s = summarize(phases[-1])
        print(
            f"{name:>10}: {s.welcomed}/{s.adds} welcomed at {s.achieved_rate:.0f} adds/s; p50 "
            f"{_ms(s.q(s.e2e, 50))} p95 {_ms(s.q(s.e2e, 95))} p99 {_ms(s.q(s.e2e, 99))} max "
            f"{_ms(s.q(s.e2e, 100))} ms; statuses {dict(s.statuses)}; errcodes {dict(s.errcodes)}"
        )
    facts["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["probe_after"] = f"{cpu_probe():.2f}"
    sums = [summarize(ph) for ph in phases]
    body = render(args, command, facts, phases, sums)
    print()
    print(body)
    if not args.no_docs:
        write_docs(body)
        print(f"written to {DOCS.relative_to(ROOT)} (## Welcome)")
    if any(s.welcomed < s.adds for s in sums):
        return 1
    prod = next((s for s in sums if s.name == "production"), sums[-1])
    return 0 if prod.q(prod.e2e, 99) / 1000 < TARGET_P99_S else 2


if __name__ == "__main__":
    sys.exit(main())
