"""The two databases: the main one (pseudonymous) and the vault (personal data, encrypted).

Each request gets one session per database, opened on first use. The unit of work ends in
one place, ``finish_request``: on success the vault commits first, then the main database;
if the main commit fails, the vault rows the request created are deleted again, so no
personal data is left behind without its customer.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app, g
from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Models of the main database."""

    metadata = MetaData(naming_convention=NAMING)


class VaultBase(DeclarativeBase):
    """Models of the vault database."""

    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A moment, stored in UTC and read back as an aware UTC datetime on every database.

    SQLite keeps no offset: without this, 10:00+01:00 would be stored (and compared) as 10:00.
    A naive datetime given to it is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    # deleted rows are overwritten, not just unlinked: an erased customer's vault row does
    # not linger in free pages of the file (see ``shred_wal``)
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


class _HideRows(logging.Filter):
    """SQLAlchemy logs every result row at DEBUG (``"Row %r"``), whatever ``hide_parameters``
    says: survey answers, staff notes, ciphertext. Keep the line, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Row %r":
            record.msg, record.args = "Row (values hidden)", ()
        return True


logging.getLogger("sqlalchemy.engine.Engine").addFilter(_HideRows())


def make_engine(url: str, echo: bool = False) -> Engine:
    """Create an engine; SQLite files get WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # the files hold customer data: readable by the service's user only. Made here
            # only if missing: closing a descriptor of a database file drops every POSIX
            # lock this process holds on it, its open connections' too ("How To Corrupt An
            # SQLite Database File", 2.2), and another process could then write under them
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        engine = create_engine(url, echo=echo, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # hide_parameters: a failing statement's values never reach a log line
    return create_engine(url, echo=echo, hide_parameters=True, pool_pre_ping=True,
                         pool_size=5, max_overflow=5)


class Databases:
    """The engines of one app; ``init_app`` binds them and the request unit of work."""

    def __init__(self, main: Engine, vault: Engine) -> None:
        self.main = main
        self.vault = vault

    @classmethod
    def init_app(cls, app: Flask) -> Databases:
        echo = bool(app.config["SQL_ECHO"])
        dbs = cls(make_engine(app.config["DATABASE_URL"], echo),
                  make_engine(app.config["VAULT_URL"], echo))
        app.extensions["loyalty.db"] = dbs
        app.teardown_appcontext(_close_sessions)
        return dbs

    def dispose(self) -> None:
        self.main.dispose()
        self.vault.dispose()


def databases() -> Databases:
    return current_app.extensions["loyalty.db"]


def main_session() -> Session:
    """The request's session on the main database."""
    if "main_session" not in g:
        g.main_session = Session(databases().main, expire_on_commit=False)
    return g.main_session


def vault_session() -> Session:
    """The request's session on the vault database."""
    if "vault_session" not in g:
        g.vault_session = Session(databases().vault, expire_on_commit=False)
    return g.vault_session


def flush_or_replay(session: Session, replay: Callable[[], dict | None]) -> dict | None:
    """Flush the row that claims an event id; ``None`` if it was ours to claim.

    If a concurrent request with the same event id claimed it first (the unique constraint
    says so), roll back and return that request's recorded result from ``replay()``.
    """
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        previous = replay()
        if previous is None:
            raise
        return previous
    return None


# SQLSTATEs of a transaction PostgreSQL failed to break a deadlock or a serialization
# conflict: nothing of it was written, and running it again is the documented answer
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: OperationalError) -> bool:
    """Whether ``exc`` failed a transaction only to break a deadlock (or a serialization
    conflict), not because a database is away."""
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


# ``Session.info`` key: how to undo one event's writes when the request holds several (a
# batch of taps keeps each in a savepoint of the driver's, see server/taps/batch.py)
EVENT_UNDO = "loyalty.event_undo"


