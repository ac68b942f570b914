"""Segments: who matches a definition (one composable SQL query), counts, saved segments and
the CSV export.

``members(main, definition, now)`` is the contract other features build on (reports,
campaigns): a ``Select`` of one column, ``customer_id``, to use as ``.in_(...)`` or a
subquery. It obeys the consent rules itself: erased customers are never members, the
purposes the definition names must be granted (the latest row of the consent ledger), and a
filter on sex or age band requires the ``profiling`` consent (DESIGN.md: the coarse profile
is used only with it).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Select, cast, event, func, select, union
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.customers.models import Customer
from server.db import utcnow
from server.loyalty import programmes
from server.loyalty.models import Purchase, PurchaseLine
from server.loyalty.programme import Programme, _add_months
from server.privacy import consent
from server.reports.aggregates import kept_in
from server.reports.models import CategoryDay, CustomerDay
from server.segments.models import Segment
from server.segments.schemas import SEASONS, Definition
from server.stores.models import Store
from server.value.models import ValueScore
from server.value.service import for_reports

log = logging.getLogger(__name__)

LOCAL_PART = "loyalty_local_part"


# --------------------------------------------------------------------------- local time


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_part(moment: str | None, zone: str, part: str) -> int | None:
    """SQLite has no time zones: the month or weekday (0 = Monday) of a stored UTC moment."""
    if moment is None:
        return None
    local = datetime.fromisoformat(moment).replace(tzinfo=UTC).astimezone(_zone(zone))
    return local.month if part == "month" else local.weekday()


@event.listens_for(Engine, "connect")
def _register_local_part(dbapi_connection, _record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function(LOCAL_PART, 3, _local_part, deterministic=True)


def _local(main: Session, moment, zone: str, part: str):
    """The month (1-12) or weekday (0 = Monday) of ``moment`` on the local calendar."""
    if main.get_bind().dialect.name == "sqlite":
        return getattr(func, LOCAL_PART)(moment, zone, part)
    local = func.timezone(zone, moment)
    if part == "month":
        return cast(func.extract("month", local), Integer)
    return cast(func.extract("isodow", local), Integer) - 1


# --------------------------------------------------------------------------- members


def _purchases(main: Session, d: Definition, programme: Programme, now: datetime) -> Select:
    """Customers with a purchase (line) matching every purchase filter of ``d``.

    On PostgreSQL, from the daily aggregates (``customer_days``, ``category_days``: a local
    day gives the month and the weekday) for the whole local days of the range, and from the
    purchases for the parts of days at its ends (``within_months`` starts and ends at an
    instant)."""
    if kept_in(main, programme.timezone):
        return _purchases_from_days(main, d, programme, now)
    return _purchases_read(main, d, programme, now)


def _purchases_from_days(main: Session, d: Definition, programme: Programme,
                         now: datetime) -> Select:
    day = CategoryDay if d.categories else CustomerDay
    query = select(day.customer_id)
    if d.categories:
        query = query.where(CategoryDay.category.in_(d.categories))
    months = set(d.months)
    if d.seasons:
        seasons = {m for s in d.seasons for m in SEASONS[s]}
        months = (months & seasons) if d.months else seasons
    if d.months or d.seasons:
        query = query.where(cast(func.extract("month", day.day), Integer).in_(sorted(months)))
    if d.weekdays:
        query = query.where((cast(func.extract("isodow", day.day), Integer) - 1)
                            .in_(d.weekdays))
    if not d.within_months:
        return query
    # the whole local days between the two instants from the aggregate, the rest of the
    # range from the purchases (the ends' days: what was bought before the start on the first
    # day, or after now on the last, does not count)
    zone = programme.zone
    lo, hi = _add_months(now, -d.within_months, programme.zone), now
    first = lo.astimezone(zone).date()
    if datetime.combine(first, time(0), zone) < lo:
        first += timedelta(days=1)
    last = hi.astimezone(zone).date() - timedelta(days=1)  # today is not over
    if first > last:  # less than a whole day
        return _purchases_read(main, d, programme, now)
    start = datetime.combine(first, time(0), zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(UTC)
    # each end its own range of paid_at, that PostgreSQL estimates (a few hours of purchases)
    # and reads through the index, then their lines by purchase
    both = union(query.where(day.day >= first, day.day <= last),
                 _purchases_read(main, d, programme, now, (lo, start, False)),
                 _purchases_read(main, d, programme, now, (end, hi, True))).subquery("bought")
    return select(both.c.customer_id)


def _purchases_read(main: Session, d: Definition, programme: Programme, now: datetime,
                    between: tuple[datetime, datetime, bool] | None = None) -> Select:
    """``_purchases`` from the purchases and their lines; ``between``: (from, to, whether
    ``to`` is included) instead of ``within_months``."""
    query = select(Purchase.customer_id)
    if d.categories:
        query = query.join(PurchaseLine, PurchaseLine.purchase_id == Purchase.id).where(
            PurchaseLine.category.in_(d.categories))
    if between is not None:
        lo, hi, included = between
        query = query.where(Purchase.paid_at >= lo,
                            Purchase.paid_at <= hi if included else Purchase.paid_at < hi)
    elif d.within_months:
        query = query.where(Purchase.paid_at >= _add_months(now, -d.within_months,
                                                            programme.zone),
                            Purchase.paid_at <= now)
    zone = programme.timezone
    if d.months:
        query = query.where(_local(main, Purchase.paid_at, zone, "month").in_(d.months))
    if d.seasons:
        months = sorted({m for s in d.seasons for m in SEASONS[s]})
        query = query.where(_local(main, Purchase.paid_at, zone, "month").in_(months))
    if d.weekdays:
        query = query.where(_local(main, Purchase.paid_at, zone, "weekday").in_(d.weekdays))
    return query


def members(main: Session, definition: Definition, now: datetime) -> Select:
    """``SELECT customer_id`` of every customer in the segment, in one query.

    Erased customers are never in it; the purposes the definition requires (with
    ``profiling`` when it filters on sex or age band) must be granted.
    """
    d = definition
    programme = programmes.current(main)[1]
    query = select(Customer.id.label("customer_id")).where(Customer.erased_at.is_(None))
    for purpose in d.required_consents:
        query = query.where(Customer.id.in_(consent.consenting(purpose)))
    if d.sexes:
        query = query.where(Customer.sex.in_(d.sexes))
    if d.age_bands:
        query = query.where(Customer.age_band.in_(d.age_bands))
    if d.home_stores:
        query = query.where(Customer.home_store_id.in_(
            select(Store.id).where(Store.code.in_(d.home_stores))))
    if d.regions:
        query = query.where(Customer.home_store_id.in_(
            select(Store.id).where(Store.region.in_(d.regions))))
    if d.tiers:
        query = query.where(Customer.tier.in_(d.tiers))
    if d.uses_purchases:
        query = query.where(Customer.id.in_(_purchases(main, d, programme, now)))
    if d.uses_value:  # the snapshot (server.value.service.refresh): one indexed table
        v = ValueScore
        scored = select(v.customer_id)
        if d.bands:
            scored = scored.where(v.band.in_(d.bands))
        if d.score_min is not None:
            scored = scored.where(v.score >= d.score_min)
        if d.score_max is not None:
            scored = scored.where(v.score <= d.score_max)
        condition = Customer.id.in_(scored)
        if "inactive" in d.bands and d.score_min is None and d.score_max is None:
            condition = condition | Customer.id.not_in(select(v.customer_id))
        query = query.where(condition)
    return query


def count(main: Session, definition: Definition, now: datetime | None = None) -> int:
    """How many customers are in the segment."""
    for_reports(main)
    found = members(main, definition, now or utcnow()).subquery()
    return main.scalar(select(func.count()).select_from(found)) or 0


# --------------------------------------------------------------------------- saved segments


def definition_of(segment: Segment) -> Definition:
    return Definition.model_validate(segment.definition)


def get(main: Session, segment_id: int) -> Segment:
    """Raises: Problem ``segment-not-found``."""
    segment = main.get(Segment, segment_id)
    if segment is None:
        raise Problem("segment-not-found")
    return segment


def saved(main: Session) -> list[Segment]:
    return list(main.scalars(select(Segment).order_by(Segment.name)))


def save(main: Session, name: str, definition: Definition, actor: str,
         segment_id: int | None = None) -> Segment:
    """Create a segment, or change one (``segment_id``); flushes.

    Raises:
        Problem: ``segment-not-found``, ``segment-name-taken``.
    """
    name = " ".join(name.split())
    taken = main.scalar(select(Segment.id).where(Segment.name == name))
    if taken is not None and taken != segment_id:
        raise Problem("segment-name-taken")
    document = definition.model_dump(mode="json", exclude_defaults=True)
    if segment_id is None:
        segment = Segment(name=name, definition=document, created_by=actor)
        main.add(segment)
    else:
        segment = get(main, segment_id)
        segment.name, segment.definition, segment.updated_at = name, document, utcnow()
    try:
        main.flush()
    except IntegrityError:  # the same name saved at the same moment by someone else
        raise Problem("segment-name-taken") from None
    log.info("segment %s saved by %s", segment.id, actor)
    return segment


def delete(main: Session, segment_id: int, actor: str) -> None:
    main.delete(get(main, segment_id))
    main.flush()
    log.info("segment %s deleted by %s", segment_id, actor)


# --------------------------------------------------------------------------- export


def export_rows(main: Session, definition: Definition, now: datetime,
                purpose: str | None = None) -> list:
    """Rows of the CSV: customer id, tier, points, value score, band, home store.

    ``purpose``: only the members who granted it (the export is for that use).
    """
    for_reports(main)
    found = members(main, definition, now)
    if purpose is not None:
        found = found.where(Customer.id.in_(consent.consenting(purpose)))
    found = found.subquery()
    v = ValueScore
    return main.execute(
        select(Customer.id.label("customer_id"), Customer.tier, Customer.points,
               v.score, func.coalesce(v.band, "inactive").label("band"),
               Store.code.label("home_store"), Customer.language)
        .join(found, found.c.customer_id == Customer.id)
        .join(Store, Store.id == Customer.home_store_id)
        .outerjoin(v, v.customer_id == Customer.id)
        .order_by(Customer.id)).all()
