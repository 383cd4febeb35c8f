"""Ingest benchmark: encrypted WeCom callbacks through gunicorn, wecom-bot against a bare baseline.

Both servers run under gunicorn with the same settings on loopback ports, over one fresh PostgreSQL
schema (and, for the bot, a private Redis namespace). The same pre-built, really encrypted and signed
request set (distinct `change_external_contact` events plus exact retries of earlier ones) drives
both, from a separate pool of client processes with one keep-alive `http.client` connection each.
Phases alternate baseline/bot/bot/baseline/... and warm-up requests are not measured. Afterwards the
stored events are counted on both sides: every distinct event exactly once, every retry absorbed.

Run: .venv/bin/python benchmarks/ingest/bench_ingest.py [--requests N --concurrency C --workers W]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import http.client
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import resource
import secrets
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import FrameType
from urllib.parse import urlencode

import sqlalchemy as sa

from bot.db import migrate
from bot.wecom.crypto import CallbackCrypto, random_nonce

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCS = ROOT / "docs" / "BENCHMARKS.md"
CORP_ID = "ww_bench_corp"
TOKEN = "bench-callback-token"
PATH = "/wecom/callback"
HEADERS = {"Content-Type": "text/xml"}
TARGET_THROUGHPUT = 0.8
TARGET_P99 = 2.0
OUTSIDE_WARN = 0.10
_EXT_RE = re.compile(r"<ExternalUserID><!\[CDATA\[([^\]]+)\]\]>")
_stopping = False

Request = tuple[str, bytes]


# ---------------------------------------------------------------- workload


@dataclass
class RequestSet:
    """One ordered list of callbacks, the distinct events it carries and how many are retries."""

    requests: list[Request]
    external_ids: set[str]
    retries: int


def _plaintext(external_id: str, create_time: int) -> str:
    """A `change_external_contact` add event as WeCom documents it."""
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event>"
        "<ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[am_bench]]></UserID>"
        f"<ExternalUserID><![CDATA[{external_id}]]></ExternalUserID>"
        "<State><![CDATA[XHS888]]></State>"
        f"<WelcomeCode><![CDATA[WC{external_id}]]></WelcomeCode></xml>"
    )


def build_set(crypto: CallbackCrypto, tag: str, total: int, retry_share: float, seed: int) -> RequestSet:
    """Encrypt and sign `total` callbacks now (fresh timestamps): distinct events plus exact retries."""
    rng = random.Random(seed)
    retries = int(total * retry_share)
    distinct = total - retries
    now = int(time.time())
    originals: list[Request] = []
    ids: set[str] = set()
    for i in range(distinct):
        external_id = f"wmB{tag}x{i:06d}"
        ids.add(external_id)
        encrypt = crypto.encrypt(_plaintext(external_id, now))
        nonce = random_nonce()
        signed = crypto.sign(str(now), nonce, encrypt)
        query = urlencode({"msg_signature": signed, "timestamp": now, "nonce": nonce})
        body = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
        originals.append((f"{PATH}?{query}", (body + "</xml>").encode()))
    # A retry repeats an earlier callback byte for byte, somewhat later in the sequence.
    keyed: list[tuple[float, Request]] = [(float(i), r) for i, r in enumerate(originals)]
    for _ in range(retries):
        source = rng.randrange(distinct)
        keyed.append((source + rng.uniform(1.0, max(2.0, distinct * 0.2)), originals[source]))
    keyed.sort(key=lambda item: item[0])
    return RequestSet([r for _, r in keyed], ids, retries)


# ---------------------------------------------------------------- load generator (client processes)


@dataclass
class ClientResult:
    """What one client process saw in the measured part of a phase."""

    start: float
    end: float
    latencies: bytes
    errors: int
    first_error: str
    reconnects: int


def _send(conn: http.client.HTTPConnection, request: Request) -> tuple[bool, str, bool]:
    """POST one callback; return (acknowledged, error text, server asked to close)."""
    path, body = request
    conn.request("POST", path, body, HEADERS)
    response = conn.getresponse()
    data = response.read()
    ok = response.status == 200 and data == b"success"
    return ok, "" if ok else f"HTTP {response.status}: {data[:80]!r}", response.will_close


def _client(
    port: int,
    warm: Sequence[Request],
    measured: Sequence[Request],
    barrier: Barrier,
    out: Queue[ClientResult],
) -> None:
    """Run in a child process: warm up, wait for all clients, then time every measured request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    errors, reconnects, first_error = 0, 0, ""
    latencies = array("d")

    def one(request: Request) -> None:
        """Send one request, count a failure, reconnect when the connection is done."""
        nonlocal conn, errors, reconnects, first_error
        try:
            ok, error, close = _send(conn, request)
        except (OSError, http.client.HTTPException) as exc:
            ok, error, close = False, f"{type(exc).__name__}: {exc}", True
        if not ok:
            errors += 1
            first_error = first_error or error
        if close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            reconnects += 1

    for request in warm:
        one(request)
    barrier.wait(timeout=120)
    start = time.perf_counter()
    clock = time.perf_counter
    for request in measured:
        t0 = clock()
        one(request)
        latencies.append(clock() - t0)
    end = time.perf_counter()
    conn.close()
    out.put(ClientResult(start, end, latencies.tobytes(), errors, first_error, reconnects))


