"""The loyalty engine through the API, on SQLite and PostgreSQL: purchases, returns,
redemptions, adjustments, tiers, promotions by store, the tap record and the programme.

Expected points are computed by hand from the default programme (``default_programme.toml``:
1 point per 1.00, shoes x2, gift cards and tobacco excluded, discounted lines earn nothing,
visits 5 points with a 20 h gap, tiers silver 500 / gold 2000 on points earned, a welcome
bonus of ``WELCOME`` points on joining that counts for no tier) or from the small programme
``SMALL`` below (no welcome bonus). The pure rules are tested in test_programme.py; here every
test also checks, after it ran, that each customer's balance is the sum of their ledger and
never negative.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.loyalty.models import (
    PointsEntry,
    ProgrammeVersion,
    Purchase,
    PurchaseLine,
    Redemption,
    Refund,
    RefundLine,
)
from server.loyalty.programme import DEFAULT_PROGRAMME_FILE, default_programme
from server.staff.models import Staff
from tests.support.fixtures_server import Api, assert_problem

line = Api.line

# every customer enrolled under the default programme starts with these points
WELCOME = default_programme().enrolment.welcome_points

# tiers on a low ladder so that one purchase upgrades; a promotion in store TEST only; no
# visit points (taps show the record without moving the balance); points never expire
SMALL = """
currency = "EUR"
timezone = "Europe/Paris"

[earning]
points_per_unit = 1

[[promotions]]
name = "Promo lines double in TEST"
factor = 2
stores = ["TEST"]
categories = ["promo"]

[[tiers]]
code = "member"
threshold = 0
[[tiers]]
code = "silver"
threshold = 100
[[tiers]]
code = "gold"
threshold = 1000
multiplier = 2

[tier_rules]
window_months = 12
review_months = 12

[[rewards]]
code = "R50"
name = "1 EUR off"
kind = "amount"
value = 1
cost = 50

[redemption]
step_up_above = 1000

[expiry]
months = 0
"""


# --------------------------------------------------------------------------- helpers


def main_db(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


LOYALTY_TABLES = (Purchase, PurchaseLine, Refund, RefundLine, Redemption, PointsEntry)


def loyalty_counts(app) -> dict[str, int]:
    """Rows of every loyalty table, and the sum of all balances: to prove nothing was written."""
    with main_db(app) as s:
        counts = {model.__tablename__: s.scalar(select(func.count()).select_from(model))
                  for model in LOYALTY_TABLES}
        counts["balances"] = s.scalar(select(func.coalesce(func.sum(Customer.points), 0)))
        counts["debts"] = s.scalar(select(func.coalesce(func.sum(Customer.points_debt), 0)))
    return counts


def ledger_invariant_problems(app) -> list[str]:
    """Customers whose balance is not the sum of their ledger, or is negative."""
    with main_db(app) as s:
        sums = dict(s.execute(select(PointsEntry.customer_id, func.sum(PointsEntry.delta))
                              .group_by(PointsEntry.customer_id)).all())
        rows = s.execute(select(Customer.id, Customer.points, Customer.points_debt)).all()
    problems = []
    for customer_id, points, debt in rows:
        if points != sums.get(customer_id, 0):
            problems.append(f"{customer_id}: balance {points} != ledger {sums.get(customer_id)}")
        if points < 0 or debt < 0:
            problems.append(f"{customer_id}: balance {points}, debt {debt}")
    unknown = set(sums) - {r.id for r in rows}
    if unknown:
        problems.append(f"ledger entries of unknown customers {unknown}")
    return problems


@pytest.fixture(autouse=True)
def ledger_invariant(app):
    """After every test: customers.points == sum(points_ledger.delta) and points >= 0."""
    yield
    assert ledger_invariant_problems(app) == []


def entries(app, customer_id: str, kind: str | None = None) -> list[PointsEntry]:
    with main_db(app) as s:
        query = select(PointsEntry).where(PointsEntry.customer_id == customer_id)
        if kind:
            query = query.where(PointsEntry.kind == kind)
        return list(s.scalars(query.order_by(PointsEntry.id)))


def customer_row(app, customer_id: str) -> Customer:
    with main_db(app) as s:
        return s.get(Customer, customer_id)


def staff_id(app, username: str) -> int:
    with main_db(app) as s:
        return s.scalar(select(Staff.id).where(Staff.username == username))


def enrolled(api: Api) -> str:
    response = api.enrol()
    assert response.status_code == 201, response.get_json()
    return response.get_json()["customer_id"]


def created(response, status: int = 201) -> dict:
    assert response.status_code == status, (response.status_code, response.get_json())
    assert "Idempotent-Replayed" not in response.headers
    return response.get_json()


def replayed(response) -> dict:
    assert response.status_code == 201, (response.status_code, response.get_json())
    assert response.headers.get("Idempotent-Replayed") == "true"
    return response.get_json()


def give_points(api: Api, creds, customer_id: str, points: int) -> None:
    """Spendable points that count for no tier: a manager's adjustment."""
    created(api.adjust(customer_id, points, creds.staff_auth("manager1"),
                       reason="opening points for the test"))


