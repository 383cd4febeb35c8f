"""Migrations are the only way the schema is made: one head, upgrade/downgrade round trip, models in step."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bot.db import Database, alembic_config, downgrade, migrate, schema_status
from models import Base


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_schema_matches_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_downgrade_roundtrip(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    current, head = schema_status(engine)
    assert current == head
    migrate(engine)  # idempotent
    downgrade(engine, "base")
    assert schema_status(engine)[0] is None
    assert sa.inspect(engine).get_table_names() == ["alembic_version"]
    migrate(engine)
    assert "inbound_events" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_long_reads_do_not_hold_the_write_lock(db: Database) -> None:
    from models.audit import AuditEntry
    from models.base import utcnow

    with db.read() as reader:
        reader.execute(sa.select(sa.func.count()).select_from(AuditEntry))
        # This would wait for the reader if reads took SQLite's write lock.
        with db.transaction() as writer:
            writer.add(AuditEntry(at=utcnow(), actor="t", action="t", target="t", detail={}))
    with db.read() as reader:
        assert reader.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 1


def test_the_reset_between_tests_empties_every_table_and_restarts_ids(db: Database) -> None:
    from models.audit import AuditEntry
    from models.base import utcnow
    from models.ledger import LedgerEntry
    from tests.conftest import _truncate

    def entry() -> AuditEntry:
        return AuditEntry(at=utcnow(), actor="t", action="t", target="t", detail={})

    def next_id() -> int:
        with db.transaction() as session:
            row = entry()
            session.add(row)
            session.flush()
            return row.id

    with db.transaction() as session:  # the ledger refuses DELETE on PostgreSQL: the reset truncates
        session.add_all(
            [entry(), entry(), LedgerEntry(seq=1, entry_type="message", prev_hash="0", entry_hash="1")]
        )
    _truncate(db)
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(LedgerEntry)) == 0
    assert next_id() == 1
    _truncate(db)

    with pytest.raises(sa.exc.IntegrityError), db.transaction() as session:
        refused = sa.insert(AuditEntry).values(at=utcnow(), actor=None, action="t", target="t", detail={})
        session.execute(refused)  # refused for the missing actor, after taking an id
    _truncate(db)
    assert next_id() == 1
