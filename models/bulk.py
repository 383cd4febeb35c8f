"""Bulk writes of plain rows for planners and the ledger: COPY on PostgreSQL, executemany elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
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
    """Insert plain rows that all have the same keys: one COPY on PostgreSQL, else one executemany.

    COPY streams the rows with no per-row statement round and costs about a third of an executemany.
    Column defaults the ORM would fill in are applied here too (COPY only knows the database's own).
    """
    if not rows:
        return
    table = table_of(model)
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        session.execute(insert(table), list(rows))
        return
    dialect = bind.dialect
    names = list(rows[0])
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in rows[0] and isinstance(c.default, ScalarElementColumnDefault)
    }
    processors: list[Callable[[Any], Any] | None] = [
        json.dumps if isinstance(table.c[name].type, JSON) else table.c[name].type.bind_processor(dialect)
        for name in [*names, *defaults]
    ]
    width = len(names)
    constants = [v if p is None else p(v) for p, v in zip(processors[width:], defaults.values(), strict=True)]
    # Only some columns need converting (timestamps, JSON); a batch mostly repeats their values.
    converted = [(i, p) for i, p in enumerate(processors[:width]) if p is not None]
    memo: dict[int, tuple[Any, Any]] = {}
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in [*names, *defaults])
    driver = session.connection().connection.driver_connection
    assert driver is not None
    statement = f"COPY {dialect.identifier_preparer.format_table(table)} ({columns}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            values = list(row.values())
            for i, processor in converted:
                value = values[i]
                if value is not None:
                    seen = memo.get(i)
                    if seen is None or seen[0] is not value:
                        seen = memo[i] = (value, processor(value))
                    values[i] = seen[1]
            values += constants
            copy.write_row(values)


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
