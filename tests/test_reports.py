"""Reports against a hand-built data set whose figures are worked out below, on SQLite and
PostgreSQL; the CSV against the page's table; who may open them; the best sellers in Chromium.

The data set (programme time zone Europe/Paris, the default), range 1 January - 31 March 2026:

stores TEST (A), UIDOK (B), VLN (C, added here)
customers c1 (home A, enrolled by A's kiosk 5 Jan), c2 (home A, A's kiosk 10 Feb),
          c3 (home B, imported: no kiosk, created 2025), c4 (home C, C's kiosk 20 Mar)
purchases (net cents per line)
  p1 A anna  c1 10 Jan 10:00Z  SKU1 x2 10000, SKU2 x3 1500  - refund SKU1 x1 5000 (in April)
  p2 A anna  c2 31 Jan 23:30Z  SKU1 x1 5000                 = 1 Feb 00:30 in Paris: February
  p3 B bruno c1 15 Feb         SKU2 x4 2000, SKU3 x1 0 (paid by reward r1) - refund SKU2 x1 500
  p4 B ----- c3 20 Feb         SKU3 x2 3000                 (the till gave no seller)
  p5 C carla c4 25 Mar         SKU1 x1 5000
  p6 A anna  c3 31 Mar 22:30Z  SKU1 x1 5000                 = 1 Apr in Paris: outside
  p7 A bruno c2  1 Mar         SKU2 x1 500
rewards r1 c1 at B (used on p3), r2 c4 at C (not used on a line), r3 c2 at A (restored)
sales without a card, sent by A's till (PUT /api/v1/anonymous-sales):
  10 Jan anna 3 baskets 100.00 (replacing a first report of 2 baskets 60.00), 2 Feb dora 1
  basket 15.00, 31 Mar no seller 1 basket 20.00, 1 Apr anna 50.00 (outside the range)
"""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from server.cards.models import Card
from server.cli import add_device
from server.customers.models import Customer
from server.devices.auth import hash_key
from server.devices.models import Device
from server.loyalty.models import Purchase, PurchaseLine, Redemption, Refund, RefundLine
from server.reports import service
from server.reports.models import AnonymousSales
from server.stores.models import Store
from server.taps.models import Visit
from tests.support.fixtures_devices import serve
from tests.support.fixtures_server import assert_problem
from tests.test_backoffice import BO, Office, office

START, END = date(2026, 1, 1), date(2026, 3, 31)
QUERY = "start=2026-01-01&end=2026-03-31"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _id() -> str:
    return str(uuid.uuid4())


def _anonymous(client, creds, day: str, total: str, baskets: int, seller=None, **kw):
    body = {"day": day, "baskets": baskets, "total": total, "currency": "EUR", **kw}
    if seller:
        body["seller"] = seller
    return client.put("/api/v1/anonymous-sales", json=body, headers=creds.h("till"))


