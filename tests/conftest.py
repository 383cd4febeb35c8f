"""Shared fixtures: the same suite runs on SQLite or on PostgreSQL + Redis, chosen by environment.

TEST_DATABASE_URL=postgresql://... and TEST_REDIS_URL=redis://... select the real services; when
they are set the tests fail (not skip) if the services cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from bot.config import Settings
from bot.coordination import Coordinator, MemoryCoordinator
from bot.db import Database, migrate
from bot.services import Services

TEST_CORP_ID = "ww_test_corp"
TEST_TOKEN = "test-callback-token"
TEST_AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
TEST_AGENT_ID = 1000002


def _base_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", "")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database for this test session (a private PostgreSQL schema, or a SQLite file)."""
    base = _base_url()
    if not base:
        path = Path(tmp_path_factory.mktemp("db")) / "test.db"
        url = f"sqlite:///{path}"
        engine = Database(Settings().database.__class__(url=url)).engine
        migrate(engine)
        engine.dispose()
        yield url
        return
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://") :]
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"TEST_DATABASE_URL is set but PostgreSQL cannot be reached: {exc}")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


# werkzeug's default scrypt work factor (n=32768, 32 MiB) costs about 0.1 s a hash, and hundreds of
# tests create and sign in users. Tests hash with n=1024: still salted scrypt, checked by the same code.
TEST_PASSWORD_HASH = "scrypt:1024:8:1"


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """Hash test passwords with a low scrypt work factor (the check reads it from the hash)."""
    import bot.accounts

    def generate(password: str) -> str:
        return generate_password_hash(password, method=TEST_PASSWORD_HASH)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bot.accounts, "generate_password_hash", generate)
        patch.setattr(bot.accounts, "_DUMMY_HASH", generate("not-a-real-password"))
        yield


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL under test, or empty for in-process coordination; fails if set but unreachable."""
    url = os.environ.get("TEST_REDIS_URL", "")
    if url:
        import redis

        try:
            redis.Redis.from_url(url).ping()
        except redis.RedisError as exc:
            pytest.fail(f"TEST_REDIS_URL is set but Redis cannot be reached: {exc}")
    return url


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    """Settings for one test: test credentials, the session database, a private Redis namespace."""
    return Settings().replace(
        wecom={
            "corp_id": TEST_CORP_ID,
            "token": TEST_TOKEN,
            "encoding_aes_key": TEST_AES_KEY,
            "agent_id": TEST_AGENT_ID,
            "agent_secret": "agent-secret-for-tests",
            "max_clock_skew_s": 300,
        },
        database={"url": database_url, "pool_size": 5},
        redis={"url": redis_url, "namespace": f"test-{uuid.uuid4().hex[:8]}"},
        web={"secret_key": "test-secret-key"},
        worker={"backoff_base_s": 1.0, "lease_s": 30, "max_attempts": 3},
    )


@pytest.fixture(scope="session")
def _session_db(database_url: str) -> Iterator[Database]:
    db = Database(Settings().replace(database={"url": database_url, "pool_size": 5}).database)
    yield db
    db.dispose()


def _truncate(db: Database) -> None:
    """Empty the tables a test wrote to and restart their ids, as if the schema were new."""
    from models import Base

    tables = [t.name for t in Base.metadata.sorted_tables]
    with db.engine.begin() as conn:
        if not db.is_postgres:
            for name in reversed(tables):
                conn.execute(sa.text(f"DELETE FROM {name}"))
            return
        # Truncating costs PostgreSQL new files for each table and index (about 10 ms a table), and
        # a test writes to a few tables at most. A table's file is empty until a row is written to
        # it, even one rolled back, so an empty file means the table is as TRUNCATE left it.
        sizes = " UNION ALL ".join(f"SELECT '{name}', pg_relation_size('{name}')" for name in tables)
        written = [name for name, size in conn.execute(sa.text(sizes)) if size]
        if written:
            conn.execute(sa.text(f"TRUNCATE {', '.join(written)} RESTART IDENTITY CASCADE"))
        # An insert refused before it wrote (a NOT NULL column left empty) still used an id.
        used = sa.text(
            "SELECT sequencename FROM pg_sequences "
            "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
        )
        for sequence in conn.scalars(used).all():
            conn.execute(sa.text(f'ALTER SEQUENCE "{sequence}" RESTART'))


@pytest.fixture
def db(_session_db: Database) -> Iterator[Database]:
    """The session database, emptied after each test."""
    yield _session_db
    _truncate(_session_db)


@pytest.fixture
def coordinator(settings: Settings) -> Iterator[Coordinator]:
    """Redis coordination in a private namespace when configured, else in-process."""
    if settings.redis.url:
        from bot.coordination.redis import RedisCoordinator

        coord: Coordinator = RedisCoordinator(settings.redis.url, settings.redis.namespace)
    else:
        coord = MemoryCoordinator()
    yield coord
    coord.close()


@pytest.fixture
def services(settings: Settings, db: Database, coordinator: Coordinator) -> Services:
    """Wired services over the test database and coordinator."""
    return Services(settings, db=db, coordinator=coordinator)


@pytest.fixture
def env(services: Services) -> dict[str, str]:
    """Environment for running commands against the test database and Redis namespace."""
    s = services.settings
    return {
        "BOT_DATABASE__URL": s.database.url,
        "BOT_REDIS__URL": s.redis.url,
        "BOT_REDIS__NAMESPACE": s.redis.namespace,
        "BOT_CONFIG": "",
        "BOT_ADMIN_USERNAME": "",
        "BOT_ADMIN_PASSWORD": "",
    }


@pytest.fixture
def runner() -> CliRunner:
    """A click runner for the `wecom-bot` commands."""
    return CliRunner()
