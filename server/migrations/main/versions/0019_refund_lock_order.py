"""reports: a return takes the day's sales rows in key order

Revision ID: 0019_refund_lock_order
Revises: 0018_customer_days
Create Date: 2026-11-24 23:50:00

0017's trigger on new refund lines updated ``sales_days`` in whatever order its join came
out. A purchase takes the same rows in key order (``INSERT ... ORDER BY ... ON CONFLICT``),
so a return of two SKUs and another customer's purchase of both at the same moment could
each hold one row and wait for the other: PostgreSQL broke the deadlock by failing one, and
the till had to send it again. The rows are now locked in key order first, then updated as
before (tests/test_lock_order.py). PostgreSQL only, like 0017.
"""

from alembic import op

revision = '0019_refund_lock_order'
down_revision = '0018_customer_days'
branch_labels = None
depends_on = None

# the rows a statement's refund lines take back: one per (day of the sale, store, SKU)
_TAKEN = r"""
SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p.paid_at))::date AS day,
       p.store_id, l.sku, sum(n.quantity_milli) AS quantity_milli,
       sum(n.amount_cents) AS amount_cents
  FROM new_refund_lines n
  JOIN purchase_lines l ON l.id = n.line_id
  JOIN purchases p ON p.id = l.purchase_id
 GROUP BY 1, 2, 3
"""

# the update itself, unchanged
_UPDATE = r"""
    UPDATE sales_days s
       SET quantity_milli = s.quantity_milli - r.quantity_milli,
           net_cents = s.net_cents - r.amount_cents
      FROM (""" + _TAKEN + r""") r
     WHERE s.day = r.day AND s.store_id = r.store_id AND s.sku = r.sku;
"""

ORDERED = r"""
CREATE OR REPLACE FUNCTION sales_days_on_refund_lines_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- in key order, as a purchase takes them
    PERFORM 1 FROM sales_days s JOIN (""" + _TAKEN + r""") r
         ON s.day = r.day AND s.store_id = r.store_id AND s.sku = r.sku
      ORDER BY s.day, s.store_id, s.sku
      FOR NO KEY UPDATE OF s;""" + _UPDATE + r"""
    RETURN NULL;
END $$;
"""

# 0017's, as it was
UNORDERED = r"""
CREATE OR REPLACE FUNCTION sales_days_on_refund_lines_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN""" + _UPDATE + r"""
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ORDERED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(UNORDERED)