@pytest.fixture
def data(app, creds, client):
    """The data set above; ``{"A": id, "B": id, "C": id}`` of the stores."""
    with Session(app.extensions["loyalty.db"].main) as s:
        s.add(Store(code="VLN", name="Vilnius", country="LT"))
        s.commit()
        keys = {"kioskC": add_device(s, "VLN", "kiosk", "kiosk C"),
                "tillC": add_device(s, "VLN", "till", "till C")}
        dev = dict(creds.device_ids)
        dev.update({name: s.scalar(select(Device.id).where(Device.key_hash == hash_key(key)))
                    for name, key in keys.items()})
        st = {code: s.scalar(select(Store.id).where(Store.code == code))
              for code in ("TEST", "UIDOK", "VLN")}
        a, b, c = st["TEST"], st["UIDOK"], st["VLN"]
        customers = {"c1": (a, dev["kiosk"], "2026-01-05 09:00"),
                     "c2": (a, dev["kiosk2"], "2026-02-10 09:00"),
                     "c3": (b, None, "2025-12-01 09:00"),
                     "c4": (c, dev["kioskC"], "2026-03-20 09:00")}
        for cid, (home, device, created) in customers.items():
            s.add(Customer(id=cid, language="fr", home_store_id=home,
                           enrolled_by_device_id=device, created_at=_at(created)))
        s.flush()  # no ORM relationships: the customers first, then their cards
        for cid in customers:
            s.add(Card(id=f"K-{cid}", customer_id=cid, kind="qr", key_id=1,
                       issue_event_id=_id()))
        s.flush()
        redemptions = {}
        for name, cid, store, at, status in (("r1", "c1", b, "2026-02-15 11:50", "active"),
                                             ("r2", "c4", c, "2026-03-25 09:00", "active"),
                                             ("r3", "c2", a, "2026-02-01 10:00", "restored")):
            r = Redemption(event_id=_id(), customer_id=cid, reward_code="GIFT", points=100,
                           store_id=store, status=status, created_at=_at(at))
            s.add(r)
            s.flush()
            redemptions[name] = r.id
        tills = {a: dev["till"], b: dev["till_uid"], c: dev["tillC"]}
        purchases = {
            "p1": (a, "anna", "c1", "2026-01-10 10:00",
                   [("SKU1", "Shoe", "shoes", 2, 10000, None), ("SKU2", "Sock", "acc", 3, 1500,
                                                                None)]),
            "p2": (a, "anna", "c2", "2026-01-31 23:30", [("SKU1", "Shoe", "shoes", 1, 5000,
                                                          None)]),
            "p3": (b, "bruno", "c1", "2026-02-15 12:00",
                   [("SKU2", "Sock", "acc", 4, 2000, None),
                    ("SKU3", "Hat", "acc", 1, 0, redemptions["r1"])]),
            "p4": (b, None, "c3", "2026-02-20 09:00", [("SKU3", "Hat", "acc", 2, 3000, None)]),
            "p5": (c, "carla", "c4", "2026-03-25 10:00", [("SKU1", "Shoe", "shoes", 1, 5000,
                                                           None)]),
            "p6": (a, "anna", "c3", "2026-03-31 22:30", [("SKU1", "Shoe", "shoes", 1, 5000,
                                                          None)]),
            "p7": (a, "bruno", "c2", "2026-03-01 10:00", [("SKU2", "Sock", "acc", 1, 500,
                                                           None)]),
        }
        lines = {}
        for name, (store, seller, cid, paid, items) in purchases.items():
            p = Purchase(event_id=_id(), customer_id=cid, store_id=store, device_id=tills[store],
                         seller=seller, currency="EUR", paid_at=_at(paid),
                         total_cents=sum(i[4] for i in items))
            s.add(p)
            s.flush()
            for n, (sku, label, category, qty, net, reward) in enumerate(items, 1):
                line = PurchaseLine(purchase_id=p.id, line_no=n, sku=sku, name=label,
                                    category=category, quantity_milli=qty * 1000,
                                    unit_price_cents=net // qty if net else 1000,
                                    net_cents=net, redemption_id=reward)
                s.add(line)
                s.flush()
                lines[(name, sku)] = (p.id, line.id)
        for (name, sku), qty, amount, at in ((("p1", "SKU1"), 1, 5000, "2026-04-05 10:00"),
                                             (("p3", "SKU2"), 1, 500, "2026-02-16 10:00")):
            purchase_id, line_id = lines[(name, sku)]
            refund = Refund(event_id=_id(), purchase_id=purchase_id, device_id=dev["till"],
                            amount_cents=amount, points_reversed=0, recorded_at=_at(at))
            s.add(refund)
            s.flush()
            s.add(RefundLine(refund_id=refund.id, line_id=line_id, quantity_milli=qty * 1000,
                             amount_cents=amount, points_reversed=0))
        taps = [("c1", a, "2026-01-10 09:59"), ("c1", a, "2026-01-10 10:05"),
                ("c1", a, "2026-01-20 10:00"), ("c2", a, "2026-01-31 23:20"),
                ("c1", b, "2026-02-15 11:55"), ("c3", b, "2026-02-20 08:55"),
                ("c4", c, "2026-03-25 09:55"), ("c3", a, "2026-03-31 22:20")]
        for cid, store, at in taps:
            s.add(Visit(event_id=_id(), customer_id=cid, card_id=f"K-{cid}", store_id=store,
                        device_id=tills[store], method="qr", tapped_at=_at(at),
                        recorded_at=_at(at)))
        s.commit()
    for day, total, baskets, seller in (("2026-01-10", "60.00", 2, "anna"),
                                        ("2026-01-10", "100.00", 3, "anna"),
                                        ("2026-02-02", "15.00", 1, "dora"),
                                        ("2026-03-31", "20.00", 1, None),
                                        ("2026-04-01", "50.00", 1, "anna")):
        r = _anonymous(client, creds, day, total, baskets, seller)
        assert r.status_code == 200, r.get_data(as_text=True)
    return {"A": a, "B": b, "C": c}


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _span(app, s: Session, start=START, end=END):
    with app.app_context():
        return service.span(s, start, end)


def _best(rows) -> list[tuple]:
    return [(service.period_name(r.period), r.rank, r.sku, r.quantity_milli, r.net_cents,
             r.customers) for r in rows]


# --------------------------------------------------------------------------- the figures


