"""Bulk writes of plain rows for planners and the ledger: COPY on PostgreSQL, executemany elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, Text, any_, bindparam, cast, func, insert, select, text
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
    if session.get_bind().dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        session.execute(insert(table_of(model)), list(rows))
        return
    insert_columns(session, model, {}, {name: [row[name] for row in rows] for name in rows[0]})


def insert_columns(
    session: Session,
    model: type[Base] | Table,
    shared: Mapping[str, Any],
    varying: Mapping[str, Sequence[Any]],
) -> None:
    """Insert rows given by column: `shared` values are the same in every row, `varying` holds one
    equally long list per other column (a planner builds its batch this way, with no dict per row).

    The PostgreSQL form of `insert_rows`; elsewhere the columns are zipped into rows for one executemany.
    """
    table = table_of(model)
    counts = {len(values) for values in varying.values()}
    if len(counts) > 1:
        raise ValueError(f"insert_columns: columns of different lengths {sorted(counts)}")
    overlap = sorted(shared.keys() & varying.keys())
    if overlap:
        raise ValueError(f"insert_columns: {', '.join(overlap)} both shared and varying")
    count = counts.pop() if counts else 0
    if not count:
        return
    bind = session.get_bind()
    driver = session.connection().connection.driver_connection if bind.dialect.name == "postgresql" else None
    # In a pipeline every insert takes the driver's own path (SQLAlchemy would wait for its results).
    if driver is None or (count < COPY_MIN_ROWS and not driver.pgconn.pipeline_status):
        names = list(varying)
        rows = [
            {**shared, **dict(zip(names, values, strict=True))}
            for values in zip(*varying.values(), strict=True)
        ]
        session.execute(insert(table), rows)
        return
    # A column holding the same object in every row (a batch's text, script, timestamps) is sent once.
    same = [name for name, values in varying.items() if all(v is values[0] for v in values)]
    if len(same) == len(varying):  # identical rows: one column still carries the row count
        same.pop()
    shared = {**shared, **{name: varying[name][0] for name in same}}
    varying = {name: values for name, values in varying.items() if name not in shared}
    given = {*shared, *varying}
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in given and isinstance(c.default, ScalarElementColumnDefault)
    }
    everything = {**shared, **defaults}
    with driver.cursor() as cursor:
        if shared or driver.pgconn.pipeline_status:  # COPY cannot run in a pipeline
            statement, params = _unnest_insert(table, bind.dialect, varying, everything)
            cursor.execute(statement, params)
        else:
            _copy(cursor, table, bind.dialect, varying, defaults)


@contextmanager
def pipelined(session: Session) -> Iterator[None]:
    """Bulk writes inside go to PostgreSQL without waiting for one another (pipeline mode), so the
    server writes one while Python prepares the next; an error is raised by the end of the block.
    Elsewhere it changes nothing."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.pipeline():
        yield


def _processor(table: Table, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    column_type = table.c[name].type
    return json.dumps if isinstance(column_type, JSON) else column_type.bind_processor(dialect)


def _converted(processor: Callable[[Any], Any] | None, values: Sequence[Any]) -> Sequence[Any]:
    """`values` as the driver wants them; a batch repeats a few objects (a task's params, one
    timestamp), so each distinct object is converted once."""
    if processor is None:
        return values
    done: dict[int, Any] = {}  # by id(): every value is alive in `values` meanwhile
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        key = id(value)
        converted = done.get(key, _converted)
        if converted is _converted:
            converted = done[key] = processor(value)
        out.append(converted)
    return out


# Separates the values of a text array sent as one string; never inside a value (checked).
_SEPARATOR = "\x1f"


def _delimited(values: Sequence[Any]) -> tuple[str, str] | None:
    """`values` as one string the server splits into an array, and its separator; None if they cannot be.

    psycopg builds an array parameter element by element in Python; a join runs in C, so plain
    texts (none empty or holding the separator) and integers travel this way, at a third of the cost.
    """
    kinds = set(map(type, values))
    if kinds == {int}:
        return ",".join(map(str, values)), ","
    if values and all(issubclass(kind, str) for kind in kinds) and "" not in values:
        joined = _SEPARATOR.join(values)
        if joined.count(_SEPARATOR) == len(values) - 1:
            return joined, _SEPARATOR
    return None


def _array(param: str, values: Sequence[Any], sql_type: str) -> tuple[str, Any]:
    """One column's values as an array parameter of `sql_type`: its SQL source and the parameter."""
    delimited = _delimited(values)
    if delimited is not None:
        joined, separator = delimited
        return f"CAST(string_to_array(%({param})s, chr({ord(separator)})) AS {sql_type}[])", joined
    # %b: packed binary rather than text with every element escaped.
    return f"CAST(%({param})b AS {sql_type}[])", values


def array_param(values: Sequence[Any], element_type: Any) -> ColumnElement[Any]:
    """`values` as one PostgreSQL array parameter of `element_type`, sent as `_delimited` says."""
    delimited = _delimited(values)
    if delimited is None:
        return bindparam(None, list(values), type_=ARRAY(element_type))
    joined, separator = delimited
    split = func.string_to_array(bindparam(None, joined, type_=Text), func.chr(ord(separator)))
    return cast(split, ARRAY(element_type))


def _unnest_insert(
    table: Table, dialect: Dialect, varying: Mapping[str, Sequence[Any]], shared: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """`INSERT … SELECT` of one array parameter per varying column and one parameter per shared one."""
    quote = dialect.identifier_preparer.quote
    params: dict[str, Any] = {}
    selected: list[str] = []
    sources: list[str] = []
    for i, (name, column) in enumerate(varying.items()):
        column_type = table.c[name].type
        values = _converted(_processor(table, name, dialect), column)
        if isinstance(column_type, JSON):  # sent as text, read as JSON by the server
            source, params[f"v{i}"] = _array(f"v{i}", values, "text")
            selected.append(f"CAST(u.v{i} AS {column_type.compile(dialect)})")
        else:
            source, params[f"v{i}"] = _array(f"v{i}", values, column_type.compile(dialect))
            selected.append(f"u.v{i}")
        sources.append(source)
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
    varying: Mapping[str, Sequence[Any]],
    defaults: Mapping[str, Any],
) -> None:
    """Stream the rows with COPY (every given column varies: nothing to send once but defaults)."""
    names = [*varying, *defaults]
    columns = [_converted(_processor(table, name, dialect), values) for name, values in varying.items()]
    constants = tuple(
        value if value is None or processor is None else processor(value)
        for processor, value in ((_processor(table, name, dialect), defaults[name]) for name in defaults)
    )
    quote = dialect.identifier_preparer.quote
    statement = (
        f"COPY {dialect.identifier_preparer.format_table(table)} "
        f"({', '.join(quote(name) for name in names)}) FROM STDIN"
    )
    with cursor.copy(statement) as copy:
        for values in zip(*columns, strict=True):
            copy.write_row(values + constants)


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
        return column == any_(array_param(values, column.type))
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
        # The sequence is looked up once (MATERIALIZED: not inlined into every row), not per id; the
        # ids come back as one text, split in C.
        sequence = f"pg_get_serial_sequence('{table.fullname}', '{pk.name}')::regclass"
        draw = text(
            f"WITH q AS MATERIALIZED (SELECT {sequence} AS s)"
            " SELECT string_agg(nextval(q.s)::text, ',') FROM q, generate_series(1, :n)"
        )
        return list(map(int, str(session.scalar(draw, {"n": count})).split(",")))
    top = int(session.scalar(select(func.coalesce(func.max(pk), 0))) or 0)
    return list(range(top + 1, top + 1 + count))
