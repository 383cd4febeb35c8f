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


def test_run_recipients_survive_the_move_to_run_and_lead_keys_and_back(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine, "0019")
    rows = [(1, 10, "mass"), (1, 11, "none"), (2, 10, "kf")]
    insert = sa.text("INSERT INTO run_recipients (run_id, lead_id, channel) VALUES (:r, :l, :c)")
    with engine.begin() as conn:
        conn.execute(insert, [{"r": r, "l": lead, "c": c} for r, lead, c in rows])
    migrate(engine)
    read = sa.text("SELECT run_id, lead_id, channel FROM run_recipients ORDER BY run_id, lead_id")
    with engine.begin() as conn:
        assert [tuple(row) for row in conn.execute(read)] == rows
        with pytest.raises(sa.exc.IntegrityError):  # (run, lead) is the key now
            conn.execute(insert, {"r": 1, "l": 10, "c": "mass"})
    downgrade(engine, "0019")
    with engine.begin() as conn:
        numbered = conn.execute(sa.text("SELECT id, run_id, lead_id FROM run_recipients ORDER BY id")).all()
        assert sorted((r, lead) for _, r, lead in numbered) == [(r, lead) for r, lead, _ in rows]
        assert len({i for i, _, _ in numbered}) == 3 and all(i is not None for i, _, _ in numbered)
    engine.dispose()


def test_ledger_rows_survive_the_move_to_seq_keys_and_back(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'l.db'}")
    migrate(engine, "0020")
    text_columns = ("recipient", "sender", "channel", "script_key", "content_hash", "rendered_text",
                    "lint_verdict", "lexicon_version", "wecom_id", "outcome", "detail")  # fmt: skip
    columns = ", ".join(("seq", "entry_type", "prev_hash", "entry_hash", "recorded_at", *text_columns))
    values = ", ".join(
        (":s", "'message'", ":p", ":e", "'2026-11-25 00:00:00'", *["'早报'"] * len(text_columns))
    )
    insert = sa.text(f"INSERT INTO send_ledger ({columns}) VALUES ({values})")
    with engine.begin() as conn:
        conn.execute(insert, [{"s": s, "p": f"p{s}", "e": f"e{s}"} for s in (1, 2)])
    migrate(engine)
    read = sa.text("SELECT seq, rendered_text, entry_hash FROM send_ledger ORDER BY seq")
    with engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(read)] == [(1, "早报", "e1"), (2, "早报", "e2")]
        with pytest.raises(sa.exc.IntegrityError):  # the seq is the key
            conn.execute(insert, {"s": 2, "p": "x", "e": "x"})
    downgrade(engine, "0020")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT id, seq FROM send_ledger ORDER BY seq")).all() == [(1, 1), (2, 2)]
    engine.dispose()
