"""The send ledger: hash chain, tamper detection, the append-only trigger, concurrency and export."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.cli import main
from bot.db import Database
from models.ledger import LedgerEntry
from scripts_library.ledger import (
    EXPORT_FIELDS,
    GENESIS_HASH,
    HASHED_FIELDS,
    LedgerError,
    MessageIdentity,
    OutcomeRecord,
    _canonical_columns,
    append_message,
    append_message_columns,
    append_messages,
    append_outcome,
    append_outcomes,
    canonical_json,
    compute_hash,
    export,
    verify,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def message(session: Session, text: str = "您好，本周投教直播周四 20:00", **overrides: Any) -> LedgerEntry:
    fields: dict[str, Any] = {
        "recipient": "wm_customer_1",
        "sender": "sales.zhang",
        "channel": "external_contact",
        "script_key": "edu.weekly",
        "script_version": 3,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "approval_id": 7,
        "rendered_text": text,
        "lint_verdict": "pass",
        "lexicon_version": "2026.11",
        **overrides,
    }
    return append_message(session, **fields)


def seed(db: Database, n: int) -> None:
    with db.transaction() as session:
        for i in range(n):
            message(session, f"第 {i} 条", now=T0 + timedelta(days=i))


def tamper(db: Database, sql: str, **params: Any) -> None:
    """Change the ledger as someone with DBA rights could: on PostgreSQL, around the trigger."""
    trigger = "TRIGGER send_ledger_no_update_delete"
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(sa.text(f"ALTER TABLE send_ledger DISABLE {trigger}"))
        conn.execute(sa.text(sql), params)
        if db.is_postgres:
            conn.execute(sa.text(f"ALTER TABLE send_ledger ENABLE {trigger}"))


def problems(db: Database, anchor: tuple[int, str] | None = None) -> list[tuple[int, str]]:
    with db.transaction() as session:
        return [(p.seq, p.kind) for p in verify(session, batch=2, anchor=anchor).problems]


def test_appends_form_a_chain_from_genesis_that_verifies(db: Database) -> None:
    with db.transaction() as session:
        first = message(session)
        second = message(session, "第二条")
        outcome = append_outcome(session, first.seq, "sent", wecom_id="msgid-1")
    with db.transaction() as session:
        rows = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
        report = verify(session, batch=2)  # several pages
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in rows[1:]] == [r.entry_hash for r in rows[:-1]]
    assert [r.entry_hash for r in rows] == [first.entry_hash, second.entry_hash, outcome.entry_hash]
    assert report.ok and report.count == 3
    assert (report.head_seq, report.head_hash) == (3, outcome.entry_hash)


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_json(db: Database) -> None:
    beijing = timezone(timedelta(hours=8))
    at = datetime(2026, 3, 1, 16, 30, 5, 120000, tzinfo=beijing)  # hashed as UTC
    with db.transaction() as session:
        entry = message(session, "投资有风险", now=at)
    expected = {
        "seq": 1,
        "recorded_at": "2026-03-01T08:30:05.120000Z",
        "entry_type": "message",
        "ref_seq": None,
        "recipient": "wm_customer_1",
        "sender": "sales.zhang",
        "channel": "external_contact",
        "script_key": "edu.weekly",
        "script_version": 3,
        "content_hash": hashlib.sha256("投资有风险".encode()).hexdigest(),
        "approval_id": 7,
        "rendered_text": "投资有风险",
        "lint_verdict": "pass",
        "lexicon_version": "2026.11",
        "wecom_id": "",
        "outcome": "queued",
        "detail": "",
    }
    body = json.dumps(expected, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert entry.entry_hash == hashlib.sha256((GENESIS_HASH + body).encode()).hexdigest()
    assert problems(db) == []  # the same hash after the round trip through the database


def test_hashed_fields_cover_every_column() -> None:
    columns = {c.name for c in LedgerEntry.__table__.columns}
    assert set(HASHED_FIELDS) == columns - {"id", "prev_hash", "entry_hash"}
    assert set(EXPORT_FIELDS) == columns - {"id"}


def test_naive_times_are_refused(db: Database) -> None:
    with pytest.raises(LedgerError, match="naive"), db.transaction() as session:
        message(session, now=datetime(2026, 1, 1))


def test_a_row_edited_in_the_database_is_detected(db: Database) -> None:
    seed(db, 4)
    tamper(db, "UPDATE send_ledger SET rendered_text = :t WHERE seq = 2", t="保证收益 20%")
    assert problems(db) == [(2, "altered")]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(db: Database) -> None:
    seed(db, 4)
    with db.transaction() as session:
        row = session.scalars(select(LedgerEntry).where(LedgerEntry.seq == 2)).one()
        fields = {name: getattr(row, name) for name in HASHED_FIELDS} | {"rendered_text": "改过的"}
        forged = compute_hash(row.prev_hash, fields)
    tamper(db, "UPDATE send_ledger SET rendered_text = '改过的', entry_hash = :h WHERE seq = 2", h=forged)
    assert problems(db) == [(3, "broken_link")]


def test_a_deleted_row_is_reported_missing(db: Database) -> None:
    seed(db, 5)
    tamper(db, "DELETE FROM send_ledger WHERE seq IN (2, 3)")
    with db.transaction() as session:
        report = verify(session, batch=2)
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "missing")]
    assert "seq 2..3 (2 rows) missing" in str(report.problems[0])
    assert report.count == 3 and report.head_seq == 5


def test_removing_the_tail_is_caught_by_the_anchored_head(db: Database) -> None:
    seed(db, 3)
    with db.transaction() as session:
        head = verify(session)
    anchor = (head.head_seq, head.head_hash)
    assert problems(db, anchor) == []
    tamper(db, "DELETE FROM send_ledger WHERE seq = 3")
    assert problems(db) == []  # the chain alone cannot tell its end was cut off
    assert problems(db, anchor) == [(3, "anchor")]


def test_update_and_delete_are_refused_on_postgres_and_detected_elsewhere(db: Database) -> None:
    seed(db, 2)
    update = "UPDATE send_ledger SET outcome = 'sent' WHERE seq = 1"
    delete = "DELETE FROM send_ledger WHERE seq = 1"
    if db.is_postgres:
        for sql in (update, delete):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as conn:
                conn.execute(sa.text(sql))
        assert problems(db) == []
    else:  # SQLite has no trigger: the change goes through and verify must catch it
        with db.engine.begin() as conn:
            conn.execute(sa.text(update))
        assert problems(db) == [(1, "altered")]
        with db.engine.begin() as conn:
            conn.execute(sa.text(delete))
        assert problems(db) == [(2, "missing")]


def test_concurrent_appends_yield_one_unbroken_chain(db: Database) -> None:
    threads, per_thread = 6, 8
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def append(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with db.transaction() as session:
                    message(session, f"线程 {n} 第 {i} 条", recipient=f"wm_{n}")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=append, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with db.transaction() as session:
        report = verify(session, batch=7)
        seqs = list(session.scalars(select(LedgerEntry.seq).order_by(LedgerEntry.seq)))
    assert report.ok, report.problems
    assert seqs == list(range(1, threads * per_thread + 1))


def test_outcomes_are_appended_and_reference_their_message(db: Database) -> None:
    with db.transaction() as session:
        sent = message(session)
        outcome = append_outcome(session, sent.seq, "sent", wecom_id="msgid-9", detail="errcode 0")
        with pytest.raises(LedgerError, match="no ledger message with seq 99"):
            append_outcome(session, 99, "sent")
        with pytest.raises(LedgerError, match="no ledger message"):
            append_outcome(session, outcome.seq, "failed")  # an outcome is not a message
        with pytest.raises(LedgerError, match="outcome is required"):
            append_outcome(session, sent.seq, "")
    with db.transaction() as session:
        stored = session.scalars(select(LedgerEntry).where(LedgerEntry.seq == sent.seq)).one()
        stored_outcome = session.scalars(select(LedgerEntry).where(LedgerEntry.seq == outcome.seq)).one()
    assert stored.outcome == "queued" and stored.wecom_id == ""  # the message row is never updated
    assert (stored_outcome.entry_type, stored_outcome.ref_seq) == ("outcome", sent.seq)
    assert (stored_outcome.outcome, stored_outcome.wecom_id) == ("sent", "msgid-9")
    assert stored_outcome.recipient == stored.recipient
    assert problems(db) == []


def test_an_outcome_whose_message_was_removed_is_reported(db: Database) -> None:
    with db.transaction() as session:
        sent = message(session)
        append_outcome(session, sent.seq, "sent")
    tamper(db, "DELETE FROM send_ledger WHERE seq = 1")
    assert problems(db) == [(2, "missing"), (2, "bad_reference")]


def _export(db: Database, since: datetime, until: datetime, fmt: Any) -> str:
    out = io.StringIO(newline="")
    with db.transaction() as session:
        export(session, since, until, fmt, out, batch=2)
    return out.getvalue()


def test_export_csv_and_jsonl_round_trip_within_the_window(db: Database) -> None:
    with db.transaction() as session:
        for day in range(5):
            sent = message(session, f"第 {day} 天\n第二行, 含逗号", now=T0 + timedelta(days=day))
        append_outcome(session, sent.seq, "failed", detail="errcode 45009", now=T0 + timedelta(days=5))
    since, until = T0 + timedelta(days=1), T0 + timedelta(days=4)  # [since, until)
    lines = _export(db, since, until, "jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == [2, 3, 4]
    assert list(records[0]) == list(EXPORT_FIELDS)
    assert records[0]["recorded_at"] == "2026-01-02T00:00:00.000000Z"
    assert records[0]["rendered_text"] == "第 1 天\n第二行, 含逗号"
    for record in records:  # a regulator can recompute each hash from the export alone
        assert compute_hash(record["prev_hash"], record) == record["entry_hash"]
    assert records[1]["prev_hash"] == records[0]["entry_hash"]

    rows = list(csv.DictReader(io.StringIO(_export(db, since, until, "csv"), newline="")))
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in records]
    assert rows == as_text
    everything = _export(db, T0, T0 + timedelta(days=6), "jsonl").splitlines()
    assert json.loads(everything[-1])["entry_type"] == "outcome"
    with pytest.raises(LedgerError, match="unknown export format"):
        _export(db, since, until, "xml")


def test_cli_verify_prints_the_head_and_fails_on_tampering(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    seed(db, 3)
    result = runner.invoke(main, ["ledger", "verify"], env=env)
    assert result.exit_code == 0, result.output
    assert "entries: 3" in result.output and "ledger intact" in result.output
    head = next(line for line in result.output.splitlines() if line.startswith("head: ")).split()[1]
    assert head.startswith("3:")

    tamper(db, "UPDATE send_ledger SET recipient = 'someone_else' WHERE seq = 2")
    tamper(db, "DELETE FROM send_ledger WHERE seq = 3")
    result = runner.invoke(main, ["ledger", "verify", "--anchor", head], env=env)
    assert result.exit_code == 1
    assert "seq 2: altered" in result.output and "seq 3: anchor" in result.output
    assert "FAILED: 2 problem(s)" in result.output
    result = runner.invoke(main, ["ledger", "verify", "--anchor", "3:nothex"], env=env)
    assert result.exit_code == 2 and "SEQ:HASH" in result.output


def test_cli_export_writes_csv_or_jsonl_and_rejects_bad_dates(
    runner: CliRunner, env: dict[str, str], db: Database, tmp_path: Path
) -> None:
    seed(db, 4)  # 2026-01-01 .. 2026-01-04, midnight UTC
    out = tmp_path / "ledger.csv"
    args = ["ledger", "export", "--since", "2026-01-02", "--until", "2026-01-04T00:00:00Z"]
    result = runner.invoke(main, [*args, "--format", "csv", "--output", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "exported 2 entries" in result.output
    with out.open(encoding="utf-8-sig", newline="") as f:
        assert [row["seq"] for row in csv.DictReader(f)] == ["2", "3"]

    # 08:00 Beijing on Jan 2 is midnight UTC: the window starts at the same instant.
    args = ["ledger", "export", "--since", "2026-01-02T08:00+08:00", "--until", "2026-01-05"]
    result = runner.invoke(main, [*args, "--format", "jsonl"], env=env)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [2, 3, 4]

    result = runner.invoke(
        main, ["ledger", "export", "--since", "yesterday", "--until", "2026-01-05"], env=env
    )
    assert result.exit_code == 2 and "'yesterday' is not an ISO date" in result.output
    result = runner.invoke(
        main, ["ledger", "export", "--since", "2026-02-01", "--until", "2026-01-01"], env=env
    )
    assert result.exit_code == 2 and "--since must be before --until" in result.output


def test_many_appends_in_one_transaction_and_a_rolled_back_savepoint_keep_one_chain(db: Database) -> None:
    with db.transaction() as session:
        for i in range(5):
            message(session, f"批内第 {i} 条")
        savepoint = session.begin_nested()
        message(session, "回滚的这一条")
        savepoint.rollback()
        message(session, "回滚之后")
    with db.transaction() as session:
        texts = session.scalars(select(LedgerEntry.rendered_text).order_by(LedgerEntry.seq)).all()
        assert texts == [f"批内第 {i} 条" for i in range(5)] + ["回滚之后"]
        result = verify(session)
        assert result.ok and result.count == 6


def bulk_fields(text: str, recipient: str = "wm_customer_1") -> dict[str, Any]:
    return {
        "recipient": recipient,
        "sender": "sales.zhang",
        "channel": "mass_template",
        "script_key": "morning.report",
        "script_version": 2,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "approval_id": 9,
        "rendered_text": text,
        "lint_verdict": "pass",
        "lexicon_version": "2026.11",
    }


def test_a_bulk_append_writes_exactly_the_rows_single_appends_would(db: Database) -> None:
    texts = ["早报一", "早报二", "早报三"]
    with db.transaction() as session:
        message(session, "之前的一条", now=T0)
        savepoint = session.begin_nested()
        singles = [
            append_message(session, **bulk_fields(t, f"wm_{i}"), detail=f"delivery run:1:{i}", now=T0)
            for i, t in enumerate(texts)
        ]
        session.flush()
        expected = [(e.seq, e.prev_hash, e.entry_hash) for e in singles]
        savepoint.rollback()
        seqs = append_messages(
            session,
            [{**bulk_fields(t, f"wm_{i}"), "detail": f"delivery run:1:{i}"} for i, t in enumerate(texts)],
            now=T0,
        )
        assert seqs == [2, 3, 4]
    with db.transaction() as session:
        rows = session.scalars(select(LedgerEntry).where(LedgerEntry.seq > 1).order_by(LedgerEntry.seq)).all()
        assert [(e.seq, e.prev_hash, e.entry_hash) for e in rows] == expected
        assert [(e.outcome, e.recipient, e.recorded_at) for e in rows] == [
            ("queued", f"wm_{i}", T0) for i in range(3)
        ]
        assert verify(session).ok


def test_bulk_and_single_appends_interleave_in_one_transaction_without_sharing_a_seq(db: Database) -> None:
    with db.transaction() as session:
        pending = message(session, "单条，尚未写入")  # added to the session, not flushed
        first = append_messages(session, [bulk_fields("批量一"), bulk_fields("批量二")], now=T0)
        middle = message(session, "单条，批量之后")
        outcome = append_outcome(session, first[1], "sent", now=T0)
        second = append_messages(session, [bulk_fields("批量三")], now=T0)
        assert (pending.seq, first, middle.seq, outcome.seq, second) == (1, [2, 3], 4, 5, [6])
    with db.transaction() as session:
        later = append_messages(session, [bulk_fields("下一个事务")], now=T0)  # head read from the table
        assert later == [7]
    with db.transaction() as session:
        rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        assert [e.seq for e in rows] == list(range(1, 8))
        assert rows[4].ref_seq == 3 and rows[4].recipient == "wm_customer_1"
        result = verify(session)
        assert result.ok and result.count == 7


def test_a_bulk_append_in_a_rolled_back_savepoint_leaves_no_gap(db: Database) -> None:
    with db.transaction() as session:
        append_messages(session, [bulk_fields("保留一")], now=T0)
        savepoint = session.begin_nested()
        assert append_messages(session, [bulk_fields("回滚一"), bulk_fields("回滚二")], now=T0) == [2, 3]
        savepoint.rollback()
        after = message(session, "回滚之后")
        assert append_messages(session, [bulk_fields("再批量")], now=T0) == [3]
        assert after.seq == 2
    with db.transaction() as session:
        texts = session.scalars(select(LedgerEntry.rendered_text).order_by(LedgerEntry.seq)).all()
        assert texts == ["保留一", "回滚之后", "再批量"]
        assert verify(session).ok


def test_a_bulk_append_with_a_bad_message_writes_nothing(db: Database) -> None:
    with db.transaction() as session:
        assert append_messages(session, [], now=T0) == []
        bad = {**bulk_fields("缺渠道"), "colour": "red"}
        del bad["channel"]
        with pytest.raises(LedgerError, match=r"message 1: missing \['channel'\], unknown \['colour'\]"):
            append_messages(session, [bulk_fields("好的"), bad], now=T0)
        with pytest.raises(LedgerError, match="naive"):
            append_messages(session, [bulk_fields("无时区")], now=datetime(2026, 1, 1))
    with db.transaction() as session:
        assert session.scalars(select(LedgerEntry)).all() == []


def test_messages_given_by_column_chain_like_single_appends_and_bad_columns_write_nothing(
    db: Database,
) -> None:
    shared = {k: v for k, v in bulk_fields("早报").items() if k not in ("recipient", "sender")}
    with db.transaction() as session:
        whole = {**shared, "recipient": "a", "sender": "z"}
        for common, bad, reason in (
            (shared, {"recipient": ["a", "b"], "sender": ["z"]}, "different lengths"),
            (whole, {}, "no field by column"),
            (shared, {"recipient": ["a"], "sender": ["z"], "channel": ["kf"]}, "both shared and varying"),
            (shared, {"recipient": ["a"], "sender": ["z"], "colour": ["red"]}, r"unknown \['colour'\]"),
        ):
            with pytest.raises(LedgerError, match=reason):
                append_message_columns(session, common, bad, now=T0)
        seqs = append_message_columns(
            session,
            shared,
            {"recipient": ["wm_1", "wm_2"], "sender": ["li", "zhang"], "detail": ["d1", "d2"]},
            now=T0,
        )
        single = append_message(session, **bulk_fields("早报", "wm_3"), now=T0)
    assert seqs == [1, 2] and single.seq == 3
    with db.read() as session:
        rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        assert [(r.recipient, r.sender, r.detail, r.rendered_text) for r in rows] == [
            ("wm_1", "li", "d1", "早报"),
            ("wm_2", "zhang", "d2", "早报"),
            ("wm_3", "sales.zhang", "", "早报"),
        ]
        assert [r.entry_hash for r in rows] == [
            compute_hash(r.prev_hash, {f: getattr(r, f) for f in HASHED_FIELDS}) for r in rows
        ]
    assert problems(db) == []


def test_bulk_outcomes_chain_like_single_ones_and_keep_their_references(db: Database) -> None:
    with db.transaction() as session:
        sent = [message(session, f"第 {i} 条") for i in range(3)]
        who = MessageIdentity("wm_customer_1", "sales.zhang", "external_contact")
        with pytest.raises(LedgerError, match="outcome is required"):
            append_outcomes(
                session, [OutcomeRecord(sent[0].seq, "sent", who), OutcomeRecord(sent[1].seq, "", who)]
            )
        seqs = append_outcomes(
            session,
            [
                OutcomeRecord(sent[0].seq, "sent", who, "msgid-1"),
                OutcomeRecord(sent[1].seq, "failed", who, detail="41050: welcome code expired"),
            ],
        )
        single = append_outcome(session, sent[2].seq, "sent", wecom_id="msgid-3")  # continues the chain
    assert seqs == [4, 5] and single.seq == 6
    with db.transaction() as session:
        rows = session.scalars(select(LedgerEntry).where(LedgerEntry.entry_type == "outcome")).all()
        assert [(r.seq, r.ref_seq, r.outcome, r.recipient) for r in rows] == [
            (4, 1, "sent", "wm_customer_1"),
            (5, 2, "failed", "wm_customer_1"),
            (6, 3, "sent", "wm_customer_1"),
        ]
    assert problems(db) == []


_JSON_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), _JSON_TEXT)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({name: _JSON_VALUE for name in HASHED_FIELDS}),
        min_size=1,
        max_size=6,
    ),
    st.sets(st.sampled_from(HASHED_FIELDS)),
)
def test_column_encoding_equals_canonical_json_entry_by_entry(
    entries: list[dict[str, Any]], shared_names: set[str]
) -> None:
    # Shared fields take the first entry's value everywhere; '%' and '"' in values must survive the template.
    for entry in entries[1:]:
        entry.update({name: entries[0][name] for name in shared_names})
    shared = {name: entries[0][name] for name in shared_names}
    varying = {name: [e[name] for e in entries] for name in HASHED_FIELDS if name not in shared_names}
    encoded = _canonical_columns(shared, varying, len(entries))
    assert encoded == [canonical_json(e).encode("utf-8") for e in entries]
