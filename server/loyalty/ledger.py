"""The points ledger: append-only entries, and the balance kept with them atomically.

Every change of a customer's points is one ``post``: a conditional ``UPDATE`` of the cached
balance (``customers.points``) and one ledger row, in the caller's transaction. (A visit's
credit is the one exception: ``entry`` writes its rows and the visit moves the balance in its
own UPDATE of the customer's row, see ``record.count_visit``.) The UPDATE's
``WHERE points + delta >= 0`` is evaluated by the database on the current row (SQLite holds
the write lock, PostgreSQL the row lock), so two tills redeeming at the same instant cannot
both spend the same points, and the check constraint backs it up.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.customers.models import Customer
from server.hotsql import Prepared
from server.loyalty.models import PointsEntry

customers, ledger = Customer.__table__, PointsEntry.__table__

KINDS = ("earn", "visit", "redeem", "refund", "restore", "expire", "adjust", "import",
         "welcome")
# what counts towards a tier: points earned, less earned points taken back by returns
QUALIFYING = ("earn", "visit", "refund")


class InsufficientPoints(Problem):
    def __init__(self, balance: int, wanted: int) -> None:
        super().__init__("insufficient-points",
                         f"the balance is {balance} points, {wanted} are needed",
                         balance=balance, needed=wanted)


# what an entry may point at (``post``'s ``**refs``)
REFS = ("store_id", "purchase_id", "refund_id", "redemption_id", "visit_id", "device_id",
        "staff_id", "event_id")
# every purchase, visit, redemption and return posts: compiled once (server/hotsql.py)
_MOVE = Prepared(update(customers)
                 .where(customers.c.id == bindparam("customer_id"),
                        customers.c.points + bindparam("delta") >= 0)
                 .values(points=customers.c.points + bindparam("delta")))
_ENTRY = Prepared(insert(ledger).values(
    {c: bindparam(c) for c in ("customer_id", "delta", "kind", "reason", "at", "expires_at",
                               *REFS)}).returning(ledger.c.id))


def _check(delta: int, kind: str, refs: dict) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown ledger kind {kind!r}")
    if delta == 0:
        raise ValueError("a ledger entry moves points")
    unknown = set(refs) - set(REFS)
    if unknown:
        raise TypeError(f"a ledger entry has no {', '.join(sorted(unknown))}")


def post(main: Session, customer_id: str, delta: int, kind: str, *, reason: str | None = None,
         at: datetime | None = None, expires_at: datetime | None = None, **refs) -> int:
    """Add one ledger entry and move the balance by ``delta``; returns the entry id.

    Raises:
        InsufficientPoints: the entry would take the balance below zero (nothing written).
    """
    _check(delta, kind, refs)
    if _MOVE.run(main, customer_id=customer_id, delta=delta) != 1:
        raise InsufficientPoints(balance(main, customer_id), -delta)
    return _append(main, customer_id, delta, kind, reason, at, expires_at, refs)


def entry(main: Session, customer_id: str, delta: int, kind: str, *, reason: str | None = None,
          at: datetime | None = None, expires_at: datetime | None = None, **refs) -> int:
    """``post`` without the balance: the caller moves ``customers.points`` by the same
    ``delta`` in its own ``UPDATE`` of the customer's row, in the same transaction
    (``record.count_visit`` writes a visit's points, last counted visit and tier at once).
    The caller's move must not be negative: only ``post``'s UPDATE checks the balance."""
    _check(delta, kind, refs)
    return _append(main, customer_id, delta, kind, reason, at, expires_at, refs)


def _append(main: Session, customer_id: str, delta: int, kind: str, reason: str | None,
            at: datetime | None, expires_at: datetime | None, refs: dict) -> int:
    return _ENTRY.scalar(main, customer_id=customer_id, delta=delta, kind=kind, reason=reason,
                         at=at or datetime.now(UTC), expires_at=expires_at,
                         **{**dict.fromkeys(REFS), **refs})


def balance(main: Session, customer_id: str) -> int:
    return main.scalar(select(customers.c.points).where(customers.c.id == customer_id)) or 0


def ledger_sum(main: Session, customer_id: str) -> int:
    """The balance recomputed from the ledger (for checks: it must equal ``balance``)."""
    return main.scalar(select(func.coalesce(func.sum(ledger.c.delta), 0))
                       .where(ledger.c.customer_id == customer_id))


def qualifying_points(main: Session, customer_id: str, since: datetime) -> int:
    """Points earned since ``since``, less those returns took back: what tiers are made of."""
    return _QUALIFYING.scalar(main, customer_id=customer_id, since=since)


def lot_reversal(entries_table=None):
    """True for an entry that takes back points of one known lot (a return, or the settling
    of points a return took back): it carries that lot's expiry date and reduces that lot,
    instead of consuming the oldest points as spending does."""
    table = ledger if entries_table is None else entries_table
    return (table.c.kind == "refund") & table.c.expires_at.is_not(None)


def expirable(main: Session, customer_id: str, until: datetime) -> int:
    """Points that will have expired by ``until`` and are not expired yet.

    The credits due by ``until`` (less the returns that took back part of those very lots)
    are consumed by spending, expiries and negative adjustments oldest first; what is left of
    them expires. Earlier expiries count as spending, so running an expiry twice expires
    nothing the second time.
    """
    due, debits = _EXPIRABLE.one(main, customer_id=customer_id, until=until)
    return max(0, due - debits)


def qualifying_total(customer_id, since):
    """``qualifying_points`` as a statement, for ``customer_id`` (a value, a bind or a column
    of an enclosing query: then a correlated subquery)."""
    return select(func.coalesce(func.sum(ledger.c.delta), 0)).where(
        ledger.c.customer_id == customer_id, ledger.c.kind.in_(QUALIFYING), ledger.c.at >= since)


# ``expirable``'s two sums, over one customer's entries: the credits due by ``until`` (less
# the returns of those lots), and what spending, expiries and adjustments took
EXPIRING_DUE = func.coalesce(func.sum(ledger.c.delta).filter(
    ledger.c.expires_at.is_not(None), ledger.c.expires_at <= bindparam("until"),
    (ledger.c.delta > 0) | lot_reversal()), 0)
EXPIRING_DEBITS = func.coalesce(
    -func.sum(ledger.c.delta).filter(ledger.c.delta < 0, ~lot_reversal()), 0)

# Built once: a tap reads both (DESIGN.md, the hot path), and building a statement costs
# more than SQLite takes to run it. One pass over the customer's entries for both sums.
_QUALIFYING = Prepared(qualifying_total(bindparam("customer_id"), bindparam("since")))
_EXPIRABLE = Prepared(select(EXPIRING_DUE, EXPIRING_DEBITS)
                      .where(ledger.c.customer_id == bindparam("customer_id")))
