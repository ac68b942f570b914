"""reports: per-customer daily aggregates (customer_days, category_days, visit_days) and
monthly grains of sales_days and visit_days (sales_months, visit_months), kept by PostgreSQL triggers in the same
transaction as each purchase, purchase line, refund or visit

Revision ID: 0018_customer_days
Revises: 0017_sales_days
Create Date: 2026-11-24 20:40:00

The grain is the local day, not the month: with some 3 purchases a customer a year, a
customer's month holds about one purchase, so a month grain would be no smaller, and the day
covers any range of local dates exactly (a report's range, a segment's months or weekdays)
with no partial month to read from the purchases. ``sales_months`` does pay (a store sells a
SKU on many days of a month); ``visit_months`` (a customer's visits to a store in a month, kept
from ``visit_days``) is in the order the visits report counts its customers, per month and
store, without a hash of every customer. Like 0017: PostgreSQL only, in the zone of
``sales_days_state``; on SQLite the tables stay empty and the reports read the purchases.
"""

import sqlalchemy as sa
from alembic import op

revision = '0018_customer_days'
down_revision = '0017_sales_days'
branch_labels = None
depends_on = None

FUNCTIONS = r"""
CREATE FUNCTION aggregates_day(p_moment timestamptz) RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT (timezone((SELECT zone FROM sales_days_state WHERE id = 1), p_moment))::date
$$;

-- ---------------------------------------------------------------- customer_days
CREATE FUNCTION customer_days_add(p_paid_at timestamptz, p_customer varchar, p_store integer,
                                  p_seller varchar, p_baskets integer, p_net bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_day date := aggregates_day(p_paid_at);
    v_seller varchar := coalesce(p_seller, '');
BEGIN
    INSERT INTO customer_days AS c (day, customer_id, store_id, seller, baskets, net_cents)
    VALUES (v_day, p_customer, p_store, v_seller, p_baskets, p_net)
    ON CONFLICT (day, customer_id, store_id, seller) DO UPDATE
        SET baskets = c.baskets + EXCLUDED.baskets,
            net_cents = c.net_cents + EXCLUDED.net_cents;
    IF p_baskets < 0 THEN
        DELETE FROM customer_days WHERE day = v_day AND customer_id = p_customer
                                    AND store_id = p_store AND seller = v_seller
                                    AND baskets <= 0;
    END IF;
END $$;

CREATE FUNCTION category_days_add(p_paid_at timestamptz, p_customer varchar,
                                  p_category varchar, p_lines integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_day date := aggregates_day(p_paid_at);
BEGIN
    IF p_category IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO category_days AS c (category, day, customer_id, lines)
    VALUES (p_category, v_day, p_customer, p_lines)
    ON CONFLICT (category, day, customer_id) DO UPDATE SET lines = c.lines + EXCLUDED.lines;
    IF p_lines < 0 THEN
        DELETE FROM category_days WHERE category = p_category AND day = v_day
                                    AND customer_id = p_customer AND lines <= 0;
    END IF;
END $$;

CREATE FUNCTION visit_days_add(p_moment timestamptz, p_store integer, p_customer varchar,
                               p_taps integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_day date := aggregates_day(p_moment);
BEGIN
    INSERT INTO visit_days AS v (day, store_id, customer_id, taps)
    VALUES (v_day, p_store, p_customer, p_taps)
    ON CONFLICT (day, store_id, customer_id) DO UPDATE SET taps = v.taps + EXCLUDED.taps;
    IF p_taps < 0 THEN
        DELETE FROM visit_days WHERE day = v_day AND store_id = p_store
                                 AND customer_id = p_customer AND taps <= 0;
    END IF;
END $$;

-- new purchases, once per statement, grouped and in key order (no deadlock between two)
CREATE FUNCTION customer_days_on_purchases_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_days AS c (day, customer_id, store_id, seller, baskets, net_cents)
    SELECT aggregates_day(n.paid_at), n.customer_id, n.store_id, coalesce(n.seller, ''),
           count(*), sum(n.total_cents)
    FROM new_purchases n GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (day, customer_id, store_id, seller) DO UPDATE
        SET baskets = c.baskets + EXCLUDED.baskets,
            net_cents = c.net_cents + EXCLUDED.net_cents;
    RETURN NULL;
END $$;

-- a purchase changed (moved in time, to a store, a seller, a customer; its total) or
-- deleted: its old contribution goes, the new one comes; its lines' categories move with it
CREATE FUNCTION customer_days_on_purchase() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_refunded bigint;
    c record;
BEGIN
    SELECT coalesce(sum(amount_cents), 0) INTO v_refunded FROM refunds WHERE purchase_id = OLD.id;
    PERFORM customer_days_add(OLD.paid_at, OLD.customer_id, OLD.store_id, OLD.seller, -1,
                              -(OLD.total_cents - v_refunded));
    IF TG_OP = 'UPDATE' THEN
        PERFORM customer_days_add(NEW.paid_at, NEW.customer_id, NEW.store_id, NEW.seller, 1,
                                  NEW.total_cents - v_refunded);
        IF OLD.paid_at IS DISTINCT FROM NEW.paid_at
           OR OLD.customer_id IS DISTINCT FROM NEW.customer_id THEN
            FOR c IN SELECT category, count(*)::integer AS lines FROM purchase_lines
                     WHERE purchase_id = OLD.id AND category IS NOT NULL
                     GROUP BY category ORDER BY category LOOP
                PERFORM category_days_add(OLD.paid_at, OLD.customer_id, c.category, -c.lines);
                PERFORM category_days_add(NEW.paid_at, NEW.customer_id, c.category, c.lines);
            END LOOP;
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- new refunds, once per statement: deducted from the day of the purchase they take back
CREATE FUNCTION customer_days_on_refunds_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customer_days c SET net_cents = c.net_cents - r.amount_cents
      FROM (SELECT aggregates_day(p.paid_at) AS day, p.customer_id, p.store_id,
                   coalesce(p.seller, '') AS seller, sum(n.amount_cents) AS amount_cents
              FROM new_refunds n JOIN purchases p ON p.id = n.purchase_id
             GROUP BY 1, 2, 3, 4) r
     WHERE c.day = r.day AND c.customer_id = r.customer_id AND c.store_id = r.store_id
       AND c.seller = r.seller;
    RETURN NULL;
END $$;

-- a refund changed or deleted (rare): give back the old amount, take the new
CREATE FUNCTION customer_days_on_refund() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.paid_at, p.customer_id, p.store_id, p.seller, x.amount_cents
             FROM (SELECT OLD.purchase_id AS purchase_id, -OLD.amount_cents AS amount_cents
                   UNION ALL
                   SELECT NEW.purchase_id, NEW.amount_cents WHERE TG_OP = 'UPDATE') x
             JOIN purchases p ON p.id = x.purchase_id LOOP
        PERFORM customer_days_add(r.paid_at, r.customer_id, r.store_id, r.seller, 0,
                                  -r.amount_cents);
    END LOOP;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------- category_days
CREATE FUNCTION category_days_on_lines_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO category_days AS c (category, day, customer_id, lines)
    SELECT n.category, aggregates_day(p.paid_at), p.customer_id, count(*)
    FROM new_lines n JOIN purchases p ON p.id = n.purchase_id
    WHERE n.category IS NOT NULL
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (category, day, customer_id) DO UPDATE SET lines = c.lines + EXCLUDED.lines;
    RETURN NULL;
END $$;

CREATE FUNCTION category_days_on_line() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.paid_at, p.customer_id, x.category, x.lines
             FROM (SELECT OLD.purchase_id AS purchase_id, OLD.category AS category, -1 AS lines
                   UNION ALL
                   SELECT NEW.purchase_id, NEW.category, 1 WHERE TG_OP = 'UPDATE') x
             JOIN purchases p ON p.id = x.purchase_id LOOP
        PERFORM category_days_add(r.paid_at, r.customer_id, r.category, r.lines);
    END LOOP;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------- visit_days
CREATE FUNCTION visit_days_on_visits_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO visit_days AS v (day, store_id, customer_id, taps)
    SELECT aggregates_day(coalesce(n.tapped_at, n.recorded_at)), n.store_id, n.customer_id,
           count(*)
    FROM new_visits n GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (day, store_id, customer_id) DO UPDATE SET taps = v.taps + EXCLUDED.taps;
    RETURN NULL;
END $$;

CREATE FUNCTION visit_days_on_visit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM visit_days_add(coalesce(OLD.tapped_at, OLD.recorded_at), OLD.store_id,
                           OLD.customer_id, -1);
    IF TG_OP = 'UPDATE' THEN
        PERFORM visit_days_add(coalesce(NEW.tapped_at, NEW.recorded_at), NEW.store_id,
                               NEW.customer_id, 1);
    END IF;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------- sales_months
-- sales_days by local month: each change of a day row is added to its month's row
CREATE FUNCTION sales_months_on_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sales_months AS m (month, store_id, sku, name, category, lines,
                                   quantity_milli, net_cents)
    SELECT date_trunc('month', x.day)::date, x.store_id, x.sku, max(x.name), max(x.category),
           sum(x.lines), sum(x.quantity_milli), sum(x.net_cents)
    FROM (SELECT day, store_id, sku, name, category, lines, quantity_milli, net_cents
          FROM new_days
          UNION ALL
          SELECT day, store_id, sku, name, category, -lines, -quantity_milli, -net_cents
          FROM old_days) x
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (month, store_id, sku) DO UPDATE
        SET lines = m.lines + EXCLUDED.lines,
            quantity_milli = m.quantity_milli + EXCLUDED.quantity_milli,
            net_cents = m.net_cents + EXCLUDED.net_cents,
            name = GREATEST(m.name, EXCLUDED.name),
            category = GREATEST(m.category, EXCLUDED.category);
    DELETE FROM sales_months m USING (SELECT DISTINCT date_trunc('month', day)::date AS month,
                                             store_id, sku FROM old_days) o
     WHERE m.month = o.month AND m.store_id = o.store_id AND m.sku = o.sku AND m.lines <= 0;
    RETURN NULL;
END $$;

CREATE FUNCTION sales_months_on_days_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sales_months AS m (month, store_id, sku, name, category, lines,
                                   quantity_milli, net_cents)
    SELECT date_trunc('month', n.day)::date, n.store_id, n.sku, max(n.name), max(n.category),
           sum(n.lines), sum(n.quantity_milli), sum(n.net_cents)
    FROM new_days n GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (month, store_id, sku) DO UPDATE
        SET lines = m.lines + EXCLUDED.lines,
            quantity_milli = m.quantity_milli + EXCLUDED.quantity_milli,
            net_cents = m.net_cents + EXCLUDED.net_cents,
            name = GREATEST(m.name, EXCLUDED.name),
            category = GREATEST(m.category, EXCLUDED.category);
    RETURN NULL;
END $$;

CREATE FUNCTION sales_months_on_days_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sales_months m
       SET lines = m.lines - o.lines, quantity_milli = m.quantity_milli - o.quantity_milli,
           net_cents = m.net_cents - o.net_cents
      FROM (SELECT date_trunc('month', day)::date AS month, store_id, sku, sum(lines) AS lines,
                   sum(quantity_milli) AS quantity_milli, sum(net_cents) AS net_cents
              FROM old_days GROUP BY 1, 2, 3) o
     WHERE m.month = o.month AND m.store_id = o.store_id AND m.sku = o.sku;
    DELETE FROM sales_months m USING (SELECT DISTINCT date_trunc('month', day)::date AS month,
                                             store_id, sku FROM old_days) o
     WHERE m.month = o.month AND m.store_id = o.store_id AND m.sku = o.sku AND m.lines <= 0;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------- visit_months
-- visit_days by local month: a day row is a visit, so its month counts the rows (days) and
-- adds their taps
CREATE FUNCTION visit_months_on_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO visit_months AS m (month, store_id, customer_id, days, taps)
    SELECT date_trunc('month', x.day)::date, x.store_id, x.customer_id, sum(x.days),
           sum(x.taps)
    FROM (SELECT day, store_id, customer_id, 1 AS days, taps FROM new_days
          UNION ALL
          SELECT day, store_id, customer_id, -1, -taps FROM old_days) x
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (month, store_id, customer_id) DO UPDATE
        SET days = m.days + EXCLUDED.days, taps = m.taps + EXCLUDED.taps;
    RETURN NULL;
END $$;

CREATE FUNCTION visit_months_on_days_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO visit_months AS m (month, store_id, customer_id, days, taps)
    SELECT date_trunc('month', n.day)::date, n.store_id, n.customer_id, count(*), sum(n.taps)
    FROM new_days n GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (month, store_id, customer_id) DO UPDATE
        SET days = m.days + EXCLUDED.days, taps = m.taps + EXCLUDED.taps;
    RETURN NULL;
END $$;

CREATE FUNCTION visit_months_on_days_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE visit_months m SET days = m.days - o.days, taps = m.taps - o.taps
      FROM (SELECT date_trunc('month', day)::date AS month, store_id, customer_id,
                   count(*) AS days, sum(taps) AS taps
              FROM old_days GROUP BY 1, 2, 3) o
     WHERE m.month = o.month AND m.store_id = o.store_id AND m.customer_id = o.customer_id;
    DELETE FROM visit_months m USING (SELECT DISTINCT date_trunc('month', day)::date AS month,
                                             store_id, customer_id FROM old_days) o
     WHERE m.month = o.month AND m.store_id = o.store_id AND m.customer_id = o.customer_id
       AND m.days <= 0;
    RETURN NULL;
END $$;

CREATE TRIGGER customer_days_purchases_inserted AFTER INSERT ON purchases
    REFERENCING NEW TABLE AS new_purchases
    FOR EACH STATEMENT EXECUTE FUNCTION customer_days_on_purchases_inserted();
CREATE TRIGGER customer_days_purchase_changed
    AFTER UPDATE OF paid_at, customer_id, store_id, seller, total_cents ON purchases
    FOR EACH ROW WHEN (OLD.paid_at IS DISTINCT FROM NEW.paid_at
                       OR OLD.customer_id IS DISTINCT FROM NEW.customer_id
                       OR OLD.store_id IS DISTINCT FROM NEW.store_id
                       OR OLD.seller IS DISTINCT FROM NEW.seller
                       OR OLD.total_cents IS DISTINCT FROM NEW.total_cents)
    EXECUTE FUNCTION customer_days_on_purchase();
CREATE TRIGGER customer_days_purchase_deleted AFTER DELETE ON purchases
    FOR EACH ROW EXECUTE FUNCTION customer_days_on_purchase();
CREATE TRIGGER customer_days_refunds_inserted AFTER INSERT ON refunds
    REFERENCING NEW TABLE AS new_refunds
    FOR EACH STATEMENT EXECUTE FUNCTION customer_days_on_refunds_inserted();
CREATE TRIGGER customer_days_refund AFTER DELETE OR UPDATE OF purchase_id, amount_cents
    ON refunds FOR EACH ROW EXECUTE FUNCTION customer_days_on_refund();
CREATE TRIGGER category_days_lines_inserted AFTER INSERT ON purchase_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION category_days_on_lines_inserted();
CREATE TRIGGER category_days_line AFTER DELETE OR UPDATE OF purchase_id, category
    ON purchase_lines FOR EACH ROW EXECUTE FUNCTION category_days_on_line();
CREATE TRIGGER visit_days_visits_inserted AFTER INSERT ON visits
    REFERENCING NEW TABLE AS new_visits
    FOR EACH STATEMENT EXECUTE FUNCTION visit_days_on_visits_inserted();
CREATE TRIGGER visit_days_visit
    AFTER DELETE OR UPDATE OF tapped_at, recorded_at, store_id, customer_id ON visits
    FOR EACH ROW EXECUTE FUNCTION visit_days_on_visit();
CREATE TRIGGER sales_months_days_inserted AFTER INSERT ON sales_days
    REFERENCING NEW TABLE AS new_days
    FOR EACH STATEMENT EXECUTE FUNCTION sales_months_on_days_inserted();
CREATE TRIGGER sales_months_days_updated AFTER UPDATE ON sales_days
    REFERENCING NEW TABLE AS new_days OLD TABLE AS old_days
    FOR EACH STATEMENT EXECUTE FUNCTION sales_months_on_days();
CREATE TRIGGER sales_months_days_deleted AFTER DELETE ON sales_days
    REFERENCING OLD TABLE AS old_days
    FOR EACH STATEMENT EXECUTE FUNCTION sales_months_on_days_deleted();
CREATE TRIGGER visit_months_days_inserted AFTER INSERT ON visit_days
    REFERENCING NEW TABLE AS new_days
    FOR EACH STATEMENT EXECUTE FUNCTION visit_months_on_days_inserted();
CREATE TRIGGER visit_months_days_updated AFTER UPDATE ON visit_days
    REFERENCING NEW TABLE AS new_days OLD TABLE AS old_days
    FOR EACH STATEMENT EXECUTE FUNCTION visit_months_on_days();
CREATE TRIGGER visit_months_days_deleted AFTER DELETE ON visit_days
    REFERENCING OLD TABLE AS old_days
    FOR EACH STATEMENT EXECUTE FUNCTION visit_months_on_days_deleted();
"""

