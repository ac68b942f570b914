"""Concurrent requests through a real, threaded HTTP server: two (or sixteen) tills redeeming
the same points at the same instant, one purchase retried by several threads at once, one
purchase returned at several tills at once, one card tapped on several readers at once.

PostgreSQL is the production database and where the race must be proved; the same races run
on SQLite (a file database, the same real server) to show the rules hold there too.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.loyalty.models import PointsEntry, Purchase, Redemption, Refund
from tests.support.fixtures_server import Api
from tests.test_loyalty_api import WELCOME, ledger_invariant_problems

TIMEOUT = 30


@pytest.fixture(autouse=True)
def ledger_invariant(app):
    yield
    assert ledger_invariant_problems(app) == []


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _balance(app, customer_id: str) -> tuple[int, int]:
    """(balance, sum of the ledger) of a customer."""
    with _main(app) as s:
        points = s.scalar(select(Customer.points).where(Customer.id == customer_id))
        total = s.scalar(select(func.coalesce(func.sum(PointsEntry.delta), 0))
                         .where(PointsEntry.customer_id == customer_id))
    return points, total


def _race(url: str, requests_: list[tuple[str, dict, dict]], app=None,
          customer_id: str | None = None) -> tuple[list[requests.Response], list[int]]:
    """Post every ``(path, body, headers)`` from its own thread, all released at once.

    While they run, the balance of ``customer_id`` is read again and again; returns the
    responses (in the order given) and the balances seen.
    """
    barrier = threading.Barrier(len(requests_))
    responses: list[requests.Response | BaseException | None] = [None] * len(requests_)
    seen: list[int] = []
    done = threading.Event()

    def post(i: int, path: str, body: dict, headers: dict) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            responses[i] = requests.post(url + path, json=body, headers=headers,
                                         timeout=TIMEOUT)
        except BaseException as exc:  # reported below, in the test's thread
            responses[i] = exc

    def watch() -> None:
        while not done.is_set():
            seen.append(_balance(app, customer_id)[0])

    threads = [threading.Thread(target=post, args=(i, *r)) for i, r in enumerate(requests_)]
    watcher = threading.Thread(target=watch) if app is not None else None
    if watcher:
        watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT * 2)
    done.set()
    if watcher:
        watcher.join(timeout=TIMEOUT)
    for response in responses:
        if not isinstance(response, requests.Response):
            raise AssertionError(f"a request did not complete: {response!r}")
    return responses, seen


def _slug(response: requests.Response) -> str:
    return response.json()["type"].rsplit("/", 1)[-1]


def _customer_with_points(api: Api, creds, points: int) -> str:
    """A new customer whose balance is ``points``, their welcome bonus included."""
    enrolled = api.enrol()
    assert enrolled.status_code == 201, enrolled.get_json()
    customer_id = enrolled.get_json()["customer_id"]
    assert enrolled.get_json()["points"] == WELCOME < points
    adjusted = api.adjust(customer_id, points - WELCOME, creds.staff_auth("manager1"),
                          reason="points for the race")
    assert adjusted.status_code == 201, adjusted.get_json()
    return customer_id


@pytest.mark.parametrize("whole_and_half", [True, False], ids=["whole-or-half", "quarter"])
def test_concurrent_redemptions_never_overspend(app, api, creds, manager, server_url,
                                                whole_and_half):
    if whole_and_half:
        # 16 tills at once: 8 want the whole balance (2 x 500), 8 half of it (500)
        balance, requests_ = 1000, [("VOUCHER-5", 2 if i % 2 else 1) for i in range(16)]
    else:
        # 12 tills at once, each a quarter of the balance: exactly 4 can have it
        balance, requests_ = 600, [("COFFEE", 1)] * 12
    customer_id = _customer_with_points(api, creds, balance)
    bodies = [("/api/v1/redemptions", {"event_id": str(uuid.uuid4()), "reward": reward,
                                       "quantity": quantity, "customer_id": customer_id},
               creds.h("till" if i % 2 else "till_uid"))
              for i, (reward, quantity) in enumerate(requests_)]

    responses, seen = _race(server_url, bodies, app, customer_id)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [(r.status_code, r.text) for r in responses]
    assert {_slug(r) for r in responses if r.status_code == 409} <= {"insufficient-points"}
    spent = sum(r.json()["points"] for r in responses if r.status_code == 201)
    # as many succeed as the balance allows, and no more: nothing is left that one of the
    # refused requests could have had
    assert spent == balance
    if not whole_and_half:
        assert statuses == {201: 4, 409: 8}
    assert min(seen, default=0) >= 0
    assert _balance(app, customer_id) == (0, 0)  # the welcome bonus was spent too
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(Redemption)) == statuses[201]
        assert s.scalar(select(func.count()).select_from(PointsEntry)
                        .where(PointsEntry.kind == "redeem")) == statuses[201]


def test_one_purchase_posted_by_eight_threads_earns_once(app, api, creds, server_url):
    enrolled = api.enrol()
    customer_id = enrolled.get_json()["customer_id"]
    body = Api.purchase_body([Api.line("SHOE-1", 1, "80.00", category="shoes")],
                             customer_id=customer_id)

    responses, _ = _race(server_url, [("/api/v1/purchases", body, creds.h("till"))] * 8)

    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    fresh = [r for r in responses if r.headers.get("Idempotent-Replayed") != "true"]
    assert len(fresh) == 1
    assert {(r.json()["purchase_id"], r.json()["points_earned"]) for r in responses} == \
        {(fresh[0].json()["purchase_id"], 160)}
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(Purchase)) == 1
        assert s.execute(select(PointsEntry.kind, PointsEntry.delta)
                         .where(PointsEntry.customer_id == customer_id)
                         .order_by(PointsEntry.id)).all() == [("welcome", WELCOME), ("earn", 160)]
    assert _balance(app, customer_id) == (WELCOME + 160, WELCOME + 160)


def test_one_purchase_returned_at_eight_tills_at_once_reverses_once(app, api, creds,
                                                                     server_url):
    enrolled = api.enrol()
    customer_id = enrolled.get_json()["customer_id"]
    bought = api.purchase([Api.line("FOOD-1", 3, "9.90", category="food"),
                           Api.line("SHOE-1", 1, "50.00", category="shoes")],
                          customer_id=customer_id)
    assert bought.status_code == 201
    assert bought.get_json()["balance"] == WELCOME + 129
    purchase_id = bought.get_json()["purchase_id"]
    # the whole purchase returned at 8 tills at the same instant, each with its own id
    bodies = [("/api/v1/refunds", {"event_id": str(uuid.uuid4()), "purchase_id": purchase_id},
               creds.h("till")) for _ in range(8)]

    responses, seen = _race(server_url, bodies, app, customer_id)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 7}, [(r.status_code, r.text) for r in responses]
    assert {_slug(r) for r in responses if r.status_code == 409} == {"already-refunded"}
    assert min(seen, default=0) >= 0
    assert _balance(app, customer_id) == (WELCOME, WELCOME)  # the welcome bonus stays
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(Refund)) == 1
        debt = s.scalar(select(Customer.points_debt).where(Customer.id == customer_id))
    assert debt == 0


def test_a_card_tapped_on_eight_readers_at_once_counts_one_visit(app, api, creds, server_url):
    customer_id, card = api.customer_with_card()
    # the subject is counting: the clone signal's limit (6 taps a minute) would refuse the
    # last taps once the first ones are committed, which a tap does before building its record
    app.config["CARD_TAP_LIMIT"] = 0
    # a card bouncing on a reader, or held over two tills: 8 taps, each its own event id
    bodies = [("/api/v1/taps", {"event_id": str(uuid.uuid4()), "url": card["url"]},
               creds.h("till" if i % 2 else "till_uid")) for i in range(8)]

    responses, _ = _race(server_url, bodies)

    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    with _main(app) as s:
        visits = s.scalars(select(PointsEntry.delta).where(
            PointsEntry.customer_id == customer_id, PointsEntry.kind == "visit")).all()
    assert visits == [5]  # the default programme's visit points, once (min_gap_hours = 20)
    assert _balance(app, customer_id) == (WELCOME + 5, WELCOME + 5)


def test_a_return_racing_redemptions_is_never_refused(app, api, creds, server_url):
    # a return of the purchase that earned the points, and three redemptions of those points
    # at other tills, at the same instant; several rounds, as the order is up to chance
    for _ in range(6):
        customer_id = api.enrol().get_json()["customer_id"]
        bought = api.purchase([Api.line("TV-1", 1, "200.00")], customer_id=customer_id)
        assert bought.get_json()["balance"] == WELCOME + 200
        bodies = [("/api/v1/refunds", {"event_id": str(uuid.uuid4()),
                                       "purchase_id": bought.get_json()["purchase_id"]},
                   creds.h("till"))]
        bodies += [("/api/v1/redemptions", {"event_id": str(uuid.uuid4()), "reward": "COFFEE",
                                            "customer_id": customer_id},
                    creds.h("till_uid")) for _ in range(3)]

        responses, seen = _race(server_url, bodies, app, customer_id)

        refund, redemptions = responses[0], responses[1:]
        # the return always goes through: what was spent meanwhile is owed, not refused
        assert refund.status_code == 201, refund.text
        assert {r.status_code for r in redemptions} <= {201, 409}
        assert {_slug(r) for r in redemptions if r.status_code == 409} <= \
            {"insufficient-points"}
        spent = [r for r in redemptions if r.status_code == 201]
        assert len(spent) <= 1
        # a coffee (150) bought first leaves WELCOME + 50 (the welcome bonus is spent like
        # any points): the return takes those and owes the rest of its 200; a return first
        # leaves the welcome bonus, too few points for a coffee
        owed = 150 - WELCOME if spent else 0
        assert (refund.json()["points_reversed"], refund.json()["points_owed"]) == (200, owed)
        assert min(seen, default=0) >= 0
        balance = 0 if spent else WELCOME
        assert _balance(app, customer_id) == (balance, balance)
        with _main(app) as s:
            debt = s.scalar(select(Customer.points_debt).where(Customer.id == customer_id))
        assert debt == owed
