"""reports: daily net sales per store and SKU (sales_days), kept by PostgreSQL triggers in the
same transaction as each purchase line, refund line or change of a purchase's date or store

Revision ID: 0017_sales_days
Revises: 0016_value_snapshot
Create Date: 2026-11-24 17:40:00

The triggers are PostgreSQL's only: the speed target (10M purchases) is PostgreSQL's, and SQLite
has no time zones for the local day. On SQLite the tables stay empty (no ``sales_days_state``
row) and the reports keep reading the purchases (one shop).
"""

import sqlalchemy as sa
from alembic import op

revision = '0017_sales_days'
down_revision = '0016_value_snapshot'
branch_labels = None
depends_on = None

FUNCTIONS = r"""
CREATE FUNCTION sales_days_add(p_paid_at timestamptz, p_store integer, p_sku varchar,
                               p_name varchar, p_category varchar, p_lines integer,
                               p_quantity bigint, p_net bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_day date := (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p_paid_at))::date;
BEGIN
    INSERT INTO sales_days AS s (day, store_id, sku, name, category, lines, quantity_milli,
                                 net_cents)
    VALUES (v_day, p_store, p_sku, p_name, p_category, p_lines, p_quantity, p_net)
    ON CONFLICT (day, store_id, sku) DO UPDATE
        SET lines = s.lines + EXCLUDED.lines,
            quantity_milli = s.quantity_milli + EXCLUDED.quantity_milli,
            net_cents = s.net_cents + EXCLUDED.net_cents,
            name = GREATEST(s.name, EXCLUDED.name),
            category = GREATEST(s.category, EXCLUDED.category);
    IF p_lines < 0 THEN
        DELETE FROM sales_days WHERE day = v_day AND store_id = p_store AND sku = p_sku
                                 AND lines <= 0;
    END IF;
END $$;

-- a line, net of what refunds took back from it (its whole contribution)
CREATE FUNCTION sales_days_line(p_line purchase_lines, p_sign integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_paid timestamptz;
    v_store integer;
    v_qty bigint;
    v_amount bigint;
BEGIN
    SELECT paid_at, store_id INTO v_paid, v_store FROM purchases WHERE id = p_line.purchase_id;
    SELECT coalesce(sum(quantity_milli), 0), coalesce(sum(amount_cents), 0)
      INTO v_qty, v_amount FROM refund_lines WHERE line_id = p_line.id;
    PERFORM sales_days_add(v_paid, v_store, p_line.sku, p_line.name, p_line.category, p_sign,
                           p_sign * (p_line.quantity_milli - v_qty),
                           p_sign * (p_line.net_cents - v_amount));
END $$;

CREATE FUNCTION sales_days_on_line() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM sales_days_line(OLD, -1);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        PERFORM sales_days_line(NEW, 1);
    END IF;
    RETURN NULL;
END $$;

-- new lines, once per statement (a purchase's lines are one INSERT): grouped by key, so that
-- ON CONFLICT meets each key once, and taken in key order, so that two purchases of the same
-- SKUs lock their rows in the same order and cannot deadlock
CREATE FUNCTION sales_days_on_lines_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sales_days AS s (day, store_id, sku, name, category, lines, quantity_milli,
                                 net_cents)
    SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p.paid_at))::date,
           p.store_id, n.sku, max(n.name), max(n.category), count(*), sum(n.quantity_milli),
           sum(n.net_cents)
    FROM new_lines n JOIN purchases p ON p.id = n.purchase_id
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (day, store_id, sku) DO UPDATE
        SET lines = s.lines + EXCLUDED.lines,
            quantity_milli = s.quantity_milli + EXCLUDED.quantity_milli,
            net_cents = s.net_cents + EXCLUDED.net_cents,
            name = GREATEST(s.name, EXCLUDED.name),
            category = GREATEST(s.category, EXCLUDED.category);
    RETURN NULL;
END $$;

-- new refund lines, once per statement, deducted from the day of the sale they take back
CREATE FUNCTION sales_days_on_refund_lines_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sales_days s
       SET quantity_milli = s.quantity_milli - r.quantity_milli,
           net_cents = s.net_cents - r.amount_cents
      FROM (SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1),
                             p.paid_at))::date AS day,
                   p.store_id, l.sku, sum(n.quantity_milli) AS quantity_milli,
                   sum(n.amount_cents) AS amount_cents
              FROM new_refund_lines n
              JOIN purchase_lines l ON l.id = n.line_id
              JOIN purchases p ON p.id = l.purchase_id
             GROUP BY 1, 2, 3) r
     WHERE s.day = r.day AND s.store_id = r.store_id AND s.sku = r.sku;
    RETURN NULL;
END $$;

-- a refund line changed or deleted (rare): give back the old, take the new
CREATE FUNCTION sales_days_on_refund_line() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT l.sku, l.name, l.category, p.paid_at, p.store_id, x.sign,
                    x.quantity_milli, x.amount_cents
             FROM (SELECT OLD.line_id AS line_id, 1 AS sign, OLD.quantity_milli,
                          OLD.amount_cents
                   UNION ALL
                   SELECT NEW.line_id, -1, NEW.quantity_milli, NEW.amount_cents
                   WHERE TG_OP = 'UPDATE') x
             JOIN purchase_lines l ON l.id = x.line_id
             JOIN purchases p ON p.id = l.purchase_id LOOP
        PERFORM sales_days_add(r.paid_at, r.store_id, r.sku, r.name, r.category, 0,
                               r.sign * r.quantity_milli, r.sign * r.amount_cents);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION sales_days_on_purchase() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    l purchase_lines;
BEGIN
    -- a purchase moved in time or to another store: its lines move with it
    FOR l IN SELECT * FROM purchase_lines WHERE purchase_id = OLD.id LOOP
        PERFORM sales_days_add(OLD.paid_at, OLD.store_id, l.sku, l.name, l.category, -1,
                               -(l.quantity_milli - coalesce((SELECT sum(quantity_milli)
                                   FROM refund_lines WHERE line_id = l.id), 0)),
                               -(l.net_cents - coalesce((SELECT sum(amount_cents)
                                   FROM refund_lines WHERE line_id = l.id), 0)));
        PERFORM sales_days_add(NEW.paid_at, NEW.store_id, l.sku, l.name, l.category, 1,
                               l.quantity_milli - coalesce((SELECT sum(quantity_milli)
                                   FROM refund_lines WHERE line_id = l.id), 0),
                               l.net_cents - coalesce((SELECT sum(amount_cents)
                                   FROM refund_lines WHERE line_id = l.id), 0));
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER sales_days_lines_inserted AFTER INSERT ON purchase_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION sales_days_on_lines_inserted();
CREATE TRIGGER sales_days_line AFTER DELETE
    OR UPDATE OF purchase_id, sku, name, category, quantity_milli, net_cents
    ON purchase_lines FOR EACH ROW EXECUTE FUNCTION sales_days_on_line();
CREATE TRIGGER sales_days_refund_lines_inserted AFTER INSERT ON refund_lines
    REFERENCING NEW TABLE AS new_refund_lines
    FOR EACH STATEMENT EXECUTE FUNCTION sales_days_on_refund_lines_inserted();
CREATE TRIGGER sales_days_refund_line AFTER DELETE
    OR UPDATE OF line_id, quantity_milli, amount_cents
    ON refund_lines FOR EACH ROW EXECUTE FUNCTION sales_days_on_refund_line();
CREATE TRIGGER sales_days_purchase AFTER UPDATE OF paid_at, store_id ON purchases
    FOR EACH ROW WHEN (OLD.paid_at IS DISTINCT FROM NEW.paid_at
                       OR OLD.store_id IS DISTINCT FROM NEW.store_id)
    EXECUTE FUNCTION sales_days_on_purchase();
"""