def test_best_sellers_by_month_season_store_and_segment(app, data):
    with _main(app) as s:
        span = _span(app, s)
        assert span.lo == _at("2025-12-31 23:00") and span.hi == _at("2026-03-31 22:00")
        # January: p1 less its refund; February: p2 (paid 31 Jan UTC, 1 Feb in Paris), p3, p4
        assert _best(service.best_sellers(s, span, "month")) == [
            ("2026-01-01", 1, "SKU1", 1000, 5000, 1),
            ("2026-01-01", 2, "SKU2", 3000, 1500, 1),
            ("2026-02-01", 1, "SKU1", 1000, 5000, 1),
            ("2026-02-01", 2, "SKU3", 3000, 3000, 2),
            ("2026-02-01", 3, "SKU2", 3000, 1500, 1),
            ("2026-03-01", 1, "SKU1", 1000, 5000, 1),
            ("2026-03-01", 2, "SKU2", 1000, 500, 1)]
        # winter (December to February) and spring; SKU2 and SKU3 tie on money: quantity wins
        assert _best(service.best_sellers(s, span, "season")) == [
            ("2025-12-01", 1, "SKU1", 2000, 10000, 2),
            ("2025-12-01", 2, "SKU2", 6000, 3000, 1),
            ("2025-12-01", 3, "SKU3", 3000, 3000, 2),
            ("2026-03-01", 1, "SKU1", 1000, 5000, 1),
            ("2026-03-01", 2, "SKU2", 1000, 500, 1)]
        whole = service.best_sellers(s, span, None)
        assert _best(whole) == [("2026-01-01", 1, "SKU1", 3000, 15000, 3),
                                ("2026-01-01", 2, "SKU2", 7000, 3500, 2),
                                ("2026-01-01", 3, "SKU3", 3000, 3000, 2)]
        assert [(r.name, r.category) for r in whole] == [("Shoe", "shoes"), ("Sock", "acc"),
                                                         ("Hat", "acc")]
        assert _best(service.best_sellers(s, span, "year", top=1)) == [
            ("2026-01-01", 1, "SKU1", 3000, 15000, 3)]
        assert _best(service.best_sellers(s, span, None, store_id=data["B"])) == [
            ("2026-01-01", 1, "SKU3", 3000, 3000, 2), ("2026-01-01", 2, "SKU2", 3000, 1500, 1)]
        by_store = service.best_sellers(s, span, None, by_store=True)
        assert [(r.store_id, r.rank, r.sku, r.net_cents) for r in by_store] == sorted([
            (data["A"], 1, "SKU1", 10000), (data["A"], 2, "SKU2", 2000),
            (data["B"], 1, "SKU3", 3000), (data["B"], 2, "SKU2", 1500),
            (data["C"], 1, "SKU1", 5000)])
        # a segment: the customers whose home store is A (c1, c2)
        home_a = select(Customer.id).where(Customer.home_store_id == data["A"])
        assert _best(service.best_sellers(s, span, None, customers=home_a)) == [
            ("2026-01-01", 1, "SKU1", 2000, 10000, 2),
            ("2026-01-01", 2, "SKU2", 7000, 3500, 2),
            ("2026-01-01", 3, "SKU3", 1000, 0, 1)]
        # by day and week: 10 January is a Saturday, its week starts on Monday 5 January
        assert _best(service.best_sellers(s, span, "day", top=1))[:2] == [
            ("2026-01-10", 1, "SKU1", 1000, 5000, 1), ("2026-02-01", 1, "SKU1", 1000, 5000, 1)]
        assert _best(service.best_sellers(s, span, "week", top=1))[0][0] == "2026-01-05"
        # 31 March 22:30 UTC is in April in Paris (summer time): p6 is only in a later range
        april = _span(app, s, date(2026, 4, 1), date(2026, 4, 30))
        assert _best(service.best_sellers(s, april, "month")) == [
            ("2026-04-01", 1, "SKU1", 1000, 5000, 1)]


def _both_ways(app, s: Session, monkeypatch) -> tuple[list, list]:
    """Every best-seller ranking of the range read from sales_days, then from the purchases."""
    span = _span(app, s)
    asks = [(period, by_store) for period in (*service.PERIODS, None) for by_store in (0, 1)]

    def ask():
        return [[tuple(r) for r in service.best_sellers(s, span, period, by_store=bool(by),
                                                        top=2)]
                for period, by in asks]

    assert service.aggregated(s, span)
    fast = ask()
    with monkeypatch.context() as m:
        m.setattr(service, "aggregated", lambda *_a: False)
        slow = ask()
    return fast, slow


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sales_days_follow_every_change_and_rank_as_the_purchases(app, data, monkeypatch):
    from server.reports.aggregates import rebuild
    from server.reports.models import SalesDay

    def days(s: Session) -> list[tuple]:
        return [tuple(r) for r in s.execute(select(
            SalesDay.day, SalesDay.store_id, SalesDay.sku, SalesDay.name, SalesDay.category,
            SalesDay.lines, SalesDay.quantity_milli, SalesDay.net_cents)
            .order_by(SalesDay.day, SalesDay.store_id, SalesDay.sku))]

    with app.app_context(), _main(app) as s:
        fast, slow = _both_ways(app, s, monkeypatch)
        assert fast == slow and any(fast)
        # p2 (31 Jan 23:30 UTC) is sold on 1 February in Paris; p1's refund is deducted
        assert (date(2026, 2, 1), data["A"], "SKU1", "Shoe", "shoes", 1, 1000, 5000) in days(s)
        assert (date(2026, 1, 10), data["A"], "SKU1", "Shoe", "shoes", 1, 1000, 5000) in days(s)
        # a later refund, a purchase moved to another day and store, a line deleted: the
        # triggers keep the days as a rebuild would make them
        p5 = s.scalar(select(Purchase).where(Purchase.store_id == data["C"]))
        line = s.scalar(select(PurchaseLine).where(PurchaseLine.purchase_id == p5.id))
        refund = Refund(event_id=_id(), purchase_id=p5.id, device_id=p5.device_id,
                        amount_cents=2000, points_reversed=0)
        s.add(refund)
        s.flush()
        taken = RefundLine(refund_id=refund.id, line_id=line.id, quantity_milli=500,
                           amount_cents=1000, points_reversed=0)
        s.add(taken)
        s.flush()
        taken.amount_cents = 2000  # corrected: the old amount is given back, the new taken
        s.flush()
        p5.paid_at, p5.store_id = _at("2026-01-03 12:00"), data["B"]
        p7 = s.scalar(select(Purchase).where(Purchase.paid_at == _at("2026-03-01 10:00")))
        s.delete(s.scalar(select(PurchaseLine).where(PurchaseLine.purchase_id == p7.id)))
        s.commit()
        kept = days(s)
        assert (date(2026, 1, 3), data["B"], "SKU1", "Shoe", "shoes", 1, 500, 3000) in kept
        assert not [d for d in kept if d[0] in (date(2026, 3, 25), date(2026, 3, 1))]
        rebuild(s)
        s.commit()
        assert days(s) == kept
        fast, slow = _both_ways(app, s, monkeypatch)
        assert fast == slow


