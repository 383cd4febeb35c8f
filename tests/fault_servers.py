"""Private Redis servers for the fault tests, so outages never touch the machine's shared services."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis


def real_servers_pass() -> None:
    """Skip unless this is the PostgreSQL + Redis pass: the outage tests need real servers."""
    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the PostgreSQL + Redis pass (TEST_DATABASE_URL and TEST_REDIS_URL)")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, timeout_s: float, what: str) -> None:
    """Call `check` until it stops raising; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()  # type: ignore[operator]
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: {exc}")
            time.sleep(0.05)


class PrivateRedis:
    """A throw-away redis-server on its own port that a test can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the Redis outage test cannot run")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (no persistence) and wait until it answers."""
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_for(client.ping, 10, "the private redis-server never answered")
        client.close()

    def stop(self) -> None:
        """Stop the server; its data is gone (as after a crash without persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    """A started private Redis, stopped on exit."""
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (run as the `postgres` user) that a test can stop and start."""

    def __init__(self) -> None:
        for name in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / name).exists():
                pytest.fail(f"{PG_BIN / name} is missing: the PostgreSQL outage test cannot run")
        if shutil.which("runuser") is None:
            pytest.fail("runuser is missing: the private PostgreSQL cannot be started as `postgres`")
        # Outside pytest's private tmp tree: the `postgres` user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="wecom-bot-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, user="postgres", group="postgres")
        options = ["-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8"]
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, *options)

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: object) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"{command[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` is a crash (recovery runs at the next start)."""
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private PostgreSQL, removed on exit."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
