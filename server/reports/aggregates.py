"""``sales_days``: the daily net sales per store and SKU that the best sellers rank from on
PostgreSQL. The database's triggers (migration 0017) keep it in the transaction of every
purchase line, refund line or change of a purchase's date or store, so it is exact at every
commit and cannot miss a late one; ``rebuild`` computes it whole again (after a change of the
programme's time zone, or a bulk load made with the triggers disabled)."""

from __future__ import annotations

import logging

from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from server.db import utcnow
from server.loyalty import programmes
from server.reports.models import SalesDay, SalesDayState

log = logging.getLogger(__name__)

# as migration 0017's (a migration keeps its own frozen copy): the lines net of their
# refunds, by local day in the state's zone
REBUILD = """
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
"""


def rebuild(main: Session) -> int:
    """Rebuild ``sales_days`` in the programme's zone, in the caller's transaction; returns
    its rows. Purchases and refunds wait for the commit (the tables are locked), so none is
    counted twice or missed. PostgreSQL only (SQLite reads the purchases).

    Raises:
        RuntimeError: on SQLite.
    """
    if main.get_bind().dialect.name != "postgresql":
        raise RuntimeError("sales_days is kept on PostgreSQL only")
    zone = programmes.current(main)[1].timezone
    main.execute(text("SET LOCAL work_mem = '256MB'"))
    main.execute(text("LOCK TABLE purchases, purchase_lines, refund_lines IN SHARE MODE"))
    main.execute(delete(SalesDayState))
    main.add(SalesDayState(id=1, zone=zone, rebuilt_at=utcnow()))
    main.flush()
    main.execute(delete(SalesDay))
    rows = main.execute(text(REBUILD)).rowcount
    log.info("sales_days rebuilt in %s: %d rows", zone, rows)
    return rows