def _aggregates(s: Session) -> dict[str, list[tuple]]:
    """Every row of every report aggregate, in key order."""
    from server.reports.aggregates import TABLES

    return {table: sorted(tuple(r) for r in s.execute(text(f"SELECT * FROM {table}")))
            for table in TABLES}


def _every_report_both_ways(app, s: Session, monkeypatch, segment) -> tuple[list, list]:
    """The visits, habits and sellers (everyone, then a segment) and the best sellers with
    whole months (a range from 15 December: partial months at both ends) read from the
    aggregates, then from the purchases."""
    spans = [_span(app, s), _span(app, s, date(2025, 12, 15), date(2026, 4, 3))]

    def ask():
        found = []
        for span in spans:
            for customers in (None, segment):
                found.append([tuple(r) for period in service.PERIODS
                              for r in service.visits(s, span, period, customers=customers)])
                found.append([tuple(r) for r in service.habits(s, span, customers=customers)])
                found.append([tuple(r) for r in service.sellers(s, span, customers=customers)])
            found.append([tuple(r) for period in ("month", "season", "year", None)
                          for by in (False, True)
                          for r in service.best_sellers(s, span, period, by_store=by)])
        return found

    assert service.aggregated(s, spans[0])
    fast = ask()
    with monkeypatch.context() as m:
        m.setattr(service, "aggregated", lambda *_a: False)
        slow = ask()
    return fast, slow


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_customer_and_visit_days_follow_every_change_and_report_as_the_purchases(
        app, data, monkeypatch):
    from server.reports.aggregates import rebuild

    home_a = select(Customer.id).where(Customer.home_store_id == data["A"])
    with app.app_context(), _main(app) as s:
        fast, slow = _every_report_both_ways(app, s, monkeypatch, home_a)
        assert fast == slow and all(fast[:3])
        kept = _aggregates(s)
        # p2, 31 Jan 23:30 UTC, is 1 February in Paris; p1 less its refund (in April)
        assert (date(2026, 2, 1), "c2", data["A"], "anna", 1, 5000) in kept["customer_days"]
        assert (date(2026, 1, 10), "c1", data["A"], "anna", 1, 6500) in kept["customer_days"]
        assert (date(2026, 2, 20), "c3", data["B"], "", 1, 3000) in kept["customer_days"]
        assert ("acc", date(2026, 2, 15), "c1", 2) in kept["category_days"]
        # two taps on 10 January are one visit; 31 Jan 23:20 UTC is 1 February in Paris
        assert (date(2026, 1, 10), data["A"], "c1", 2) in kept["visit_days"]
        assert (date(2026, 2, 1), data["A"], "c2", 1) in kept["visit_days"]
        assert (date(2026, 1, 1), data["A"], "SKU1", "Shoe", "shoes", 1, 1000, 5000) \
            in kept["sales_months"]
        # every kind of change, then the triggers' rows against a rebuild from the tables
        p5 = s.scalar(select(Purchase).where(Purchase.store_id == data["C"]))
        p4 = s.scalar(select(Purchase).where(Purchase.customer_id == "c3",
                                             Purchase.store_id == data["B"]))
        p7 = s.scalar(select(Purchase).where(Purchase.paid_at == _at("2026-03-01 10:00")))
        refund = Refund(event_id=_id(), purchase_id=p5.id, device_id=p5.device_id,
                        amount_cents=2000, points_reversed=0)
        s.add(refund)
        s.flush()
        refund.amount_cents = 2500  # corrected: the old amount given back, the new taken
        s.flush()
        again = Refund(event_id=_id(), purchase_id=p4.id, device_id=p4.device_id,
                       amount_cents=700, points_reversed=0)
        s.add(again)
        s.flush()
        s.delete(again)  # and cancelled
        p5.paid_at, p5.store_id, p5.seller = _at("2026-01-03 12:00"), data["B"], "bruno"
        p4.customer_id, p4.total_cents = "c4", 3300
        s.flush()
        line = s.scalar(select(PurchaseLine).where(PurchaseLine.purchase_id == p4.id))
        line.category = "hats"
        for lost in s.scalars(select(PurchaseLine).where(PurchaseLine.purchase_id == p7.id)):
            s.delete(lost)
        s.flush()
        s.delete(p7)  # a purchase deleted with its lines
        # a new purchase of two lines in one statement, and three taps in one
        p8 = Purchase(event_id=_id(), customer_id="c4", store_id=data["C"],
                      device_id=p5.device_id, seller="carla", currency="EUR",
                      paid_at=_at("2026-03-10 09:00"), total_cents=4200)
        s.add(p8)
        s.flush()
        s.execute(insert(PurchaseLine), [
            {"purchase_id": p8.id, "line_no": n, "sku": sku, "name": sku, "category": cat,
             "quantity_milli": 1000, "unit_price_cents": cents, "net_cents": cents}
            for n, (sku, cat, cents) in enumerate((("SKU4", "acc", 1200),
                                                   ("SKU5", None, 3000)), 1)])
        s.execute(insert(Visit), [
            {"event_id": _id(), "customer_id": cid, "card_id": f"K-{cid}", "store_id": store,
             "device_id": p5.device_id, "method": "qr", "tapped_at": _at(at),
             "recorded_at": _at(at)}
            for cid, store, at in (("c4", data["C"], "2026-03-10 08:55"),
                                   ("c4", data["C"], "2026-03-10 09:05"),
                                   ("c2", data["A"], "2026-01-20 10:00"))])
        moved = s.scalar(select(Visit).where(Visit.tapped_at == _at("2026-01-20 10:00"),
                                             Visit.customer_id == "c1"))
        moved.tapped_at = _at("2026-01-21 10:00")
        s.delete(s.scalar(select(Visit).where(Visit.tapped_at == _at("2026-02-20 08:55"))))
        s.commit()
        kept = _aggregates(s)
        assert (date(2026, 1, 3), "c1", data["B"], "bruno", 1, 2500) not in \
            kept["customer_days"]  # c4's, 5000 less 2500
        assert (date(2026, 1, 3), "c4", data["B"], "bruno", 1, 2500) in kept["customer_days"]
        assert (date(2026, 2, 20), "c4", data["B"], "", 1, 3300) in kept["customer_days"]
        assert not [r for r in kept["customer_days"] if r[0] in (date(2026, 3, 1),
                                                                 date(2026, 3, 25))]
        assert ("hats", date(2026, 2, 20), "c4", 1) in kept["category_days"]
        assert (date(2026, 3, 10), data["C"], "c4", 2) in kept["visit_days"]
        assert not [v for v in kept["visit_days"] if v[0] == date(2026, 2, 20)]
        rebuild(s)
        s.commit()
        assert _aggregates(s) == kept
        fast, slow = _every_report_both_ways(app, s, monkeypatch, home_a)
        assert fast == slow


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_another_time_zone_reads_the_purchases_until_rebuilt(app, creds, data, monkeypatch):
    from server.loyalty.programme import default_programme
    from server.reports.models import SalesDayState

    document = default_programme().model_dump(mode="json")
    document["timezone"] = "Europe/Vilnius"
    with app.app_context(), _main(app) as s:
        from server.loyalty.models import ProgrammeVersion

        s.add(ProgrammeVersion(document=document, source="", loaded_by="test"))
        s.commit()
        app.extensions.pop("loyalty.programme", None)  # the 5 s cache
        span = service.span(s, START, END)
        assert not service.aggregated(s, span)  # sales_days is still in Paris time
        live = [tuple(r) for r in service.best_sellers(s, span, "day")]
    result = app.test_cli_runner().invoke(args=["reports", "rebuild"])
    assert result.exit_code == 0, result.output
    with app.app_context(), _main(app) as s:
        app.extensions.pop("loyalty.programme", None)
        assert s.scalar(select(SalesDayState.zone)) == "Europe/Vilnius"
        span = service.span(s, START, END)
        assert service.aggregated(s, span)
        # p2, 31 Jan 23:30 UTC, is 1 February 01:30 in Vilnius as in Paris; same figures
        assert [tuple(r) for r in service.best_sellers(s, span, "day")] == live