def tap(api: Api, card: dict, till: str = "till") -> dict:
    response = api.tap(url=card["url"], headers=api.creds.h(till))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def load_small(api: Api, creds) -> None:
    response = api.put_programme(SMALL, creds.staff_auth("manager1"))
    assert response.status_code == 200, response.get_json()


def set_review_in_the_past(app, customer_id: str) -> None:
    with main_db(app) as s:
        s.execute(update(Customer).where(Customer.id == customer_id)
                  .values(tier_review_at=datetime.now(UTC) - timedelta(days=1)))
        s.commit()


# --------------------------------------------------------------------------- purchases


def test_purchase_earns_what_the_default_programme_says_per_line(app, api, creds):
    customer_id, card = api.customer_with_card()
    lines = [
        line("SHOE-1", 1, "120.00", category="shoes"),          # 120 x shoes x2 = 240
        line("FOOD-1", 3, "9.90", category="food"),              # 29.70 -> floor 29
        line("GIFT-50", 1, "50.00", category="gift-cards"),      # excluded: 0
        line("SHIRT-1", 2, "10.00", category="clothes", discount="5.00"),  # discounted: 0
    ]
    body = created(api.purchase(lines, card=card["url"], store="TEST", till="T1",
                                receipt="R-0001"))
    assert body["customer_id"] == customer_id
    assert [(ln["line_no"], ln["points"]) for ln in body["lines"]] == \
        [(1, 240), (2, 29), (3, 0), (4, 0)]
    # each line says why, in words the till can show
    reasons = {ln["line_no"]: ln["reasons"] for ln in body["lines"]}
    assert reasons[1] == ["Shoes count double ×2"] and reasons[2] == []
    assert reasons[3] == ["excluded: Gift cards and tobacco"]
    assert reasons[4] == ["discounted line earns nothing"]
    assert (body["points_earned"], body["balance"], body["tier"], body["tier_changed"]) == \
        (269, WELCOME + 269, "member", False)

    with main_db(app) as s:
        purchase = s.get(Purchase, body["purchase_id"])
        assert (purchase.total_cents, purchase.points_earned, purchase.card_id, purchase.till,
                purchase.currency) == (21470, 269, card["card_id"], "T1", "EUR")
        stored = s.scalars(select(PurchaseLine).where(PurchaseLine.purchase_id == purchase.id)
                           .order_by(PurchaseLine.line_no)).all()
        assert [(ln.net_cents, ln.points_earned) for ln in stored] == \
            [(12000, 240), (2970, 29), (5000, 0), (1500, 0)]

    # by customer id, in the same store: tobacco is excluded, 0.99 floors to 0
    body = created(api.purchase([line("TOB-1", 1, "11.00", category="tobacco"),
                                 line("GUM", 1, "0.99"),
                                 line("MUG", 2, "7.50", category="kitchen")],
                                customer_id=customer_id))
    assert [ln["points"] for ln in body["lines"]] == [0, 0, 15]
    assert (body["points_earned"], body["balance"]) == (15, WELCOME + 284)

    earned = entries(app, customer_id)
    assert [(e.kind, e.delta, e.purchase_id is not None) for e in earned] == \
        [("welcome", WELCOME, False), ("earn", 269, True), ("earn", 15, True)]
    assert earned[1].reason == "purchase R-0001: Shoes count double ×2"
    # the ledger as a desk sees it: newest first, adding up to the balance
    seen = api.client.get(f"/api/v1/customers/{customer_id}/points",
                          headers=creds.staff_auth("desk1"))
    assert seen.status_code == 200
    assert seen.get_json()["balance"] == WELCOME + 284
    assert [e["delta"] for e in seen.get_json()["entries"]] == [15, 269, WELCOME]


def test_a_retried_purchase_never_earns_twice(app, api, creds):
    customer_id = enrolled(api)
    body = Api.purchase_body([line("SHOE-1", 1, "60.00", category="shoes")],
                             customer_id=customer_id)
    first = created(api.client.post("/api/v1/purchases", json=body, headers=creds.h("till")))
    assert (first["points_earned"], first["balance"]) == (120, WELCOME + 120)
    before = loyalty_counts(app)

    for _ in range(2):
        again = replayed(api.client.post("/api/v1/purchases", json=body,
                                         headers=creds.h("till")))
        assert again["purchase_id"] == first["purchase_id"]
        assert (again["points_earned"], again["balance"]) == (120, WELCOME + 120)
    # a retry with a changed body is still the recorded event, not a new purchase
    changed = dict(body, lines=[line("SHOE-1", 2, "60.00", category="shoes")], total="120.00")
    again = replayed(api.client.post("/api/v1/purchases", json=changed, headers=creds.h("till")))
    assert (again["purchase_id"], again["points_earned"]) == (first["purchase_id"], 120)
    # the same event id from a till of another store is a conflict, not a replay
    other = api.client.post("/api/v1/purchases", json=body, headers=creds.h("till_uid"))
    assert_problem(other, 409, "event-id-conflict")

    assert loyalty_counts(app) == before
    assert customer_row(app, customer_id).points == WELCOME + 120


