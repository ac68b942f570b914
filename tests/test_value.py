"""The customer value score on hand-built data sets, SQLite and PostgreSQL: every component,
weight, band and explanation computed by hand below; the back office's ranking page and the
customer page's part."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.loyalty.models import Purchase, Refund
from server.loyalty.programme import ProgrammeError, default_programme, load_programme
from server.privacy.models import AuditEntry
from server.stores.models import Store
from server.tickets.models import Ticket
from server.value import service
from server.value.models import ValueScore, ValueSnapshot
from tests.test_backoffice import BO, office

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- building data


class Data:
    """Rows written straight into the main database: the numbers are what the test says."""

    def __init__(self, app, creds) -> None:
        self.app = app
        self.session = Session(app.extensions["loyalty.db"].main)
        self.till = creds.device_ids["till"]
        self.stores = dict(self.session.execute(select(Store.code, Store.id)).all())
        self.n = 0

    def customer(self, code: str, store: str = "TEST", **kw) -> str:
        cid = f"C-{code:0>4}-TEST"[:16]
        self.session.add(Customer(id=cid, language="fr", home_store_id=self.stores[store],
                                  created_at=NOW - timedelta(days=800), **kw))
        self.session.flush()
        return cid

    def purchase(self, cid: str, euros: str, at: datetime, store: str = "TEST",
                 lines: list[tuple[str, str | None]] = ()) -> int:
        from server.loyalty.models import PurchaseLine

        cents = int(float(euros) * 100)
        p = Purchase(event_id=str(uuid.uuid4()), customer_id=cid, store_id=self.stores[store],
                     device_id=self.till, currency="EUR", total_cents=cents, paid_at=at)
        self.session.add(p)
        self.session.flush()
        for i, (sku, category) in enumerate(lines or [("ITEM", None)], 1):
            self.session.add(PurchaseLine(purchase_id=p.id, line_no=i, sku=sku, name=sku,
                                          category=category, quantity_milli=1000,
                                          unit_price_cents=cents, net_cents=cents))
        self.session.flush()
        return p.id

    def refund(self, purchase_id: int, euros: str) -> None:
        self.session.add(Refund(event_id=str(uuid.uuid4()), purchase_id=purchase_id,
                                device_id=self.till, amount_cents=int(float(euros) * 100),
                                points_reversed=0))
        self.session.flush()

    def ticket(self, cid: str, at: datetime) -> None:
        self.session.add(Ticket(customer_id=cid, kind="support", subject="help",
                                created_by="staff:1", created_at=at, updated_at=at))
        self.session.flush()

    def commit(self) -> None:
        self.session.commit()

    def close(self) -> None:
        self.session.close()


def days(n: float) -> datetime:
    return NOW - timedelta(days=n)


def build_abcd(data: Data) -> dict[str, str]:
    """Four active customers, one inactive, one erased (see the numbers in the test)."""
    a, b, c, d = (data.customer(x) for x in ("A", "B", "C", "D"))
    e = data.customer("E")
    f = data.customer("F", erased_at=days(1))
    data.purchase(a, "100.00", days(5))
    data.refund(data.purchase(a, "50.00", days(40)), "20.00")
    data.purchase(a, "30.00", days(100))
    data.purchase(b, "400.00", days(2))
    data.ticket(b, days(1))
    data.purchase(c, "20.00", days(30))
    data.purchase(c, "20.00", days(200))
    data.ticket(c, days(20))
    data.ticket(c, days(500))  # before the window: not counted
    for n in (10, 20, 300):
        data.purchase(d, "10.00", days(n))
    data.purchase(e, "999.00", days(400))  # before the window: inactive
    data.purchase(f, "5000.00", days(3))  # erased: never compared
    data.commit()
    return {"A": a, "B": b, "C": c, "D": d, "E": e, "F": f}


@pytest.fixture
def abcd(app, creds):
    data = Data(app, creds)
    try:
        yield build_abcd(data)
    finally:
        data.close()


def refresh(app, now=NOW, actor: str = "test") -> None:
    """Compute the snapshot the pages and segments read, as the nightly job does."""
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        service.refresh(s, now, actor)
        s.commit()


def _scores(app, programme=None, now=NOW) -> dict[str, object]:
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        rows = s.execute(service.scores(programme or default_programme(), now)).all()
    return {r.customer_id: r for r in rows}


# --------------------------------------------------------------------------- the score


def test_each_component_is_a_share_of_active_customers(app, abcd):
    rows = _scores(app)
    ids = {v: k for k, v in abcd.items()}
    got = {ids[cid]: r for cid, r in rows.items()}
    # E bought before the window (inactive), F is erased: four customers are compared
    assert sorted(got) == ["A", "B", "C", "D"]
    assert {r.active for r in got.values()} == {4}
    # raw values: purchases, net spending (A's 20.00 return deducted), tickets per purchase
    assert {k: (r.purchases, r.net_cents, r.tickets, r.load_milli) for k, r in got.items()} == {
        "A": (3, 16000, 0, 0), "B": (1, 40000, 1, 1000), "C": (2, 4000, 1, 500),
        "D": (3, 3000, 0, 0)}
    # floor(100 x customers done at least as well / 4); ties share the better score
    # recency: B 2 days, A 5, D 10, C 30
    assert {k: r.recency for k, r in got.items()} == {"B": 100, "A": 75, "D": 50, "C": 25}
    # frequency: A and D 3 purchases, C 2, B 1
    assert {k: r.frequency for k, r in got.items()} == {"A": 100, "D": 100, "C": 50, "B": 25}
    # monetary: B 400, A 160, C 40, D 30
    assert {k: r.monetary for k, r in got.items()} == {"B": 100, "A": 75, "C": 50, "D": 25}
    # support: A and D no ticket, C 1 for 2 purchases, B 1 for 1 (fewer is better)
    assert {k: r.support for k, r in got.items()} == {"A": 100, "D": 100, "C": 50, "B": 25}
    assert {r.punctuality for r in got.values()} == {None}
    # weights 25/25/35/5 (punctuality left out: nobody has an account):
    # A (25x75 + 25x100 + 35x75 + 5x100) / 90 = 7500 / 90 = 83.3 -> 83
    # B (2500 + 625 + 3500 + 125) / 90 = 75; C 3875 / 90 -> 43; D 5125 / 90 -> 56
    assert {k: r.score for k, r in got.items()} == {"A": 83, "B": 75, "C": 43, "D": 56}
    assert {k: r.place for k, r in got.items()} == {"A": 1, "B": 2, "D": 3, "C": 4}
    # premium: the best 5 % of 4 rounded up, so 1; high from 60, medium from 30
    assert {k: r.band for k, r in got.items()} == {
        "A": "premium", "B": "high", "D": "medium", "C": "medium"}


def test_weights_window_and_bands_come_from_the_programme(app, abcd):
    text = default_programme().model_dump(mode="json")
    text["value"] = {"window_months": 2, "premium_percent": "50", "high_from": 90,
                     "medium_from": 50, "weights": {"recency": 0, "frequency": 0,
                                                    "monetary": 1, "punctuality": 0,
                                                    "support": 0}}
    programme = load_programme(text)
    got = {k: _scores(app, programme).get(v) for k, v in abcd.items()}
    # two months: A (2 purchases, 100 + 50 - 20), B, C (1 purchase), D (2 purchases)
    assert got["A"].purchases == 2 and got["A"].net_cents == 13000
    assert got["C"].purchases == 1 and got["D"].purchases == 2
    # money alone: B 400, A 130, C 20, D 20 -> 100, 75, 50, 50
    assert {k: got[k].score for k in "ABCD"} == {"A": 75, "B": 100, "C": 50, "D": 50}
    # premium: half of 4 = 2 (B, A); then high from 90, medium from 50
    assert {k: got[k].band for k in "ABCD"} == {"A": "premium", "B": "premium",
                                                 "C": "medium", "D": "medium"}


def test_punctuality_is_a_pluggable_input_ignored_without_data(app, abcd):
    a, b = abcd["A"], abcd["B"]

    def accounts(since, now):
        on_time = case((Customer.id == a, 100), else_=50)
        return select(Customer.id.label("customer_id"), on_time.label("on_time")).where(
            Customer.id.in_([a, b]))

    registered = list(service._punctuality)  # the accounts' source, put back afterwards
    service.register_punctuality(accounts)
    try:
        rows = _scores(app)
        refresh(app)
        with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
            explained = service.explain(s, default_programme(), abcd["C"])
    finally:
        service.register_punctuality(registered[0] if registered else None)
    # among the two account customers: A 100, B 50
    assert rows[a].punctuality == 100 and rows[b].punctuality == 50
    # A (7500 + 10 x 100) / 100 = 85; B (6750 + 10 x 50) / 100 = 72.5 -> 72
    assert rows[a].score == 85 and rows[b].score == 72
    # C has no account: the same score as before, the weight is ignored
    assert rows[abcd["C"]].score == 43 and rows[abcd["C"]].punctuality is None
    punctual = {c.key: c for c in explained.components}["punctuality"]
    assert punctual.score is None and punctual.used_weight == 0 and punctual.weight == 10
    assert punctual.text == "not an account customer"


def test_explain_says_each_component_in_words(app, abcd):
    refresh(app)
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        a = service.explain(s, default_programme(), abcd["A"])
        e = service.explain(s, default_programme(), abcd["E"])
    assert (a.score, a.band, a.place, a.customers) == (83, "premium", 1, 4)
    parts = {c.key: c for c in a.components}
    assert parts["recency"].raw == 5 and parts["recency"].text == "last purchase 5 day(s) ago"
    assert parts["monetary"].raw == 16000
    assert parts["monetary"].text == "160.00 EUR spent, returns deducted"
    assert parts["frequency"].text == "3 purchase(s) in 12 months"
    assert parts["support"].text == "0 ticket(s) for 3 purchase(s)"
    # contributions: score x weight / 90, adding up to the score (before flooring)
    assert str(parts["monetary"].contribution) == "29.2"  # 75 x 35 / 90
    assert str(parts["frequency"].contribution) == "27.8"  # 100 x 25 / 90
    assert abs(sum(c.contribution for c in a.components) - Decimal("83.3")) <= Decimal("0.2")
    assert not e.active and e.band == "inactive" and e.score is None and e.customers == 4
    assert a.computed_at == NOW


def test_the_snapshot_is_the_scores_at_its_time_replaced_whole(app, abcd):
    refresh(app)
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        found = service.snapshot(s)
        stored = {r.customer_id: r for r in s.scalars(select(ValueScore))}
    live = _scores(app)
    assert set(stored) == set(live) and len(stored) == 4
    for cid, row in live.items():  # every column of scores(), as computed
        assert {c: getattr(stored[cid], c) for c in row._fields} == row._asdict(), cid
    assert (found.computed_at, found.active, found.live, found.programme_version) == \
        (NOW, 4, 5, 0)  # F is erased: 5 live customers, E inactive
    assert service.band_counts(found) == {"premium": 1, "high": 1, "medium": 2, "low": 0,
                                          "inactive": 1}
    # a month later A's purchases have aged: the next refresh replaces every row at once
    refresh(app, NOW + timedelta(days=30), "job:value")
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        later = service.snapshot(s)
        rows = {r.customer_id: r.recency for r in s.scalars(select(ValueScore))}
        assert s.scalar(select(func.count()).select_from(ValueSnapshot)) == 1
    assert later.computed_at == NOW + timedelta(days=30) and later.refreshed_by == "job:value"
    assert rows == {cid: r.recency for cid, r in _scores(app, now=NOW + timedelta(days=30))
                    .items()}


def test_the_explanation_uses_the_weights_the_snapshot_was_made_with(app, abcd):
    from server.loyalty import programmes
    from server.loyalty.models import ProgrammeVersion

    refresh(app)  # the default programme (version 0): weights 25/25/35/5
    document = default_programme().model_dump(mode="json")
    document["value"]["weights"] = {"recency": 1, "frequency": 0, "monetary": 0,
                                    "punctuality": 0, "support": 0}
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        s.add(ProgrammeVersion(document=document, source="", loaded_by="test"))
        s.commit()
        app.extensions.pop("loyalty.programme", None)  # the 5 s cache
        explained = service.explain(s, programmes.current(s)[1], abcd["A"])
    parts = {c.key: c for c in explained.components}
    assert explained.score == 83 and parts["monetary"].weight == 35
    assert str(parts["monetary"].contribution) == "29.2"  # 75 x 35 / 90, as scored


def test_without_a_snapshot_nobody_is_scored_and_it_says_so(app, abcd):
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        explained = service.explain(s, default_programme(), abcd["A"])
        assert service.snapshot(s) is None and service.ranking(s) == []
    assert explained.computed_at is None and not explained.active
    assert service.band_counts(None) == dict.fromkeys(service.BANDS, 0)


def test_flask_value_refresh_computes_the_snapshot(app, abcd):
    result = app.test_cli_runner().invoke(args=["value", "refresh"])
    assert result.exit_code == 0, result.output
    # the data set is dated around NOW, in the past: at the real time only a few are active
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        found = service.snapshot(s)
    assert found.refreshed_by == "cli" and f"{found.active} active customers" in result.output


@pytest.mark.parametrize("change, message", [
    ({"medium_from": 70}, "must be below high_from"),
    ({"weights": {"recency": 0, "frequency": 0, "monetary": 0, "support": 0}},
     "give a weight above 0"),
    ({"premium_percent": 0}, "greater than 0"),
    ({"window_months": 0}, "greater than or equal to 1"),
    ({"weights": {"loyalty": 3}}, "unknown key"),
])
def test_the_value_section_is_validated_like_the_rest(change, message):
    document = default_programme().model_dump(mode="json")
    document["value"] = {**document["value"], **change}
    with pytest.raises(ProgrammeError) as caught:
        load_programme(document)
    assert message in str(caught.value), str(caught.value)
    assert any(path.startswith("value") for path, _m in caught.value.problems)


# --------------------------------------------------------------------------- pages


def _shift(app, abcd) -> None:
    """Move the data set so that NOW is now: the pages compute at the real time."""
    from sqlalchemy import update

    from server.db import utcnow

    delta = utcnow() - NOW
    with Session(app.extensions["loyalty.db"].main) as s:
        for model, column in ((Purchase, Purchase.paid_at), (Ticket, Ticket.created_at)):
            for row_id, at in s.execute(select(model.id, column)).all():
                s.execute(update(model).where(model.id == row_id).values(
                    {column.key: at + delta}))
        s.commit()


def test_the_ranking_page_and_the_customer_part(app, creds, abcd, manager):
    _shift(app, abcd)
    o = office(app, creds, manager)
    # before the first refresh: said in words, on the ranking and on the customer's file
    body = o.page(f"{BO}/value")
    assert 'data-computed-at="none"' in body and "have not been computed yet" in body
    assert "<tr data-customer" not in body
    page = o.page(f"{BO}/customers/{abcd['A']}")
    part = page[page.index('id="value"'):page.index('id="cards"')]
    assert "have not been computed yet" in part
    # a manager computes them from the page (CSRF-protected, audited)
    assert o.post(f"{BO}/value/refresh", csrf=False).status_code == 400
    r = o.post(f"{BO}/value/refresh")
    assert r.status_code == 303, r.get_data(as_text=True)[:300]
    with Session(app.extensions["loyalty.db"].main) as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "value.refresh")).one()
    assert entry.actor.startswith("staff:") and entry.view == "backoffice:value"
    assert entry.detail == {"active": 4, "programme_version": 0}
    body = o.page(f"{BO}/value")
    assert "Value scores computed: 4 active customers." in body
    assert re.search(r'data-computed-at="\d{4}-\d\d-\d\dT', body)
    rows = re.findall(r'<tr data-customer="([^"]+)"[^>]*data-score="(\d+)"[^>]*'
                      r'data-band="([a-z]+)"', body)
    assert rows == [(abcd["A"], "83", "premium"), (abcd["B"], "75", "high"),
                    (abcd["D"], "56", "medium"), (abcd["C"], "43", "medium")]
    assert f'href="{BO}/customers/{abcd["A"]}"' in body
    assert "4 active customers" in body
    premium = o.page(f"{BO}/value?band=premium")
    assert abcd["A"] in premium and abcd["B"] not in premium

    page = o.page(f"{BO}/customers/{abcd['A']}")
    part = page[page.index('id="value"'):page.index('id="cards"')]
    assert 'data-score="83"' in part and "premium" in part
    assert "160.00 EUR spent, returns deducted" in part or "160.00 EUR" in part
    assert "1 of 4 active customers" in part
    inactive = o.page(f"{BO}/customers/{abcd['E']}")
    part = inactive[inactive.index('id="value"'):inactive.index('id="cards"')]
    assert "No purchase in the last 12 months" in part and "Scores computed on" in part

    desk = office(app, creds, "desk1")
    assert desk.get(f"{BO}/value").status_code == 403
    desk.get(f"{BO}/customers/{abcd['A']}")
    assert desk.post(f"{BO}/value/refresh").status_code == 403
    # the desk sees the customer's score on the file, as before the rank
    assert 'data-score="83"' in desk.page(f"{BO}/customers/{abcd['A']}")