def test_visits_per_store_and_month(app, data):
    with _main(app) as s:
        rows = service.visits(s, _span(app, s), "month")
        # two taps on 10 January are one visit; 31 Jan 23:20 UTC is February in Paris
        assert [(service.period_name(r.period), r.store_code, r.visits, r.customers, r.taps)
                for r in rows] == [("2026-01-01", "TEST", 2, 1, 3),
                                   ("2026-02-01", "TEST", 1, 1, 1),
                                   ("2026-02-01", "UIDOK", 2, 2, 2),
                                   ("2026-03-01", "VLN", 1, 1, 1)]
        only_c = service.visits(s, _span(app, s), "year", store_id=data["C"])
        assert [(r.store_code, r.visits) for r in only_c] == [("VLN", 1)]
        home_b = select(Customer.id).where(Customer.home_store_id == data["B"])
        assert [(r.store_code, r.visits) for r in
                service.visits(s, _span(app, s), "year", customers=home_b)] == [("UIDOK", 1)]


def test_habits_across_stores(app, data):
    with _main(app) as s:
        rows = service.habits(s, _span(app, s))
        a, b, c = data["A"], data["B"], data["C"]
        # home A bought in A: p1 (11500 - 5000), p2, p7; in B: p3 (2000 - 500)
        assert {(r.home_store_id, r.store_id): (r.customers, r.baskets, r.net_cents)
                for r in rows} == {(a, a): (2, 3, 12000), (a, b): (1, 1, 1500),
                                   (b, b): (1, 1, 3000), (c, c): (1, 1, 5000)}