def test_refused_purchases_write_nothing(app, api, creds):
    customer_id, card = api.customer_with_card()
    before = loyalty_counts(app)
    lines = [line("FOOD-1", 2, "10.00", category="food")]

    body = assert_problem(api.purchase(lines, customer_id=customer_id, total="25.00"), 422,
                          "total-mismatch")
    assert "20.00" in body["detail"]
    assert_problem(api.purchase(lines, customer_id=customer_id, currency="USD"), 422,
                   "currency-mismatch")
    assert_problem(api.purchase(lines, customer_id=customer_id, store="UIDOK"), 422,
                   "store-mismatch")
    assert_problem(api.purchase(lines, customer_id="C-0000-0000"), 404, "customer-not-found")
    assert loyalty_counts(app) == before

    # a revoked card (replaced as lost) earns nothing any more
    replaced = api.issue_card(customer_id, replace=True, reason="lost",
                              headers=creds.h("kiosk", staff="desk1"))
    assert replaced.status_code == 201, replaced.get_json()
    assert_problem(api.purchase(lines, card=card["url"]), 410, "card-revoked")
    assert loyalty_counts(app) == before
    assert customer_row(app, customer_id).points == WELCOME  # the welcome bonus only
    # the new card works
    body = created(api.purchase(lines, card=replaced.get_json()["url"]))
    assert body["points_earned"] == 20


# --------------------------------------------------------------------------- returns


def test_partial_returns_reverse_exactly_what_the_lines_earned(app, api, creds):
    customer_id = enrolled(api)
    bought = created(api.purchase([line("FOOD-1", 3, "9.90", category="food"),     # 29
                                   line("SHOE-1", 1, "45.50", category="shoes")],  # 91
                                  customer_id=customer_id))
    assert (bought["points_earned"], bought["balance"]) == (120, WELCOME + 120)
    purchase_id = bought["purchase_id"]

    # 1 + 1 + 1 of the 3 items: floor gives 9, 10, 10 and the parts add up to the 29 earned
    reversed_, balances = [], []
    for _ in range(3):
        body = created(api.refund(purchase_id=purchase_id,
                                  lines=[{"line_no": 1, "quantity": "1"}]))
        assert body["amount"] == "9.90"
        assert (body["points_restored"], body["points_owed"]) == (0, 0)
        reversed_.append(body["points_reversed"])
        balances.append(body["balance"])
    assert reversed_ == [9, 10, 10]
    assert sum(reversed_) == 29
    assert balances == [WELCOME + 111, WELCOME + 101, WELCOME + 91]

    before = loyalty_counts(app)
    more = api.refund(purchase_id=purchase_id, lines=[{"line_no": 1, "quantity": "1"}])
    assert_problem(more, 409, "already-refunded")
    more = api.refund(purchase_id=purchase_id, lines=[{"line_no": 2, "quantity": "2"}])
    assert_problem(more, 409, "already-refunded")
    assert loyalty_counts(app) == before

    # a whole return (no lines) takes what is left: the shoes, by the purchase's event id
    with main_db(app) as s:
        event_id = s.get(Purchase, purchase_id).event_id
    event = str(uuid.uuid4())
    body = created(api.refund(event_id=event, purchase_event_id=event_id))
    # the purchase's points are all taken back; the welcome bonus stays
    assert (body["points_reversed"], body["amount"], body["balance"]) == (91, "45.50", WELCOME)
    # its retry changes nothing
    again = replayed(api.refund(event_id=event, purchase_event_id=event_id))
    assert (again["refund_id"], again["points_reversed"], again["balance"]) == \
        (body["refund_id"], 91, WELCOME)
    # ... and the same return id from a till of another store is a conflict
    assert_problem(api.refund(headers=creds.h("till_uid"), event_id=event,
                              purchase_event_id=event_id), 409, "event-id-conflict")
    assert_problem(api.refund(purchase_id=purchase_id), 409, "already-refunded")
    assert_problem(api.refund(purchase_id=999999), 404, "purchase-not-found")

    refunds = entries(app, customer_id, "refund")
    assert [e.delta for e in refunds] == [-9, -10, -10, -91]
    with main_db(app) as s:
        stored = s.scalars(select(PurchaseLine).where(PurchaseLine.purchase_id == purchase_id)
                           .order_by(PurchaseLine.line_no)).all()
        assert [(ln.refunded_milli, ln.points_reversed) for ln in stored] == \
            [(3000, 29), (1000, 91)]