DROP = """
DROP TRIGGER IF EXISTS visit_months_days_deleted ON visit_days;
DROP TRIGGER IF EXISTS visit_months_days_updated ON visit_days;
DROP TRIGGER IF EXISTS visit_months_days_inserted ON visit_days;
DROP FUNCTION IF EXISTS visit_months_on_days_deleted();
DROP FUNCTION IF EXISTS visit_months_on_days_inserted();
DROP FUNCTION IF EXISTS visit_months_on_days();
DROP TRIGGER IF EXISTS sales_months_days_deleted ON sales_days;
DROP TRIGGER IF EXISTS sales_months_days_updated ON sales_days;
DROP TRIGGER IF EXISTS sales_months_days_inserted ON sales_days;
DROP TRIGGER IF EXISTS visit_days_visit ON visits;
DROP TRIGGER IF EXISTS visit_days_visits_inserted ON visits;
DROP TRIGGER IF EXISTS category_days_line ON purchase_lines;
DROP TRIGGER IF EXISTS category_days_lines_inserted ON purchase_lines;
DROP TRIGGER IF EXISTS customer_days_refund ON refunds;
DROP TRIGGER IF EXISTS customer_days_refunds_inserted ON refunds;
DROP TRIGGER IF EXISTS customer_days_purchase_deleted ON purchases;
DROP TRIGGER IF EXISTS customer_days_purchase_changed ON purchases;
DROP TRIGGER IF EXISTS customer_days_purchases_inserted ON purchases;
DROP FUNCTION IF EXISTS sales_months_on_days_deleted();
DROP FUNCTION IF EXISTS sales_months_on_days_inserted();
DROP FUNCTION IF EXISTS sales_months_on_days();
DROP FUNCTION IF EXISTS visit_days_on_visit();
DROP FUNCTION IF EXISTS visit_days_on_visits_inserted();
DROP FUNCTION IF EXISTS category_days_on_line();
DROP FUNCTION IF EXISTS category_days_on_lines_inserted();
DROP FUNCTION IF EXISTS customer_days_on_refund();
DROP FUNCTION IF EXISTS customer_days_on_refunds_inserted();
DROP FUNCTION IF EXISTS customer_days_on_purchase();
DROP FUNCTION IF EXISTS customer_days_on_purchases_inserted();
DROP FUNCTION IF EXISTS visit_days_add(timestamptz, integer, varchar, integer);
DROP FUNCTION IF EXISTS category_days_add(timestamptz, varchar, varchar, integer);
DROP FUNCTION IF EXISTS customer_days_add(timestamptz, varchar, integer, varchar, integer,
                                          bigint);
DROP FUNCTION IF EXISTS aggregates_day(timestamptz);
"""

