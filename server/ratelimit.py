"""Request rate limits whose counters every worker and every node share.

The counting is the ``limits`` library's fixed window (a window opens with the first hit of a
key and lasts the limit's period). Where the counters live is ``RATELIMIT_URL``:

- ``redis://host:port/db`` (or any other ``limits`` storage URI: ``redis+sentinel://``,
  ``memcached://``, ...): a chain, where several nodes serve the same tills;
- an SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``): a table ``rate_limits`` in that
  database, made on first use; the default is ``sqlite:///<instance>/ratelimit.db``, a file of
  its own, so that the gunicorn workers of one machine count together without a write on the
  main database's file for every tap;
- ``memory://``: this process only. Only for a single process (tests, a development server):
  under gunicorn each worker would count alone.

Limits are strings in the ``limits`` notation (``"600/minute"``, ``"10/minute;120/hour"``);
an empty string turns that limit off. When the storage cannot be reached the request goes
through and the failure is logged: a till must not stop taking cards because Redis is down.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from server.api.problems import Problem

log = logging.getLogger(__name__)

EXTENSION = "loyalty.ratelimit"
# expired counters are deleted by every so many hits of a process
SWEEP_EVERY = 1000
# one hit: count it, or restart the window if it has ended
INCR = ("INSERT INTO rate_limits (key, count, expires_at) VALUES (:key, :amount, :end) "
        "ON CONFLICT (key) DO UPDATE SET "
        "count = CASE WHEN rate_limits.expires_at <= :now THEN :amount "
        "ELSE rate_limits.count + :amount END, "
        "expires_at = CASE WHEN rate_limits.expires_at <= :now THEN :end "
        "ELSE rate_limits.expires_at END "
        "RETURNING count")


class SQLStorage(Storage):
    """``limits`` storage in one SQL table: one upsert per hit, atomic on SQLite and PostgreSQL.

    The window's end is kept as seconds since the epoch; an expired row is restarted by the
    same statement that counts the hit, so no reader ever sees a stale count.
    """

    STORAGE_SCHEME = None  # made by ``make_storage``, never from a limits URI

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.url = url
        self._engine: Engine | None = None
        self._hits = 0

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = create_engine(self.url, pool_pre_ping=False)
            if engine.dialect.name == "sqlite":
                path = engine.url.database
                if path and path != ":memory:":  # the instance folder may not exist yet
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                @event.listens_for(engine, "connect")
                def _pragmas(dbapi_connection, _record):
                    cursor = dbapi_connection.cursor()
                    # counters need no durability: a crash loses at most a window's counts
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=OFF")
                    cursor.execute("PRAGMA busy_timeout=5000")
                    cursor.close()
            with engine.begin() as conn:
                conn.execute(text(
                    "CREATE TABLE IF NOT EXISTS rate_limits (key VARCHAR(255) PRIMARY KEY, "
                    "count INTEGER NOT NULL, expires_at DOUBLE PRECISION NOT NULL)"))
            self._engine = engine
        return self._engine

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        # on every tap: the driver's own cursor, not an SQLAlchemy statement (about ten times
        # cheaper here, see server/hotsql.py); the pool still hands out the connection
        now = time.time()
        params = {"key": key, "amount": amount, "now": now, "end": now + expiry}
        conn = self.engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(self._sql(INCR), params)
            count = cursor.fetchone()[0]
            self._hits += 1
            if self._hits % SWEEP_EVERY == 0:
                cursor.execute(self._sql("DELETE FROM rate_limits WHERE expires_at <= :now"),
                               {"now": now})
            cursor.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
        return int(count)

    def _sql(self, statement: str) -> str:
        """``:name`` parameters as the driver wants them (sqlite3 takes them as they are,
        psycopg as ``%(name)s``)."""
        if self.engine.dialect.name == "sqlite":
            return statement
        return re.sub(r":(\w+)", r"%(\1)s", statement)

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            count = conn.execute(text(
                "SELECT count FROM rate_limits WHERE key = :key AND expires_at > :now"),
                {"key": key, "now": time.time()}).scalar()
        return int(count or 0)

    def get_expiry(self, key: str) -> float:
        with self.engine.connect() as conn:
            end = conn.execute(text("SELECT expires_at FROM rate_limits WHERE key = :key"),
                               {"key": key}).scalar()
        return float(end) if end is not None else time.time()

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(text("DELETE FROM rate_limits")).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM rate_limits WHERE key = :key"), {"key": key})


def make_storage(url: str) -> Storage:
    """The storage named by ``url``: an SQLAlchemy URL, or any ``limits`` storage URI."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.split("+", 1)[0] in {"sqlite", "postgresql", "postgres"}:
        return SQLStorage(url)
    return storage_from_string(url)


@dataclass
class Limiter:
    """The app's limiter: one storage, the limits parsed once."""

    storage: Storage
    strategy: FixedWindowRateLimiter
    limits: dict[str, list[RateLimitItem]]

    def hit(self, name: str, *identifiers: object, cost: int = 1) -> None:
        """Count one request (``cost`` of them: a batch) against limit ``name`` for
        ``identifiers``.

        Raises:
            Problem: ``rate-limited`` with ``retry_after`` (whole seconds) when over a limit.
        """
        items = self.limits.get(name)
        if not items:
            return
        ids = [name, *(str(i) for i in identifiers)]
        try:
            for item in items:
                # a batch that does not fit is refused without spending the window on it
                if (cost > 1 and not self.strategy.test(item, *ids, cost=cost)) or \
                        not self.strategy.hit(item, *ids, cost=cost):
                    reset = self.strategy.get_window_stats(item, *ids).reset_time
                    retry = max(1, int(reset - time.time() + 0.999))
                    # the identifiers are ids and addresses, never a key or a name
                    log.info("rate limit %s (%s) reached by %s", name, item, "/".join(ids[1:]))
                    raise Problem("rate-limited", f"more than {item} for {name}: slow down",
                                  retry_after=retry)
        except Problem:
            raise
        except Exception as exc:  # noqa: BLE001 - a storage that is down lets requests through
            log.error("rate limit storage unavailable (%s): request let through",
                      exc.__class__.__name__)

    def most(self, name: str) -> int | None:
        """The fewest hits a window of limit ``name`` allows (``None``: the limit is off)."""
        items = self.limits.get(name)
        return min(item.amount for item in items) if items else None


# setting -> the limit's name in ``Limiter.limits``
SETTINGS = {"taps": "RATELIMIT_TAPS", "enrolments": "RATELIMIT_ENROLMENTS",
            "logins": "RATELIMIT_LOGINS"}


def init_app(app: Flask) -> None:
    """Parse the limits now (a typo fails at start); the storage connects on first use."""
    limits = {name: parse_many(str(app.config.get(key) or "")) if app.config.get(key) else []
              for name, key in SETTINGS.items()}
    storage = make_storage(str(app.config["RATELIMIT_URL"]))
    app.extensions[EXTENSION] = Limiter(storage, FixedWindowRateLimiter(storage), limits)


def most(name: str) -> int | None:
    """The fewest hits a window of limit ``name`` allows in the current app, or ``None``."""
    return current_app.extensions[EXTENSION].most(name)


def hit(name: str, *identifiers: object, cost: int = 1) -> None:
    """Count a request of the current app against limit ``name`` (see ``Limiter.hit``)."""
    current_app.extensions[EXTENSION].hit(name, *identifiers, cost=cost)
