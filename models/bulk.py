"""Bulk writes of plain rows for planners and the ledger: COPY on PostgreSQL, executemany elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from models.base import Base

# Below this many rows a prepared executemany costs no more than setting up a COPY.
COPY_MIN_ROWS = 64


def table_of(model: type[Base] | Table) -> Table:
    """The Core table behind a model class (or the table itself)."""
    table = model if isinstance(model, Table) else model.__table__
    assert isinstance(table, Table)
    return table


def insert_rows(session: Session, model: type[Base] | Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert plain rows that all have the same keys: one statement on PostgreSQL, else one executemany.

    On PostgreSQL the columns whose value is the same object in every row (a batch's rendered text,
    script, timestamps) are sent once, the others as one array each, unnested by the server
    (`INSERT … SELECT … FROM unnest(…)`); when every given column varies, the rows are streamed with COPY.
    Either way there is no per-row statement. Column defaults the ORM would fill in are applied here
    too (the server only knows its own).
    """
    if not rows:
        return
    table = table_of(model)
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        session.execute(insert(table), list(rows))
        return
    first = rows[0]
    names = list(first)
    common = {name: first[name] for name in names if all(row[name] is first[name] for row in rows)}
    shared = dict(common)
    shared.update(
        (c.name, c.default.arg)
        for c in table.columns
        if c.name not in first and isinstance(c.default, ScalarElementColumnDefault)
    )
    varying = [name for name in names if name not in shared]
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        if common and varying:
            statement, params = _unnest_insert(table, bind.dialect, rows, varying, shared)
            cursor.execute(statement, params)
        else:
            _copy(cursor, table, bind.dialect, rows, names, shared)


def _processor(table: Table, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    column_type = table.c[name].type
    return json.dumps if isinstance(column_type, JSON) else column_type.bind_processor(dialect)


def _converted(processor: Callable[[Any], Any] | None, values: list[Any]) -> list[Any]:
    """`values` as the driver wants them; a batch mostly repeats objects, so each is converted once."""
    if processor is None:
        return values
    out: list[Any] = []
    last: Any = _converted  # nothing equals this marker
    done: Any = None
    for value in values:
        if value is None:
            out.append(None)
            continue
        if value is not last:
            last, done = value, processor(value)
        out.append(done)
    return out


def _unnest_insert(
    table: Table,
    dialect: Dialect,
    rows: Sequence[Mapping[str, Any]],
    varying: list[str],
    shared: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """`INSERT … SELECT` of one array parameter per varying column and one parameter per shared one."""
    quote = dialect.identifier_preparer.quote
    params: dict[str, Any] = {}
    selected: list[str] = []
    sources: list[str] = []
    for i, name in enumerate(varying):
        column_type = table.c[name].type
        values = _converted(_processor(table, name, dialect), [row[name] for row in rows])
        params[f"v{i}"] = values
        # %b: arrays go in binary, packed, rather than as text with every element escaped.
        if isinstance(column_type, JSON):  # sent as text, read as JSON by the server
            sources.append(f"CAST(%(v{i})b AS text[])")
            selected.append(f"CAST(u.v{i} AS {column_type.compile(dialect)})")
        else:
            sources.append(f"CAST(%(v{i})b AS {column_type.compile(dialect)}[])")
            selected.append(f"u.v{i}")
    for i, (name, value) in enumerate(shared.items()):
        processor = _processor(table, name, dialect)
        params[f"s{i}"] = value if value is None or processor is None else processor(value)
        selected.append(f"CAST(%(s{i})s AS {table.c[name].type.compile(dialect)})")
    columns = ", ".join(quote(name) for name in [*varying, *shared])
    aliases = ", ".join(f"v{i}" for i in range(len(varying)))
    statement = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({columns}) "
        f"SELECT {', '.join(selected)} FROM unnest({', '.join(sources)}) AS u({aliases})"
    )
    return statement, params


def _copy(
    cursor: Any,
    table: Table,
    dialect: Dialect,
    rows: Sequence[Mapping[str, Any]],
    names: list[str],
    shared: Mapping[str, Any],
) -> None:
    """Stream the rows with COPY (every column varies: nothing to send once)."""
    extra = [name for name in shared if name not in names]
    constants = [
        v if v is None or p is None else p(v)
        for p, v in ((_processor(table, name, dialect), shared[name]) for name in extra)
    ]
    processors = [_processor(table, name, dialect) for name in names]
    converted = [(i, p) for i, p in enumerate(processors) if p is not None]
    memo: dict[int, tuple[Any, Any]] = {}
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in [*names, *extra])
    statement = f"COPY {dialect.identifier_preparer.format_table(table)} ({columns}) FROM STDIN"
    with cursor.copy(statement) as copy:
        for row in rows:
            values = [row[name] for name in names]
            for i, processor in converted:
                value = values[i]
                if value is not None:
                    seen = memo.get(i)
                    if seen is None or seen[0] is not value:
                        seen = memo[i] = (value, processor(value))
                    values[i] = seen[1]
            values += constants
            copy.write_row(values)


def conflict_insert(session: Session, model: type[Base] | Table) -> Any:
    """An INSERT of this session's dialect that takes ON CONFLICT (PostgreSQL's or SQLite's), for
    writes a unique key makes idempotent."""
    make = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return make(table_of(model))


def one_of(
    session: Session, column: ColumnElement[Any] | InstrumentedAttribute[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """`column IN values`, sent as one array parameter on PostgreSQL (no statement of a thousand
    parameters to build and parse) and as an expanding IN list elsewhere."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def reserve_ids(session: Session, model: type[Base] | Table, count: int) -> list[int]:
    """`count` fresh primary keys for rows this transaction is about to insert with explicit ids.

    PostgreSQL draws them from the column's sequence (concurrent writers never collide); SQLite
    writes one transaction at a time (BEGIN IMMEDIATE), so the ids after the current maximum are free.
    """
    if count <= 0:
        return []
    table = table_of(model)
    (pk,) = table.primary_key.columns
    if session.get_bind().dialect.name == "postgresql":
        sequence = f"pg_get_serial_sequence('{table.fullname}', '{pk.name}')"
        draw = text(f"SELECT nextval({sequence}) FROM generate_series(1, :n)")
        return [int(v) for v in session.scalars(draw, {"n": count})]
    top = int(session.scalar(select(func.coalesce(func.max(pk), 0))) or 0)
    return list(range(top + 1, top + 1 + count))