def test_return_after_the_points_were_spent_owes_them_never_negative(app, api, creds):
    customer_id, card = api.customer_with_card()
    bought = created(api.purchase([line("TV-1", 1, "200.00", category="electronics")],
                                  customer_id=customer_id))
    assert bought["balance"] == WELCOME + 200
    spent = created(api.redeem("COFFEE", customer_id=customer_id))
    assert spent["balance"] == WELCOME + 50

    # the welcome bonus is spendable like any points: the return takes the WELCOME + 50 left
    # at once and owes the rest of the 200 it takes back
    owed = 200 - (WELCOME + 50)
    assert owed > 5 + 50  # so that the tap and the next purchase below pay part of it only
    body = created(api.refund(purchase_id=bought["purchase_id"]))
    assert (body["points_reversed"], body["points_owed"], body["balance"]) == (200, owed, 0)
    assert customer_row(app, customer_id).points_debt == owed
    # the tap shows the debt; its visit points (5) pay part of it, the balance stays 0
    record = tap(api, card)
    assert (record["points"], record["points_owed"]) == (0, owed - 5)

    # the next purchases pay the rest of the debt first: 50 points pay part of it ...
    body = created(api.purchase([line("BOOK", 1, "50.00", category="books")],
                                customer_id=customer_id))
    assert (body["points_earned"], body["balance"]) == (50, 0)
    assert customer_row(app, customer_id).points_debt == owed - 5 - 50
    # ... and 60 pay what is left of it, the rest is the customer's
    left = 60 - (owed - 5 - 50)
    body = created(api.purchase([line("BOOK", 1, "60.00", category="books")],
                                customer_id=customer_id))
    assert (body["points_earned"], body["balance"]) == (60, left)
    row = customer_row(app, customer_id)
    assert (row.points, row.points_debt) == (left, 0)
    # WELCOME + 200 earned - 150 redeemed - (WELCOME + 50) taken back at once - the rest owed
    # paid later by 5 + 50 + 60: the returns took back exactly the 200 the purchase earned
    kinds = {}
    for entry in entries(app, customer_id):
        kinds[entry.kind] = kinds.get(entry.kind, 0) + entry.delta
    assert kinds == {"welcome": WELCOME, "earn": 310, "visit": 5, "redeem": -150,
                     "refund": -200}


def test_returning_a_line_paid_with_a_reward_gives_the_reward_back_once(app, api, creds):
    customer_id = enrolled(api)
    created(api.purchase([line("TV-1", 1, "300.00")], customer_id=customer_id))
    coffee = created(api.redeem("COFFEE", customer_id=customer_id))
    assert (coffee["points"], coffee["balance"], coffee["status"]) == \
        (150, WELCOME + 150, "active")
    assert coffee["reward"]["sku"] == "COFFEE-01"
    reward_id = coffee["redemption_id"]

    # the coffee is paid with the reward (and earns nothing), the cake is paid
    with_reward = [line("COFFEE-01", 1, "2.50", discount="2.50", redemption_id=reward_id),
                   line("CAKE", 1, "10.00", category="food")]
    bought = created(api.purchase(with_reward, customer_id=customer_id))
    assert [ln["points"] for ln in bought["lines"]] == [0, 10]
    assert bought["balance"] == WELCOME + 160

    before = loyalty_counts(app)
    # the same reward again, on another purchase or twice on one purchase: refused
    assert_problem(api.purchase(with_reward, customer_id=customer_id), 409, "reward-used")
    second = created(api.redeem("COFFEE", customer_id=customer_id))
    twice = [line("COFFEE-01", 1, "2.50", discount="2.50", redemption_id=second["redemption_id"]),
             line("COFFEE-01", 1, "2.50", discount="2.50", redemption_id=second["redemption_id"])]
    after_second = loyalty_counts(app)
    assert_problem(api.purchase(twice, customer_id=customer_id), 409, "reward-used")
    assert loyalty_counts(app) == after_second
    assert after_second["purchases"] == before["purchases"]
    balance = second["balance"]
    assert balance == WELCOME + 10

    # returning the coffee gives the reward's 150 points back, once
    event = str(uuid.uuid4())
    body = created(api.refund(event_id=event, purchase_id=bought["purchase_id"],
                              lines=[{"line_no": 1, "quantity": "1"}]))
    assert (body["points_reversed"], body["points_restored"], body["points_owed"]) == (0, 150, 0)
    assert body["balance"] == balance + 150
    replayed(api.refund(event_id=event, purchase_id=bought["purchase_id"],
                        lines=[{"line_no": 1, "quantity": "1"}]))
    assert_problem(api.refund(purchase_id=bought["purchase_id"],
                              lines=[{"line_no": 1, "quantity": "1"}]), 409, "already-refunded")
    # the whole return of what is left takes the cake's 10 points and restores nothing more
    body = created(api.refund(purchase_id=bought["purchase_id"]))
    assert (body["points_reversed"], body["points_restored"], body["balance"]) == \
        (10, 0, balance + 140)

    restores = entries(app, customer_id, "restore")
    assert [(e.delta, e.redemption_id) for e in restores] == [(150, reward_id)]
    with main_db(app) as s:
        assert s.get(Redemption, reward_id).status == "restored"
    # a restored reward cannot pay a line any more
    assert_problem(api.purchase(with_reward[:1], customer_id=customer_id), 409, "reward-used")


