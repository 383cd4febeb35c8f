"""Bulk writes: COPY (PostgreSQL) and executemany (elsewhere) store exactly what the ORM would."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.db import Database
from models import bulk
from models.bulk import COPY_MIN_ROWS, insert_rows, one_of, reserve_ids
from models.deliveries import Delivery, DeliveryStatus

AT = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)
TEXT = "【晨报】今日要点\t制表符\n换行 \\ 反斜杠\r回车 'quote' \"double\""


def _row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "purpose_key": f"bulk:{i}",
        "channel": "mass_template",
        "recipient": f"wm{i:06d}",
        "sender": "zhangsan" if i % 2 else "",
        "script_key": "morning_report",
        "script_version": 1,
        "approval_id": 7,
        "content_hash": "c" * 64,
        "text": TEXT,
        "params": {"mass_task_id": i, "note": "中文", "nested": [1, None, True]},
        "lint_verdict": "pass",
        "created_at": AT + timedelta(microseconds=i),
        "next_attempt_at": AT,
        "deadline": None,
        **extra,
    }


@pytest.mark.parametrize("count", [3, COPY_MIN_ROWS + 36])
def test_inserted_rows_read_back_exactly_with_orm_defaults_filled(db: Database, count: int) -> None:
    rows = [_row(i) for i in range(count)]
    with db.transaction() as session:
        insert_rows(session, Delivery, rows)
    with db.read() as session:
        stored = session.scalars(select(Delivery).order_by(Delivery.purpose_key)).all()
    assert len(stored) == count
    by_key = {d.purpose_key: d for d in stored}
    for row in rows:
        d = by_key[row["purpose_key"]]
        assert (d.recipient, d.sender, d.text, d.params) == (
            row["recipient"],
            row["sender"],
            TEXT,
            row["params"],
        )
        assert d.created_at == row["created_at"] and d.next_attempt_at == AT and d.deadline is None
        # Not given: the model's Python-side defaults, as an ORM insert would have set them.
        assert (d.status, d.priority, d.attempts, d.lexicon_version, d.wecom_id) == (
            DeliveryStatus.QUEUED,
            100,
            0,
            "",
            "",
        )


def test_rows_with_nothing_in_common_and_rows_sharing_values_store_the_same(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every value its own object (streamed row by row), then the same values with the batch's common
    # ones shared (sent once and unnested by PostgreSQL): both must store what the ORM would.
    def fresh(i: int, prefix: str) -> dict[str, Any]:
        return {
            "purpose_key": f"{prefix}:{i}",
            "channel": "".join(("mass_", "template")),
            "recipient": f"wm{i:06d}",
            "sender": f"zhang{i}",
            "script_key": f"morning_report_{i}",
            "script_version": 1000 + i,
            "approval_id": 2000 + i,
            "content_hash": f"{i:064d}",
            "text": f"{TEXT}{i}",
            "params": {"i": i},
            "lint_verdict": f"pass{i}"[:16],
            "created_at": AT + timedelta(microseconds=i),
            "next_attempt_at": AT + timedelta(seconds=i),
            "deadline": AT + timedelta(days=i) if i % 3 else None,
            "ledger_seq": 10**12 + i if i % 2 else None,
            "status": "".join(("que", "ued")),
            "priority": 100 + i,
            "attempts": 1000 + i,
            "wecom_id": f"msg{i}",
            "lexicon_version": f"v{i}",
        }

    count = COPY_MIN_ROWS + 10
    separate = [fresh(i, "separate") for i in range(count)]
    text, at = f"{TEXT}!", AT + timedelta(hours=1)
    shared = [
        {**fresh(i, "shared"), "text": text, "next_attempt_at": at, "deadline": None} for i in range(count)
    ]
    ways: list[str] = []

    def spy(name: str) -> Any:
        original = getattr(bulk, name)

        def recorded(*args: Any) -> Any:
            ways.append(name)
            return original(*args)

        return recorded

    for name in ("_copy", "_unnest_insert"):
        monkeypatch.setattr(bulk, name, spy(name))
    with db.transaction() as session:
        insert_rows(session, Delivery, separate)
    with db.transaction() as session:
        insert_rows(session, Delivery, shared)
    assert ways == (["_copy", "_unnest_insert"] if db.engine.dialect.name == "postgresql" else [])
    columns = [k for k in separate[0] if k != "purpose_key"]
    with db.read() as session:
        stored = {d.purpose_key: d for d in session.scalars(select(Delivery))}
    for row in [*separate, *shared]:
        d = stored[row["purpose_key"]]
        assert {k: getattr(d, k) for k in columns} == {k: row[k] for k in columns}
        assert d.status == DeliveryStatus.QUEUED and d.error is None and d.errcode is None


def test_a_failing_bulk_insert_leaves_nothing(db: Database) -> None:
    rows = [_row(i) for i in range(COPY_MIN_ROWS + 1)]
    rows[-1]["purpose_key"] = rows[0]["purpose_key"]  # unique key violated by the last row
    with pytest.raises(Exception), db.transaction() as session:  # noqa: B017 (driver-specific error)
        insert_rows(session, Delivery, rows)
    with db.read() as session:
        assert session.scalars(select(Delivery.id)).all() == []


def test_reserved_ids_are_free_and_used_as_given(db: Database) -> None:
    with db.transaction() as session:
        insert_rows(session, Delivery, [_row(0)])
        ids = reserve_ids(session, Delivery, 70)
        assert len(set(ids)) == 70
        insert_rows(session, Delivery, [_row(i + 1, id=id_) for i, id_ in enumerate(ids)])
        session.add(Delivery(**_row(999)))  # the table's own ids carry on after the reserved ones
    with db.read() as session:
        stored = dict(session.execute(select(Delivery.purpose_key, Delivery.id)).all())
    assert [stored[f"bulk:{i + 1}"] for i in range(70)] == ids
    assert stored["bulk:999"] not in ids and stored["bulk:0"] not in ids
    with db.transaction() as session:
        assert reserve_ids(session, Delivery, 0) == []


def test_concurrent_reservations_never_overlap(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writing transactions; there is no concurrent reservation")
    found: list[list[int]] = []
    barrier = threading.Barrier(4)

    def reserve() -> None:
        with db.transaction() as session:
            barrier.wait(timeout=10)
            found.append(reserve_ids(session, Delivery, 500))

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(found) == 4
    flat = [i for ids in found for i in ids]
    assert len(flat) == len(set(flat)) == 2000


def test_one_of_matches_the_listed_values_only(db: Database) -> None:
    with db.transaction() as session:
        insert_rows(session, Delivery, [_row(i) for i in range(5)])
    with db.read() as session:
        wanted = ["wm000001", "wm000003", "nobody"]
        got = session.scalars(
            select(Delivery.recipient).where(one_of(session, Delivery.recipient, wanted))
        ).all()
        assert sorted(got) == ["wm000001", "wm000003"]
        assert session.scalars(select(Delivery.id).where(one_of(session, Delivery.recipient, []))).all() == []