def test_sellers_and_stores(app, data):
    with _main(app) as s:
        span = _span(app, s)
        rows = service.sellers(s, span)
        assert [(r.store_code, r.seller, r.baskets, r.net_cents, r.average_cents, r.customers,
                 r.redemptions, r.anonymous_baskets, r.anonymous_cents) for r in rows] == [
            ("TEST", "anna", 2, 11500, 5750, 2, 0, 3, 10000),
            ("TEST", "bruno", 1, 500, 500, 1, 0, 0, 0),
            ("TEST", None, 0, 0, None, 0, 0, 1, 2000),      # sales without a card only
            ("TEST", "dora", 0, 0, None, 0, 0, 1, 1500),
            ("UIDOK", None, 1, 3000, 3000, 1, 0, 0, 0),
            ("UIDOK", "bruno", 1, 1500, 1500, 1, 1, 0, 0),
            ("VLN", "carla", 1, 5000, 5000, 1, 0, 0, 0)]
        # the share where the till reported for that seller: anna 115 / (115 + 100)
        shares = [r.card_share for r in rows]
        assert shares[0] == pytest.approx(11500 / 21500)
        assert shares[1:] == [None, 0, 0, None, None, None]
        # enrolments by the store's kiosks in the range (c3 was imported in 2025); the
        # restored reward r3 does not count; A's share: 120 / (120 + 100 + 15 + 20)
        stores = service.stores(s, span)
        assert [(r.store_code, r.enrolments, r.baskets, r.net_cents, r.average_cents,
                 r.redemptions, r.anonymous_cents) for r in stores] == [
            ("TEST", 2, 3, 12000, 4000, 0, 13500), ("UIDOK", 0, 2, 4500, 2250, 1, 0),
            ("VLN", 1, 1, 5000, 5000, 1, 0)]
        assert stores[0].card_share == pytest.approx(12000 / 25500)
        assert [r.card_share for r in stores[1:]] == [None, None]
        # in a segment, sales without a card belong to nobody: no share
        home_a = select(Customer.id).where(Customer.home_store_id == data["A"])
        assert [(r.store_code, r.net_cents, r.card_share) for r in
                service.stores(s, span, customers=home_a)] == [
            ("TEST", 12000, None), ("UIDOK", 1500, None), ("VLN", 0, None)]
        assert [(r.seller, r.net_cents, r.card_share) for r in
                service.sellers(s, span, customers=home_a)] == [
            ("anna", 11500, None), ("bruno", 500, None), ("bruno", 1500, None)]
        empty = service.stores(s, _span(app, s, date(2025, 1, 1), date(2025, 1, 31)))
        assert [(r.store_code, r.baskets, r.average_cents) for r in empty] == [
            ("TEST", 0, None), ("UIDOK", 0, None), ("VLN", 0, None)]


def test_anonymous_sales_replace_the_days_figures(app, creds, client):
    r = _anonymous(client, creds, "2026-05-04", "12.50", 2, "anna")
    assert r.status_code == 200 and r.get_json() == {
        "day": "2026-05-04", "seller": "anna", "baskets": 2, "total": "12.50",
        "currency": "EUR", "replaced": False}
    r = _anonymous(client, creds, "2026-05-04", "30.00", 4, "anna")
    assert r.get_json()["replaced"] is True and r.get_json()["baskets"] == 4
    assert _anonymous(client, creds, "2026-05-04", "1.00", 1).get_json()["replaced"] is False
    with _main(app) as s:
        rows = s.execute(select(AnonymousSales.seller, AnonymousSales.baskets,
                                AnonymousSales.total_cents, AnonymousSales.store_id)
                         .order_by(AnonymousSales.seller)).all()
    assert [(r.seller, r.baskets, r.total_cents) for r in rows] == [("", 1, 100),
                                                                     ("anna", 4, 3000)]
    assert len({r.store_id for r in rows}) == 1  # the till's own store
    assert_problem(_anonymous(client, creds, "2026-05-04", "1.00", 1, currency="USD"), 422,
                   "currency-mismatch")
    assert_problem(_anonymous(client, creds, "2026-05-04", "-1.00", 1), 422,
                   "validation-error")
    assert_problem(client.put("/api/v1/anonymous-sales", json={
        "day": "2026-05-04", "baskets": 1, "total": "1.00", "currency": "EUR"},
        headers=creds.h("kiosk")), 403, "forbidden-role")


def test_offsets_follow_summer_time():
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    found = service._offsets(paris, _at("2026-01-01 00:00"), _at("2027-01-01 00:00"))
    assert found == [(_at("2026-01-01 00:00"), 60), (_at("2026-03-29 01:00"), 120),
                     (_at("2026-10-25 01:00"), 60)]


def test_periods_of_a_range_as_the_sql_names_them():
    from zoneinfo import ZoneInfo

    span = service.Span(START, END, ZoneInfo("Europe/Paris"), _at("2025-12-31 23:00"),
                        _at("2026-03-31 22:00"))
    assert service.periods(span, "season") == [date(2025, 12, 1), date(2026, 3, 1)]
    assert service.periods(span, "month") == [date(2026, m, 1) for m in (1, 2, 3)]
    assert service.periods(span, "year") == [date(2026, 1, 1)]
    weeks = service.periods(span, "week")
    assert weeks[0] == date(2025, 12, 29) and weeks[-1] == date(2026, 3, 30) and len(weeks) == 14
    assert len(service.periods(span, "day")) == 90
    assert [service.first_day(date(2026, m, 15), "season") for m in (1, 2, 3, 5, 6, 11, 12)] \
        == [date(2025, 12, 1), date(2025, 12, 1), date(2026, 3, 1), date(2026, 3, 1),
            date(2026, 6, 1), date(2026, 9, 1), date(2026, 12, 1)]