# --------------------------------------------------------------------------- redemptions


def test_redemptions(app, api, creds, manager):
    customer_id, card = api.customer_with_card()
    give_points(api, creds, customer_id, 2000)

    body = created(api.redeem("COFFEE", card=card["url"]))
    assert (body["customer_id"], body["points"], body["balance"]) == \
        (customer_id, 150, WELCOME + 1850)
    assert body["reward"] == {"code": "COFFEE", "name": "Free coffee", "kind": "product",
                              "value": None, "sku": "COFFEE-01", "cost": 150}
    event = str(uuid.uuid4())
    before = loyalty_counts(app)

    # 3 x 500 = 1500 > step_up_above (1000): a member of staff must confirm
    assert_problem(api.redeem("VOUCHER-5", customer_id=customer_id, quantity=3, event_id=event),
                   403, "step-up-required")
    assert_problem(api.redeem("GOLD-10", customer_id=customer_id), 403, "reward-not-allowed")
    assert_problem(api.redeem("NO-SUCH-REWARD", customer_id=customer_id), 404,
                   "reward-not-found")
    assert loyalty_counts(app) == before

    body = created(api.redeem("VOUCHER-5", headers=creds.h("till", staff="cashier1"),
                              customer_id=customer_id, quantity=3, event_id=event))
    assert (body["points"], body["quantity"], body["balance"]) == (1500, 3, WELCOME + 350)
    with main_db(app) as s:
        redemption = s.get(Redemption, body["redemption_id"])
        assert redemption.confirmed_by_staff_id == staff_id(app, "cashier1")
    assert entries(app, customer_id, "redeem")[-1].staff_id == staff_id(app, "cashier1")

    # not enough points (WELCOME + 350, the welcome bonus included, is still short of 500):
    # refused, nothing written, the balance is said
    assert WELCOME + 350 < 500
    before = loyalty_counts(app)
    refused = assert_problem(api.redeem("VOUCHER-5", customer_id=customer_id), 409,
                             "insufficient-points")
    assert (refused["balance"], refused["needed"]) == (WELCOME + 350, 500)
    assert loyalty_counts(app) == before

    # a retry of a recorded redemption spends nothing more
    again = replayed(api.redeem("VOUCHER-5", headers=creds.h("till", staff="cashier1"),
                                customer_id=customer_id, quantity=3, event_id=event))
    assert (again["redemption_id"], again["balance"]) == (body["redemption_id"], WELCOME + 350)
    # a customer redeems in any store of the chain
    body = created(api.redeem("COFFEE", headers=creds.h("till_uid"), customer_id=customer_id))
    assert body["balance"] == WELCOME + 200
    assert [e.delta for e in entries(app, customer_id, "redeem")] == [-150, -1500, -150]


def test_manager_adjustments(app, api, creds, manager):
    customer_id = enrolled(api)
    event = str(uuid.uuid4())
    body = created(api.adjust(customer_id, 100, creds.staff_auth("manager1"),
                              reason="lost receipt, seen by the manager", event_id=event))
    assert (body["points"], body["balance"], body["reason"]) == \
        (100, WELCOME + 100, "lost receipt, seen by the manager")
    again = replayed(api.adjust(customer_id, 100, creds.staff_auth("manager1"),
                                reason="lost receipt, seen by the manager", event_id=event))
    assert (again["entry_id"], again["balance"]) == (body["entry_id"], WELCOME + 100)

    before = loyalty_counts(app)
    assert_problem(api.adjust(customer_id, 50, creds.staff_auth("cashier1")), 403,
                   "forbidden-role")
    assert_problem(api.adjust(customer_id, 50, creds.h("till")), 403, "forbidden-role")
    # one point more than the balance, the welcome bonus included
    assert_problem(api.adjust(customer_id, -(WELCOME + 101), creds.staff_auth("manager1")), 409,
                   "insufficient-points")
    assert_problem(api.adjust(customer_id, 50, creds.staff_auth("manager1"), reason=""), 422,
                   "validation-error")
    assert_problem(api.adjust("C-0000-0000", 50, creds.staff_auth("manager1")), 404,
                   "customer-not-found")
    assert loyalty_counts(app) == before

    body = created(api.adjust(customer_id, -40, creds.staff_auth("manager1"),
                              reason="duplicate credit"))
    assert body["balance"] == WELCOME + 60
    adjusted = entries(app, customer_id, "adjust")
    manager_id = staff_id(app, "manager1")
    assert [(e.delta, e.staff_id, e.reason) for e in adjusted] == \
        [(100, manager_id, "lost receipt, seen by the manager"),
         (-40, manager_id, "duplicate credit")]


