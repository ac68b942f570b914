"""A batch of taps from a till's offline queue: each recorded as ``POST /taps`` would, in
order, each in its own savepoint, without building the customer records.

Nobody at the till waits for a replayed tap's record, and building it (the vault, the loyalty
view, tickets) is most of a tap's cost. Each tap goes through ``server.taps.service.tap`` with
``record=False``: the same validation, clone signals and idempotence on ``event_id``, the same
problem types. A refused tap rolls back its own savepoint only; the others stay, and the
request commits once (``server.db.finish_request``).

Two details make the savepoints safe:

- they are the driver's (``SAVEPOINT tap`` on the request's connection), and the service
  undoes a tap's writes with ``server.db.undo_event`` (a replayed event id, a copied SUN
  message), which here rolls back to that savepoint, not the batch. The tap's writes are
  Core statements (no ORM object is left behind by a rollback the session does not see).
  A ``Session`` per tap with ``join_transaction_mode="create_savepoint"`` did the same at
  twice the cost of the tap's own statements (BENCHMARKS.md);
- on SQLite the driver opens a transaction only before a write, and a ``SAVEPOINT`` outside
  one would be committed by its ``RELEASE``: the batch opens it first, with ``BEGIN
  IMMEDIATE`` (it will write anyway, and a deferred transaction that reads first could not
  later take the lock if another writer got in between).

A clone flag (``record_flag``) is normally written in a transaction of its own, committed
at once, so that a refused tap keeps it; in a batch that other connection would wait for the
batch's lock on SQLite. The flags are collected per tap and written after its savepoint, in
the batch's transaction.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from server import hotsql
from server.api.problems import PROBLEMS, TYPE_PREFIX, Problem
from server.cards.service import DEFERRED_FLAGS
from server.db import EVENT_UNDO, is_retryable
from server.devices.auth import Principal
from server.taps import service
from server.taps.schemas import BATCH_MAX, TapBatchIn

log = logging.getLogger(__name__)
# how often a batch PostgreSQL failed to break a deadlock is recorded again
ATTEMPTS = 3


def limit(tap_limit: int | None) -> int:
    """The most taps in one batch: ``BATCH_MAX``, or fewer if the till's tap rate limit is
    lower (a batch that can never fit in it is refused as too large, not rate-limited
    forever)."""
    return BATCH_MAX if tap_limit is None else max(1, min(BATCH_MAX, tap_limit))


def check_size(data: object, most: int) -> None:
    """Refuse a batch with more than ``most`` taps before validating each one.

    Raises:
        Problem: ``batch-too-large`` with ``max``.
    """
    taps = data.get("taps") if isinstance(data, dict) else None
    if isinstance(taps, list) and len(taps) > most:
        raise Problem("batch-too-large", f"{len(taps)} taps in one batch; at most {most}",
                      max=most)


def _problem(problem: Problem) -> dict:
    status, title = PROBLEMS[problem.slug]
    body = {"type": TYPE_PREFIX + problem.slug, "title": title, "status": status}
    if problem.detail:
        body["detail"] = problem.detail
    return {**body, **problem.extra}


def _begin(main: Session):
    """The request's connection, in a transaction that savepoints can nest in."""
    conn = main.connection()
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    return conn


def record(main: Session, vault: Session, device: Principal, batch: TapBatchIn) -> dict:
    """Record each tap of ``batch`` in order; the outcome of each (no customer record).

    A ``Problem`` of one tap becomes its outcome; any other error (a database gone) ends the
    whole batch, which the request then rolls back.

    A batch holds each of its customers' rows until it commits, taken in the till's order,
    not in key order: two tills replaying the same customers in opposite orders wait for
    each other, and PostgreSQL fails one of them. Nothing of that one was written; it is
    recorded again from the start (``ATTEMPTS`` in all), and the other has gone through.
    """
    attempt = 1
    while True:
        try:
            return _record(main, vault, device, batch)
        except OperationalError as exc:
            if attempt == ATTEMPTS or not is_retryable(exc):
                raise
            main.rollback()
            attempt += 1
            log.warning("tap batch of %d from device %s failed to break a deadlock; "
                        "recording it again (attempt %d)", len(batch.taps), device.id, attempt)


def _driver(conn, cursor, sql: str) -> None:
    """A savepoint statement on the driver's cursor, its errors SQLAlchemy's (a database
    gone mid-batch is a 503, not an internal error)."""
    hotsql.execute(conn, cursor, sql)


def _record(main: Session, vault: Session, device: Principal, batch: TapBatchIn) -> dict:
    conn = _begin(main)
    cursor = conn.connection.dbapi_connection.cursor()
    flags: list = []
    main.info[DEFERRED_FLAGS] = flags
    main.info[EVENT_UNDO] = lambda: _driver(conn, cursor, "ROLLBACK TO SAVEPOINT tap")
    results: list[dict] = []
    counts = {"recorded": 0, "replayed": 0, "problem": 0}
    try:
        for req in batch.taps:
            flags.clear()
            _driver(conn, cursor, "SAVEPOINT tap")
            try:
                done = service.tap(main, vault, device, req, record=False)
                outcome = {"event_id": str(req.event_id),
                           "status": "replayed" if done["replayed"] else "recorded",
                           "visit_id": done["visit_id"], "card_id": done["card_id"],
                           "flags": done["flags"], "problem": None}
            except Problem as problem:
                _driver(conn, cursor, "ROLLBACK TO SAVEPOINT tap")
                outcome = {"event_id": str(req.event_id), "status": "problem",
                           "visit_id": None, "card_id": problem.extra.get("card_id"),
                           "flags": [], "problem": _problem(problem)}
            _driver(conn, cursor, "RELEASE SAVEPOINT tap")
            for statement in flags:
                conn.execute(statement)
            counts[outcome["status"]] += 1
            results.append(outcome)
    finally:
        main.info.pop(DEFERRED_FLAGS, None)
        main.info.pop(EVENT_UNDO, None)
        cursor.close()
    return {"results": results, "recorded": counts["recorded"],
            "replayed": counts["replayed"], "problems": counts["problem"]}
