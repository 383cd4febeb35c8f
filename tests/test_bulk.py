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


# Texts that must survive the trip as they are: empty, the separator a delimited array uses, commas,
# quotes, braces and backslashes (array syntax), non-ASCII.
_AWKWARD = ["", "\x1f", "a\x1fb", "a,b", '"q"', "{x}", "\\", "NULL", "中文 🙂", " padded "]


@pytest.mark.parametrize(
    "texts",
    [
        [f"wm{i:06d}" for i in range(COPY_MIN_ROWS + 6)],  # plain: one delimited string
        [_AWKWARD[i % len(_AWKWARD)] + str(i) * (i % 2) for i in range(COPY_MIN_ROWS + 6)],
        [None if i % 3 == 0 else f"s{i}" for i in range(COPY_MIN_ROWS + 6)],  # NULLs: a binary array
    ],
    ids=["plain", "awkward", "with-nulls"],
)
def test_columns_read_back_exactly_however_their_values_travel(db: Database, texts: list[str | None]) -> None:
    count = len(texts)
    with db.transaction() as session:
        bulk.insert_columns(
            session,
            Delivery,
            {k: v for k, v in _row(0).items() if k not in ("purpose_key", "recipient", "sender", "params")},
            {
                "purpose_key": [f"col:{i}" for i in range(count)],
                "recipient": [f"r{i}" if t is None else t for i, t in enumerate(texts)],
                "sender": [t or "" for t in texts],
                "params": [{"i": i} for i in range(count)],
                "ledger_seq": [None if i % 2 else 10**12 + i for i in range(count)],
                "wecom_id": [t if t is not None else "" for t in texts],
            },
        )
    with db.read() as session:
        stored = {d.purpose_key: d for d in session.scalars(select(Delivery))}
    for i, t in enumerate(texts):
        d = stored[f"col:{i}"]
        assert (d.recipient, d.sender, d.wecom_id) == (f"r{i}" if t is None else t, t or "", t or "")
        assert d.params == {"i": i} and d.ledger_seq == (None if i % 2 else 10**12 + i)
        assert d.text == TEXT and d.status == DeliveryStatus.QUEUED


def test_one_of_matches_awkward_texts_exactly(db: Database) -> None:
    rows = [_row(i, recipient=text) for i, text in enumerate(_AWKWARD)]
    with db.transaction() as session:
        insert_rows(session, Delivery, rows)
    with db.read() as session:
        for wanted in (_AWKWARD, ["a\x1fb", "中文 🙂"], ["a", "b"], ["{x}", "nobody"]):
            got = session.scalars(
                select(Delivery.recipient).where(one_of(session, Delivery.recipient, wanted))
            )
            assert sorted(got) == sorted(set(wanted) & set(_AWKWARD))


def test_columns_of_different_lengths_or_given_twice_are_refused(db: Database) -> None:
    with db.transaction() as session:
        with pytest.raises(ValueError, match="different lengths"):
            bulk.insert_columns(session, Delivery, {}, {"purpose_key": ["a", "b"], "recipient": ["x"]})
        with pytest.raises(ValueError, match="both shared and varying"):
            bulk.insert_columns(session, Delivery, {"recipient": "x"}, {"recipient": ["y"]})
    with db.read() as session:
        assert session.scalars(select(Delivery.id)).all() == []


def test_a_failure_inside_a_pipeline_is_raised_and_writes_nothing(db: Database) -> None:
    rows = [_row(i) for i in range(COPY_MIN_ROWS + 1)]
    clash = [{**row, "purpose_key": rows[0]["purpose_key"]} for row in rows[:1]] * (COPY_MIN_ROWS + 1)
    with (
        pytest.raises(Exception),  # noqa: B017 (driver-specific error)
        db.transaction() as session,
        bulk.pipelined(session),
    ):
        insert_rows(session, Delivery, rows)
        insert_rows(session, Delivery, clash)  # unique key: fails on the server, after the first
    with db.read() as session:
        assert session.scalars(select(Delivery.id)).all() == []
    with db.transaction() as session, bulk.pipelined(session):
        insert_rows(session, Delivery, rows)
    with db.read() as session:
        assert len(session.scalars(select(Delivery.id)).all()) == len(rows)
