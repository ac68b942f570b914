"""The customer value score: recency, frequency, spending, punctual payment and support load.

Each component is scored 0-100 by where the customer stands among the *active* customers
(those with a purchase in the window, erased ones left out): a customer's score is the share
of active customers they do at least as well as, ``floor(100 x k / n)``, computed in SQL with
``rank()`` and ``count(*)`` over the whole set, in integers so that SQLite and PostgreSQL give
the same numbers. Ties share a score. The total is the weighted mean of the component scores
(floored); a component with no data for the customer (punctuality, for a customer without an
account) is left out of that customer's mean, weight included. The weights, the window and
the bands are the ``[value]`` section of the programme (``server.loyalty.programme``).

Punctual payment hook: account customers do not exist yet. Whatever adds them calls
``register_punctuality(source)`` once at import; ``source(since, now)`` returns a ``Select``
of two columns, ``customer_id`` and ``on_time`` (a number, higher is better, e.g. the share
of statements of the window paid by their due date). Customers it does not list have no
punctuality: their component is "not an account customer" and its weight is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Integer,
    Select,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.customers.models import Customer
from server.db import utcnow
from server.loyalty import programmes
from server.loyalty.models import ProgrammeVersion, Purchase, Refund
from server.loyalty.programme import (
    Programme,
    ValueRules,
    _add_months,
    default_programme,
    load_programme,
)
from server.tickets.models import Ticket
from server.value.models import ValueScore, ValueSnapshot

log = logging.getLogger(__name__)

# PostgreSQL's default work_mem (4 MB) sends the score's sorts to disk: 2.6x slower measured
REPORT_WORK_MEM = "128MB"
COMPONENTS = ("recency", "frequency", "monetary", "punctuality", "support")
BANDS = ("premium", "high", "medium", "low", "inactive")

PunctualitySource = Callable[[datetime, datetime], Select]
_punctuality: list[PunctualitySource] = []


def register_punctuality(source: PunctualitySource | None) -> None:
    """Plug in (or, with None, remove) the source of the punctual payment component."""
    _punctuality.clear()
    if source is not None:
        _punctuality.append(source)


def for_reports(main: Session) -> None:
    """Give this transaction's sorts enough memory (PostgreSQL; SQLite has no such limit)."""
    if main.get_bind().dialect.name == "postgresql":
        main.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))


def window(rules: ValueRules, now: datetime, programme: Programme) -> datetime:
    """The start of the window: ``window_months`` calendar months before ``now``, local."""
    return _add_months(now, -rules.window_months, programme.zone)


