"""The reports, one function each, computed by the database (GROUP BY, window functions).

Periods are calendar periods in the programme's time zone (``programmes.current``: one zone
for the whole chain, Europe/Paris by default; stores have no zone of their own): a purchase
paid at 23:30 UTC on 31 March is sold on 1 April in Paris. PostgreSQL converts with its own
time zone database (``timezone(zone, paid_at)``); SQLite has none, so the offsets in force over
the requested range are computed here from ``zoneinfo`` and given to SQL as a CASE on the UTC
moment (two changes a year). Either way no row is read into Python: each function returns the
aggregated rows only.

A period is named by its first day (``YYYY-MM-DD``): a week starts on Monday, a season is
meteorological (winter December to February, spring from March, summer from June, autumn from
September; the winter of 2025-26 is ``2025-12-01``), a year on 1 January.

Money is in cents, quantities in thousandths (as stored). A refund is deducted from the sale it
takes back, in that sale's period, whenever it was made: the figures of a past month change
when one of its sales is returned later. Every function takes ``customers``: a ``Select`` of
customer ids (a segment) or None for everyone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    distinct,
    false,
    func,
    literal,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.db import UTCDateTime
from server.devices.models import Device
from server.loyalty import programmes
from server.loyalty.models import Purchase, PurchaseLine, Redemption, Refund, RefundLine
from server.reports import aggregates
from server.reports.models import (
    AnonymousSales,
    CustomerDay,
    SalesDay,
    SalesMonth,
    VisitDay,
    VisitMonth,
)
from server.stores.models import Store
from server.taps.models import Visit

log = logging.getLogger(__name__)
PERIODS = ("day", "week", "month", "season", "year")
TOP = 10


@dataclass(frozen=True)
class Span:
    """The dates asked for, both included, as local dates; ``lo``/``hi`` the UTC bounds."""

    start: date
    end: date
    zone: ZoneInfo
    lo: datetime
    hi: datetime  # excluded: the start of the day after ``end``


def span(main: Session, start: date, end: date) -> Span:
    """The range from ``start`` to ``end`` (both included) in the programme's time zone."""
    zone = programmes.current(main)[1].zone
    lo = datetime.combine(start, time(0), zone).astimezone(UTC)
    hi = datetime.combine(end + timedelta(days=1), time(0), zone).astimezone(UTC)
    return Span(start, end, zone, lo, hi)


def today(main: Session) -> date:
    """Today's date in the programme's time zone."""
    return datetime.now(UTC).astimezone(programmes.current(main)[1].zone).date()


# --------------------------------------------------------------------------- local periods


