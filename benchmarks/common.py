"""Helpers the benchmarks share: process control, stores, machine facts, memory, and the docs writer.

The process, store and machine helpers were first written for the welcome benchmark; they are
re-exported here under public names so later benchmarks import them from one place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

import sqlalchemy as sa

from benchmarks.welcome.bench_welcome import (
    BotProcess,
    _die_with_parent,
    _free_port,
    _ms,
    _schema_url,
    cli,
    cpu_probe,
    cpu_seconds,
    drop_namespace,
    machine_facts,
    pct,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "BENCHMARKS.md"
CLI = str(ROOT / ".venv" / "bin" / "wecom-bot")

free_port = _free_port
die_with_parent = _die_with_parent
fmt_ms = _ms
schema_url = _schema_url

__all__ = [
    "CLI",
    "DOCS",
    "ROOT",
    "BotProcess",
    "cli",
    "cpu_probe",
    "cpu_seconds",
    "die_with_parent",
    "drop_namespace",
    "fmt_ms",
    "free_port",
    "loadavg",
    "machine_facts",
    "pct",
    "postgres_schema",
    "rss_mb",
    "schema_url",
    "wait_healthy",
    "write_section",
]


@contextlib.contextmanager
def postgres_schema(base_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL schema named after the benchmark; its URL is yielded, the schema dropped after."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(schema_url(base_url, "public"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema_url(base_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _rss_kib(pid_dir: Path) -> int:
    """VmRSS of one /proc/<pid> entry in KiB (0 when it has none, e.g. a zombie or a kernel thread)."""
    for line in (pid_dir / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_mb(groups: Mapping[str, int], pids: Mapping[str, int]) -> dict[str, float]:
    """Resident memory in MB per process group (all its processes, e.g. gunicorn's master and workers)
    and per single process, from /proc."""
    by_pgid = {pgid: name for name, pgid in groups.items()}
    by_pid = {pid: name for name, pid in pids.items()}
    totals = dict.fromkeys([*groups, *pids], 0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            pid = int(entry.name)
            name = by_pid.get(pid)
            if name is None:
                stat = (entry / "stat").read_text()
                name = by_pgid.get(int(stat[stat.rindex(")") + 2 :].split()[2]))
            if name is not None:
                totals[name] += _rss_kib(entry)
    return {name: kib / 1024 for name, kib in totals.items()}


def write_section(heading: str, begin: str, end: str, body: str, path: Path = DOCS) -> None:
    """Put `body` between the markers of section `heading` (appending the section if absent),
    keeping the other sections and any hand-written text around the markers."""
    block = f"{begin}\n{body}{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        path.write_text(text.rstrip("\n") + f"\n\n{heading}\n\n" + block)
        return
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = "".join(lines[start:stop])
    if begin in section and end in section:
        head, _, rest = section.partition(begin)
        _, _, tail = rest.partition(end)
        section = head + block.rstrip("\n") + tail
    else:
        section = f"{heading}\n\n" + block
    if stop < len(lines) and not section.endswith("\n\n"):
        section = section.rstrip("\n") + "\n\n"
    path.write_text("".join(lines[:start]) + section + "".join(lines[stop:]))


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
