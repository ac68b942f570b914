"""Property-based test of the points ledger (hypothesis, SQLite): random sequences of
purchases, retried purchases, partial and whole returns, redemptions (some refused), manual
adjustments and expiry runs at advancing times, each through the API or the job itself.

After every step, for the example's customer:

- balance == sum(ledger) == earned - redeemed - expired + adjustments + restored - taken back,
  each term read from the ledger grouped by kind and compared with a model kept by the test;
- the balance and the points owed are never negative;
- a retried request (same event id) changes nothing; an expiry run twice expires nothing more.

One app for the whole test; each example works on a customer of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.loyalty.jobs import expire_points
from server.loyalty.models import PointsEntry
from server.loyalty.programme import expiry_date, load_programme
from server.staff.models import Staff
from tests.support.fixtures_server import Api

PROGRAMME = """
currency = "EUR"
timezone = "Europe/Paris"

[earning]
points_per_unit = 1

[[multipliers]]
name = "Shoes count double"
categories = ["shoes"]
factor = 2

[[exclusions]]
name = "Gift cards"
categories = ["gift-cards"]

[[tiers]]
code = "member"
threshold = 0
[[tiers]]
code = "silver"
threshold = 300
multiplier = 1.5

[tier_rules]
window_months = 12
review_months = 12

[[rewards]]
code = "SMALL"
name = "1 EUR off"
kind = "amount"
value = 1
cost = 20
[[rewards]]
code = "BIG"
name = "Free bag"
kind = "product"
sku = "BAG"
cost = 120

[redemption]
step_up_above = 1000000

[expiry]
months = 1
"""
COSTS = {"SMALL": 20, "BIG": 120}
MANAGER, PASSWORD = "fastmanager", "fast-manager-pw"
NOW = datetime.now(UTC)

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"])


@dataclass
class Line:
    line_no: int
    quantity_milli: int
    points: int
    redemption_id: int | None
    refunded_milli: int = 0
    reversed: int = 0


@dataclass
class Bought:
    purchase_id: int
    body: dict
    answer: dict
    lines: dict[int, Line]
    lot: list | None = None  # [expires_at, points left of what this purchase earned]


@dataclass
class Model:
    """What the ledger of the example's customer must add up to."""

    balance: int = 0
    debt: int = 0
    earned: int = 0
    redeemed: int = 0
    expired: int = 0
    adjusted: int = 0
    restored: int = 0
    taken_back: int = 0           # ledger "refund" entries: at the return, or from a debt
    debits: int = 0  # points spent, expired or adjusted away: they consume the oldest lots
    # lots of credited points: [expires_at, points], less what returns took back of that lot
    credits: list[list] = field(default_factory=list)
    rewards: dict[int, int] = field(default_factory=dict)      # unused, active: id -> points
    restorable: dict[int, int] = field(default_factory=dict)   # used on a line: id -> points