def test_charts_are_plain_svg_with_round_axes():
    from server.reports import charts

    line = charts.line_chart(["W1", "W2", "W3"], {"A<1>": [0, 1, 1], "B": [1, 0, 0]},
                             title="Visits & more", integer=True)
    assert line.startswith("<svg") and "<script" not in line and "style=" not in line
    assert "<title>Visits &amp; more</title>" in line and "A&lt;1&gt;" in line
    assert re.findall(r'text-anchor="end" fill="#555"[^>]*>([^<]*)<', line) == ["0", "1"]
    money = charts.line_chart(["a", "b"], {"s": [0, 9000]}, title="t", fmt=lambda v: f"{v:.0f}")
    assert re.findall(r'text-anchor="end" fill="#555"[^>]*>([^<]*)<', money) == [
        "0", "2500", "5000", "7500", "10000"]
    bars = charts.bar_chart(["x", "y"], [300, 100], title="t", fmt=lambda v: f"{v:.0f}")
    assert bars.count("<rect") == 2 and ">300<" in bars and ">100<" in bars


# --------------------------------------------------------------------------- pages and CSV


def _cells(body: str, key: str) -> list[list[str]]:
    table = re.search(rf'<table class="report" data-table="{key}">(.*?)</table>', body, re.S)[1]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


def _csv(o: Office, url: str) -> list[list[str]]:
    r = o.get(url)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    raw = r.get_data()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # BOM for Excel, RFC 4180
    return list(csv.reader(io.StringIO(raw[3:].decode("utf-8"), newline="")))


def _number(text: str) -> str:
    """A shown cell as the CSV writes it: €5,750.00 -> 5750.00, 53.5% -> 53.5, — -> ""."""
    text = text.replace("€", "").replace(",", "").replace("\xa0", "").replace("%", "")
    return "" if text.strip() == "—" else text.strip()


def test_pages_and_their_csv_match(app, creds, manager, data):
    o = office(app, creds, manager)
    assert o.get(f"{BO}/reports").status_code == 302
    body = o.page(f"{BO}/reports/best-sellers?{QUERY}&period=month")
    assert "<svg" in body and "SKU1 · Shoe" in body  # the chart, drawn on the server
    shown = _cells(body, "best-sellers")
    got = _csv(o, f"{BO}/reports/best-sellers?{QUERY}&period=month&csv=best-sellers")
    assert got[0] == shown[0] == ["Period", "Rank", "SKU", "Name", "Category", "Quantity",
                                  "Net sales", "Customers"]
    assert got[1:] == [["2026-01", "1", "SKU1", "Shoe", "shoes", "1", "50.00", "1"],
                       ["2026-01", "2", "SKU2", "Sock", "acc", "3", "15.00", "1"],
                       ["2026-02", "1", "SKU1", "Shoe", "shoes", "1", "50.00", "1"],
                       ["2026-02", "2", "SKU3", "Hat", "acc", "3", "30.00", "2"],
                       ["2026-02", "3", "SKU2", "Sock", "acc", "3", "15.00", "1"],
                       ["2026-03", "1", "SKU1", "Shoe", "shoes", "1", "50.00", "1"],
                       ["2026-03", "2", "SKU2", "Sock", "acc", "1", "5.00", "1"]]
    assert [[_number(c) for c in row] for row in shown[1:]] == got[1:]

    body = o.page(f"{BO}/reports/visits?{QUERY}&period=season")
    assert _cells(body, "visits")[1:] == [["Winter 2025-26", "TEST", "3", "2", "4"],
                                          ["Winter 2025-26", "UIDOK", "2", "2", "2"],
                                          ["Spring 2026", "VLN", "1", "1", "1"]]
    assert _csv(o, f"{BO}/reports/visits?{QUERY}&period=season&csv=visits")[1:] == \
        _cells(body, "visits")[1:]

    body = o.page(f"{BO}/reports/habits?{QUERY}")
    shown = _cells(body, "habits")
    assert shown[0] == ["Home store", "TEST: customers", "TEST: net sales", "UIDOK: customers",
                        "UIDOK: net sales", "VLN: customers", "VLN: net sales"]
    got = _csv(o, f"{BO}/reports/habits?{QUERY}&csv=habits")
    assert got[1:] == [["TEST", "2", "120.00", "1", "15.00", "0", "0.00"],
                       ["UIDOK", "0", "0.00", "1", "30.00", "0", "0.00"],
                       ["VLN", "0", "0.00", "0", "0.00", "1", "50.00"]]
    assert [[_number(c) for c in row] for row in shown] == got

    body = o.page(f"{BO}/reports/sellers?{QUERY}")
    assert "PUT /api/v1/anonymous-sales" in body  # where the share comes from: said plainly
    got = _csv(o, f"{BO}/reports/sellers?{QUERY}&csv=sellers")
    assert got[1:] == [["TEST", "anna", "2", "115.00", "57.50", "2", "0", "53.5"],
                       ["TEST", "bruno", "1", "5.00", "5.00", "1", "0", ""],
                       ["TEST", "(not given by the till)", "0", "0.00", "", "0", "0", "0.0"],
                       ["TEST", "dora", "0", "0.00", "", "0", "0", "0.0"],
                       ["UIDOK", "(not given by the till)", "1", "30.00", "30.00", "1", "0",
                        ""],
                       ["UIDOK", "bruno", "1", "15.00", "15.00", "1", "1", ""],
                       ["VLN", "carla", "1", "50.00", "50.00", "1", "0", ""]]
    shown = _cells(body, "sellers")
    assert shown[0] == got[0] and [[_number(c) for c in row] for row in shown[1:]] == got[1:]
    assert _csv(o, f"{BO}/reports/sellers?{QUERY}&csv=stores")[1:] == [
        ["TEST", "2", "3", "120.00", "40.00", "0", "135.00", "47.1"],
        ["UIDOK", "0", "2", "45.00", "22.50", "1", "", ""],
        ["VLN", "1", "1", "50.00", "50.00", "1", "", ""]]

    # a range the form refuses: the page says why, and no CSV is made
    r = o.get(f"{BO}/reports/best-sellers?start=2026-03-01&end=2026-01-01")
    assert r.status_code == 422 and "The end is before the start." in r.get_data(as_text=True)
    r = o.get(f"{BO}/reports/best-sellers?start=2026-01-01&end=2026-12-31&period=day"
              "&csv=best-sellers")
    assert r.status_code == 422 and r.mimetype == "text/html"
    # no dates given: the last 12 months by month
    assert o.get(f"{BO}/reports/best-sellers").status_code == 200


