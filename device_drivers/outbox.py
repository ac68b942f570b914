"""The till agent's durable outbox: taps, purchases and the day's sales without a card, which
wait out an outage of the service.

Two parts:

- ``Outbox`` keeps the events in a SQLite file (WAL). An event is added with
  ``synchronous=FULL``, so once ``add`` returns it survives a ``kill -9`` of the agent and a
  power cut; removing a delivered one needs no such care (lost, it is sent again and the
  service's ``event_id`` idempotency answers with the first result).
- ``Dispatcher`` puts one request on the wire at a time, in order. A new event goes straight
  to the service when nothing waits and nothing is in flight, written ahead in the outbox
  first (not synced: it outlives a ``kill -9``, and is synced if the send fails) and removed
  once answered, so that an agent killed while it is on the wire sends it again when it
  starts; otherwise, or when the service cannot be reached
  (no connection, timeout, 5xx), it joins the outbox behind the others. One sender thread
  replays the outbox oldest first, with backoff while the service is down: taps in a row go
  together in one ``POST /taps/batch`` (up to ``batch_max``), a purchase or a day's sales
  alone, in its place. A 4xx answer is final: that event is kept as ``failed`` for a person
  to see, and the next one goes (in a batch, each tap has its own answer; a batch refused
  whole goes again one tap at a time, and an older service without the batch route gets
  single events). So a purchase never overtakes an earlier tap, and each event reaches the
  service exactly once: a crash between sending and removing only re-sends the same
  ``event_id``.

The ``event_id`` is made when the tap is read or the purchase posted, before any attempt,
and travels with the event. Bodies are never logged: a card URL carries the card's token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from device_drivers.forwarder import ServerProblem, ServerUnavailable

log = logging.getLogger(__name__)

KINDS = ("tap", "purchase", "anonymous_sales")
TABLE = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('tap', 'purchase', 'anonymous_sales')),
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    problem TEXT,
    failed_at TEXT
);
"""
INDEX = "CREATE INDEX IF NOT EXISTS outbox_state_seq ON outbox (state, seq);"
SCHEMA = TABLE + INDEX
COLUMNS = ("seq, kind, event_id, body, created_at, attempts, last_error, state, problem, "
           "failed_at")


class OutboxError(Exception):
    """The outbox file cannot be opened or written (disk full, permissions, in use)."""


@dataclass(frozen=True)
class Item:
    """One event in the outbox."""

    seq: int
    kind: str
    event_id: str
    body: dict
    created_at: str
    attempts: int
    last_error: str | None
    state: str
    problem: dict | None = None

    def summary(self) -> dict:
        """What the local page and ``GET /queue`` show: no body (it may hold a card token)."""
        return {"seq": self.seq, "kind": self.kind, "event_id": self.event_id,
                "created_at": self.created_at, "attempts": self.attempts,
                "last_error": self.last_error, "state": self.state, "problem": self.problem}


