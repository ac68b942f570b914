"""The customer's PIN as the step-up of a large redemption."""

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.loyalty.programme import default_programme
from tests.support.fixtures_server import assert_problem

STEP_UP = default_programme().redemption.step_up_above
VOUCHER = default_programme().reward("VOUCHER-5")
QUANTITY = STEP_UP // VOUCHER.cost + 1  # just above the threshold


def rich_customer(api, pin="4821") -> str:
    customer_id = api.enrol(pin=pin).get_json()["customer_id"]
    amount = f"{VOUCHER.cost * QUANTITY * 2}.00"
    r = api.client.post("/api/v1/purchases", headers=api.creds.h("till"), json={
        "event_id": str(uuid.uuid4()), "customer_id": customer_id,
        "paid_at": "2026-11-20T10:00:00+01:00", "currency": "EUR", "total": amount,
        "lines": [{"sku": "TV-1", "name": "TV", "category": "tv", "quantity": 1,
                   "unit_price": amount}]})
    assert r.status_code == 201, r.get_json()
    return customer_id


def redeem(api, customer_id, **extra):
    return api.client.post("/api/v1/redemptions", headers=api.creds.h("till"), json={
        "event_id": str(uuid.uuid4()), "customer_id": customer_id, "reward": "VOUCHER-5",
        "quantity": QUANTITY, **extra})


def failures(app, customer_id) -> int:
    with Session(app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(Customer.pin_failures).where(Customer.id == customer_id))


def test_pin_is_stored_hashed_and_confirms_a_large_redemption(app, api):
    customer_id = rich_customer(api)
    with Session(app.extensions["loyalty.db"].main) as s:
        stored = s.scalar(select(Customer.pin_hash).where(Customer.id == customer_id))
    assert stored.startswith("$argon2") and "4821" not in stored
    assert_problem(redeem(api, customer_id), 403, "step-up-required")
    ok = redeem(api, customer_id, pin="4821")
    assert ok.status_code == 201, ok.get_json()
    assert ok.get_json()["points"] == VOUCHER.cost * QUANTITY


def test_five_wrong_pins_lock_until_staff_confirm(app, api, creds):
    customer_id = rich_customer(api)
    for left in (4, 3, 2, 1):
        r = redeem(api, customer_id, pin="0000")
        assert_problem(r, 403, "pin-invalid")
        assert f"{left} attempt" in r.get_json()["detail"]
    assert_problem(redeem(api, customer_id, pin="0000"), 403, "pin-invalid")
    assert failures(app, customer_id) == 5  # counted although each answer rolled back
    assert_problem(redeem(api, customer_id, pin="4821"), 403, "pin-locked")
    staff = api.client.post("/api/v1/redemptions", headers=creds.h("till", staff="desk1"), json={
        "event_id": str(uuid.uuid4()), "customer_id": customer_id, "reward": "VOUCHER-5",
        "quantity": QUANTITY})
    assert staff.status_code == 201, staff.get_json()


def test_right_pin_resets_the_count(app, api):
    customer_id = rich_customer(api)
    assert_problem(redeem(api, customer_id, pin="1111"), 403, "pin-invalid")
    assert failures(app, customer_id) == 1
    assert redeem(api, customer_id, pin="4821").status_code == 201
    assert failures(app, customer_id) == 0


def test_customer_without_pin_needs_staff(app, api):
    customer_id = rich_customer(api, pin=None)
    assert_problem(redeem(api, customer_id, pin="4821"), 403, "step-up-required")