def test_a_saved_segment_narrows_the_pages(app, creds, manager, data):
    from server.segments import service as segments
    from server.segments.schemas import Definition

    with _main(app) as s:
        code = s.scalar(select(Store.code).where(Store.id == data["A"]))
        segment = segments.save(s, "Home store A", Definition(home_stores=(code,)), "test")
        segment_id = segment.id
        s.commit()
    o = office(app, creds, manager)
    url = f"{BO}/reports/best-sellers?{QUERY}&period=year&segment={segment_id}"
    body = o.page(url)
    assert f'<option selected value="{segment_id}">Home store A</option>' in body
    # the customers whose home store is A (c1, c2): as the service computes it above
    assert _csv(o, url + "&csv=best-sellers")[1:] == [
        ["2026", "1", "SKU1", "Shoe", "shoes", "2", "100.00", "2"],
        ["2026", "2", "SKU2", "Sock", "acc", "7", "35.00", "2"],
        ["2026", "3", "SKU3", "Hat", "acc", "1", "0.00", "1"]]
    # a segment that does not exist is a form error, not a report of everyone
    assert o.get(f"{BO}/reports/best-sellers?{QUERY}&segment=999999").status_code == 422


def test_desk_and_cashier_are_refused(app, creds, admin, data):
    for user in ("desk1", "cashier1"):
        o = office(app, creds, user)
        for page in ("", "/best-sellers", "/visits", "/habits", "/sellers"):
            assert o.get(f"{BO}/reports{page}?{QUERY}").status_code == 403, (user, page)
        assert o.get(f"{BO}/reports/sellers?{QUERY}&csv=sellers").status_code == 403
        assert f'href="{BO}/reports"' not in o.get(f"{BO}/").get_data(as_text=True)
    o = office(app, creds, admin)
    assert f'href="{BO}/reports"' in o.page(f"{BO}/")
    assert o.get(f"{BO}/reports/habits?{QUERY}").status_code == 200
    assert Office(app).get(f"{BO}/reports/habits").status_code == 302  # to the login page


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_manager_reads_best_sellers_in_chromium(app, creds, manager, data, browser):
    from tests.support.kiosk_screens import save

    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(f"{url}/backoffice/login")
            page.get_by_label("User name").fill(manager)
            page.get_by_label("Password").fill(creds.passwords[manager])
            with page.expect_navigation():
                page.get_by_role("button", name="Log in").click()
            with page.expect_navigation():
                page.get_by_role("link", name="Reports", exact=True).click()
            assert page.locator("h1").inner_text() == "Best sellers"
            page.get_by_label("From", exact=True).fill("2026-01-01")
            page.get_by_label("To", exact=True).fill("2026-03-31")
            page.get_by_label("By", exact=True).select_option("month")
            with page.expect_navigation():
                page.get_by_role("button", name="Show").click()
            chart = page.get_by_role("img", name=re.compile("Top 10 by net sales"))
            assert chart.is_visible()
            box = chart.bounding_box()
            assert box["width"] > 900 and box["x"] + box["width"] <= 1280
            assert page.locator("svg.chart rect").count() == 3
            assert page.locator("table.report tbody tr").count() == 7
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            save(page, "backoffice-reports")
            with page.expect_download() as download:
                page.get_by_role("link", name="Download as CSV").click()
            assert download.value.suggested_filename == \
                "best-sellers-2026-01-01-2026-03-31.csv"
        finally:
            context.close()
    assert not errors, f"the page logged errors: {errors}"


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migration_0018_builds_the_visit_aggregates_of_existing_visits(app, api):
    """Migrating a database that already has visits (every shop upgrading) fills visit_days
    and visit_months once each. The migration's triggers fill visit_months while visit_days
    is rebuilt: an INSERT of its own made every row twice (a unique violation)."""
    from alembic import command

    from server.migrate import alembic_config

    for _ in range(2):
        _, card = api.customer_with_card()
        for _tap in range(2):
            assert api.tap(url=card["url"]).status_code == 200
    engine = app.extensions["loyalty.db"].main
    with engine.begin() as conn:
        command.downgrade(alembic_config("main", conn), "0017_sales_days")
    with engine.begin() as conn:
        command.upgrade(alembic_config("main", conn), "head")
    with engine.connect() as conn:
        months = conn.exec_driver_sql(
            "SELECT customer_id, store_id, days, taps FROM visit_months ORDER BY 1").all()
        visits = conn.exec_driver_sql(
            "SELECT customer_id, store_id, 1, count(*) FROM visits GROUP BY 1, 2 "
            "ORDER BY 1").all()
    assert [tuple(r) for r in months] == [tuple(r) for r in visits]
    assert sum(r.taps for r in months) == 4
