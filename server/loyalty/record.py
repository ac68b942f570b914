"""The loyalty part of the record a till shows after a tap, and the points a visit earns."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.hotsql import Prepared
from server.loyalty import ledger, programmes
from server.loyalty.models import Purchase
from server.loyalty.programme import (
    ProgrammeError,
    expiry_date,
    reward_allowed,
    tier_change,
    visit_points,
    window_start,
)
from server.loyalty.service import SETTLES_DEBT
from server.stores.models import Store
from server.taps.models import Visit

EXPIRY_NOTICE = timedelta(days=30)
RECENT = 5
customers, purchases, stores, visits = (Customer.__table__, Purchase.__table__,
                                        Store.__table__, Visit.__table__)

# the record's reads, built once: on a tap, building a statement costs more than running it
_RECENT = Prepared(select(purchases.c.id, purchases.c.paid_at, purchases.c.total_cents,
                  purchases.c.currency, purchases.c.points_earned, stores.c.code)
           .join(stores, stores.c.id == purchases.c.store_id)
           .where(purchases.c.customer_id == bindparam("customer_id"))
           .order_by(purchases.c.paid_at.desc(), purchases.c.id.desc()).limit(RECENT))
_BY_STORE = Prepared(select(stores.c.code, func.count().label("visits"))
             .join(visits, visits.c.store_id == stores.c.id)
             .where(visits.c.customer_id == bindparam("customer_id"))
             .group_by(stores.c.code).order_by(func.count().desc()))
# the record's figures in one read (one round trip on PostgreSQL): the customer's row and
# the ledger sums of ``ledger.qualifying_points`` and ``ledger.expirable``
_entries = ledger.ledger
_FIGURES = Prepared(select(
    customers.c.tier, customers.c.points, customers.c.points_debt,
    ledger.qualifying_total(customers.c.id, bindparam("since")).scalar_subquery()
    .label("qualifying"),
    select(ledger.EXPIRING_DUE).where(_entries.c.customer_id == customers.c.id)
    .scalar_subquery().label("due"),
    select(ledger.EXPIRING_DEBITS).where(_entries.c.customer_id == customers.c.id)
    .scalar_subquery().label("debits"),
).where(customers.c.id == bindparam("customer_id")))
# a visit's one read of its customer's row, taken FOR NO KEY UPDATE (the visit's insert
# already holds that lock on PostgreSQL; SQLite holds the write lock since that insert): two
# taps at the same instant must not both see the old last visit and both earn. With it, what
# the points need: the points a return took back after they were spent, and the qualifying
# points before this visit (``ledger.qualifying_points``)
_VISIT_STATE = Prepared(select(
    customers.c.last_counted_visit_at, customers.c.tier, customers.c.tier_review_at,
    customers.c.points_debt,
    ledger.qualifying_total(customers.c.id, bindparam("since")).scalar_subquery()
    .label("qualifying"))
    .where(customers.c.id == bindparam("customer_id"))
    .with_for_update(key_share=True))
# and its one write: the balance, what is still owed, the last counted visit and the tier
_VISIT_COUNTED = Prepared(
    update(customers).where(customers.c.id == bindparam("customer_id"))
    .values(points=customers.c.points + bindparam("delta"),
            points_debt=customers.c.points_debt - bindparam("settled"),
            last_counted_visit_at=bindparam("at"), tier=bindparam("tier"),
            tier_review_at=bindparam("review_at")))


def count_visit(main: Session, customer_id: str, store_id: int, store_code: str,
                visit_id: int, device_id: int, now: datetime) -> int:
    """Credit the visit rule's points for a new visit, if it counts; returns the points.

    As ``service.credit`` then ``service.settle_tier`` would, in one read and one write of the
    customer's row (a queue replayed after an outage is mostly visits that earn): the points
    first pay what returns took back that was already spent, and the tier is settled on the
    qualifying points with this visit's."""
    _, programme = programmes.current(main)
    state = _VISIT_STATE.one(main, customer_id=customer_id,
                             since=window_start(programme, now))
    points = visit_points(programme, store=store_code, at=now,
                          last_counted_visit=state.last_counted_visit_at)
    if not points:
        return 0
    expires_at = expiry_date(programme, now)
    refs = {"store_id": store_id, "visit_id": visit_id, "device_id": device_id}
    ledger.entry(main, customer_id, points, "visit", reason="visit", expires_at=expires_at,
                 **refs)
    settled = min(state.points_debt or 0, points)
    if settled:  # taken from the lot just credited (its expiry date says which)
        ledger.entry(main, customer_id, -settled, "refund", expires_at=expires_at,
                     reason=SETTLES_DEBT, **refs)
    # both entries are "visit" and "refund": qualifying (ledger.QUALIFYING), dated now
    tier, review_at = tier_change(programme, current=state.tier,
                                  qualifying_points=state.qualifying + points - settled,
                                  at=now, review_at=state.tier_review_at)
    _VISIT_COUNTED.run(main, customer_id=customer_id, delta=points - settled, settled=settled,
                       at=now, tier=tier, review_at=review_at)
    return points


def figures(main: Session, customer_id: str, now: datetime):
    """The customer's tier, points, points owed, qualifying points and the ledger sums of
    the points expiring within ``EXPIRY_NOTICE``, in one read."""
    _, programme = programmes.current(main)
    return _FIGURES.one(main, customer_id=customer_id, since=window_start(programme, now),
                        until=now + EXPIRY_NOTICE)


def loyalty_view(main: Session, customer_id: str, *, figures, store_code: str,
                 now: datetime, language: str | None = None) -> dict:
    """Tier and progress, points expiring soon, rewards within reach, purchases, visits."""
    _, programme = programmes.current(main)
    tier, points, qualifying = figures.tier, figures.points, figures.qualifying
    # the tier above the one held (held until its review, even if qualifying points dropped)
    rank = programme.tier_rank(tier)
    upcoming = next((t for t in programme.tiers if programme.tier_rank(t.code) > rank), None)
    rewards = []
    for reward in programme.rewards:
        try:
            reward_allowed(programme, reward.code, tier=tier, store=store_code)
        except ProgrammeError:
            continue
        if reward.cost <= points:
            rewards.append({"code": reward.code, "name": reward.name, "kind": reward.kind,
                            "cost": reward.cost})
    recent = _RECENT.all(main, customer_id=customer_id)
    by_store = _BY_STORE.all(main, customer_id=customer_id)
    return {
        # the customer display speaks the customer's language
        "tier_name": programme.tier_name(tier, language),
        "tier_progress": {
            "qualifying_points": qualifying,
            "next_tier": upcoming.code if upcoming else None,
            "next_tier_name": programme.tier_name(upcoming.code if upcoming else None, language),
            "points_to_next_tier": max(0, upcoming.threshold - qualifying) if upcoming else 0,
        },
        "points_expiring": {
            "points": max(0, figures.due - figures.debits),  # as ``ledger.expirable``
            "by": (now + EXPIRY_NOTICE).date().isoformat(),
        },
        # points a return took back after they were spent, paid from the next earnings
        "points_owed": figures.points_debt or 0,
        "rewards_available": rewards,
        "recent_purchases": [
            {"purchase_id": p.id, "paid_at": p.paid_at.isoformat(), "store": p.code,
             "total": f"{p.total_cents / 100:.2f}", "currency": p.currency,
             "points": p.points_earned} for p in recent],
        "visits_by_store": [{"store": v.code, "visits": v.visits} for v in by_store],
    }