class LedgerMachine(RuleBasedStateMachine):
    app = None
    api: Api = None
    programme = load_programme(PROGRAMME)

    # ----------------------------------------------------------------- set-up and checks

    @initialize()
    def new_customer(self):
        response = self.api.enrol()
        assert response.status_code == 201, response.get_json()
        self.customer_id = response.get_json()["customer_id"]
        self.model = Model()
        self.purchases: list[Bought] = []
        # (url, body, first answer, headers) of every request that was recorded
        self.replays: list[tuple[str, dict, dict, dict | None]] = []
        self.clock = NOW - timedelta(days=60)

    def db(self) -> Session:
        return Session(self.app.extensions["loyalty.db"].main)

    def ledger(self) -> tuple[int, int, int, dict[str, int]]:
        """(balance, debt, number of entries, ledger sum by kind) of the customer."""
        with self.db() as s:
            points, debt = s.execute(select(Customer.points, Customer.points_debt)
                                     .where(Customer.id == self.customer_id)).one()
            kinds = dict(s.execute(select(PointsEntry.kind, func.sum(PointsEntry.delta))
                                   .where(PointsEntry.customer_id == self.customer_id)
                                   .group_by(PointsEntry.kind)).all())
            count = s.scalar(select(func.count()).select_from(PointsEntry)
                             .where(PointsEntry.customer_id == self.customer_id))
        return points, debt, count, kinds

    @invariant()
    def ledger_adds_up(self):
        if not hasattr(self, "model"):
            return
        m = self.model
        points, debt, _, kinds = self.ledger()
        assert points >= 0 and debt >= 0
        assert points == sum(kinds.values()) == m.balance
        assert debt == m.debt
        assert kinds == {kind: value for kind, value in {
            "earn": m.earned, "redeem": -m.redeemed, "expire": -m.expired,
            "adjust": m.adjusted, "restore": m.restored, "refund": -m.taken_back,
        }.items() if value or kind in kinds}
        assert m.balance == (m.earned - m.redeemed - m.expired + m.adjusted + m.restored
                             - m.taken_back)

    # ----------------------------------------------------------------- operations

    def _post(self, url: str, body: dict, headers: dict | None = None):
        return self.api.client.post(url, json=body,
                                    headers=headers or self.api.creds.h("till"))

    def _remember(self, url: str, body: dict, answer: dict, headers: dict | None = None):
        self.replays.append((url, body, answer, headers))

    @rule(data=st.data(),
          count=st.integers(1, 3),
          days_ago=st.integers(0, 90),
          with_reward=st.booleans())
    def purchase(self, data, count, days_ago, with_reward):
        lines = []
        for _ in range(count):
            category = data.draw(st.sampled_from(["books", "shoes", "gift-cards"]))
            quantity = data.draw(st.integers(1, 4))
            price = data.draw(st.sampled_from(["0.99", "4.50", "9.90", "19.99", "45.00"]))
            discount = data.draw(st.sampled_from([None, None, None, "0.50"]))
            lines.append(Api.line(f"SKU-{category}", quantity, price, category=category,
                                  discount=discount))
        reward_id = None
        if with_reward and self.model.rewards:
            reward_id = data.draw(st.sampled_from(sorted(self.model.rewards)))
            lines.append(Api.line("BAG", 1, "3.00", discount="3.00", redemption_id=reward_id))
        paid_at = NOW - timedelta(days=days_ago)
        body = Api.purchase_body(lines, customer_id=self.customer_id,
                                 paid_at=paid_at.isoformat())
        response = self._post("/api/v1/purchases", body)
        assert response.status_code == 201, response.get_json()
        assert "Idempotent-Replayed" not in response.headers
        answer = response.get_json()
        points = answer["points_earned"]
        assert points == sum(ln["points"] for ln in answer["lines"]) >= 0
        for ln, sent in zip(answer["lines"], lines, strict=True):
            if sent.get("category") == "gift-cards" or "discount" in sent:
                assert ln["points"] == 0

        m = self.model
        if reward_id is not None:
            m.restorable[reward_id] = m.rewards.pop(reward_id)
        lot = None
        if points:
            settle = min(m.debt, points)
            m.earned += points
            m.debt -= settle
            m.taken_back += settle
            m.balance += points - settle
            # settling an old debt takes from this new lot, not from the oldest points
            lot = [expiry_date(self.programme, paid_at), points - settle]
            m.credits.append(lot)
        assert answer["balance"] == m.balance
        self.purchases.append(Bought(answer["purchase_id"], body, answer, {
            ln["line_no"]: Line(ln["line_no"], int(sent["quantity"]) * 1000, ln["points"],
                                sent.get("redemption_id"))
            for ln, sent in zip(answer["lines"], lines, strict=True)}, lot))
        self._remember("/api/v1/purchases", body, answer)

    @precondition(lambda self: getattr(self, "purchases", None))
    @rule(data=st.data(), whole=st.booleans())
    def refund(self, data, whole):
        bought = data.draw(st.sampled_from(self.purchases[-3:]))  # mostly the recent ones
        m = self.model
        if whole:
            wanted = {no: ln.quantity_milli - ln.refunded_milli for no, ln in bought.lines.items()
                      if ln.quantity_milli > ln.refunded_milli}
            body = {"event_id": str(uuid.uuid4()), "purchase_id": bought.purchase_id}
        else:
            chosen = data.draw(st.lists(st.sampled_from(sorted(bought.lines)), min_size=1,
                                        max_size=2, unique=True))
            wanted = {no: 1000 * data.draw(st.integers(1, 2)) for no in chosen}
            body = {"event_id": str(uuid.uuid4()), "purchase_id": bought.purchase_id,
                    "lines": [{"line_no": no, "quantity": str(q // 1000)}
                              for no, q in wanted.items()]}
        before = self.ledger()
        response = self._post("/api/v1/refunds", body)
        too_much = not wanted or any(
            bought.lines[no].refunded_milli + q > bought.lines[no].quantity_milli
            for no, q in wanted.items())
        if too_much:
            assert response.status_code == 409, response.get_json()
            assert response.get_json()["type"].endswith("/already-refunded")
            assert self.ledger() == before
            return
        assert response.status_code == 201, response.get_json()
        answer = response.get_json()

        reversed_total, restored = 0, 0
        for no, qty in wanted.items():
            ln = bought.lines[no]
            done = ln.refunded_milli + qty
            # floor of the share returned so far: the parts add up to what the line earned
            share = ln.points * done // ln.quantity_milli - ln.reversed
            ln.refunded_milli, ln.reversed = done, ln.reversed + share
            assert ln.reversed <= ln.points
            if done == ln.quantity_milli:
                assert ln.reversed == ln.points
                if ln.redemption_id in m.restorable:
                    restored += m.restorable.pop(ln.redemption_id)
            reversed_total += share
        m.restored += restored
        m.balance += restored
        taken = min(reversed_total, m.balance)
        owed = reversed_total - taken
        m.balance -= taken
        m.taken_back += taken
        if bought.lot is not None:  # a return reduces the lot its purchase earned
            bought.lot[1] -= taken
        m.debt += owed
        assert (answer["points_reversed"], answer["points_restored"], answer["points_owed"],
                answer["balance"]) == (reversed_total, restored, owed, m.balance)
        self._remember("/api/v1/refunds", body, answer)

    @rule(reward=st.sampled_from(sorted(COSTS)), quantity=st.integers(1, 2))
    def redeem(self, reward, quantity):
        m = self.model
        cost = COSTS[reward] * quantity
        body = {"event_id": str(uuid.uuid4()), "customer_id": self.customer_id,
                "reward": reward, "quantity": quantity}
        before = self.ledger()
        response = self._post("/api/v1/redemptions", body)
        if cost > m.balance:
            assert response.status_code == 409, response.get_json()
            assert response.get_json()["type"].endswith("/insufficient-points")
            assert self.ledger() == before
            return
        assert response.status_code == 201, response.get_json()
        answer = response.get_json()
        m.balance -= cost
        m.redeemed += cost
        m.debits += cost
        m.rewards[answer["redemption_id"]] = cost
        assert (answer["points"], answer["balance"]) == (cost, m.balance)
        self._remember("/api/v1/redemptions", body, answer)

    @rule(points=st.integers(-150, 150).filter(bool))
    def adjust(self, points):
        m = self.model
        body = {"event_id": str(uuid.uuid4()), "points": points, "reason": "random correction"}
        url = f"/api/v1/customers/{self.customer_id}/points"
        headers = self.api.creds.staff_auth(MANAGER, PASSWORD)
        before = self.ledger()
        response = self._post(url, body, headers)
        if m.balance + points < 0:
            assert response.status_code == 409, response.get_json()
            assert self.ledger() == before
            return
        assert response.status_code == 201, response.get_json()
        answer = response.get_json()
        m.balance += points
        m.adjusted += points
        if points > 0:
            with self.db() as s:
                expires = s.scalar(select(PointsEntry.expires_at)
                                   .where(PointsEntry.id == answer["entry_id"]))
            m.credits.append([expires, points])
        else:
            m.debits -= points
        assert answer["balance"] == m.balance
        self._remember(url, body, answer, headers)

    @precondition(lambda self: getattr(self, "replays", None))
    @rule(data=st.data())
    def retry(self, data):
        url, body, first, headers = data.draw(st.sampled_from(self.replays))
        before = self.ledger()
        response = self._post(url, body, headers)
        assert response.status_code == 201, response.get_json()
        assert response.headers.get("Idempotent-Replayed") == "true"
        again = response.get_json()
        # the same recorded result; only the balance is the one of now
        moving = ("balance", "tier", "tier_name", "tier_changed", "status")
        assert {k: v for k, v in again.items() if k not in moving} == \
            {k: v for k, v in first.items() if k not in moving}
        assert again["balance"] == self.model.balance
        assert self.ledger() == before

    @rule(days=st.integers(0, 45))
    def expire(self, days):
        m = self.model
        self.clock += timedelta(days=days)
        due = sum(points for expires, points in m.credits if expires <= self.clock)
        expected = max(0, due - m.debits)
        with self.app.app_context(), self.db() as s:
            expire_points(s, now=self.clock)
        m.expired += expected
        m.debits += expected
        m.balance -= expected
        after = self.ledger()
        # run twice: nothing more
        with self.app.app_context(), self.db() as s:
            expire_points(s, now=self.clock)
        assert self.ledger() == after


def test_ledger_invariants_under_random_operations(app, creds):
    # a manager whose password hash is cheap to verify (argon2 parameters live in the hash)
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with Session(app.extensions["loyalty.db"].main) as s:
        s.add(Staff(username=MANAGER, role="manager", password_hash=cheap))
        s.commit()
    api = Api(app.test_client(), creds)
    loaded = api.put_programme(PROGRAMME, creds.staff_auth(MANAGER, PASSWORD))
    assert loaded.status_code == 200, loaded.get_json()

    LedgerMachine.app, LedgerMachine.api = app, api
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