def describe(problem: dict) -> str:
    """One line for a person: ``404 card-not-found: no such card``."""
    return f"{problem.get('status')} {problem.get('type')}: " \
           f"{problem.get('detail') or problem.get('title')}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Outbox:
    """The SQLite file of events waiting for the service, owned by one agent process.

    Args:
        path: the database file; its folder is created (mode 0700) and the file is 0600.
        keep_failed_days: refused events older than this are dropped when the file opens.

    Every method is thread-safe.
    """

    def __init__(self, path: str | os.PathLike, keep_failed_days: float = 30.0) -> None:
        self.path = Path(path)
        self.keep_failed_days = keep_failed_days
        self._lock = threading.RLock()
        self._durable: sqlite3.Connection | None = None  # adds: synchronous=FULL
        self._quick: sqlite3.Connection | None = None  # the rest: synchronous=NORMAL
        self._lock_fd: int | None = None
        self._next_seq = 0

    # -- opening ----------------------------------------------------------------------
    def open(self, wait: float = 10.0) -> Outbox:
        """Open (and create) the file; wait up to ``wait`` s for another agent to let go.

        Raises:
            OutboxError: the file cannot be created, or another process keeps it.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # created private before SQLite opens it; SQLite gives -wal and -shm the same mode
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OutboxError(f"cannot create the queue file {self.path}: {exc.strerror}") \
                from None
        # one sender per file: a second agent on the same queue would break the order. A
        # restarting worker may briefly overlap its predecessor, hence the wait.
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                    raise OutboxError(f"the queue file {self.path} is in use by another "
                                      "agent process") from None
                time.sleep(0.1)
        try:
            self._durable = self._connect("FULL")
            self._durable.executescript(SCHEMA)
            self._upgrade(self._durable)
            self._quick = self._connect("NORMAL")
            row = self._quick.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),"
                " coalesce((SELECT max(seq) FROM outbox), 0))").fetchone()
            self._next_seq = int(row[0])
            cutoff = (datetime.now(UTC) - timedelta(days=self.keep_failed_days)).isoformat()
            dropped = self._quick.execute(
                "DELETE FROM outbox WHERE state = 'failed' AND failed_at < ?", (cutoff,)).rowcount
            if dropped:
                log.info("dropped %d refused events older than %s days", dropped,
                         self.keep_failed_days)
        except sqlite3.Error as exc:
            self.close()
            raise OutboxError(f"cannot open the queue file {self.path}: {exc}") from None
        log.info("queue %s: %d waiting, %d refused", self.path, self.depth(), self.failed_count())
        return self

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """A queue file written by an older agent allows fewer kinds (its CHECK names only
        taps and purchases): rebuild the table with today's, keeping every row and its
        place, in one transaction (SQLite cannot change a CHECK in place)."""
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table'"
                           " AND name = 'outbox'").fetchone()[0]
        if all(f"'{kind}'" in sql for kind in KINDS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("ALTER TABLE outbox RENAME TO outbox_before")
            conn.execute(TABLE)
            conn.execute(f"INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS}"  # noqa: S608
                         " FROM outbox_before")
            conn.execute("DROP TABLE outbox_before")
            conn.execute(INDEX)
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
        log.info("queue file upgraded: it now also takes %s", ", ".join(KINDS))

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        # autocommit: each statement is its own transaction, committed when it returns
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def close(self) -> None:
        """Close the file and let another process have it; safe to call twice."""
        with self._lock:
            for conn in (self._quick, self._durable):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            self._quick = self._durable = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> Outbox:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self, durable: bool = False) -> sqlite3.Connection:
        conn = self._durable if durable else self._quick
        if conn is None:
            raise OutboxError("the queue is closed")
        return conn

    # -- writing ----------------------------------------------------------------------
    def reserve(self) -> int:
        """A place in the order for an event sent at once; ``add(seq=...)`` uses it if that
        attempt fails, so the event still goes before anything queued meanwhile."""
        with self._lock:
            self._next_seq += 1
            return self._next_seq

    def add(self, kind: str, body: dict, *, seq: int | None = None, attempts: int = 0,
            last_error: str | None = None, durable: bool = True) -> int:
        """Store an event durably (fsync) and return its place in the order.

        With ``durable`` false the write reaches the kernel but is not synced: it survives
        the agent's death (``kill -9``), not a power cut (the write-ahead of an event on the
        wire, see ``Dispatcher``).

        Args:
            kind: ``tap``, ``purchase`` or ``anonymous_sales``.
            body: the JSON body for the service, with its ``event_id``.
            seq: a place from ``reserve()``; a new one at the end by default.
            attempts: attempts already made.
            last_error: why the last attempt failed.

        Returns:
            The ``seq`` of the event (the existing one if its ``event_id`` is queued already).

        Raises:
            OutboxError: the event could not be written: it is not recorded.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event_id = str(body["event_id"])
        with self._lock:
            if seq is None:
                seq = self.reserve()
            try:
                cursor = self._conn(durable=durable).execute(
                    "INSERT INTO outbox (seq, kind, event_id, body, created_at, attempts,"
                    " last_error) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (event_id) DO NOTHING",
                    (seq, kind, event_id, json.dumps(body, separators=(",", ":")), _now(),
                     attempts, last_error))
                if cursor.rowcount == 0:
                    return self.find(event_id).seq
            except sqlite3.Error as exc:
                log.error("queue %s: cannot record an event: %s", self.path, exc)
                raise OutboxError(f"the event could not be recorded: {exc}") from None
            return seq

    def attempt_failed(self, seq: int, error: str, *, durable: bool = False) -> None:
        """Count a failed attempt at an event that stays pending; ``durable``: synced, with
        every write before it (an event written ahead, now queued)."""
        with self._lock:
            self._conn(durable=durable).execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (error, seq))

    def mark_failed(self, seq: int, problem: dict) -> None:
        """The service refused the event for good: keep it, out of the way, for a person."""
        error = describe(problem)
        with self._lock:
            self._conn().execute(
                "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?,"
                " problem = ?, failed_at = ? WHERE seq = ?",
                (error, json.dumps(problem), _now(), seq))

    def remove(self, seq: int) -> None:
        """The service has the event: forget it (losing this write only causes a replay)."""
        with self._lock:
            self._conn().execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def settle(self, delivered: list[int], refused: list[tuple[int, dict]]) -> None:
        """The outcome of a batch, in one transaction: forget the ``delivered`` events, keep
        the ``refused`` ones (``(seq, problem)``) for a person, as ``mark_failed`` does."""
        now = _now()
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in delivered])
                conn.executemany(
                    "UPDATE outbox SET state = 'failed', attempts = attempts + 1,"
                    " last_error = ?, problem = ?, failed_at = ? WHERE seq = ?",
                    [(describe(p), json.dumps(p), now, s) for s, p in refused])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def attempts_failed(self, seqs: list[int], error: str) -> None:
        """Count a failed attempt at each of ``seqs`` (a batch that did not get through)."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                    [(error, s) for s in seqs])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- reading ----------------------------------------------------------------------
    _COLUMNS = "seq, kind, event_id, body, created_at, attempts, last_error, state, problem"

    @staticmethod
    def _item(row: tuple) -> Item:
        seq, kind, event_id, body, created_at, attempts, last_error, state, problem = row
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        return Item(seq, kind, event_id, data, created_at, attempts, last_error, state,
                    json.loads(problem) if problem else None)

    def head(self) -> Item | None:
        """The oldest pending event, or ``None``."""
        with self._lock:
            row = self._conn().execute(
                f"SELECT {self._COLUMNS} FROM outbox WHERE state = 'pending'"  # noqa: S608
                " ORDER BY seq LIMIT 1").fetchone()
        return self._item(row) if row else None

    def find(self, event_id: str) -> Item | None:
        with self._lock:
            row = self._conn().execute(
                f"SELECT {self._COLUMNS} FROM outbox WHERE event_id = ?",  # noqa: S608
                (event_id,)).fetchone()
        return self._item(row) if row else None

    def pending(self, limit: int = 1000) -> list[Item]:
        """Pending events, oldest first."""
        with self._lock:
            rows = self._conn().execute(
                f"SELECT {self._COLUMNS} FROM outbox WHERE state = 'pending'"  # noqa: S608
                " ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [self._item(r) for r in rows]

    def failed(self, limit: int = 50) -> list[Item]:
        """Refused events, newest first."""
        with self._lock:
            rows = self._conn().execute(
                f"SELECT {self._COLUMNS} FROM outbox WHERE state = 'failed'"  # noqa: S608
                " ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [self._item(r) for r in rows]

    def depth(self) -> int:
        """How many events wait for the service."""
        with self._lock:
            return self._conn().execute(
                "SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0]

    def failed_count(self) -> int:
        with self._lock:
            return self._conn().execute(
                "SELECT count(*) FROM outbox WHERE state = 'failed'").fetchone()[0]


@dataclass
class Delivery:
    """What became of one event handed to the dispatcher.

    ``outcome`` is ``sent`` (``answer`` is the service's JSON), ``queued`` (recorded, sent
    when the service is back) or ``refused`` (``problem`` is the service's problem document).
    """

    outcome: str
    kind: str
    event_id: str
    seq: int | None = None
    answer: dict | None = None
    problem: dict | None = None
    depth: int = 0


def problem_dict(exc: ServerProblem) -> dict:
    """The parts of a service problem the agent keeps and shows (``type`` is its name)."""
    problem = {"status": exc.status, "type": exc.slug, "title": exc.title, "detail": exc.detail}
    if isinstance(exc.body.get("errors"), list):
        problem["errors"] = exc.body["errors"]
    return problem


def outcome_problem(problem: object) -> dict:
    """The problem of one refused event of a batch, in the form ``problem_dict`` gives."""
    body = problem if isinstance(problem, dict) else {}
    kept = {"status": body.get("status"), "type": str(body.get("type") or "").rsplit("/", 1)[-1],
            "title": body.get("title"), "detail": body.get("detail")}
    if isinstance(body.get("errors"), list):
        kept["errors"] = body["errors"]
    return kept


# a service without POST /taps/batch (older than the agent) is asked again after this long
BATCH_RETRY_AFTER = 600.0


class Dispatcher:
    """Sends events in order, at once when it can, through the outbox when it cannot.

    Args:
        outbox: an open ``Outbox``.
        post: ``post(kind, body) -> answer``; raises ``ServerUnavailable`` (try again later)
            or ``ServerProblem`` (final). Called by one thread at a time.
        post_batch: ``post_batch(bodies) -> outcomes`` for several taps at once (``POST
            /taps/batch``: one outcome dict per body, in order, with ``status`` ``recorded``,
            ``replayed`` or ``problem`` and then ``problem``); raises as ``post`` does. None:
            one event at a time.
        batch_max: the most taps in one batch; batch_bytes: about the most bytes of bodies.
        wait: how long ``submit`` waits for an event queued behind others to be delivered
            before answering ``queued``.
        backoff_min, backoff_max: seconds between attempts while the service is down
            (doubling, with jitter).
        observe: ``observe(kind, outcome, seconds)`` after each attempt (metrics); outcome is
            ``sent``, ``refused`` or ``unavailable``.
        on_change: ``on_change(item, delivery)`` after the sender delivered or gave up an
            outbox event (``item`` is None when only the connection state changed).
    """

    def __init__(self, outbox: Outbox, post: Callable[[str, dict], dict], *,
                 post_batch: Callable[[list[dict]], list[dict]] | None = None,
                 batch_max: int = 200, batch_bytes: int = 48_000,
                 wait: float = 1.0, backoff_min: float = 0.5, backoff_max: float = 30.0,
                 observe: Callable[[str, str, float], None] | None = None,
                 on_change: Callable[[Item | None, Delivery | None], None] | None = None
                 ) -> None:
        self.outbox = outbox
        self._post = post
        self._post_batch = post_batch
        self._batch_max = batch_max
        self.batch_bytes = batch_bytes
        self._batch_off_until = 0.0  # monotonic: the service has no batch endpoint until then
        self._singles_until = 0  # events up to this seq go one at a time (a refused batch)
        self.wait = wait
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._observe = observe or (lambda kind, outcome, seconds: None)
        self._on_change = on_change or (lambda item, delivery: None)
        self._cv = threading.Condition()
        self._busy = False  # an event is on the wire
        self._pending = outbox.depth()
        self._failed = outbox.failed_count()
        self._waiters: dict[int, Delivery | None] = {}
        self._failures = 0  # attempts that found the service down, ever
        self._kicked = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.online: bool | None = None  # None until the first answer or failure
        self.last_contact: float | None = None  # time.time() of the last answer
        self.last_error: str | None = None

    # -- state ------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._pending

    @property
    def failed(self) -> int:
        return self._failed

    def contact(self) -> None:
        """The service answered (here or on another connection): try the outbox now."""
        with self._cv:
            was = self.online
            self.online, self.last_contact = True, time.time()
            self._kicked = True
            self._cv.notify_all()
        if was is False:  # back after an outage (the first contact is no news)
            self._on_change(None, None)

    def _unreachable(self, error: str) -> bool:
        """Count an attempt that found the service down (``_cv`` held); True if it was up."""
        self._failures += 1
        was = self.online
        self.online, self.last_error = False, error
        self._cv.notify_all()
        return was is not False

    def kick(self) -> None:
        """Cut the current backoff short."""
        with self._cv:
            self._kicked = True
            self._cv.notify_all()

    # -- submitting -------------------------------------------------------------------
    def submit(self, kind: str, body: dict) -> Delivery:
        """Deliver one event now if possible; otherwise record it in the outbox.

        ``body["event_id"]`` must be set. Returns once the event is delivered, refused, or
        durably queued.

        Raises:
            OutboxError: the service was unreachable and the event could not be recorded.
        """
        event_id = str(body["event_id"])
        with self._cv:
            existing = self.outbox.find(event_id)
            if existing is not None and existing.state == "failed":
                return Delivery("refused", kind, event_id, existing.seq,
                                problem=existing.problem, depth=self._pending)
            if existing is not None or self._busy or self._pending:
                if existing is not None:
                    seq = existing.seq
                else:
                    seq = self.outbox.add(kind, body)
                    self._pending += 1
                return self._wait_for(seq, kind, event_id)
            seq = self.outbox.reserve()
            self._busy = True
        try:
            return self._send_now(seq, kind, body)
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _wait_for(self, seq: int, kind: str, event_id: str) -> Delivery:
        """Queued behind others: give the sender a moment, then answer (with _cv held)."""
        self._waiters[seq] = None
        failures = self._failures
        self._kicked = True
        self._cv.notify_all()
        # until it is delivered, or an attempt finds the service down, or time is up
        self._cv.wait_for(lambda: self._waiters.get(seq) is not None
                          or self._failures != failures or self._stopping, timeout=self.wait)
        delivered = self._waiters.pop(seq, None)
        if delivered is not None:
            return delivered
        return Delivery("queued", kind, event_id, seq, depth=self._pending)

    def _send_now(self, seq: int, kind: str, body: dict) -> Delivery:
        """Send an event nothing waits before, written ahead in the outbox: an agent killed
        while it is on the wire sends it again when it starts (the same ``event_id``)."""
        event_id = str(body["event_id"])
        written = self._write_ahead(seq, kind, body)
        started = time.perf_counter()
        try:
            answer = self._post(kind, body)
        except ServerUnavailable as exc:
            self._observe(kind, "unavailable", time.perf_counter() - started)
            with self._cv:
                changed = self._unreachable(str(exc))
                if written:  # synced now: the till is told it is recorded
                    self.outbox.attempt_failed(seq, str(exc), durable=True)
                else:
                    self.outbox.add(kind, body, seq=seq, attempts=1, last_error=str(exc))
                self._pending += 1
                depth = self._pending
            if changed:
                self._on_change(None, None)
            return Delivery("queued", kind, event_id, seq, depth=depth)
        except ServerProblem as exc:
            self._observe(kind, "refused", time.perf_counter() - started)
            if written:
                self._forget(seq)  # the till is told at once: nothing to keep
            self.contact()
            return self._answered(seq, Delivery("refused", kind, event_id,
                                                problem=problem_dict(exc), depth=self._pending))
        self._observe(kind, "sent", time.perf_counter() - started)
        if written:
            self._forget(seq)
        self.contact()
        return self._answered(seq, Delivery("sent", kind, event_id, answer=answer,
                                            depth=self._pending))

    def _answered(self, seq: int, delivery: Delivery) -> Delivery:
        """The same event posted again while it was on the wire (a point of sale retrying)
        found it written ahead and waits for it: it gets this answer too."""
        with self._cv:
            if seq in self._waiters:
                self._waiters[seq] = delivery
                self._cv.notify_all()
        return delivery

    def _write_ahead(self, seq: int, kind: str, body: dict) -> bool:
        """Record the event before it is sent; False if the file cannot take it (it is then
        sent all the same: only a failure to send needs the outbox).

        Not synced (``synchronous=NORMAL`` in WAL mode): the row has reached the kernel, so
        it outlives the agent killed mid-send, the case it is for; only a power cut in the
        same instant loses it, with the till itself, before the cashier was told anything.
        An fsync here costs ~4 ms on the project's machine, most of a tap's 5 ms budget; the
        event is synced once the service is found unreachable, before "offline - recorded".
        """
        try:
            self.outbox.add(kind, body, seq=seq, durable=False)
        except OutboxError:
            log.warning("queue: %s sent without being written ahead", kind)
            return False
        return True

    def _forget(self, seq: int) -> None:
        """Remove an event written ahead once the service has answered; if that fails it is
        sent again later, which the ``event_id`` makes harmless."""
        try:
            self.outbox.remove(seq)
        except (OutboxError, sqlite3.Error) as exc:
            log.warning("queue: a delivered event stays in the file (%s): it will be sent "
                        "again", exc)

    # -- the sender thread ------------------------------------------------------------
    def start(self) -> None:
        """Start the sender thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox sender",
                                             daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sender; what is queued stays in the file for the next start."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_min * 2 ** min(failures - 1, 16))
        return delay * random.uniform(0.8, 1.2)

    def _run(self) -> None:
        failures = 0  # consecutive
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stopping or (self._pending and not self._busy),
                                  timeout=5.0)
                if self._stopping:
                    return
                if not self._pending or self._busy:
                    continue
                try:
                    items = self._next()
                except (OutboxError, sqlite3.Error):
                    log.exception("queue: cannot read the next event")
                    items, self._pending = [], 0
                if not items:
                    self._pending = 0  # the count had drifted
                    continue
                self._busy, self._kicked = True, False
            try:
                if len(items) > 1:
                    failures = self._send_batch(items, failures)
                else:
                    failures = self._send_queued(items[0], failures)
            except Exception:  # a bug here must not stop the replay for good
                log.exception("queue: sending event %d failed unexpectedly", items[0].seq)
                failures += 1
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
            if failures:
                with self._cv:
                    self._cv.wait_for(lambda: self._stopping or self._kicked,
                                      timeout=self._backoff(failures))

    def _next(self) -> list[Item]:
        """What goes next (``_cv`` held): the oldest pending event alone, or the taps in a row
        at the head of the queue, in one batch. A purchase or day's sales ends the run (it
        keeps its own call and its place), and so does a tap someone waits for (the cashier
        gets its record, which a batch does not build)."""
        if self._post_batch is None or self._batch_max < 2 or \
                time.monotonic() < self._batch_off_until:
            item = self.outbox.head()
            return [item] if item is not None else []
        items = self.outbox.pending(self._batch_max)
        run: list[Item] = []
        size = 0
        for item in items:
            if item.kind != "tap" or item.seq in self._waiters or \
                    item.seq <= self._singles_until:
                break
            size += len(json.dumps(item.body, separators=(",", ":"))) + 1
            if run and size > self.batch_bytes:
                break
            run.append(item)
        return run if len(run) > 1 else items[:1]

    def _send_batch(self, items: list[Item], failures: int) -> int:
        """One attempt at a run of queued taps in one request; returns the new count of
        consecutive failures. Each tap's outcome is its own: the delivered ones are removed
        and the refused ones set aside, in one transaction of the outbox."""
        started = time.perf_counter()
        assert self._post_batch is not None
        try:
            outcomes = self._post_batch([item.body for item in items])
        except ServerUnavailable as exc:
            self._observe("tap_batch", "unavailable", time.perf_counter() - started)
            with self._cv:
                self._busy = False
                changed = self._unreachable(str(exc))
                self.outbox.attempts_failed([item.seq for item in items], str(exc))
            if changed:
                self._on_change(None, None)
            return failures + 1
        except ServerProblem as exc:
            self._observe("tap_batch", "refused", time.perf_counter() - started)
            self._batch_refused(items, exc)
            self.contact()
            return 0
        self._observe("tap_batch", "sent", time.perf_counter() - started)
        if not isinstance(outcomes, list) or len(outcomes) != len(items) or \
                not all(isinstance(o, dict) for o in outcomes):
            log.warning("queue: the service's answer to a batch is not understood: the %d "
                        "taps go one at a time", len(items))
            with self._cv:
                self._busy = False
                self._singles_until = items[-1].seq
                self._cv.notify_all()
            self.contact()
            return 0
        delivered: list[int] = []
        refused: list[tuple[int, dict]] = []
        deliveries: list[tuple[Item, Delivery]] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.get("status") == "problem":
                problem = outcome_problem(outcome.get("problem"))
                refused.append((item.seq, problem))
                deliveries.append((item, Delivery("refused", item.kind, item.event_id,
                                                  item.seq, problem=problem)))
            else:
                delivered.append(item.seq)
                deliveries.append((item, Delivery("sent", item.kind, item.event_id, item.seq,
                                                  answer=outcome)))
        with self._cv:
            self._busy = False
            self.outbox.settle(delivered, refused)
            self._pending -= len(items)
            self._failed += len(refused)
            for item, delivery in deliveries:
                delivery.depth = self._pending
                if item.seq in self._waiters:
                    self._waiters[item.seq] = delivery
            self._cv.notify_all()
        self.contact()
        for item, delivery in deliveries:
            if delivery.outcome == "refused":
                log.warning("queue: the service refused queued tap %d (%s %s)", item.seq,
                            (delivery.problem or {}).get("status"),
                            (delivery.problem or {}).get("type"))
                self._on_change(item, delivery)
        last = next((d for d in reversed(deliveries) if d[1].outcome == "sent"), None)
        if last is not None:
            self._on_change(*last)
        return 0

    def _batch_refused(self, items: list[Item], exc: ServerProblem) -> None:
        """The service refused a batch as a whole: an older service without the endpoint
        (404, 405), a batch too large (its ``max``), or anything else (these taps go one at
        a time, each to its own answer)."""
        with self._cv:
            self._busy = False
            limit = exc.body.get("max")
            if exc.status in (404, 405):
                log.info("queue: the service has no batch endpoint: one event at a time")
                self._batch_off_until = time.monotonic() + BATCH_RETRY_AFTER
            elif exc.slug == "batch-too-large" and isinstance(limit, int) and \
                    0 < limit < len(items):
                log.info("queue: the service takes at most %d taps a batch", limit)
                self._batch_max = limit
            else:
                log.warning("queue: the service refused a batch of %d taps (%s %s): they go "
                            "one at a time", len(items), exc.status, exc.slug)
                self._singles_until = items[-1].seq
            self._cv.notify_all()

    def _send_queued(self, item: Item, failures: int) -> int:
        """One attempt at the oldest event; returns the new count of consecutive failures."""
        started = time.perf_counter()
        try:
            answer = self._post(item.kind, item.body)
        except ServerUnavailable as exc:
            self._observe(item.kind, "unavailable", time.perf_counter() - started)
            with self._cv:
                self._busy = False
                changed = self._unreachable(str(exc))
                self.outbox.attempt_failed(item.seq, str(exc))
            if changed:
                self._on_change(None, None)
            return failures + 1
        except ServerProblem as exc:
            self._observe(item.kind, "refused", time.perf_counter() - started)
            problem = problem_dict(exc)
            log.warning("queue: the service refused queued %s %d (%s %s)", item.kind, item.seq,
                        exc.status, exc.slug)
            with self._cv:
                self._busy = False
                self.outbox.mark_failed(item.seq, problem)
                self._pending -= 1
                self._failed += 1
                delivery = Delivery("refused", item.kind, item.event_id, item.seq,
                                    problem=problem, depth=self._pending)
                if item.seq in self._waiters:
                    self._waiters[item.seq] = delivery
                self._cv.notify_all()
            self.contact()
            self._on_change(item, delivery)
            return 0
        self._observe(item.kind, "sent", time.perf_counter() - started)
        with self._cv:
            self._busy = False
            self.outbox.remove(item.seq)
            self._pending -= 1
            delivery = Delivery("sent", item.kind, item.event_id, item.seq, answer=answer,
                                depth=self._pending)
            if item.seq in self._waiters:
                self._waiters[item.seq] = delivery
            self._cv.notify_all()
        self.contact()
        self._on_change(item, delivery)
        return 0

    def drained(self, timeout: float) -> bool:
        """Wait until nothing is pending (tests, shutdown); True if so."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._busy, timeout)

    def summary(self) -> dict[str, Any]:
        return {"depth": self._pending, "failed": self._failed, "online": self.online,
                "last_contact": datetime.fromtimestamp(self.last_contact, UTC).isoformat()
                if self.last_contact else None, "last_error": self.last_error}