def _offsets(zone: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime, int]]:
    """``[(from_utc, minutes)]``: the zone's UTC offset from each instant on, over [lo, hi)."""

    def minutes(moment: datetime) -> int:
        return int(moment.astimezone(zone).utcoffset().total_seconds() // 60)

    found = [(lo, minutes(lo))]
    moment = lo
    while moment < hi:  # day by day, then hour by hour inside a day that changes
        nxt = min(moment + timedelta(days=1), hi)
        if minutes(nxt) != found[-1][1]:
            hour = moment
            while minutes(hour) == found[-1][1]:
                hour += timedelta(minutes=15)
            found.append((hour, minutes(hour)))
        moment = nxt
    return found


def _local(main: Session, moment, s: Span):
    """``moment`` (a UTC column) as a local timestamp in the programme's zone, in SQL."""
    if main.get_bind().dialect.name == "postgresql":
        return func.timezone(s.zone.key, moment)
    offsets = _offsets(s.zone, s.lo, s.hi)
    if len(offsets) == 1:
        return func.datetime(moment, f"{offsets[0][1]:+d} minutes")
    # the last change first: a moment after it has that offset, and so on backwards
    whens = [(moment >= cast(literal(start, UTCDateTime()), UTCDateTime()), f"{m:+d} minutes")
             for start, m in reversed(offsets[1:])]
    return func.datetime(moment, case(*whens, else_=f"{offsets[0][1]:+d} minutes"))


def _period(main: Session, local, period: str | None, s: Span):
    """The first day of the period of ``local`` (``YYYY-MM-DD`` text, or a date on PG)."""
    if period is None:  # the whole range as one period
        return literal(s.start.isoformat(), String)
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    if main.get_bind().dialect.name == "postgresql":
        if period == "season":  # back to the month that starts the season: Dec, Mar, Jun, Sep
            back = cast(func.extract("month", local), Integer) % 3
            return cast(func.date_trunc("month", local) - func.make_interval(0, back), Date)
        return cast(func.date_trunc(period, local), Date)
    if period == "day":
        return func.date(local)
    if period == "week":  # the Monday on or before
        return func.date(local, "-6 days", "weekday 1")
    if period == "season":
        back = cast(func.strftime("%m", local), Integer) % 3
        return func.date(local, "start of month", "-" + cast(back, String) + " months")
    return func.date(local, f"start of {period}")


def first_day(day: date, period: str) -> date:
    """The first day of the period holding ``day`` (as the SQL above computes it)."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "season":
        year, month0 = divmod(day.year * 12 + day.month - 1 - day.month % 3, 12)
        return date(year, month0 + 1, 1)
    if period == "year":
        return date(day.year, 1, 1)
    return day


def periods(s: Span, period: str) -> list[date]:
    """Every period of the range, in order, with or without figures (for a chart's axis)."""
    found, day = [], first_day(s.start, period)
    while day <= s.end:
        found.append(day)
        if period in ("month", "season", "year"):
            months = {"month": 1, "season": 3, "year": 12}[period]
            year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
            day = date(year, month0 + 1, 1)
        else:
            day += timedelta(days=7 if period == "week" else 1)
    return found


def period_name(value) -> str:
    """A period's first day as ``YYYY-MM-DD`` whatever the database returned."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _for_reports(main: Session) -> None:
    """A report's transaction on PostgreSQL: the hashes and sorts of a year in memory (the
    by-store ranking hashes 1.8M month x store x SKU groups: 128 MB spilled to disk), and no
    JIT (it compiled for 1.6-3 s, on each run, statements that run 5-15 s)."""
    if main.get_bind().dialect.name == "postgresql":
        main.execute(text("SET LOCAL work_mem = '256MB'"))
        main.execute(text("SET LOCAL jit = off"))


def _sum(expr):
    """A SUM as a whole number on both databases (PostgreSQL's is numeric: a Decimal)."""
    return cast(func.sum(expr), BigInteger)


def _in_segment(column, customers: Select | None):
    return true() if customers is None else column.in_(customers)


def _refunded_lines():
    """Per purchase line, what returns took back: quantity and money."""
    return (select(RefundLine.line_id,
                   _sum(RefundLine.quantity_milli).label("quantity_milli"),
                   _sum(RefundLine.amount_cents).label("amount_cents"))
            .group_by(RefundLine.line_id).subquery("refunded_lines"))


def _refunded_purchases():
    """Per purchase, the money returns took back."""
    return (select(Refund.purchase_id, _sum(Refund.amount_cents).label("amount_cents"))
            .group_by(Refund.purchase_id).subquery("refunded_purchases"))


def _purchases_in(s: Span, store_id: int | None, customers: Select | None):
    return and_(Purchase.paid_at >= s.lo, Purchase.paid_at < s.hi,
                true() if store_id is None else Purchase.store_id == store_id,
                _in_segment(Purchase.customer_id, customers))


# --------------------------------------------------------------------------- reports


def aggregated(main: Session, s: Span) -> bool:
    """Whether the aggregates (``server.reports.aggregates``) hold every sale and visit by
    local day in this range's zone: on PostgreSQL (its triggers keep them), built in the
    programme's zone (after a change of zone, ``flask reports rebuild``; until then the
    reports read the purchases)."""
    return aggregates.kept_in(main, s.zone.key)


def _whole_months(s: Span) -> tuple[date, date] | None:
    """The first day of the range's first whole month and of the month after its last whole
    one (``[first, after)``), or None when the range holds no whole month."""
    first = s.start if s.start.day == 1 else first_day(s.start, "month")
    if first < s.start:
        first = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    after = first_day(s.end + timedelta(days=1), "month")
    return (first, after) if first < after else None


def best_sellers(main: Session, s: Span, period: str | None = "month", *,
                 store_id: int | None = None, by_store: bool = False,
                 customers: Select | None = None, top: int = TOP) -> list:
    """The ``top`` SKUs of each period by net sales (refunds deducted), optionally by store.

    Rows: period, store_id (None unless ``by_store``), rank, sku, name, category,
    quantity_milli, net_cents, customers (distinct buyers).

    For everyone on PostgreSQL the ranking reads ``sales_months`` and ``sales_days``, and only
    the buyers of the SKUs that made a top are counted from the lines; a segment on
    PostgreSQL ranks its lines per SKU, then counts the buyers the same way; SQLite groups
    the lines per buyer, then per SKU, in one statement.
    """
    _for_reports(main)
    if customers is None and aggregated(main, s):
        return _best_sellers_from_days(main, s, period, store_id, by_store, top)
    if customers is not None and main.get_bind().dialect.name == "postgresql":
        return _best_sellers_of_segment(main, s, period, store_id, by_store, customers, top)
    refunded = _refunded_lines()
    bucket = _period(main, _local(main, Purchase.paid_at, s), period, s)
    store = Purchase.store_id if by_store else literal(None, Integer)
    # first per buyer, then per SKU: counting the rows of the first step gives the distinct
    # buyers without COUNT(DISTINCT), which PostgreSQL can only do by sorting every line
    per_buyer = (
        select(bucket.label("period"), store.label("store_id"), PurchaseLine.sku,
               Purchase.customer_id, func.max(PurchaseLine.name).label("name"),
               func.max(PurchaseLine.category).label("category"),
               _sum(PurchaseLine.quantity_milli - func.coalesce(refunded.c.quantity_milli, 0))
               .label("quantity_milli"),
               _sum(PurchaseLine.net_cents - func.coalesce(refunded.c.amount_cents, 0))
               .label("net_cents"))
        .select_from(PurchaseLine)
        .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .outerjoin(refunded, refunded.c.line_id == PurchaseLine.id)
        .where(_purchases_in(s, store_id, customers))
        .group_by(bucket, store, PurchaseLine.sku, Purchase.customer_id)
    ).subquery("per_buyer")
    b = per_buyer.c
    net, quantity = _sum(b.net_cents), _sum(b.quantity_milli)
    ranked = (
        select(b.period, b.store_id, b.sku, func.max(b.name).label("name"),
               func.max(b.category).label("category"), quantity.label("quantity_milli"),
               net.label("net_cents"), func.count().label("customers"),
               func.row_number().over(partition_by=(b.period, b.store_id),
                                      order_by=(net.desc(), quantity.desc(), b.sku))
               .label("rank"))
        .group_by(b.period, b.store_id, b.sku)
    ).subquery("ranked")
    r = ranked.c
    return list(main.execute(
        select(r.period, r.store_id, r.rank, r.sku, r.name, r.category, r.quantity_milli,
               r.net_cents, r.customers)
        .where(r.rank <= top).order_by(r.period, r.store_id, r.rank)))


class BestSeller(NamedTuple):
    """A row of ``best_sellers`` (as the purchases' query names its columns)."""

    period: object
    store_id: int | None
    rank: int
    sku: str
    name: str
    category: str | None
    quantity_milli: int
    net_cents: int
    customers: int


def _best_sellers_from_days(main: Session, s: Span, period: str | None, store_id: int | None,
                            by_store: bool, top: int) -> list:
    """``best_sellers`` for everyone: the tops from ``sales_months`` (the range's whole months,
    by month or longer periods) and ``sales_days`` (the other days), then the distinct buyers
    of those SKUs only (``_with_buyers``)."""
    d, m = SalesDay, SalesMonth

    def in_store(column):
        return true() if store_id is None else column == store_id

    months = _whole_months(s) if period in ("month", "season", "year", None) else None
    columns = (d.store_id, d.sku, d.name, d.category, d.quantity_milli, d.net_cents)
    if months is None:  # a week or a day is in no month row
        sales = select(d.day, *columns).where(d.day >= s.start, d.day <= s.end,
                                              in_store(d.store_id))
    else:  # the whole months from sales_months, the days before and after from sales_days
        first, after = months
        sales = union_all(
            select(m.month.label("day"), m.store_id, m.sku, m.name, m.category,
                   m.quantity_milli, m.net_cents)
            .where(m.month >= first, m.month < after, in_store(m.store_id)),
            select(d.day, *columns)
            .where(d.day >= s.start, d.day <= s.end, in_store(d.store_id),
                   (d.day < first) | (d.day >= after)))
    x = sales.subquery("sales")
    bucket = _period(main, cast(x.c.day, DateTime()), period, s)
    store = x.c.store_id if by_store else literal(None, Integer)
    net, quantity = _sum(x.c.net_cents), _sum(x.c.quantity_milli)
    ranked = (
        select(bucket.label("period"), store.label("store_id"), x.c.sku,
               func.max(x.c.name).label("name"), func.max(x.c.category).label("category"),
               quantity.label("quantity_milli"), net.label("net_cents"),
               func.row_number().over(partition_by=(bucket, store),
                                      order_by=(net.desc(), quantity.desc(), x.c.sku))
               .label("rank"))
        .group_by(bucket, store, x.c.sku)
    ).subquery("ranked")
    return _with_buyers(main, s, period, store_id, by_store, _tops(main, ranked, top), None)


def _best_sellers_of_segment(main: Session, s: Span, period: str | None,
                             store_id: int | None, by_store: bool, customers: Select,
                             top: int) -> list:
    """``best_sellers`` of a segment on PostgreSQL: the tops from the segment's lines grouped
    per SKU only (a segment of the best customers holds most lines: grouping them per buyer
    as well made some 9M groups a year, sorted on disk), then the buyers of those SKUs only,
    as for everyone."""
    refunded = _refunded_lines()
    bucket = _period(main, _local(main, Purchase.paid_at, s), period, s)
    store = Purchase.store_id if by_store else literal(None, Integer)
    net = _sum(PurchaseLine.net_cents - func.coalesce(refunded.c.amount_cents, 0))
    quantity = _sum(PurchaseLine.quantity_milli - func.coalesce(refunded.c.quantity_milli, 0))
    ranked = (
        select(bucket.label("period"), store.label("store_id"), PurchaseLine.sku,
               func.max(PurchaseLine.name).label("name"),
               func.max(PurchaseLine.category).label("category"),
               quantity.label("quantity_milli"), net.label("net_cents"),
               func.row_number().over(partition_by=(bucket, store),
                                      order_by=(net.desc(), quantity.desc(), PurchaseLine.sku))
               .label("rank"))
        .select_from(PurchaseLine)
        .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .outerjoin(refunded, refunded.c.line_id == PurchaseLine.id)
        .where(_purchases_in(s, store_id, customers))
        .group_by(bucket, store, PurchaseLine.sku)
    ).subquery("ranked")
    return _with_buyers(main, s, period, store_id, by_store, _tops(main, ranked, top),
                        customers)


def _tops(main: Session, ranked, top: int) -> list:
    """The first ``top`` SKUs of each period (and store) of a ``ranked`` subquery."""
    r = ranked.c
    return main.execute(
        select(r.period, r.store_id, r.rank, r.sku, r.name, r.category, r.quantity_milli,
               r.net_cents).where(r.rank <= top).order_by(r.period, r.store_id, r.rank)).all()


def _with_buyers(main: Session, s: Span, period: str | None, store_id: int | None,
                 by_store: bool, tops: list, customers: Select | None) -> list:
    """``tops`` with the distinct buyers (in ``customers``) of each SKU in its period and
    store, counted from the lines of those SKUs only: the statement names them as literals
    so that PostgreSQL estimates them from its statistics and reads them through the SKU
    index instead of joining every line of the range."""
    if not tops:
        return []
    paid = _period(main, _local(main, Purchase.paid_at, s), period, s)
    paid_store = Purchase.store_id if by_store else literal(None, Integer)
    skus = sorted({t.sku for t in tops})
    buyers = dict(((period_name(b.period), b.store_id, b.sku), b.customers)
                  for b in main.execute(
        select(paid.label("period"), paid_store.label("store_id"), PurchaseLine.sku,
               func.count(distinct(Purchase.customer_id)).label("customers"))
        .select_from(PurchaseLine)
        .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .where(PurchaseLine.sku.in_(skus), _purchases_in(s, store_id, customers))
        .group_by(paid, paid_store, PurchaseLine.sku)))
    return [BestSeller(*t, buyers.get((period_name(t.period), t.store_id, t.sku), 0))
            for t in tops]


def visits(main: Session, s: Span, period: str = "month", *, store_id: int | None = None,
           customers: Select | None = None) -> list:
    """Visits per store and period: a visit is a customer at a store on a local day (however
    many taps); also the distinct customers and the taps.

    Rows: period, store_id, store_code, visits, customers, taps.
    """
    _for_reports(main)
    if aggregated(main, s):
        return _visits_from_days(main, s, period, store_id, customers)
    moment = func.coalesce(Visit.tapped_at, Visit.recorded_at, type_=UTCDateTime())
    local = _local(main, moment, s)
    days = (
        select(Visit.store_id, _period(main, local, period, s).label("period"),
               _period(main, local, "day", s).label("day"), Visit.customer_id,
               func.count().label("taps"))
        .where(moment >= s.lo, moment < s.hi,
               true() if store_id is None else Visit.store_id == store_id,
               _in_segment(Visit.customer_id, customers))
        .group_by(Visit.store_id, "period", "day", Visit.customer_id)
    ).subquery("visit_days")
    d = days.c
    return list(main.execute(
        select(d.period, d.store_id, Store.code.label("store_code"),
               func.count().label("visits"), func.count(distinct(d.customer_id))
               .label("customers"), _sum(d.taps).label("taps"))
        .join(Store, Store.id == d.store_id)
        .group_by(d.period, d.store_id, Store.code).order_by(d.period, Store.code)))


def _visits_from_days(main: Session, s: Span, period: str, store_id: int | None,
                      customers: Select | None) -> list:
    """``visits`` from ``visit_days`` (one row a visit, with its taps): per customer first,
    so that the customers are counted as rows, without COUNT(DISTINCT). By month, the whole
    months from ``visit_months``, whose key order (month, store, customer) counts them as
    they are read; the days before and after from ``visit_days``."""
    months = _whole_months(s) if period == "month" else None
    v, m = VisitDay, VisitMonth
    in_store = true() if store_id is None else v.store_id == store_id
    bucket = _period(main, cast(v.day, DateTime()), period, s)
    per_customer = (
        select(bucket.label("period"), v.store_id, v.customer_id,
               func.count().label("visits"), _sum(v.taps).label("taps"))
        .where(v.day >= s.start, v.day <= s.end, in_store,
               _in_segment(v.customer_id, customers),
               true() if months is None else (v.day < months[0]) | (v.day >= months[1]))
        .group_by(bucket, v.store_id, v.customer_id)
    ).subquery("visit_customers")
    d = per_customer.c
    parts = [select(d.period, d.store_id, _sum(d.visits).label("visits"),
                    func.count().label("customers"), _sum(d.taps).label("taps"))
             .group_by(d.period, d.store_id)]
    if months is not None:
        parts.append(select(m.month, m.store_id, _sum(m.days), func.count(), _sum(m.taps))
                     .where(m.month >= months[0], m.month < months[1],
                            true() if store_id is None else m.store_id == store_id,
                            _in_segment(m.customer_id, customers))
                     .group_by(m.month, m.store_id))
    both = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery("visit_counts")
    b = both.c
    return list(main.execute(
        select(b.period, b.store_id, Store.code.label("store_code"), b.visits, b.customers,
               b.taps)
        .join(Store, Store.id == b.store_id).order_by(b.period, Store.code)))


def habits(main: Session, s: Span, *, customers: Select | None = None) -> list:
    """Where customers buy against their home store: one row per (home store, store bought in).

    Rows: home_store_id, store_id, customers (distinct), baskets, net_cents (refunds deducted).
    """
    _for_reports(main)
    if aggregated(main, s):  # customer_days: per customer and store first, then per home
        c = CustomerDay
        per_customer = (
            select(c.store_id, c.customer_id, _sum(c.baskets).label("baskets"),
                   _sum(c.net_cents).label("net_cents"))
            .where(c.day >= s.start, c.day <= s.end, _in_segment(c.customer_id, customers))
            .group_by(c.store_id, c.customer_id)).subquery("habit_customers")
        h = per_customer.c
        return list(main.execute(
            select(Customer.home_store_id, h.store_id, func.count().label("customers"),
                   _sum(h.baskets).label("baskets"), _sum(h.net_cents).label("net_cents"))
            .join(Customer, Customer.id == h.customer_id)
            .group_by(Customer.home_store_id, h.store_id)
            .order_by(Customer.home_store_id, h.store_id)))
    refunded = _refunded_purchases()
    return list(main.execute(
        select(Customer.home_store_id, Purchase.store_id,
               func.count(distinct(Purchase.customer_id)).label("customers"),
               func.count(Purchase.id).label("baskets"),
               _sum(Purchase.total_cents - func.coalesce(refunded.c.amount_cents, 0))
               .label("net_cents"))
        .join(Customer, Customer.id == Purchase.customer_id)
        .outerjoin(refunded, refunded.c.purchase_id == Purchase.id)
        .where(_purchases_in(s, None, customers))
        .group_by(Customer.home_store_id, Purchase.store_id)
        .order_by(Customer.home_store_id, Purchase.store_id)))


def _anonymous(s: Span, store_id: int | None):
    """The tills' sales without a card over the range's days (they report local days)."""
    return and_(AnonymousSales.day >= s.start, AnonymousSales.day <= s.end,
                true() if store_id is None else AnonymousSales.store_id == store_id)


def _share(card, anonymous, reports):
    """Card holders' part of all sales, 0 to 1; None where no till reported anonymous sales
    (or in a segment: sales without a card belong to no segment)."""
    total = card + anonymous
    return case((and_(reports > 0, total > 0), card * 1.0 / total), else_=None)


def sellers(main: Session, s: Span, *, store_id: int | None = None,
            customers: Select | None = None) -> list:
    """Per store and seller (as the till names them; None when it did not): baskets, net
    sales, average basket, customers, the rewards used to pay lines of those baskets, and the
    share of sales to card holders where the tills report their sales without a card.

    Rows: store_id, store_code, seller, baskets, net_cents, average_cents, customers,
    redemptions, anonymous_baskets, anonymous_cents, card_share (0-1 or None).
    """
    _for_reports(main)
    zero = literal(0, Integer)
    rewards = (select(PurchaseLine.purchase_id,
                      func.count(distinct(PurchaseLine.redemption_id)).label("redemptions"))
               .where(PurchaseLine.redemption_id.is_not(None))
               .group_by(PurchaseLine.purchase_id).subquery("rewards"))
    if aggregated(main, s):
        # customer_days per store, seller and customer (the customers are then counted as
        # rows); the rewards from the lines that used one (a partial index), by their purchase
        c = CustomerDay
        card = (select(c.store_id, c.seller, c.customer_id, _sum(c.baskets).label("baskets"),
                       _sum(c.net_cents).label("card_cents"), zero.label("redemptions"),
                       zero.label("anonymous_baskets"), zero.label("anonymous_cents"),
                       zero.label("reports"))
                .where(c.day >= s.start, c.day <= s.end,
                       true() if store_id is None else c.store_id == store_id,
                       _in_segment(c.customer_id, customers))
                .group_by(c.store_id, c.seller, c.customer_id))
        redeemed = (select(Purchase.store_id, func.coalesce(Purchase.seller, ""),
                           cast(None, String), zero, zero, _sum(rewards.c.redemptions),
                           zero, zero, zero)
                    .join(rewards, rewards.c.purchase_id == Purchase.id)
                    .where(_purchases_in(s, store_id, customers))
                    .group_by(Purchase.store_id, Purchase.seller))
        parts, per_customer = [card, redeemed], True
    else:
        refunded = _refunded_purchases()
        card = (select(Purchase.store_id, func.coalesce(Purchase.seller, "").label("seller"),
                       Purchase.customer_id, literal(1, Integer).label("baskets"),
                       (Purchase.total_cents - func.coalesce(refunded.c.amount_cents, 0))
                       .label("card_cents"),
                       func.coalesce(rewards.c.redemptions, 0).label("redemptions"),
                       zero.label("anonymous_baskets"), zero.label("anonymous_cents"),
                       zero.label("reports"))
                .outerjoin(refunded, refunded.c.purchase_id == Purchase.id)
                .outerjoin(rewards, rewards.c.purchase_id == Purchase.id)
                .where(_purchases_in(s, store_id, customers)))
        parts, per_customer = [card], False
    if customers is None:
        parts.append(select(AnonymousSales.store_id, AnonymousSales.seller,
                            cast(None, String), zero, zero, zero,
                            AnonymousSales.baskets, AnonymousSales.total_cents,
                            literal(1, Integer))
                     .where(_anonymous(s, store_id)))
    both = union_all(*parts).subquery("sales") if len(parts) > 1 else card.subquery("sales")
    b = both.c
    # a row per customer already (customer_days), or per purchase
    count_customers = func.count(b.customer_id if per_customer else distinct(b.customer_id))
    baskets = func.coalesce(_sum(b.baskets), 0)
    net = func.coalesce(_sum(b.card_cents), 0)
    anonymous = func.coalesce(_sum(b.anonymous_cents), 0)
    return list(main.execute(
        select(b.store_id, Store.code.label("store_code"),
               case((b.seller == "", None), else_=b.seller).label("seller"),
               baskets.label("baskets"), net.label("net_cents"),
               case((baskets > 0, cast(func.round(net * 1.0 / baskets), Integer)), else_=None)
               .label("average_cents"),
               count_customers.label("customers"),
               func.coalesce(_sum(b.redemptions), 0).label("redemptions"),
               func.coalesce(_sum(b.anonymous_baskets), 0).label("anonymous_baskets"),
               anonymous.label("anonymous_cents"),
               _share(net, anonymous, _sum(b.reports)).label("card_share"))
        .join(Store, Store.id == b.store_id)
        .group_by(b.store_id, Store.code, b.seller)
        .order_by(Store.code, net.desc(), b.seller)))


def stores(main: Session, s: Span, *, store_id: int | None = None,
           customers: Select | None = None) -> list:
    """Per store: enrolments (by the store's kiosks: the enrolment names no seller), baskets,
    net sales, average basket, rewards redeemed there, and the share of sales to card holders
    where the store's tills report their sales without a card.

    Rows: store_id, store_code, enrolments, baskets, net_cents, average_cents, redemptions,
    anonymous_cents, card_share (0-1 or None).
    """
    _for_reports(main)
    refunded = _refunded_purchases()
    net = _sum(Purchase.total_cents - func.coalesce(refunded.c.amount_cents, 0))
    sales = (select(Purchase.store_id, func.count(Purchase.id).label("baskets"),
                    net.label("net_cents"))
             .outerjoin(refunded, refunded.c.purchase_id == Purchase.id)
             .where(_purchases_in(s, store_id, customers))
             .group_by(Purchase.store_id).subquery("sales"))
    enrolled = (select(Device.store_id, func.count(Customer.id).label("enrolments"))
                .join(Device, Device.id == Customer.enrolled_by_device_id)
                .where(Customer.created_at >= s.lo, Customer.created_at < s.hi,
                       _in_segment(Customer.id, customers))
                .group_by(Device.store_id).subquery("enrolled"))
    redeemed = (select(Redemption.store_id, _sum(Redemption.quantity).label("redemptions"))
                .where(Redemption.created_at >= s.lo, Redemption.created_at < s.hi,
                       Redemption.status == "active",
                       _in_segment(Redemption.customer_id, customers))
                .group_by(Redemption.store_id).subquery("redeemed"))
    anonymous = (select(AnonymousSales.store_id,
                        _sum(AnonymousSales.total_cents).label("cents"),
                        func.count().label("reports"))
                 .where(_anonymous(s, store_id), true() if customers is None else false())
                 .group_by(AnonymousSales.store_id).subquery("anonymous"))
    baskets = func.coalesce(sales.c.baskets, 0)
    card = func.coalesce(sales.c.net_cents, 0)
    return list(main.execute(
        select(Store.id.label("store_id"), Store.code.label("store_code"),
               func.coalesce(enrolled.c.enrolments, 0).label("enrolments"),
               baskets.label("baskets"), card.label("net_cents"),
               case((baskets > 0, cast(func.round(sales.c.net_cents * 1.0 / baskets), Integer)),
                    else_=None).label("average_cents"),
               func.coalesce(redeemed.c.redemptions, 0).label("redemptions"),
               func.coalesce(anonymous.c.cents, 0).label("anonymous_cents"),
               _share(card, func.coalesce(anonymous.c.cents, 0),
                      func.coalesce(anonymous.c.reports, 0)).label("card_share"))
        .outerjoin(sales, sales.c.store_id == Store.id)
        .outerjoin(enrolled, enrolled.c.store_id == Store.id)
        .outerjoin(redeemed, redeemed.c.store_id == Store.id)
        .outerjoin(anonymous, anonymous.c.store_id == Store.id)
        .where(true() if store_id is None else Store.id == store_id)
        .order_by(Store.code)))


def store_codes(main: Session) -> dict[int, str]:
    """Every store's code by id, for the pages' headings and filters."""
    return dict(main.execute(select(Store.id, Store.code).order_by(Store.code)).all())