def undo_event(session: Session) -> None:
    """Undo what the current event wrote: the request's transaction (``Session.rollback``),
    or, in a batch, only this event's savepoint."""
    undo = session.info.get(EVENT_UNDO)
    if undo is None:
        session.rollback()
    else:
        undo()


def on_main_failure(undo: Callable[[Session], None]) -> None:
    """Register how to undo, in the vault, what this request wrote there, should main fail."""
    g.setdefault("vault_undo", []).append(undo)


def after_commit(step: Callable[[], None]) -> None:
    """Run ``step`` once the request's commits have succeeded (never on a failure)."""
    g.setdefault("after_commit", []).append(step)


def shred_wal(*engines: Engine) -> None:
    """Checkpoint and truncate SQLite write-ahead logs, after an erasure.

    The WAL keeps copies of pages as they were, ciphertext included, until it is checkpointed
    and reset; TRUNCATE copies the pages back (overwritten, thanks to secure_delete) and
    empties the file. Best effort: a long reader can make it partial, and the next erasure
    or the retention job tries again. PostgreSQL needs nothing here: a dump holds live rows
    only, and VACUUM reclaims dead ones.
    """
    for engine in engines:
        if engine.dialect.name != "sqlite":
            continue
        with engine.connect() as conn:
            busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if busy:
                log.warning("WAL checkpoint after erasure was partial (a reader was busy)")


def commit_writes(session: Session) -> None:
    """Commit the main database's writes now, before a read-only tail of the request.

    For the tap: the visit and its points are its only writes, and the record read after them
    needs no lock. SQLite has one write lock per file: held while the record is built, it made
    the other gunicorn worker sleep in SQLite's busy handler (1, 2, 5, 10 ms steps), and two
    workers served fewer taps than one (BENCHMARKS.md). Only for a request that wrote nothing
    to the vault, so that "vault first, then main" still holds; ``finish_request`` commits
    the rest (nothing, for a tap). Should the tail fail, the writes stand: an event id makes
    the retry a replay.
    """
    if g.get("vault_undo"):
        raise RuntimeError("this request wrote to the vault: main commits after it")
    session.flush()
    # the driver's commit, on the connection the session keeps: ``Session.commit`` would give
    # the connection back to the pool and check one out again for the record (a pre-ping and
    # a BEGIN more on PostgreSQL). The session's own transaction goes on and ends as usual.
    session.connection().connection.dbapi_connection.commit()


def finish_request(success: bool) -> None:
    """Commit (vault, then main) or roll back everything the request did. The one commit."""
    vault = g.pop("vault_session", None)
    main = g.pop("main_session", None)
    undo = g.pop("vault_undo", [])
    later = g.pop("after_commit", [])
    try:
        if not success:
            return
        if vault is not None:
            vault.commit()
        if main is not None:
            try:
                main.commit()
            except Exception:
                if undo:
                    log.error("main commit failed: undoing %d vault write(s)", len(undo))
                    with Session(databases().vault) as fix:
                        for step in undo:
                            step(fix)
                        fix.commit()
                raise
        for step in later:
            try:
                step()
            except Exception:  # committed already: the answer stays a success
                log.exception("a step after the commit failed")
    finally:
        for session in (vault, main):
            if session is not None:
                _close(session)


def _close(session: Session) -> None:
    """Close a session; a connection that died under it (a restart) is no error here.

    Closing rolls back what was not committed. On a dead connection the rollback fails, but
    the database has dropped that transaction already: the request's answer stands (a
    refusal stays a refusal) and the pool replaces the connection, which SQLAlchemy has
    invalidated.
    """
    try:
        session.close()
    except OperationalError as exc:
        log.warning("database connection lost before the end of the request: %s",
                    exc.orig.__class__.__name__ if exc.orig else exc.__class__.__name__)


def _close_sessions(_exc: BaseException | None) -> None:
    for name in ("vault_session", "main_session"):
        session = g.pop(name, None)
        if session is not None:
            session.rollback()
            session.close()
