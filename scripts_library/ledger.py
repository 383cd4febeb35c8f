"""The append-only send ledger: hash-chained appends, chain verification and regulator exports.

Each row's `entry_hash` is sha256(prev_hash + canonical JSON of its content), so altering, removing
or reordering a row breaks the chain. Outcomes never update a message row: they are appended as
`outcome` rows whose `ref_seq` names the message. The caller owns the session and the transaction.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Literal, NamedTuple, TextIO

from sqlalchemy import ColumnElement, RowMapping, and_, event, select, text
from sqlalchemy.orm import Session, SessionTransaction, aliased

from models.base import utcnow
from models.bulk import insert_columns
from models.ledger import LedgerEntry

GENESIS_HASH = "0" * 64
# Arbitrary but fixed: every process appending to the ledger serializes on this advisory lock.
LEDGER_LOCK_KEY = 0x5E4D_1ED6_E800_0001
MESSAGE, OUTCOME = "message", "outcome"

# The hashed fields, fixed forever: adding a column to the table must not change old rows' hashes.
HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "recorded_at",
    "entry_type",
    "ref_seq",
    "recipient",
    "sender",
    "channel",
    "script_key",
    "script_version",
    "content_hash",
    "approval_id",
    "rendered_text",
    "lint_verdict",
    "lexicon_version",
    "wecom_id",
    "outcome",
    "detail",
)
EXPORT_FIELDS: tuple[str, ...] = (*HASHED_FIELDS, "prev_hash", "entry_hash")
_COLUMNS = tuple(getattr(LedgerEntry, name) for name in EXPORT_FIELDS)

ExportFormat = Literal["csv", "jsonl"]


class MessageIdentity(NamedTuple):
    """Who a ledger message went to, from and how: copied onto its outcome rows."""

    recipient: str
    sender: str
    channel: str


class OutcomeRecord(NamedTuple):
    """What became of one ledger message, for `append_outcomes`."""

    ref_seq: int
    outcome: str
    message: MessageIdentity
    wecom_id: str = ""
    detail: str = ""


class LedgerError(ValueError):
    """A ledger operation was asked for something invalid."""


def format_time(value: datetime) -> str:
    """Render an aware datetime in the one fixed UTC format used for hashing and export."""
    if value.tzinfo is None:
        raise LedgerError("naive datetimes are not recorded; pass an aware UTC datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value: Any) -> Any:
    return format_time(value) if isinstance(value, datetime) else value


_SORTED_FIELDS = tuple(sorted(HASHED_FIELDS))
# Built once (json.dumps with options builds an encoder per call); keys are handed over sorted.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def canonical_json(fields: Mapping[Any, Any]) -> str:
    """The canonical JSON of an entry's hashed fields (sorted keys, compact, UTF-8 text)."""
    return _CANONICAL.encode({name: _plain(fields[name]) for name in _SORTED_FIELDS})


def _encoded(value: Any) -> str:
    """One plain value as `canonical_json` writes it."""
    if type(value) is str:
        return encode_basestring(value)
    if type(value) is int:
        return int.__repr__(value)
    return _CANONICAL.encode(value)


def _encoded_column(values: Sequence[Any]) -> list[bytes]:
    """`_encoded` of each value, as UTF-8."""
    kinds = set(map(type, values))
    if kinds == {str}:  # the usual columns (recipient, sender, detail), in C-level passes
        return list(map(str.encode, map(encode_basestring, values)))
    if kinds == {int}:
        return list(map(str.encode, map(int.__repr__, values)))
    return [_encoded(value).encode("utf-8") for value in values]


def _canonical_columns(
    shared: Mapping[str, Any], varying: Mapping[str, Sequence[Any]], count: int
) -> list[bytes]:
    """`canonical_json` of `count` entries given by column, as UTF-8, values already plain (timestamps
    as text).

    The same output, built from a template: the shared values (one rendered text, one script, one
    timestamp) are encoded once for the batch, and each entry only fills in what varies. Bytes, as
    they are hashed: encoding a whole entry per row would cost more than hashing it.
    """
    parts: list[str] = []
    for name in _SORTED_FIELDS:
        key = encode_basestring(name)
        if name in varying:
            parts.append(f"{key}:%s")
        else:
            parts.append(f"{key}:{_encoded(shared[name])}".replace("%", "%%"))
    template = ("{" + ",".join(parts) + "}").encode("utf-8")
    columns = [_encoded_column(varying[name]) for name in _SORTED_FIELDS if name in varying]
    if not columns:
        return [template % ()] * count
    return [template % values for values in zip(*columns, strict=True)]


