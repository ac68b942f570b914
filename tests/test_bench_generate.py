"""The benchmark's data generator (bench/generate.py) at a tiny scale, on both databases.

The generator runs as the benchmark runs it (a subprocess with its command line); then the
app itself reads what it made: a tap of a generated card answers its customer's record with
the name decrypted from the vault, a revoked card is refused, a new purchase is recorded
next to the generated ones, and the sums the app relies on hold (balances equal ledgers,
purchase totals equal their lines, refunded quantities equal the refund lines).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.support.fixtures_server import PgDatabases

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS, PURCHASES = 300, 2500


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                ids=["sqlite", "postgresql"])
def generated(request, tmp_path_factory):
    """``(app, bench.json)`` of a generated database (once per backend for the module)."""
    from server import create_app

    tmp_path = tmp_path_factory.mktemp(f"bench-{request.param}")
    instance = tmp_path / "instance"
    pg = None
    if request.param == "postgresql":
        pg = PgDatabases.create(request.getfixturevalue("postgres_server"))
        urls = pg.urls
    else:
        urls = {"DATABASE_URL": f"sqlite:///{tmp_path / 'main.db'}",
                "VAULT_URL": f"sqlite:///{tmp_path / 'vault.db'}"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generate.py"),
         "--database-url", urls["DATABASE_URL"], "--vault-url", urls["VAULT_URL"],
         "--customers", str(CUSTOMERS), "--purchases", str(PURCHASES), "--seed", "7",
         "--instance", str(instance)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((instance / "bench.json").read_text())
    app = create_app({**urls, "INSTANCE_PATH": str(instance),
                      "CARD_BASE_URL": "https://shop.example"})
    try:
        yield app, info
    finally:
        app.extensions["loyalty.db"].dispose()
        if pg is not None:
            pg.drop()


def _scalar(app, sql: str, **params):
    with Session(app.extensions["loyalty.db"].main) as main:
        return main.execute(text(sql), params).scalar()


def _card_url(app, card_id: str, generation: int, key_id: int) -> str:
    from server.cards import token
    from server.cards.keys import load_keyring

    key = load_keyring(app.config["CARD_KEYS_FILE"]).keys[key_id]
    return f"https://shop.example/c/{token.encode(key_id, key, bytes.fromhex(card_id), generation)}"


def test_generated_data_is_valid_for_the_app(generated):
    app, info = generated
    assert info["customers"] == CUSTOMERS and info["purchases"] == PURCHASES
    assert _scalar(app, "SELECT count(*) FROM customers") == CUSTOMERS
    assert _scalar(app, "SELECT count(*) FROM purchases") == PURCHASES
    # every customer has exactly one active card and personal data in the vault
    assert _scalar(app, "SELECT count(*) FROM (SELECT customer_id FROM cards WHERE status = "
                        "'active' GROUP BY customer_id HAVING count(*) = 1) x") == CUSTOMERS
    assert _scalar(app, "SELECT count(*) FROM cards WHERE status = 'revoked'") > 0
    with Session(app.extensions["loyalty.db"].vault) as vault:
        assert vault.execute(text("SELECT count(*) FROM vault_records")).scalar() == CUSTOMERS
    # the sums the app keeps: balance = ledger, totals = lines, refunds = refund lines
    assert _scalar(app, """SELECT count(*) FROM customers c WHERE c.points <>
        (SELECT coalesce(sum(delta), 0) FROM points_ledger l WHERE l.customer_id = c.id)""") == 0
    assert _scalar(app, "SELECT count(*) FROM customers WHERE points < 0") == 0
    assert _scalar(app, """SELECT count(*) FROM purchases p WHERE p.total_cents <>
        (SELECT sum(net_cents) FROM purchase_lines l WHERE l.purchase_id = p.id)
        OR p.points_earned <> (SELECT sum(points_earned) FROM purchase_lines l
                               WHERE l.purchase_id = p.id)""") == 0
    assert _scalar(app, """SELECT count(*) FROM purchase_lines l WHERE l.refunded_milli <>
        (SELECT coalesce(sum(quantity_milli), 0) FROM refund_lines r
         WHERE r.line_id = l.id)""") == 0
    assert _scalar(app, "SELECT count(DISTINCT store_id) FROM purchases") >= 3
    assert _scalar(app, "SELECT count(*) FROM visits") > 0


def test_sales_days_agree_with_the_generated_purchases(generated):
    """The load skips the sales_days triggers (session_replication_role = replica): the
    generator rebuilds it at the end, so the best sellers read what the purchases say.
    SQLite keeps no sales_days (its reports read the purchases)."""
    app, _info = generated
    if app.extensions["loyalty.db"].main.dialect.name != "postgresql":
        assert _scalar(app, "SELECT count(*) FROM sales_days") == 0
        return
    from server.loyalty import programmes

    with app.app_context(), Session(app.extensions["loyalty.db"].main) as main:
        zone = programmes.current(main)[1].timezone
    assert _scalar(app, "SELECT zone FROM sales_days_state WHERE id = 1") == zone
    assert _scalar(app, "SELECT sum(lines) FROM sales_days") == \
        _scalar(app, "SELECT count(*) FROM purchase_lines") > 0
    # per store and SKU, the lines net of their refunds (the days: the rebuild's own zone)
    assert _scalar(app, """
        WITH lines AS (
            SELECT p.store_id, l.sku, count(*) AS n,
                   sum(l.quantity_milli - coalesce((SELECT sum(r.quantity_milli)
                       FROM refund_lines r WHERE r.line_id = l.id), 0)) AS q,
                   sum(l.net_cents - coalesce((SELECT sum(r.amount_cents)
                       FROM refund_lines r WHERE r.line_id = l.id), 0)) AS c
            FROM purchase_lines l JOIN purchases p ON p.id = l.purchase_id
            GROUP BY p.store_id, l.sku),
        days AS (SELECT store_id, sku, sum(lines) AS n, sum(quantity_milli) AS q,
                        sum(net_cents) AS c FROM sales_days GROUP BY store_id, sku)
        SELECT count(*) FROM lines FULL JOIN days USING (store_id, sku)
        WHERE lines.n IS DISTINCT FROM days.n OR lines.q IS DISTINCT FROM days.q
           OR lines.c IS DISTINCT FROM days.c""") == 0
    assert _scalar(app, """SELECT count(*) FROM (SELECT DISTINCT
        (timezone(:zone, p.paid_at))::date, p.store_id FROM purchases p
        WHERE EXISTS (SELECT 1 FROM purchase_lines l WHERE l.purchase_id = p.id)) x""",
                   zone=zone) == \
        _scalar(app, "SELECT count(*) FROM (SELECT DISTINCT day, store_id FROM sales_days) x")


def test_a_generated_card_taps_and_buys(generated):
    app, info = generated
    client = app.test_client()
    till = info["devices"]["tills"][0]
    headers = {"Authorization": f"Bearer {till['key']}"}
    with Session(app.extensions["loyalty.db"].main) as main:
        card = main.execute(text(
            "SELECT c.id, c.generation, c.key_id, c.customer_id, u.points FROM cards c "
            "JOIN customers u ON u.id = c.customer_id WHERE c.status = 'active' "
            "ORDER BY u.points DESC, c.id LIMIT 1")).one()
        revoked = main.execute(text("SELECT id, generation, key_id FROM cards "
                                    "WHERE status = 'revoked' ORDER BY id LIMIT 1")).one()
    url = _card_url(app, card.id, card.generation, card.key_id)
    tapped = client.post("/api/v1/taps", json={"event_id": str(uuid.uuid4()), "url": url},
                         headers=headers)
    assert tapped.status_code == 200, tapped.get_json()
    record = tapped.get_json()
    assert record["customer_id"] == card.customer_id
    assert record["display_name"]  # decrypted from the generated vault row
    assert record["card"]["card_id"] == card.id
    assert record["points"] >= card.points  # the tap may have earned visit points

    gone = client.post("/api/v1/taps", json={
        "event_id": str(uuid.uuid4()),
        "url": _card_url(app, revoked.id, revoked.generation, revoked.key_id)}, headers=headers)
    assert gone.status_code == 410, gone.get_json()

    bought = client.post("/api/v1/purchases", headers=headers, json={
        "event_id": str(uuid.uuid4()), "card": url, "currency": "EUR",
        "paid_at": datetime.now(UTC).isoformat(), "total": "12.50",
        "lines": [{"sku": "COFFEE-01", "name": "Coffee", "quantity": "1",
                   "unit_price": "12.50"}]})
    assert bought.status_code in (200, 201), bought.get_json()
    assert _scalar(app, "SELECT count(*) FROM purchases") == PURCHASES + 1
    assert _scalar(app, "SELECT points FROM customers WHERE id = :c", c=card.customer_id) == \
        _scalar(app, "SELECT sum(delta) FROM points_ledger WHERE customer_id = :c",
                c=card.customer_id)


def test_the_wrk_script_sends_taps_the_service_accepts(generated):
    """bench/run.py's load: every request of its wrk script is a tap the real service (under
    gunicorn as make run starts it) answers with 200, so the benchmark measures taps."""
    import shutil

    from bench import run

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/sysdeps.sh test)")
    app, info = generated
    ds = run.Dataset("", {"DATABASE_URL": app.config["DATABASE_URL"],
                          "VAULT_URL": app.config["VAULT_URL"]},
                     Path(app.config["INSTANCE_PATH"]), info)
    cards, others = run.split_cards(ds)
    assert cards and others and not {c for c, _ in cards} & {c for c, _ in others}
    script = run.wrk_script(cards, info["devices"]["tills"])
    try:
        # a fast machine may tap a card of this small set 7 times within the second: the
        # rate limit is not what this test is about
        env = {**ds.env, "LOYALTY_CARD_TAP_LIMIT": "0"}
        with run.gunicorn("server:create_app()", env) as (url, master):
            result = run.run_wrk(url, script, 1)
            assert run.worker_rss(master) > 0
    finally:
        script.unlink()
    assert result["requests"] > 0
    assert result["non_2xx"] == 0, result


def test_the_replay_measures_visits_that_earn_on_every_run(generated):
    """``visits_due``: the agent's cards were tapped by an earlier run of the cached data set;
    their next visit earns its points again, as a till's queue after an outage does."""
    from bench import run

    app, info = generated
    ds = run.Dataset("", {"DATABASE_URL": app.config["DATABASE_URL"],
                          "VAULT_URL": app.config["VAULT_URL"]},
                     Path(app.config["INSTANCE_PATH"]), info)
    url, customer_id = run.split_cards(ds)[1][0]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {info['devices']['tills'][0]['key']}"}

    def visit_entries() -> int:
        return _scalar(app, "SELECT count(*) FROM points_ledger WHERE customer_id = :c "
                       "AND kind = 'visit'", c=customer_id)

    def tap() -> None:
        tapped = client.post("/api/v1/taps", headers=headers,
                             json={"event_id": str(uuid.uuid4()), "url": url})
        assert tapped.status_code == 200, tapped.get_json()

    tap()  # a first run: this visit may earn or not (the generated last visit)
    before = visit_entries()
    tap()  # a second run at once: within the visit gap, nothing earned
    assert visit_entries() == before
    assert run.visits_due(ds, [customer_id]) == 1
    tap()
    assert visit_entries() == before + 1