@dataclass
class PhaseResult:
    """One measured phase against one server."""

    server: str
    round: int
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    first_error: str
    reconnects: int
    cpu_us: dict[str, float] = field(default_factory=dict)
    outside: float = 0.0
    total_seconds: float = 0.0

    @property
    def rps(self) -> float:
        """Acknowledged requests per second over the phase's wall time."""
        return self.requests / self.seconds

    def ms(self, q: float) -> float:
        """The q-th percentile latency in milliseconds."""
        return pct(sorted(self.latencies), q) * 1000


def run_phase(
    server: str, port: int, rnd: int, warm: Sequence[Request], measured: Sequence[Request], concurrency: int
) -> PhaseResult:
    """Drive one server with the request set from `concurrency` client processes, one connection each."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(concurrency)
    out: Queue[ClientResult] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client,
            args=(port, warm[i::concurrency], measured[i::concurrency], barrier, out),
            name=f"bench-client-{i}",
            daemon=True,
        )
        for i in range(concurrency)
    ]
    results: list[ClientResult] = []
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + 180
        while len(results) < concurrency:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server}: clients did not finish in time")
            with contextlib.suppress(queue.Empty):
                results.append(out.get(timeout=1.0))
                continue
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"{server}: client process failed (exit {dead[0].exitcode})")
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    latencies: list[float] = []
    for r in results:
        values = array("d")
        values.frombytes(r.latencies)
        latencies.extend(values)
    return PhaseResult(
        server=server,
        round=rnd,
        requests=len(measured),
        seconds=max(r.end for r in results) - min(r.start for r in results),
        latencies=latencies,
        errors=sum(r.errors for r in results),
        first_error=next((r.first_error for r in results if r.first_error), ""),
        reconnects=sum(r.reconnects for r in results),
    )


# ---------------------------------------------------------------- servers


def _free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark process dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """One gunicorn master serving one WSGI app on a loopback port."""

    name: str
    app: str
    env: dict[str, str]
    gunicorn_args: list[str]
    log_dir: Path
    pythonpath: str | None = None
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where gunicorn's output goes."""
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        """Start gunicorn in its own process group and wait until /healthz answers."""
        cmd = [sys.executable, "-m", "gunicorn", *self.gunicorn_args, "--bind", f"127.0.0.1:{self.port}"]
        if self.pythonpath:
            cmd += ["--pythonpath", self.pythonpath]
        cmd.append(self.app)
        env = {**os.environ, **self.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


# ---------------------------------------------------------------- stores and facts


@dataclass
class CpuSnapshot:
    """CPU time so far: per process (with its group), of this process and its reaped children, and
    of the whole machine."""

    procs: dict[int, tuple[str, float]]
    own: float
    busy: float


def cpu_snapshot(masters: dict[str, int]) -> CpuSnapshot:
    """Read /proc: gunicorn servers (master and workers), PostgreSQL processes, redis-server."""
    tick = os.sysconf("SC_CLK_TCK")
    by_pid = {pid: name for name, pid in masters.items()}
    procs: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            pid, ppid, used = int(entry.name), int(fields[1]), int(fields[11]) + int(fields[12])
            group = by_pid.get(pid) or by_pid.get(ppid)
            group = group or {"postgres": "postgresql", "redis-server": "redis"}.get(comm)
            if group:
                procs[pid] = (group, used / tick)
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    busy = 0.0
    with contextlib.suppress(OSError, ValueError):
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = (sum(values[:8]) - values[3] - values[4]) / tick  # all but idle and iowait
    return CpuSnapshot(procs, own, busy)


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots, plus "bench" (load generator) and "outside"
    (everything else the machine did: other users' work, unattributed kernel time)."""
    used: dict[str, float] = {}
    for pid, (group, seconds) in after.procs.items():
        used[group] = used.get(group, 0.0) + max(0.0, seconds - before.procs.get(pid, (group, 0.0))[1])
    used["bench"] = after.own - before.own
    used["outside"] = max(0.0, (after.busy - before.busy) - sum(used.values()))
    return used


def _schema_url(base: str, schema: str) -> str:
    """The database URL with psycopg as driver and `schema` as the search path."""
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://") :]
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def bench_schema(base_url: str) -> Iterator[tuple[str, sa.Engine]]:
    """Create a fresh schema with the bot's tables (Alembic) and the baseline's; drop it afterwards."""
    schema = f"bench_{secrets.token_hex(5)}"
    admin = sa.create_engine(_schema_url(base_url, "public"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = _schema_url(base_url, schema)
    engine = sa.create_engine(url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE baseline_events (dedupe_key varchar(64) PRIMARY KEY, raw_xml text NOT NULL)"
                )
            )
        yield url, engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def stored_ids(engine: sa.Engine, server: str) -> list[str]:
    """Every stored event's ExternalUserID, one entry per stored row."""
    with engine.connect() as conn:
        if server == "wecom-bot":
            rows = conn.execute(sa.text("SELECT payload->>'ExternalUserID' FROM inbound_events")).scalars()
            return [str(r) for r in rows]
        raws = conn.execute(sa.text("SELECT raw_xml FROM baseline_events")).scalars()
        return [m.group(1) if (m := _EXT_RE.search(str(r))) else "?" for r in raws]


def checkpoint(engine: sa.Engine) -> None:
    """Flush PostgreSQL's dirty pages so no phase pays for an earlier phase's checkpoint."""
    with contextlib.suppress(sa.exc.DBAPIError), engine.connect() as conn:
        conn.execute(sa.text("CHECKPOINT"))


def machine_facts(engine: sa.Engine, redis_url: str) -> dict[str, str]:
    """nproc, CPU, Python, gunicorn, PostgreSQL and Redis versions and the commit durability setting."""
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
    with engine.connect() as conn:
        facts["postgresql"] = str(conn.execute(sa.text("SHOW server_version")).scalar())
        facts["synchronous_commit"] = str(conn.execute(sa.text("SHOW synchronous_commit")).scalar())
    client = redis.Redis.from_url(redis_url)
    try:
        facts["redis"] = str(client.info("server")["redis_version"])
    finally:
        client.close()
    facts["revision"] = source_revision()
    facts["loadavg_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return facts


def source_revision() -> str:
    """The git commit measured, and whether the bot's source differs from it in the working tree."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bot", "models", "migrations"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (bot/, models/ or migrations/ modified in the working tree)" if dirty else head


def drop_namespace(redis_url: str, namespace: str) -> int:
    """Delete the bot's keys of this run; return how many there were."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


# ---------------------------------------------------------------- report


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class Summary:
    """Aggregate over all measured phases of one server."""

    server: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float]

    @property
    def rps(self) -> float:
        """Requests per second over all of this server's measured phases."""
        return self.requests / self.seconds


def summarize(server: str, phases: Sequence[PhaseResult]) -> Summary:
    """Pool the latencies and wall time of one server's phases."""
    lat = sorted(x for p in phases for x in p.latencies)
    return Summary(
        server=server,
        requests=sum(p.requests for p in phases),
        seconds=sum(p.seconds for p in phases),
        p50_ms=pct(lat, 50) * 1000,
        p99_ms=pct(lat, 99) * 1000,
        errors=sum(p.errors for p in phases),
        cpu_us={k: statistics.median(p.cpu_us[k] for p in phases) for k in ("server", "postgresql", "redis")},
    )


@dataclass
class Counts:
    """Stored-event accounting for one server."""

    sent: int
    distinct: int
    rows: int
    lost: int
    duplicated: int
    unexpected: int

    @property
    def ok(self) -> bool:
        """Exactly the distinct events, each once."""
        return self.rows == self.distinct and not (self.lost or self.duplicated or self.unexpected)


def account(ids: list[str], expected: set[str], sent: int) -> Counts:
    """Compare stored rows with the distinct events sent."""
    stored = set(ids)
    return Counts(
        sent=sent,
        distinct=len(expected),
        rows=len(ids),
        lost=len(expected - stored),
        duplicated=len(ids) - len(stored),
        unexpected=len(stored - expected),
    )


def paired_ratios(phases: Sequence[PhaseResult]) -> dict[str, list[float]]:
    """Bot/baseline ratios of req/s, p50 and p99 within each round (phases measured back to back)."""
    out: dict[str, list[float]] = {"rps": [], "p50": [], "p99": []}
    for rnd in sorted({p.round for p in phases}):
        pair = {p.server: p for p in phases if p.round == rnd}
        if {"baseline", "wecom-bot"} <= pair.keys():
            bot, base = pair["wecom-bot"], pair["baseline"]
            out["rps"].append(bot.rps / base.rps)
            out["p50"].append(bot.ms(50) / base.ms(50))
            out["p99"].append(bot.ms(99) / base.ms(99))
    return out


def _spread(values: list[float]) -> str:
    """'median (min–max)' of ratios."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}–{max(values):.2f})"


def render(
    args: argparse.Namespace, command: str, run: Run, gunicorn_args: list[str], base: Summary, bot: Summary
) -> str:
    """The markdown body of the `## Ingest` section (also printed)."""
    tput = bot.rps / base.rps
    p99 = bot.p99_ms / base.p99_ms
    p50 = bot.p50_ms / base.p50_ms
    verdict_t = "met" if tput >= TARGET_THROUGHPUT else "**missed**"
    verdict_p = "met" if p99 <= TARGET_P99 else "**missed**"
    facts, counts = run.facts, run.counts
    counts_ok = all(c.ok for c in counts.values())
    lines = [
        f"Run {facts['date']} on commit {facts['revision']}: `{command}`",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts.get('cpu', '?')}), Python {facts['python']}, "
        f"gunicorn {facts['gunicorn']}, PostgreSQL {facts['postgresql']} "
        f"(synchronous_commit={facts['synchronous_commit']}), Redis {facts['redis']}; "
        f"load average before {facts['loadavg_before']} (after, with the benchmark's own load: "
        f"{facts['loadavg_after']}).",
        "",
        f"Both servers: `gunicorn {' '.join(gunicorn_args)}` on 127.0.0.1, one fresh PostgreSQL schema; "
        "the bot also uses Redis (own namespace). Baseline = `benchmarks/ingest/baseline_app.py` "
        "(Flask + wechatpy `WeChatCrypto.decrypt_message` + one `INSERT ... ON CONFLICT DO NOTHING` "
        "keyed by SHA-256 of the plaintext + `success`).",
        "",
        f"Workload per phase: {args.requests} encrypted, signed `change_external_contact` callbacks "
        f"({args.requests - int(args.requests * args.retry_share)} distinct events + "
        f"{int(args.requests * args.retry_share)} exact retries of earlier ones), "
        f"{args.concurrency} client processes with one keep-alive connection each, "
        f"{args.warmup} warm-up requests per phase not measured; {args.rounds} rounds, "
        "order alternating baseline/bot, bot/baseline; the same request set goes to both servers in a round.",
        "",
        "CPU columns: user + system CPU per handled request, median over phases, of the gunicorn master and "
        "workers, of all PostgreSQL processes and of redis-server (the latter two include anything else "
        "the machine ran meanwhile).",
        "",
        "| server | requests | req/s | p50 ms | p99 ms | errors | server CPU µs/req | PostgreSQL CPU µs/req "
        "| Redis CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in (base, bot):
        lines.append(
            f"| {s.server} | {s.requests} | {s.rps:.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.errors} | "
            f"{s.cpu_us['server']:.0f} | {s.cpu_us['postgresql']:.0f} | {s.cpu_us['redis']:.0f} |"
        )
    pairs = paired_ratios(run.phases)
    lines += [
        "",
        "| ratio bot/baseline | pooled over all phases | median of per-round pairs (min–max) "
        "| target | verdict |",
        "|---|---:|---:|---:|---|",
        f"| throughput | {tput:.3f}x | {_spread(pairs['rps'])} | ≥ {TARGET_THROUGHPUT}x | {verdict_t} |",
        f"| p99 latency | {p99:.3f}x | {_spread(pairs['p99'])} | ≤ {TARGET_P99}x | {verdict_p} |",
        f"| p50 latency | {p50:.3f}x | {_spread(pairs['p50'])} | - | - |",
        "",
        "Per phase (in run order):",
        "",
        "| round | server | req/s | p50 ms | p99 ms | server CPU µs/req | PostgreSQL CPU µs/req "
        "| outside load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ph in run.phases:
        lines.append(
            f"| {ph.round} | {ph.server} | {ph.rps:.0f} | {ph.ms(50):.2f} | {ph.ms(99):.2f} | "
            f"{ph.cpu_us['server']:.0f} | {ph.cpu_us['postgresql']:.0f} | {ph.outside:.0%} |"
        )
    outside = [ph.outside for ph in run.phases]
    lines += [
        "",
        "Outside load = machine CPU time used by anything but the two servers, PostgreSQL, Redis and the "
        f"load generator, as a share of both CPUs: median {statistics.median(outside):.0%}, "
        f"max {max(outside):.0%}."
        + (
            " **Other work shared the machine during this run; the ratios are less reliable than in a "
            "quiet run.**"
            if max(outside) > OUTSIDE_WARN
            else ""
        ),
    ]
    lines += [
        "",
        "Stored events counted afterwards (warm-up included):",
        "",
        "| server | callbacks sent | distinct events | rows stored | lost | duplicated | retries absorbed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in counts.items():
        lines.append(
            f"| {name} | {c.sent} | {c.distinct} | {c.rows} | {c.lost} | {c.duplicated + c.unexpected} | "
            f"{c.sent - c.rows} of {run.retries} |"
        )
    lines += [
        "",
        "Zero lost, zero duplicated: " + ("yes." if counts_ok else "**NO**."),
    ]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- ingest:begin (generated by benchmarks/ingest/bench_ingest.py) -->", "<!-- ingest:end -->"


def write_docs(body: str, path: Path = DOCS) -> None:
    """Replace the generated block of `## Ingest` (keeping other sections and hand-written notes)."""
    block = f"{BEGIN}\n{body}{END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "## Ingest"), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n## Ingest\n\n" + block
    else:
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        section = "".join(lines[start:stop])
        if BEGIN in section and END in section:
            head, _, rest = section.partition(BEGIN)
            _, _, tail = rest.partition(END)
            section = head + block.rstrip("\n") + tail
        else:
            section = "## Ingest\n\n" + block
        if stop < len(lines) and not section.endswith("\n\n"):
            section = section.rstrip("\n") + "\n\n"
        text = "".join(lines[:start]) + section + "".join(lines[stop:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------- main


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM or the watchdog's SIGALRM into SystemExit so the cleanup in `finally` blocks runs."""
    global _stopping
    if not _stopping:
        _stopping = True
        if signum == signal.SIGALRM:
            print("benchmark exceeded --timeout; cleaning up", file=sys.stderr)
        raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=4000, help="measured callbacks per phase (per server)")
    p.add_argument("--warmup", type=int, default=400, help="unmeasured callbacks before each phase")
    p.add_argument("--rounds", type=int, default=6, help="rounds; each measures both servers once")
    p.add_argument("--concurrency", type=int, default=8, help="client processes (one connection each)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (both servers)")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (gthread)")
    p.add_argument("--retry-share", type=float, default=0.1, help="share of requests that are exact retries")
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=int, default=170, help="abort (and clean up) after this many seconds")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    p.add_argument("--check-targets", action="store_true", help="exit 2 when a ratio misses its target")
    args = p.parse_args(argv)
    if args.requests < 100 or args.concurrency < 1 or args.rounds < 1 or not 0 <= args.retry_share < 0.5:
        p.error("need --requests >= 100, --concurrency >= 1, --rounds >= 1, 0 <= --retry-share < 0.5")
    return args


@dataclass
class Run:
    """Everything one benchmark run measured and counted."""

    facts: dict[str, str]
    phases: list[PhaseResult] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    sent: int = 0
    retries: int = 0
    counts: dict[str, Counts] = field(default_factory=dict)


def gunicorn_settings(args: argparse.Namespace) -> list[str]:
    """The gunicorn options both servers get."""
    return [
        "--worker-class", "gthread",
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--keep-alive", "30",
        "--log-level", "warning",
        "--no-control-socket",
    ]  # fmt: skip


def make_servers(
    args: argparse.Namespace, url: str, aes_key: str, namespace: str, log_dir: Path
) -> list[Server]:
    """The baseline and the bot, configured alike, over the same schema."""
    common = {"PYTHONUNBUFFERED": "1"}
    baseline_env = {
        "BASELINE_DATABASE_URL": url,
        "BASELINE_TOKEN": TOKEN,
        "BASELINE_AES_KEY": aes_key,
        "BASELINE_CORP_ID": CORP_ID,
    }
    bot_env = {
        "BOT_CONFIG": "",
        "BOT_DATABASE__URL": url,
        "BOT_REDIS__URL": args.redis_url,
        "BOT_REDIS__NAMESPACE": namespace,
        "BOT_WECOM__CORP_ID": CORP_ID,
        "BOT_WECOM__TOKEN": TOKEN,
        "BOT_WECOM__ENCODING_AES_KEY": aes_key,
    }
    gargs = gunicorn_settings(args)
    return [
        Server("baseline", "baseline_app:create_app()", common | baseline_env, gargs, log_dir, str(HERE)),
        Server("wecom-bot", "bot:create_app()", common | bot_env, gargs, log_dir),
    ]


def drive(
    args: argparse.Namespace, run: Run, servers: list[Server], crypto: CallbackCrypto, engine: sa.Engine
) -> None:
    """Alternate measured phases over the servers (ABBA order), each round with a fresh request set."""
    tag = secrets.token_hex(3)
    for rnd in range(args.rounds):
        warm = build_set(crypto, f"{tag}r{rnd}w", args.warmup, 0.0, args.seed + rnd)
        measured = build_set(crypto, f"{tag}r{rnd}m", args.requests, args.retry_share, args.seed + rnd)
        run.expected |= warm.external_ids | measured.external_ids
        run.sent += len(warm.requests) + len(measured.requests)
        run.retries += warm.retries + measured.retries
        for server in servers if rnd % 2 == 0 else servers[::-1]:
            checkpoint(engine)
            masters = {s.name: s.proc.pid for s in servers if s.proc is not None}
            before, started = cpu_snapshot(masters), time.perf_counter()
            phase = run_phase(
                server.name, server.port, rnd, warm.requests, measured.requests, args.concurrency
            )
            used = cpu_delta(before, cpu_snapshot(masters))
            phase.total_seconds = time.perf_counter() - started
            handled = len(warm.requests) + len(measured.requests)
            phase.cpu_us = {
                "server": used.get(server.name, 0.0) / handled * 1e6,
                "postgresql": used.get("postgresql", 0.0) / handled * 1e6,
                "redis": used.get("redis", 0.0) / handled * 1e6,
            }
            phase.outside = used["outside"] / (phase.total_seconds * (os.cpu_count() or 1))
            run.phases.append(phase)
            print(
                f"round {rnd} {server.name:>9}: {phase.rps:6.0f} req/s  p50 {phase.ms(50):6.2f} ms"
                f"  p99 {phase.ms(99):6.2f} ms  CPU us/req: server {phase.cpu_us['server']:4.0f}"
                f" pg {phase.cpu_us['postgresql']:4.0f} redis {phase.cpu_us['redis']:3.0f}"
                f"  outside load {phase.outside:4.0%}"
                f"  errors {phase.errors}" + (f" ({phase.first_error})" if phase.errors else "")
            )


def execute(args: argparse.Namespace) -> Run:
    """Set up schema, namespace and servers, drive them, count stored events, tear everything down."""
    aes_key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))
    crypto = CallbackCrypto(TOKEN, aes_key, CORP_ID)
    namespace = f"bench-{secrets.token_hex(4)}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with bench_schema(args.database_url) as (url, engine):
            run = Run(facts=machine_facts(engine, args.redis_url))
            run.facts["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            servers = make_servers(args, url, aes_key, namespace, log_dir)
            try:
                for server in servers:
                    server.start()
                print(", ".join(f"{s.name} on :{s.port}" for s in servers) + f"; logs in {log_dir}")
                drive(args, run, servers, crypto, engine)
                run.facts["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            finally:
                for server in servers:
                    server.stop()
                for server in servers:
                    if "Traceback" in server.log_tail(200):
                        print(f"--- {server.name} log tail ---\n{server.log_tail()}", file=sys.stderr)
            for s in servers:
                run.counts[s.name] = account(stored_ids(engine, s.name), run.expected, run.sent)
            return run
    finally:
        with contextlib.suppress(Exception):
            drop_namespace(args.redis_url, namespace)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every event was stored exactly once (and targets met, if checked)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.timeout)
    given = list(argv if argv is not None else sys.argv[1:])
    command = " ".join([".venv/bin/python", os.path.relpath(__file__, ROOT), *given])
    run = execute(args)
    base = summarize("baseline", [p for p in run.phases if p.server == "baseline"])
    bot = summarize("wecom-bot", [p for p in run.phases if p.server == "wecom-bot"])
    body = render(args, command, run, gunicorn_settings(args), base, bot)
    print()
    print(body)
    if not args.no_docs:
        write_docs(body)
        print(f"written to {DOCS.relative_to(ROOT)} (## Ingest)")
    if any(not c.ok for c in run.counts.values()) or base.errors or bot.errors:
        print("FAIL: errors, lost or duplicated events", file=sys.stderr)
        return 1
    met = bot.rps / base.rps >= TARGET_THROUGHPUT and bot.p99_ms / base.p99_ms <= TARGET_P99
    if args.check_targets and not met:
        print("targets missed", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