# --------------------------------------------------------------------------- tiers


def test_tier_goes_up_at_once_and_down_only_at_the_review(app, api, creds, manager):
    load_small(api, creds)
    customer_id, card = api.customer_with_card()

    body = created(api.purchase([line("TV-1", 1, "150.00")], customer_id=customer_id))
    assert (body["points_earned"], body["tier"], body["tier_changed"]) == (150, "silver", True)
    record = tap(api, card)
    assert (record["tier"], record["points"]) == ("silver", 150)
    assert record["tier_progress"] == {"qualifying_points": 150, "next_tier": "gold",
                                       "next_tier_name": "gold", "points_to_next_tier": 850}
    # this programme names no tier: the code stands for the name
    assert (record["tier_name"], body["tier_name"]) == ("silver", "silver")
    review_at = customer_row(app, customer_id).tier_review_at
    assert review_at > datetime.now(UTC) + timedelta(days=360)

    # a return takes the points back, but the tier is kept until the review date
    assert created(api.refund(purchase_id=body["purchase_id"]))["balance"] == 0
    record = tap(api, card)
    assert record["tier"] == "silver"
    assert record["tier_progress"]["qualifying_points"] == 0
    body = created(api.purchase([line("PEN", 1, "10.00")], customer_id=customer_id))
    assert (body["tier"], body["tier_changed"]) == ("silver", False)

    runner = app.test_cli_runner()
    result = runner.invoke(args=["tiers", "review"])
    assert result.exit_code == 0, result.output
    assert "0 customers reviewed" in result.output
    assert customer_row(app, customer_id).tier == "silver"

    # at the review date, the 10 qualifying points make a member again
    set_review_in_the_past(app, customer_id)
    result = runner.invoke(args=["tiers", "review"])
    assert result.exit_code == 0, result.output
    assert "1 customers reviewed, 1 changed tier" in result.output
    row = customer_row(app, customer_id)
    assert row.tier == "member"
    assert tap(api, card)["tier"] == "member"


def test_tier_is_never_computed_on_the_balance(app, api, creds, manager):
    load_small(api, creds)
    customer_id, card = api.customer_with_card()
    body = created(api.purchase([line("TV-1", 1, "150.00")], customer_id=customer_id))
    assert body["tier"] == "silver"

    spent = created(api.redeem("R50", customer_id=customer_id, quantity=3))
    assert spent["balance"] == 0
    record = tap(api, card)
    assert (record["tier"], record["points"]) == ("silver", 0)
    assert record["tier_progress"]["qualifying_points"] == 150
    body = created(api.purchase([line("PEN", 1, "1.00")], customer_id=customer_id))
    assert (body["tier"], body["tier_changed"], body["balance"]) == ("silver", False, 1)

    # even at the review: 151 points earned in the window keep silver, balance 1 or not
    set_review_in_the_past(app, customer_id)
    result = app.test_cli_runner().invoke(args=["tiers", "review"])
    assert result.exit_code == 0, result.output
    assert "1 customers reviewed, 0 changed tier" in result.output
    row = customer_row(app, customer_id)
    assert (row.tier, row.points) == ("silver", 1)
    assert row.tier_review_at > datetime.now(UTC)


def test_promotion_limited_to_a_store_applies_there_only(app, api, creds, manager):
    load_small(api, creds)
    customer_id = enrolled(api)
    lines = [line("PROMO-1", 1, "10.00", category="promo"), line("PEN", 1, "10.00")]

    here = created(api.purchase(lines, customer_id=customer_id))
    assert [ln["points"] for ln in here["lines"]] == [20, 10]
    # the same customer in the other store of the chain: no promotion there
    there = created(api.purchase(lines, headers=creds.h("till_uid"), customer_id=customer_id))
    assert [ln["points"] for ln in there["lines"]] == [10, 10]
    assert there["balance"] == 50
    with main_db(app) as s:
        stores = s.scalars(select(Purchase.store_id).order_by(Purchase.id)).all()
    assert len(set(stores)) == 2


# --------------------------------------------------------------------------- the tap record


