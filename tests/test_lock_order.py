"""Lock order on PostgreSQL: the interleavings that deadlocked, forced, each ending with every
request answered and recorded.

PostgreSQL breaks a deadlock by failing one of its transactions; the service answers that
request 503 and the till retries it, so no event is lost, but a cashier waits a second for
nothing and the log shows an error that is a bug. The rules (docs/ARCHITECTURE.md):

- a purchase, a return, a redemption and a tap take their customer's row before any row of
  the report aggregates (``customer_days``, ``sales_days``...);
- rows shared between customers (``sales_days``, ``sales_months``) are taken in key order;
- a batch of taps holds several customers at once, in the order the till sent them: when
  PostgreSQL picks it as a deadlock's victim, the batch is recorded again from the start.

Each test holds a row from a connection of its own, lets the requests queue behind it in a
chosen order (``pg_stat_activity`` says when they wait), then lets go. SQLite has one write
lock for the whole file: none of this can happen there, so the tests run on PostgreSQL only.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from server.loyalty.models import Purchase, Refund
from server.taps.models import Visit
from tests.support.fixtures_server import Api
from tests.test_loyalty_concurrency import _balance

TIMEOUT = 30
SKUS = 300


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres)],
                ids=["postgresql"])
def db_backend(request) -> str:
    return request.param


def _engine(app):
    return app.extensions["loyalty.db"].main


def _waiting(app) -> int:
    with _engine(app).connect() as conn:
        return conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"))


def _until_waiting(app, n: int) -> None:
    """Return once ``n`` transactions of the database wait for a lock."""
    deadline = time.monotonic() + TIMEOUT
    while _waiting(app) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} requests never queued for the lock")
        time.sleep(0.02)


class Held:
    """A row (or rows) locked ``FOR UPDATE`` from a connection of the test's own."""

    def __init__(self, app, sql: str, **params) -> None:
        self.conn = _engine(app).connect()
        self.tx = self.conn.begin()
        assert self.conn.execute(text(sql + " FOR UPDATE"), params).all(), "nothing to hold"

    def release(self) -> None:
        self.tx.commit()
        self.conn.close()


def _start(url: str, path: str, body: dict, headers: dict, out: list, i: int):
    import requests

    def run() -> None:
        try:
            out[i] = requests.post(url + path, json=body, headers=headers, timeout=TIMEOUT)
        except BaseException as exc:  # reported by the test
            out[i] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _queued(app, held: Held, url: str, posts: list[tuple[str, dict, dict]]) -> list:
    """Send each ``(path, body, headers)`` once the ones before it wait (behind ``held``),
    then let go of ``held``; the answers, in order."""
    out: list = [None] * len(posts)
    threads = []
    try:
        for i, (path, body, headers) in enumerate(posts):
            threads.append(_start(url, path, body, headers, out, i))
            _until_waiting(app, i + 1)
    finally:
        held.release()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    for response in out:
        assert not isinstance(response, BaseException | type(None)), response
    return out


def test_a_purchase_and_a_return_of_the_same_customer_wait_for_each_other(app, api, creds,
                                                                          server_url):
    """The return used to take the customer's day row (customer_days, through the refund's
    trigger) and the day's sales rows before the customer's row, a purchase the other way."""
    customer_id = api.enrol().get_json()["customer_id"]
    lines = [Api.line("SHOE-1", 1, "80.00", category="shoes"),
             Api.line("FOOD-1", 2, "5.00", category="food")]
    first = api.purchase(lines, customer_id=customer_id, seller="S1")
    assert first.status_code == 201, first.get_json()
    held = Held(app, "SELECT id FROM customers WHERE id = :id", id=customer_id)
    # the same day, store, seller and SKUs: the same aggregate rows as the first purchase
    purchase, refund = _queued(app, held, server_url, [
        ("/api/v1/purchases", Api.purchase_body(lines, customer_id=customer_id, seller="S1"),
         creds.h("till")),
        ("/api/v1/refunds", {"event_id": str(uuid.uuid4()),
                             "purchase_id": first.get_json()["purchase_id"]}, creds.h("till"))])

    assert (purchase.status_code, refund.status_code) == (201, 201), \
        (purchase.text, refund.text)
    with Session(_engine(app)) as s:
        assert s.scalar(select(func.count()).select_from(Purchase)) == 2
        assert s.scalar(select(func.count()).select_from(Refund)) == 1
        # the day's aggregates are those of the one purchase that stands
        assert s.execute(text(
            "SELECT baskets, net_cents FROM customer_days WHERE customer_id = :id"),
            {"id": customer_id}).one() == (2, 9000)
        assert dict(s.execute(text("SELECT sku, quantity_milli FROM sales_days")).all()) == \
            {"SHOE-1": 1000, "FOOD-1": 2000}
    points, ledger = _balance(app, customer_id)
    assert points == ledger


