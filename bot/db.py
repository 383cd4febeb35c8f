"""Engine and session factory; Alembic migrations are the only way the schema is made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

import migrations
from bot.config import DatabaseSettings

MIGRATIONS_DIR = Path(migrations.__file__).parent
READ_ONLY_OPTION = "wecom_bot_read_only"


def _sqlite_setup(engine: Engine) -> None:
    """Make SQLite safe for a web thread and a worker thread: WAL, busy wait, write-locking BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction never
        # fails with SQLITE_BUSY on lock upgrade. Read-only work (verify, export) must not
        # hold that lock, so it begins deferred and reads a WAL snapshot.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine for the configured URL with per-dialect settings."""
    url = settings.url
    if url.startswith("sqlite"):
        engine = create_engine(
            url, echo=settings.echo, connect_args={"check_same_thread": False, "timeout": 15}
        )
        _sqlite_setup(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # No pre-ping: it costs a round trip on every checkout, on the callback's hot path. A
    # connection lost to a database restart fails one request and invalidates the pool; WeCom's
    # retry of that callback lands on a fresh connection.
    size = settings.pool_size
    return create_engine(url, echo=settings.echo, pool_size=size, max_overflow=size, pool_recycle=1800)


class Database:
    """Owns the engine and hands out sessions; callers own transactions."""

    def __init__(self, settings: DatabaseSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        """Whether the database is PostgreSQL (row locks with SKIP LOCKED are available)."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session inside one transaction: commit on success, roll back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Yield a session for long reads that must not hold SQLite's write lock; never commits."""
        engine = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        with Session(engine) as session:  # closing it rolls the read transaction back
            yield session

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def alembic_config() -> AlembicConfig:
    """Return an Alembic config pointing at the packaged migrations."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (idempotent)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to `revision`."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def schema_status(engine: Engine) -> tuple[str | None, str | None]:
    """Return (current revision, head revision) so callers can tell whether migrations are due."""
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, script.get_current_head()
