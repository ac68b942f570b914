"""Statements of the hot path, compiled once and run on the session's DBAPI connection.

A tap runs about fifteen small statements. Through ``Session.execute`` each costs 90-300 µs of
Python on this machine (building the statement, its cache key, the ORM execution path, the
result object); the driver itself takes about 20 µs for an indexed read (BENCHMARKS.md). A
``Prepared`` statement is still written with SQLAlchemy Core (one definition, the same SQL on
SQLite and PostgreSQL), but compiled once per dialect: a call binds the parameters with the
columns' own type processors and hands the SQL to the driver's cursor, in the session's
transaction. Rows come back as plain tuples with named attributes, processed by the columns'
types (an aware UTC ``datetime`` from ``UTCDateTime`` on SQLite too).

Driver errors are raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``, …), like
the rest of the app sees them. No statement or parameter is logged here.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # bind names in order, for a positional paramstyle
    defaults: dict[str, Any]  # values the statement carries (``in_((...))``, constants)
    binds: dict[str, Any]  # bind name -> (the caller's key, type processor or None)
    columns: tuple[str, ...]
    results: tuple[Any, ...]  # one processor (or None) per column
    row: type


class Prepared:
    """One Core statement, compiled once per dialect, run on the driver's cursor."""

    __slots__ = ("statement", "_by_dialect")

    def __init__(self, statement) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        # the caller's parameters (by key); every other bind is a value the statement holds
        required = {}
        for bind, name in compiled.bind_names.items():
            if bind.required:
                if bind.expanding:
                    raise ValueError(f"{bind.key}: a list parameter cannot be prepared")
                required[name] = (bind.key,
                                  bind.type.dialect_impl(dialect).bind_processor(dialect))
        # literal lists (``in_((...))``) become one bind per item, once and for all
        state = compiled.construct_expanded_state(
            {key: None for key, _ in required.values()})
        defaults = {}
        for name, value in state.parameters.items():
            if name in required:
                continue
            process = state.processors.get(name)
            if process is None and name in compiled.binds:
                process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(
                    dialect)
            defaults[name] = process(value) if process is not None else value
        exported = list(self.statement.exported_columns)
        columns = tuple(c.key for c in exported)
        results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                        for c in exported)
        positional = tuple(state.positiontup) if state.positiontup is not None else None
        return _Compiled(state.statement, positional, defaults, required, columns, results,
                         namedtuple("Row", columns, rename=True))

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._by_dialect.get(dialect.name)
        if compiled is None:
            compiled = self._by_dialect[dialect.name] = self._compile(dialect)
        return compiled

    def _cursor(self, session: Session, params: dict[str, Any]):
        # what Session.execute would do first: pending ORM changes are written, so that a
        # read sees them (a tap's points credited, then its record read)
        if session.autoflush and (session.new or session.dirty or session.deleted):
            session.flush()
        connection = _connection(session)
        dialect = connection.dialect
        c = self._for(dialect)
        values = dict(c.defaults)
        for name, (key, process) in c.binds.items():
            value = params[key]
            values[name] = process(value) if process is not None else value
        args = tuple(values[name] for name in c.positional) if c.positional else values
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            execute(connection, cursor, c.sql, args)
        except DBAPIError:
            cursor.close()
            raise
        return cursor, c

    def _rows(self, c: _Compiled, rows) -> list:
        results = c.results
        if any(results):
            rows = [tuple(p(v) if p is not None else v for p, v in zip(results, r, strict=True))
                    for r in rows]
        return [c.row(*r) for r in rows]

    def all(self, session: Session, **params) -> list:
        """Every row, as named tuples."""
        cursor, c = self._cursor(session, params)
        try:
            return self._rows(c, cursor.fetchall())
        finally:
            cursor.close()

    def first(self, session: Session, **params):
        """The first row, or ``None``."""
        cursor, c = self._cursor(session, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else self._rows(c, [row])[0]

    def one(self, session: Session, **params):
        """Exactly one row (``LookupError`` if there is none)."""
        row = self.first(session, **params)
        if row is None:
            raise LookupError("no row")
        return row

    def scalar(self, session: Session, **params):
        """The first column of the first row, or ``None``."""
        row = self.first(session, **params)
        return None if row is None else row[0]

    def run(self, session: Session, **params) -> int:
        """Run a statement that returns no rows; its row count."""
        cursor, _c = self._cursor(session, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()


def execute(connection, cursor, sql: str, args=None) -> None:
    """``sql`` on a driver's ``cursor`` of ``connection``; the driver's errors raised as
    SQLAlchemy's (a database gone is then an ``OperationalError``, answered 503)."""
    dialect = connection.dialect
    try:
        if args is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, args)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error,
                                  hide_parameters=True, dialect=dialect) from exc


def _connection(session: Session):
    """The session's connection; looked up once per transaction of the session (asking the
    session each time cost a tenth of a tap's statements)."""
    transaction = session.get_transaction()
    cached = session.info.get("hotsql.connection")
    if transaction is not None and cached is not None and cached[0] is transaction:
        return cached[1]
    connection = session.connection()  # begins the session's transaction if needed
    session.info["hotsql.connection"] = (session.get_transaction(), connection)
    return connection