def compute_hash(prev_hash: str, fields: Mapping[Any, Any]) -> str:
    """sha256 hex of the previous entry's hash followed by this entry's canonical JSON."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


_HEAD = "ledger.head"  # session.info key: (seq, hash) of the last entry appended in this transaction


@event.listens_for(Session, "after_transaction_end")
def _forget_head(session: Session, transaction: SessionTransaction) -> None:
    # The cached head is only good while this transaction holds the ledger lock.
    if transaction.parent is None or transaction.nested:  # not flush()'s inner transactions
        session.info.pop(_HEAD, None)


def _head(session: Session) -> tuple[int, str]:
    cached: tuple[int, str] | None = session.info.get(_HEAD)
    if cached is not None:
        return cached
    if session.get_bind().dialect.name == "postgresql":
        # Held to commit, and under READ COMMITTED the head read after it sees the last committed
        # append. SQLite needs nothing: the app's transactions BEGIN IMMEDIATE. Unique seq backstops both.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_LOCK_KEY})
    head = session.execute(
        select(LedgerEntry.seq, LedgerEntry.entry_hash).order_by(LedgerEntry.seq.desc()).limit(1)
    ).first()
    return (head.seq, head.entry_hash) if head else (0, GENESIS_HASH)


def hold(session: Session) -> None:
    """Take the ledger's append lock now, for the rest of the transaction (PostgreSQL; SQLite's
    writing transactions are serialized anyway).

    Work that must see every message committed before it and decide before anyone appends more
    (a planner checking caps) holds it from its first read; its own appends then chain as usual.
    """
    if _HEAD not in session.info:
        session.flush()  # appends still pending in the session are part of the head read below
        session.info[_HEAD] = _head(session)


def _append(session: Session, now: datetime | None, fields: dict[str, Any]) -> LedgerEntry:
    # Entries are flushed with the rest of the transaction (several appends become one INSERT).
    seq, prev_hash = _head(session)
    fields = {**fields, "seq": seq + 1, "recorded_at": now or utcnow()}
    entry = LedgerEntry(**fields, prev_hash=prev_hash, entry_hash=compute_hash(prev_hash, fields))
    session.add(entry)
    session.info[_HEAD] = (entry.seq, entry.entry_hash)
    return entry


def append_message(
    session: Session,
    *,
    recipient: str,
    sender: str,
    channel: str,
    script_key: str,
    script_version: int | None,
    content_hash: str,
    approval_id: int | None,
    rendered_text: str,
    lint_verdict: str,
    lexicon_version: str,
    wecom_id: str = "",
    outcome: str = "queued",
    detail: str = "",
    now: datetime | None = None,
) -> LedgerEntry:
    """Append one outbound message to the chain (before it is sent) and return the new row."""
    return _append(
        session,
        now,
        {
            "entry_type": MESSAGE,
            "ref_seq": None,
            "recipient": recipient,
            "sender": sender,
            "channel": channel,
            "script_key": script_key,
            "script_version": script_version,
            "content_hash": content_hash,
            "approval_id": approval_id,
            "rendered_text": rendered_text,
            "lint_verdict": lint_verdict,
            "lexicon_version": lexicon_version,
            "wecom_id": wecom_id,
            "outcome": outcome,
            "detail": detail,
        },
    )


# What one message of `append_messages` must and may carry (the rest of its row is the ledger's).
MESSAGE_REQUIRED: frozenset[str] = frozenset(
    (
        "recipient",
        "sender",
        "channel",
        "script_key",
        "script_version",
        "content_hash",
        "approval_id",
        "rendered_text",
        "lint_verdict",
        "lexicon_version",
    )
)
MESSAGE_OPTIONAL: dict[str, str] = {"wecom_id": "", "outcome": "queued", "detail": ""}


def append_messages(
    session: Session, messages: Sequence[Mapping[str, Any]], now: datetime | None = None
) -> list[int]:
    """Append many outbound messages as one INSERT and return their seqs, in order.

    Each message carries `append_message`'s fields. The chain continues from this transaction's
    head, ORM-pending appends included, and the next append of either kind continues after it.
    """
    if not messages:
        return []
    allowed = MESSAGE_REQUIRED | MESSAGE_OPTIONAL.keys()
    checked: Any = None  # the key set last found valid: a batch's messages usually share theirs
    for i, message in enumerate(messages):  # all checked before anything is written
        if message.keys() == checked:
            continue
        missing, unknown = sorted(MESSAGE_REQUIRED - message.keys()), sorted(message.keys() - allowed)
        if missing or unknown:
            wrong = [f"missing {missing}"] * bool(missing) + [f"unknown {unknown}"] * bool(unknown)
            raise LedgerError(f"message {i}: {', '.join(wrong)}")
        checked = message.keys()
    entries = [{**MESSAGE_OPTIONAL, **message} for message in messages]
    columns = {name: [entry[name] for entry in entries] for name in entries[0]}
    return append_message_columns(session, {}, columns, now)


def append_message_columns(
    session: Session,
    shared: Mapping[str, Any],
    varying: Mapping[str, Sequence[Any]],
    now: datetime | None = None,
) -> list[int]:
    """`append_messages` given by column: `shared` fields are the same for every message, `varying`
    holds one equally long list per other field (a mass send's batch, with no dict per message)."""
    given = shared.keys() | varying.keys()
    missing, unknown = (
        sorted(MESSAGE_REQUIRED - given),
        sorted(given - MESSAGE_REQUIRED - MESSAGE_OPTIONAL.keys()),
    )
    both = sorted(shared.keys() & varying.keys())
    if missing or unknown or both:
        wrong = [f"missing {missing}"] * bool(missing) + [f"unknown {unknown}"] * bool(unknown)
        wrong += [f"both shared and varying {both}"] * bool(both)
        raise LedgerError(f"messages: {', '.join(wrong)}")
    counts = {len(values) for values in varying.values()}
    if len(counts) != 1:
        reason = f"fields of different lengths {sorted(counts)}" if counts else "no field by column"
        raise LedgerError(f"messages: {reason} (the columns carry one value per message)")
    defaults = {name: value for name, value in MESSAGE_OPTIONAL.items() if name not in given}
    fields = {**defaults, **shared, "entry_type": MESSAGE, "ref_seq": None}
    return _write_chain(session, fields, varying, now)


def append_outcomes(
    session: Session, outcomes: Sequence[OutcomeRecord], now: datetime | None = None
) -> list[int]:
    """Append what became of many messages as one INSERT (a sender's batch) and return their seqs."""
    for record in outcomes:  # all checked before anything is written
        if not record.outcome:
            raise LedgerError(f"an outcome is required (message {record.ref_seq})")
    if not outcomes:
        return []
    fields: dict[str, Any] = {"entry_type": OUTCOME, "script_key": "", "script_version": None,
                              "content_hash": "", "approval_id": None, "rendered_text": "",
                              "lint_verdict": "", "lexicon_version": ""}  # fmt: skip
    varying: dict[str, list[Any]] = {
        "ref_seq": [r.ref_seq for r in outcomes],
        "recipient": [r.message.recipient for r in outcomes],
        "sender": [r.message.sender for r in outcomes],
        "channel": [r.message.channel for r in outcomes],
        "wecom_id": [r.wecom_id for r in outcomes],
        "outcome": [r.outcome for r in outcomes],
        "detail": [r.detail for r in outcomes],
    }
    return _write_chain(session, fields, varying, now)


def _write_chain(
    session: Session, shared: dict[str, Any], varying: Mapping[str, Sequence[Any]], now: datetime | None
) -> list[int]:
    """Chain entries given by column (every hashed field but seq and recorded_at) after the head and
    write them."""
    count = len(next(iter(varying.values()))) if varying else 0
    if not count:
        return []
    recorded_at = now or utcnow()
    stamp = format_time(recorded_at)  # hashed as text: formatted once, not per row
    if _HEAD not in session.info:
        session.flush()  # appends still pending in the session are part of the head read below
    head, prev_hash = _head(session)
    first = head + 1
    seqs = list(range(first, first + count))
    columns = {**varying, "seq": seqs}
    sha256 = hashlib.sha256
    prev_hashes, entry_hashes = [], []
    prev = prev_hash.encode("ascii")
    for hashed in _canonical_columns({**shared, "recorded_at": stamp}, columns, count):
        entry_hash = sha256(prev + hashed).hexdigest()
        prev_hashes.append(prev_hash)
        entry_hashes.append(entry_hash)
        prev_hash, prev = entry_hash, entry_hash.encode("ascii")
    # Core, no RETURNING: one INSERT of arrays on PostgreSQL, else one executemany.
    insert_columns(
        session,
        LedgerEntry,
        {**shared, "recorded_at": recorded_at},
        {**columns, "prev_hash": prev_hashes, "entry_hash": entry_hashes},
    )
    session.info[_HEAD] = (seqs[-1], prev_hash)
    return seqs


def append_outcome(
    session: Session,
    ref_seq: int,
    outcome: str,
    wecom_id: str = "",
    detail: str = "",
    now: datetime | None = None,
    message: MessageIdentity | None = None,
) -> LedgerEntry:
    """Append what became of message `ref_seq` (sent, failed, ...); the message row is never changed.

    `message` is the message's recipient, sender and channel when the caller already has them
    (a delivery row records them); otherwise they are read from the ledger.
    """
    if not outcome:
        raise LedgerError("an outcome is required")
    if message is None:
        found = session.execute(
            select(LedgerEntry.recipient, LedgerEntry.sender, LedgerEntry.channel).where(
                LedgerEntry.seq == ref_seq, LedgerEntry.entry_type == MESSAGE
            )
        ).first()
        if found is None:
            raise LedgerError(f"no ledger message with seq {ref_seq}")
        message = MessageIdentity(found.recipient, found.sender, found.channel)
    return _append(
        session,
        now,
        {
            "entry_type": OUTCOME,
            "ref_seq": ref_seq,
            # Copied so a per-recipient or per-channel query sees outcomes without a join.
            "recipient": message.recipient,
            "sender": message.sender,
            "channel": message.channel,
            "script_key": "",
            "script_version": None,
            "content_hash": "",
            "approval_id": None,
            "rendered_text": "",
            "lint_verdict": "",
            "lexicon_version": "",
            "wecom_id": wecom_id,
            "outcome": outcome,
            "detail": detail,
        },
    )


def _rows(session: Session, where: tuple[ColumnElement[bool], ...], batch: int) -> Iterator[RowMapping]:
    """Rows in seq order, `batch` at a time by keyset, so memory stays constant however long the ledger."""
    last: int | None = None
    while True:
        stmt = select(*_COLUMNS).where(*where).order_by(LedgerEntry.seq).limit(batch)
        if last is not None:
            stmt = stmt.where(LedgerEntry.seq > last)
        rows = session.execute(stmt).mappings().all()
        if not rows:
            return
        yield from rows
        last = rows[-1]["seq"]


@dataclass(frozen=True)
class Problem:
    """One integrity problem: the seq it concerns, its kind and what is wrong."""

    seq: int
    kind: str  # altered | broken_link | missing | bad_reference | anchor
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    """What verification found, and the head (seq, hash) to anchor outside the database."""

    count: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return not self.problems


def verify(session: Session, batch: int = 5000, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Walk the chain in seq order; report altered, unlinked, missing rows and dangling outcomes.

    `anchor` is a (seq, entry_hash) recorded outside the database earlier: rows removed from the
    end of the chain, or a chain rewritten wholesale, are only detectable against it.
    """
    report = VerifyReport()
    problems = report.problems
    anchor_found = False
    for row in _rows(session, (), batch):
        seq = row["seq"]
        if seq > report.head_seq + 1:
            first, last = report.head_seq + 1, seq - 1
            span = f"seq {first}" if first == last else f"seq {first}..{last} ({last - first + 1} rows)"
            problems.append(Problem(seq, "missing", f"{span} missing before this row"))
        elif row["prev_hash"] != report.head_hash:
            before = f"entry {report.head_seq}'s hash" if report.head_seq else "the genesis hash"
            problems.append(Problem(seq, "broken_link", f"prev_hash does not match {before}"))
        if compute_hash(row["prev_hash"], row) != row["entry_hash"]:
            problems.append(Problem(seq, "altered", "contents do not match entry_hash"))
        if anchor is not None and seq == anchor[0]:
            anchor_found = True
            if row["entry_hash"] != anchor[1]:
                problems.append(Problem(seq, "anchor", "entry_hash differs from the anchored hash"))
        report.count += 1
        report.head_seq, report.head_hash = seq, row["entry_hash"]
    if anchor is not None and not anchor_found:
        problems.append(Problem(anchor[0], "anchor", "anchored row is gone (ledger truncated?)"))

    message = aliased(LedgerEntry)
    dangling = (
        select(LedgerEntry.seq, LedgerEntry.ref_seq)
        .outerjoin(
            message,
            and_(
                message.seq == LedgerEntry.ref_seq,
                message.entry_type == MESSAGE,
                message.seq < LedgerEntry.seq,
            ),
        )
        .where(LedgerEntry.entry_type == OUTCOME, message.seq.is_(None))
    )
    for seq, ref_seq in session.execute(dangling):
        problems.append(Problem(seq, "bad_reference", f"outcome references no earlier message {ref_seq}"))
    problems.sort(key=lambda p: p.seq)
    return report


def export(
    session: Session,
    since: datetime,
    until: datetime,
    fmt: ExportFormat,
    out: TextIO,
    batch: int = 5000,
) -> int:
    """Stream entries recorded in [since, until) to `out` as CSV or JSON Lines; return how many.

    Every column is written, hashes included, with times in the hashing format, so a recipient can
    recompute each entry_hash from a JSONL export.
    """
    if fmt not in ("csv", "jsonl"):
        raise LedgerError(f"unknown export format {fmt!r}: use csv or jsonl")
    where = (LedgerEntry.recorded_at >= since, LedgerEntry.recorded_at < until)
    writer = csv.DictWriter(out, EXPORT_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    for row in _rows(session, where, batch):
        record = {name: _plain(row[name]) for name in EXPORT_FIELDS}
        if writer is not None:
            writer.writerow(record)
        else:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count
