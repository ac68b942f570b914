"""The reports' aggregates, kept on PostgreSQL by the database's triggers in the transaction
of every purchase, purchase line, refund, refund line or visit (and of a change of one), so
they are exact at every commit and cannot miss a late one:

- ``sales_days`` (migration 0017): net sales per local day, store and SKU (best sellers);
- ``sales_months`` (0018): the same by local month, from triggers on ``sales_days``;
- ``customer_days`` (0018): per local day, customer, store and seller, baskets and their
  net total (habits, sellers, segments by month, season or weekday);
- ``category_days`` (0018): per category, local day and customer, lines bought (segments by
  category);
- ``visit_days`` (0018): per local day, store and customer, taps (the visits report);
- ``visit_months`` (0018): the same by local month (days and taps), from triggers on
  ``visit_days``.

All are in the zone of ``sales_days_state``; ``rebuild`` computes them whole again (after a
change of the programme's time zone, or a bulk load made with the triggers disabled). SQLite
keeps none of them: its reports read the purchases."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from server.db import utcnow
from server.loyalty import programmes
from server.reports.models import SalesDayState

log = logging.getLogger(__name__)

# as migrations 0017's and 0018's (a migration keeps its own frozen copy), by local day in the
# state's zone; sales_months and visit_months are not here: the triggers on sales_days and
# visit_days fill them as their rows come
REBUILDS = {
    # the lines net of their refunds
    "sales_days": """
INSERT INTO sales_days (day, store_id, sku, name, category, lines, quantity_milli, net_cents)
SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p.paid_at))::date,
       p.store_id, l.sku, max(l.name), max(l.category), count(*),
       sum(l.quantity_milli - coalesce(r.quantity_milli, 0)),
       sum(l.net_cents - coalesce(r.amount_cents, 0))
FROM purchase_lines l
JOIN purchases p ON p.id = l.purchase_id
LEFT JOIN (SELECT line_id, sum(quantity_milli) AS quantity_milli,
                  sum(amount_cents) AS amount_cents
           FROM refund_lines GROUP BY line_id) r ON r.line_id = l.id
GROUP BY 1, 2, 3
""",
    # the purchases net of their refunds
    "customer_days": """
INSERT INTO customer_days (day, customer_id, store_id, seller, baskets, net_cents)
SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p.paid_at))::date,
       p.customer_id, p.store_id, coalesce(p.seller, ''), count(*),
       sum(p.total_cents - coalesce(r.amount_cents, 0))
FROM purchases p
LEFT JOIN (SELECT purchase_id, sum(amount_cents) AS amount_cents
           FROM refunds GROUP BY purchase_id) r ON r.purchase_id = p.id
GROUP BY 1, 2, 3, 4
""",
    "category_days": """
INSERT INTO category_days (category, day, customer_id, lines)
SELECT l.category,
       (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p.paid_at))::date,
       p.customer_id, count(*)
FROM purchase_lines l
JOIN purchases p ON p.id = l.purchase_id
WHERE l.category IS NOT NULL
GROUP BY 1, 2, 3
""",
    "visit_days": """
INSERT INTO visit_days (day, store_id, customer_id, taps)
SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1),
                 coalesce(v.tapped_at, v.recorded_at)))::date,
       v.store_id, v.customer_id, count(*)
FROM visits v
GROUP BY 1, 2, 3
""",
}
TABLES = ("sales_days", "sales_months", "customer_days", "category_days", "visit_days",
          "visit_months")


def kept_in(main: Session, zone: str) -> bool:
    """Whether the aggregates hold every sale and visit by local day in ``zone``: on
    PostgreSQL (its triggers keep them), built in that zone (after a change of the programme's
    zone, ``flask reports rebuild``; until then the reports read the purchases)."""
    if main.get_bind().dialect.name != "postgresql":
        return False
    kept = main.scalar(select(SalesDayState.zone).where(SalesDayState.id == 1))
    if kept is not None and kept != zone:
        log.warning("the report aggregates are in %s, the programme in %s: reading the "
                    "purchases until `flask reports rebuild`", kept, zone)
    return kept == zone


def rebuild(main: Session) -> int:
    """Rebuild every aggregate in the programme's zone, in the caller's transaction; returns
    the rows of ``sales_days``. Purchases, refunds and taps wait for the commit (the tables
    are locked), so none is counted twice or missed. PostgreSQL only.

    Raises:
        RuntimeError: on SQLite.
    """
    if main.get_bind().dialect.name != "postgresql":
        raise RuntimeError("the report aggregates are kept on PostgreSQL only")
    zone = programmes.current(main)[1].timezone
    main.execute(text("SET LOCAL work_mem = '256MB'"))
    main.execute(text("LOCK TABLE purchases, purchase_lines, refunds, refund_lines, visits "
                      "IN SHARE MODE"))
    main.execute(delete(SalesDayState))
    main.add(SalesDayState(id=1, zone=zone, rebuilt_at=utcnow()))
    main.flush()
    # TRUNCATE, not DELETE: no trigger takes the old rows out of sales_months one by one
    main.execute(text("TRUNCATE " + ", ".join(TABLES)))
    rows = {table: main.execute(text(sql)).rowcount for table, sql in REBUILDS.items()}
    log.info("report aggregates rebuilt in %s: %s rows", zone,
             ", ".join(f"{table} {n}" for table, n in rows.items()))
    return rows["sales_days"]