def test_tap_record_shows_rewards_purchases_visits_and_expiring_points(app, api, creds):
    customer_id, card = api.customer_with_card()
    now = datetime.now(UTC)
    # 720 days ago + the default 24 months of expiry: those points expire in about 10 days
    days_ago = [720, 1, 5, 3, 8, 2]
    ids = {}
    for days in days_ago:
        till = "till_uid" if days == 2 else "till"
        body = created(api.purchase([line("BOOK", 1, "30.00", category="books")],
                                    headers=creds.h(till), customer_id=customer_id,
                                    paid_at=(now - timedelta(days=days)).isoformat()))
        ids[days] = body["purchase_id"]

    first = tap(api, card)                 # a counted visit: +5
    tap(api, card, till="till_uid")        # within 20 h of it: counts nothing
    record = tap(api, card)
    assert first["points"] == record["points"] == WELCOME + 6 * 30 + 5

    newest = [1, 2, 3, 5, 8]
    assert [p["purchase_id"] for p in record["recent_purchases"]] == [ids[d] for d in newest]
    assert [p["store"] for p in record["recent_purchases"]] == \
        ["TEST", "UIDOK", "TEST", "TEST", "TEST"]
    assert {(p["total"], p["currency"], p["points"]) for p in record["recent_purchases"]} == \
        {("30.00", "EUR", 30)}
    paid = [datetime.fromisoformat(p["paid_at"]) for p in record["recent_purchases"]]
    assert paid == sorted(paid, reverse=True)

    assert record["visits_by_store"] == [{"store": "TEST", "visits": 2},
                                         {"store": "UIDOK", "visits": 1}]
    # the welcome bonus of today expires in 24 months: not in the next 30 days
    assert record["points_expiring"]["points"] == 30
    assert record["points_expiring"]["by"] in {
        (moment + timedelta(days=30)).date().isoformat() for moment in (now, datetime.now(UTC))}
    # WELCOME + 185 points: the coffee (150) only; the voucher needs 500, GOLD-10 is for gold
    # members
    assert WELCOME + 185 < 500
    assert [r["code"] for r in record["rewards_available"]] == ["COFFEE"]
    assert record["tier"] == "member"
    progress = record["tier_progress"]
    assert progress["next_tier"] == "silver"
    assert progress["points_to_next_tier"] == 500 - progress["qualifying_points"] > 0
    assert record["points_owed"] == 0


def test_visit_points_once_per_gap(app, api, creds):
    customer_id, card = api.customer_with_card()
    assert tap(api, card)["points"] == WELCOME + 5
    assert tap(api, card)["points"] == WELCOME + 5
    assert tap(api, card, till="till_uid")["points"] == WELCOME + 5
    assert len(entries(app, customer_id, "visit")) == 1

    # 21 hours after the last counted visit (min_gap_hours = 20), a tap counts again
    with main_db(app) as s:
        s.execute(update(Customer).where(Customer.id == customer_id).values(
            last_counted_visit_at=datetime.now(UTC) - timedelta(hours=21)))
        s.commit()
    assert tap(api, card)["points"] == WELCOME + 10
    assert tap(api, card)["points"] == WELCOME + 10
    visits = entries(app, customer_id, "visit")
    assert [(e.delta, e.visit_id is not None) for e in visits] == [(5, True), (5, True)]


def test_a_visit_that_reaches_a_threshold_upgrades_the_tier_at_once(app, api, creds):
    customer_id, card = api.customer_with_card()
    body = created(api.purchase([line("BOOK", 1, "495.00", category="books")],
                                customer_id=customer_id))
    assert (body["tier"], body["points_earned"]) == ("member", 495)
    # the visit's 5 points make 500 qualifying points: silver, reviewed a year on
    record = tap(api, card)
    assert (record["tier"], record["points"]) == ("silver", WELCOME + 500)
    assert record["tier_progress"]["qualifying_points"] == 500
    row = customer_row(app, customer_id)
    assert (row.tier, row.points, row.points_debt) == ("silver", WELCOME + 500, 0)
    assert row.tier_review_at - datetime.now(UTC) > timedelta(days=330)
    assert row.last_counted_visit_at is not None


# --------------------------------------------------------------------------- the welcome bonus