DROP = """
DROP TRIGGER IF EXISTS sales_days_purchase ON purchases;
DROP TRIGGER IF EXISTS sales_days_refund_line ON refund_lines;
DROP TRIGGER IF EXISTS sales_days_refund_lines_inserted ON refund_lines;
DROP TRIGGER IF EXISTS sales_days_line ON purchase_lines;
DROP TRIGGER IF EXISTS sales_days_lines_inserted ON purchase_lines;
DROP FUNCTION IF EXISTS sales_days_on_purchase();
DROP FUNCTION IF EXISTS sales_days_on_refund_line();
DROP FUNCTION IF EXISTS sales_days_on_line();
DROP FUNCTION IF EXISTS sales_days_on_refund_lines_inserted();
DROP FUNCTION IF EXISTS sales_days_on_lines_inserted();
DROP FUNCTION IF EXISTS sales_days_line(purchase_lines, integer);
DROP FUNCTION IF EXISTS sales_days_add(timestamptz, integer, varchar, varchar, varchar, integer,
                                       bigint, bigint);
"""


def upgrade() -> None:
    op.create_table(
        'sales_days_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('zone', sa.String(length=64), nullable=False),
        sa.Column('rebuilt_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sales_days_state')),
    )
    op.create_table(
        'sales_days',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('sku', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('category', sa.String(length=64), nullable=True),
        sa.Column('lines', sa.Integer(), nullable=False),
        sa.Column('quantity_milli', sa.BigInteger(), nullable=False),
        sa.Column('net_cents', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'store_id', 'sku', name=op.f('pk_sales_days')),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTIONS)
    # the zone in force, and the sales so far (server.reports.aggregates.rebuild does the same)
    op.execute("""
        INSERT INTO sales_days_state (id, zone, rebuilt_at)
        VALUES (1, coalesce((SELECT document->>'timezone' FROM programme_versions
                             ORDER BY id DESC LIMIT 1), 'Europe/Paris'), now())""")
    op.execute(REBUILD)


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


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
    op.drop_table('sales_days')
    op.drop_table('sales_days_state')