# as server.reports.aggregates.REBUILDS (a migration keeps its own frozen copy), in the zone
# of sales_days_state. visit_months has no statement here: the triggers made just before
# fill it from visit_days as that is rebuilt (an INSERT of its own would add every row twice)
REBUILDS = {
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
SELECT l.category, (timezone((SELECT zone FROM sales_days_state WHERE id = 1),
                             p.paid_at))::date,
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
    "sales_months": """
INSERT INTO sales_months (month, store_id, sku, name, category, lines, quantity_milli,
                          net_cents)
SELECT date_trunc('month', day)::date, store_id, sku, max(name), max(category), sum(lines),
       sum(quantity_milli), sum(net_cents)
FROM sales_days
GROUP BY 1, 2, 3
""",
}


def upgrade() -> None:
    op.create_table(
        'customer_days',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('seller', sa.String(length=64), nullable=False),
        sa.Column('baskets', sa.Integer(), nullable=False),
        sa.Column('net_cents', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'customer_id', 'store_id', 'seller',
                                name=op.f('pk_customer_days')),
    )
    op.create_table(
        'category_days',
        sa.Column('category', sa.String(length=64), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('lines', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('category', 'day', 'customer_id',
                                name=op.f('pk_category_days')),
    )
    op.create_table(
        'visit_days',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('taps', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'store_id', 'customer_id', name=op.f('pk_visit_days')),
    )
    op.create_table(
        'visit_months',
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('days', sa.Integer(), nullable=False),
        sa.Column('taps', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('month', 'store_id', 'customer_id',
                                name=op.f('pk_visit_months')),
    )
    op.create_table(
        'sales_months',
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('sku', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('category', sa.String(length=64), nullable=True),
        sa.Column('lines', sa.Integer(), nullable=False),
        sa.Column('quantity_milli', sa.BigInteger(), nullable=False),
        sa.Column('net_cents', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('month', 'store_id', 'sku', name=op.f('pk_sales_months')),
    )
    # the sellers report counts the rewards used per purchase: the few lines that used one
    op.create_index('ix_purchase_lines_redeemed', 'purchase_lines',
                    ['purchase_id', 'redemption_id'],
                    postgresql_where=sa.text("redemption_id IS NOT NULL"),
                    sqlite_where=sa.text("redemption_id IS NOT NULL"))
    if op.get_bind().dialect.name != "postgresql":  # the tables stay empty: no triggers
        op.create_index('ix_customer_days_customer_day', 'customer_days',
                        ['customer_id', 'day'])
        return
    op.execute(FUNCTIONS)
    # the sales so far, in sales_days_state's zone (server.reports.aggregates.rebuild does the
    # same); the indexes after the rows, faster than row by row
    op.execute("SET LOCAL work_mem = '256MB'")
    for statement in REBUILDS.values():
        op.execute(statement)
    # a segment asks "has this customer bought on such days": by customer
    op.create_index('ix_customer_days_customer_day', 'customer_days', ['customer_id', 'day'])
    for table in (*REBUILDS, "visit_months"):  # the planner's statistics now, not later
        op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
    op.drop_index('ix_purchase_lines_redeemed', table_name='purchase_lines')
    op.drop_table('sales_months')
    op.drop_table('visit_months')
    op.drop_table('visit_days')
    op.drop_table('category_days')
    op.drop_table('customer_days')