def test_the_welcome_bonus_is_given_once_on_joining_and_counts_for_no_tier(app, api, creds,
                                                                           manager):
    assert WELCOME == 50  # the default programme's, shown on the kiosk's last screen
    event_id = str(uuid.uuid4())
    body = created(api.enrol(event_id=event_id))
    assert (body["welcome_points"], body["points"]) == (50, 50)
    customer_id = body["customer_id"]

    # one "welcome" entry in the ledger, as the desk sees it; it expires like earned points
    seen = api.client.get(f"/api/v1/customers/{customer_id}/points",
                          headers=creds.staff_auth("desk1"))
    assert seen.status_code == 200, seen.get_json()
    assert seen.get_json()["balance"] == 50
    assert [(e["kind"], e["delta"], e["reason"]) for e in seen.get_json()["entries"]] == \
        [("welcome", 50, "welcome bonus")]
    [welcome] = entries(app, customer_id)
    assert timedelta(days=700) < welcome.expires_at - welcome.at < timedelta(days=740)

    # a replayed enrolment (the kiosk never got the answer) gives nothing a second time
    before = loyalty_counts(app)
    again = replayed(api.enrol(event_id=event_id))
    assert (again["customer_id"], again["welcome_points"], again["points"]) == \
        (customer_id, 50, 50)
    assert loyalty_counts(app) == before
    assert len(entries(app, customer_id, "welcome")) == 1

    # the welcome points count for no tier: 460 earned + 50 given is past silver's 500 in the
    # balance, but the customer earned 460 only (and 5 for the tap's visit)
    body = created(api.purchase([line("TV-1", 1, "460.00")], customer_id=customer_id))
    assert (body["points_earned"], body["balance"], body["tier"], body["tier_changed"]) == \
        (460, 510, "member", False)
    issued = api.issue_card(customer_id)
    assert issued.status_code == 201, issued.get_json()
    record = tap(api, issued.get_json())
    assert (record["points"], record["tier"]) == (515, "member")
    assert record["tier_progress"] == {"qualifying_points": 465, "next_tier": "silver",
                                       "next_tier_name": "Argent", "points_to_next_tier": 35}
    # ... and the 35 points still missing, once earned, make silver
    body = created(api.purchase([line("PEN", 1, "35.00")], customer_id=customer_id))
    assert (body["balance"], body["tier"], body["tier_changed"]) == (550, "silver", True)

    # the default programme with welcome_points = 0: a new customer starts with nothing
    source = resources.files("server.loyalty").joinpath(DEFAULT_PROGRAMME_FILE).read_text(
        encoding="utf-8")
    assert source.count("welcome_points = 50 ") == 1
    loaded = api.put_programme(source.replace("welcome_points = 50 ", "welcome_points = 0 "),
                               creds.staff_auth("manager1"))
    assert loaded.status_code == 200, loaded.get_json()
    body = created(api.enrol())
    assert (body["welcome_points"], body["points"]) == (0, 0)
    assert entries(app, body["customer_id"]) == []
    assert customer_row(app, body["customer_id"]).points == 0
    # the customer who joined before keeps their one bonus
    assert len(entries(app, customer_id, "welcome")) == 1


# --------------------------------------------------------------------------- the programme


def test_get_programme_for_a_till(app, api, creds):
    got = api.client.get("/api/v1/programme", headers=creds.h("till"))
    assert got.status_code == 200
    body = got.get_json()
    assert body["version"] == 0
    programme = body["programme"]
    assert programme["currency"] == "EUR"
    assert [t["code"] for t in programme["tiers"]] == ["member", "silver", "gold"]
    assert [r["code"] for r in programme["rewards"]] == ["VOUCHER-5", "COFFEE", "GOLD-10"]
    assert programme["redemption"]["step_up_above"] == 1000
    assert_problem(api.client.get("/api/v1/programme"), 401, "unauthenticated")


def test_put_programme(app, api, creds, manager):
    invalid = SMALL.replace("threshold = 100\n", "threshold = 0\n").replace(
        'stores = ["TEST"]', "hours = [18, 10]")
    assert invalid.count("hours") == 1 and "threshold = 1000\n" in invalid
    before = loyalty_counts(app)
    body = assert_problem(api.put_programme(invalid, creds.staff_auth("manager1")), 422,
                          "invalid-programme")
    fields = {e["field"] for e in body["errors"]}
    assert {"tiers[1].threshold", "promotions[0].hours", "promotions[0].stores"} <= fields
    assert all(e["message"] for e in body["errors"])
    assert_problem(api.put_programme(SMALL, creds.staff_auth("cashier1")), 403,
                   "forbidden-role")
    assert_problem(api.put_programme(SMALL, creds.h("till")), 403, "forbidden-role")
    with main_db(app) as s:
        assert s.scalar(select(func.count()).select_from(ProgrammeVersion)) == 0
    assert loyalty_counts(app) == before

    loaded = api.put_programme(SMALL, creds.staff_auth("manager1"))
    assert loaded.status_code == 200, loaded.get_json()
    assert loaded.get_json() == {"version": 1}
    body = api.client.get("/api/v1/programme", headers=creds.h("till")).get_json()
    assert body["version"] == 1
    assert [t["code"] for t in body["programme"]["tiers"]] == ["member", "silver", "gold"]
    assert [r["code"] for r in body["programme"]["rewards"]] == ["R50"]
    with main_db(app) as s:
        version = s.scalar(select(ProgrammeVersion))
        assert (version.source, version.loaded_by) == (SMALL, f"staff:{staff_id(app, manager)}")
