"""Tier points count from the day they were earned, also for purchases sent late."""

import uuid
from datetime import UTC, datetime, timedelta

from server.loyalty.programme import default_programme

SILVER = default_programme().tier("silver").threshold


def buy(api, customer_id, paid_at: datetime, amount: int):
    r = api.client.post("/api/v1/purchases", headers=api.creds.h("till"), json={
        "event_id": str(uuid.uuid4()), "customer_id": customer_id,
        "paid_at": paid_at.isoformat(), "currency": "EUR", "total": f"{amount}.00",
        "lines": [{"sku": "BIKE", "name": "Bike", "category": "bikes", "quantity": 1,
                   "unit_price": f"{amount}.00"}]})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_old_purchase_earns_points_but_not_tier(app, api):
    customer_id, card = api.customer_with_card()
    old = buy(api, customer_id, datetime.now(UTC) - timedelta(days=400), SILVER + 100)
    assert old["points_earned"] == SILVER + 100  # the points are the customer's
    assert old["tier"] == "member" and old["tier_changed"] is False  # but outside the window
    record = api.tap(url=card["url"]).get_json()
    assert record["tier_progress"]["qualifying_points"] < SILVER

    recent = buy(api, customer_id, datetime.now(UTC) - timedelta(days=2), SILVER + 100)
    assert recent["tier"] == "silver" and recent["tier_changed"] is True