def test_a_return_takes_the_days_sales_rows_in_key_order(app, api, creds, server_url):
    """Two SKUs sold on one day are two rows every purchase of them updates, in key order; a
    return of both used to update them in whatever order its join came out."""
    buyer = api.enrol().get_json()["customer_id"]
    other = api.enrol().get_json()["customer_id"]
    # many lines, out of key order: a return of a few lines happens to be grouped (and so
    # updated) in key order, one of this size is grouped by a hash
    skus = [f"SKU-{n:03d}" for n in range(SKUS, 0, -1)]
    lines = [Api.line(sku, 1, "2.00", category="toys") for sku in skus]
    first = api.purchase(lines, customer_id=buyer)
    assert first.status_code == 201, first.get_json()
    held = Held(app, "SELECT sku FROM sales_days WHERE sku = 'SKU-001'")
    purchase, refund = _queued(app, held, server_url, [
        ("/api/v1/purchases", Api.purchase_body(lines, customer_id=other), creds.h("till")),
        ("/api/v1/refunds", {"event_id": str(uuid.uuid4()),
                             "purchase_id": first.get_json()["purchase_id"]}, creds.h("till"))])

    assert (purchase.status_code, refund.status_code) == (201, 201), \
        (purchase.text, refund.text)
    with Session(_engine(app)) as s:
        assert dict(s.execute(text("SELECT sku, quantity_milli FROM sales_days")).all()) == \
            dict.fromkeys(skus, 1000)


def test_two_batches_of_the_same_customers_in_opposite_orders_are_both_recorded(
        app, api, creds, server_url):
    """Two tills back from an outage replay the same two customers' taps in opposite orders:
    each batch holds the first customer and waits for the second. PostgreSQL fails one; it is
    recorded again, whole, and both batches answer every tap as recorded."""
    app.config["CARD_TAP_LIMIT"] = 0
    first_id, first = api.customer_with_card()
    second_id, second = api.customer_with_card()

    def tap(card: dict) -> dict:
        return {"event_id": str(uuid.uuid4()), "url": card["url"], "reader": "sim:",
                "tapped_at": datetime.now(UTC).isoformat()}

    batches = [("till", [tap(first), tap(second)]), ("till_uid", [tap(second), tap(first)])]
    held = Held(app, "SELECT id FROM customers WHERE id IN (:a, :b)", a=first_id, b=second_id)
    answers = _queued(app, held, server_url, [
        ("/api/v1/taps/batch", {"taps": taps}, creds.h(device)) for device, taps in batches])

    for answer, (_, taps) in zip(answers, batches, strict=True):
        assert answer.status_code == 200, answer.text
        assert [(r["event_id"], r["status"]) for r in answer.json()["results"]] == \
            [(t["event_id"], "recorded") for t in taps]
    with Session(_engine(app)) as s:
        recorded = s.scalars(select(Visit.event_id)).all()
    assert sorted(recorded) == sorted(t["event_id"] for _, taps in batches for t in taps)
    for customer_id in (first_id, second_id):
        points, ledger = _balance(app, customer_id)
        assert points == ledger