def _activity(since: datetime, now: datetime):
    """Per active customer: purchases, net spending, last purchase, tickets, load, on time."""
    in_window = (Purchase.paid_at >= since, Purchase.paid_at <= now)
    bought = (select(Purchase.customer_id, func.count(Purchase.id).label("purchases"),
                     func.sum(Purchase.total_cents).label("spent"),
                     func.max(Purchase.paid_at).label("last_at"))
              .where(*in_window).group_by(Purchase.customer_id).subquery())
    returned = (select(Purchase.customer_id, func.sum(Refund.amount_cents).label("cents"))
                .join(Purchase, Purchase.id == Refund.purchase_id)
                .where(*in_window).group_by(Purchase.customer_id).subquery())
    tickets = (select(Ticket.customer_id, func.count(Ticket.id).label("n"))
               .where(Ticket.created_at >= since, Ticket.created_at <= now)
               .group_by(Ticket.customer_id).subquery())
    n_tickets = func.coalesce(tickets.c.n, 0)
    columns = [bought.c.customer_id, bought.c.purchases,
               (bought.c.spent - func.coalesce(returned.c.cents, 0)).label("net_cents"),
               bought.c.last_at, n_tickets.label("tickets"),
               # a ratio compared exactly: tickets x 1000 per purchase, as an integer
               ((n_tickets * 1000) // bought.c.purchases).label("load_milli")]
    query = (select(*columns)
             .join(Customer, (Customer.id == bought.c.customer_id)
                   & Customer.erased_at.is_(None))
             .outerjoin(returned, returned.c.customer_id == bought.c.customer_id)
             .outerjoin(tickets, tickets.c.customer_id == bought.c.customer_id))
    if _punctuality:
        source = _punctuality[0](since, now).subquery()
        query = query.add_columns(source.c.on_time).outerjoin(
            source, source.c.customer_id == bought.c.customer_id)
    else:
        query = query.add_columns(null().label("on_time"))
    return query.subquery("activity")


def _share(rank, n):
    """``floor(100 x (n - rank + 1) / n)``: the share of customers done at least as well as."""
    return cast((100 * (n - rank + 1)) // n, Integer)


def scores(programme: Programme, now: datetime) -> Select:
    """Every active customer's raw values, component scores, total, place and band.

    Columns: ``customer_id``, ``purchases``, ``net_cents``, ``last_at``, ``tickets``,
    ``load_milli``, ``on_time``, ``recency``, ``frequency``, ``monetary``, ``punctuality``
    (None without data), ``support``, ``score``, ``place`` (1 = best), ``active`` (how many
    active customers), ``band``. Compose it: ``.subquery()`` and join on ``customer_id``.
    """
    rules = programme.value
    w = rules.weights
    a = _activity(window(rules, now, programme), now)
    n = func.count().over()
    n_on_time = func.count(a.c.on_time).over()
    has_on_time = case((a.c.on_time.is_(None), 0), else_=1)
    ranked = select(
        a,
        n.label("active"),
        _share(func.rank().over(order_by=a.c.last_at.desc()), n).label("recency"),
        _share(func.rank().over(order_by=a.c.purchases.desc()), n).label("frequency"),
        _share(func.rank().over(order_by=a.c.net_cents.desc()), n).label("monetary"),
        _share(func.rank().over(order_by=a.c.load_milli.asc()), n).label("support"),
        case((a.c.on_time.is_(None), null()), else_=_share(
            func.rank().over(partition_by=has_on_time, order_by=a.c.on_time.desc()),
            n_on_time)).label("punctuality"),
    ).subquery("ranked")
    r = ranked.c
    known = w.recency * r.recency + w.frequency * r.frequency + w.monetary * r.monetary \
        + w.support * r.support
    weights = w.recency + w.frequency + w.monetary + w.support
    total = case((r.punctuality.is_(None), known // weights),
                 else_=(known + w.punctuality * r.punctuality) // (weights + w.punctuality))
    totalled = select(ranked, cast(total, Integer).label("score")).subquery("totalled")
    t = totalled.c
    place = func.rank().over(order_by=t.score.desc())
    placed = select(totalled, place.label("place")).subquery("placed")
    p = placed.c
    tenths = int(rules.premium_percent * 10)
    band = case(((p.place - 1) * 1000 < p.active * tenths, literal("premium")),
                (p.score >= rules.high_from, literal("high")),
                (p.score >= rules.medium_from, literal("medium")),
                else_=literal("low"))
    return select(placed, band.label("band"))


# --------------------------------------------------------------------------- the snapshot

# any constant: the key of the PostgreSQL advisory lock that serialises refreshes
_REFRESH_LOCK = 0x76616C75


def refresh(main: Session, now: datetime | None = None, actor: str = "job:value") -> ValueSnapshot:
    """Replace the snapshot with ``scores()`` at ``now``, in the caller's transaction.

    One ``DELETE`` and one ``INSERT ... SELECT``: readers see the old snapshot until the
    caller commits, then the new one whole (PostgreSQL's MVCC; SQLite's single writer). Two
    refreshes at once queue on an advisory lock instead of colliding on the primary key.
    """
    now = now or utcnow()
    version, programme = programmes.current(main)
    for_reports(main)
    if main.get_bind().dialect.name == "postgresql":
        main.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REFRESH_LOCK})
    main.execute(delete(ValueSnapshot))
    main.execute(delete(ValueScore))
    s = scores(programme, now).subquery()
    columns = [c.name for c in ValueScore.__table__.columns]
    main.execute(insert(ValueScore).from_select(columns, select(*(s.c[c] for c in columns))))
    counts = dict(main.execute(select(ValueScore.band, func.count()).group_by(ValueScore.band))
                  .all())
    live = main.scalar(select(func.count(Customer.id)).where(Customer.erased_at.is_(None))) or 0
    snapshot = ValueSnapshot(computed_at=now, finished_at=utcnow(), programme_version=version,
                             window_months=programme.value.window_months,
                             active=sum(counts.values()), live=live, refreshed_by=actor,
                             **{b: counts.get(b, 0) for b in BANDS if b != "inactive"})
    main.add(snapshot)
    main.flush()
    log.info("value snapshot refreshed by %s: %d active customers of %d, programme version %s",
             actor, snapshot.active, live, version)
    return snapshot


def snapshot(main: Session) -> ValueSnapshot | None:
    """The snapshot's description (when, which programme, band counts), or None before the
    first refresh."""
    return main.scalar(select(ValueSnapshot).order_by(ValueSnapshot.id.desc()).limit(1))


def ranking(main: Session, limit: int = 100, band: str | None = None) -> list:
    """The best ``limit`` active customers of the snapshot (optionally of one band), best
    first: an index range scan on ``(place, net_cents, customer_id)``."""
    v = ValueScore
    query = select(*v.__table__.c, Customer.tier).join(Customer, Customer.id == v.customer_id)
    if band:
        query = query.where(v.band == band)
    return main.execute(query.order_by(v.place, v.net_cents.desc(), v.customer_id)
                        .limit(limit)).all()


def band_counts(found: ValueSnapshot | None) -> dict[str, int]:
    """How many customers in each band at the snapshot (``inactive``: without purchases)."""
    if found is None:
        return {b: 0 for b in BANDS}
    counts = {b: getattr(found, b) for b in BANDS if b != "inactive"}
    counts["inactive"] = max(0, found.live - found.active)
    return counts


@dataclass(frozen=True)
class Component:
    """One part of the score, for the explanation."""

    key: str
    raw: object  # days, purchases, cents, ratio, ... or None without data
    score: int | None
    weight: int  # as configured
    used_weight: int  # 0 when the component is left out for this customer
    contribution: Decimal  # points of the total this component gives
    text: str  # in words, English (pages say it in the reader's language from ``params``)
    params: dict


@dataclass(frozen=True)
class Explanation:
    customer_id: str
    active: bool
    score: int | None
    band: str
    place: int | None
    customers: int  # active customers compared with
    window_months: int
    components: tuple[Component, ...]
    currency: str
    computed_at: datetime | None = None  # the snapshot's moment; None: no snapshot yet


def _programme(main: Session, version: int) -> Programme:
    """The programme of a stored version (0: the built-in default)."""
    if version == 0:
        return default_programme()
    document = main.scalar(select(ProgrammeVersion.document)
                           .where(ProgrammeVersion.id == version))
    return load_programme(document, "json") if document is not None else default_programme()


def explain(main: Session, programme: Programme, customer_id: str) -> Explanation:
    """The customer's score, band and each component's raw value, score, weight, share, as
    the snapshot has them (one row by primary key); without a snapshot, ``computed_at`` is
    None and the customer is not scored.

    Raises:
        Problem: ``customer-not-found``.
    """
    if main.get(Customer, customer_id) is None:
        raise Problem("customer-not-found")
    found = snapshot(main)
    if found is not None and found.programme_version != programmes.current(main)[0]:
        programme = _programme(main, found.programme_version)  # the weights it was made with
    rules = programme.value
    row = None if found is None else main.get(ValueScore, customer_id)
    if row is None:
        return Explanation(customer_id, False, None, "inactive", None,
                           found.active if found else 0,
                           found.window_months if found else rules.window_months, (),
                           programme.currency, found.computed_at if found else None)
    months = found.window_months
    w = rules.weights
    used = {"recency": w.recency, "frequency": w.frequency, "monetary": w.monetary,
            "support": w.support,
            "punctuality": 0 if row.punctuality is None else w.punctuality}
    total_weight = sum(used.values())
    days = max(0, (found.computed_at - row.last_at).days)
    raw = {"recency": days, "frequency": row.purchases, "monetary": row.net_cents,
           "punctuality": row.on_time, "support": Decimal(row.load_milli) / 1000}
    texts = {
        "recency": f"last purchase {days} day(s) ago",
        "frequency": f"{row.purchases} purchase(s) in {months} months",
        "monetary": f"{row.net_cents / 100:.2f} {programme.currency} spent, returns deducted",
        "punctuality": ("not an account customer" if row.on_time is None
                        else f"paid on time: {row.on_time}"),
        "support": f"{row.tickets} ticket(s) for {row.purchases} purchase(s)",
    }
    params = {"days": days, "purchases": row.purchases, "months": months,
              "cents": row.net_cents, "currency": programme.currency, "tickets": row.tickets,
              "on_time": row.on_time}
    components = []
    for key in COMPONENTS:
        score = getattr(row, key)
        share = (Decimal(score * used[key]) / total_weight) if score is not None else Decimal(0)
        components.append(Component(key, raw[key], score, getattr(w, key), used[key],
                                    share.quantize(Decimal("0.1")), texts[key], params))
    return Explanation(customer_id, True, row.score, row.band, row.place, row.active,
                       months, tuple(components), programme.currency, found.computed_at)
