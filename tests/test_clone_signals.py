"""Clone signals: one card in two stores minutes apart; a card tapped faster than a person."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.cli import add_device
from server.loyalty.programme import default_programme
from server.taps.models import Visit
from tests.support.fixtures_server import assert_problem

# every new customer starts with the default programme's welcome bonus
WELCOME = default_programme().enrolment.welcome_points


def _flags(app, card_id: str) -> list[tuple[str, dict]]:
    from server.cards.service import card_flags

    with Session(app.extensions["loyalty.db"].main) as s:
        return [(r.kind, r.detail) for r in s.execute(
            select(card_flags.c.kind, card_flags.c.detail)
            .where(card_flags.c.card_id == card_id).order_by(card_flags.c.id))]


def _other_store_till(app) -> dict[str, str]:
    from server.stores.models import Store

    with Session(app.extensions["loyalty.db"].main) as s:
        s.add(Store(code="OTHER", name="Other shop"))
        s.commit()
        key = add_device(s, "OTHER", "till", "other till")
    return {"Authorization": f"Bearer {key}"}


def test_same_card_in_two_stores_minutes_apart_is_flagged_not_refused(app, api):
    _, card = api.customer_with_card()
    assert api.tap(url=card["url"]).status_code == 200
    other = _other_store_till(app)
    r = api.tap(url=card["url"], headers=other)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert "card-two-stores" in r.get_json()["flags"]
    [(kind, detail)] = _flags(app, card["card_id"])
    assert kind == "card-two-stores" and detail["minutes"] < 1
    # the flag stays on the customer's file: the next tap at home shows it too
    assert "card-two-stores" in api.tap(url=card["url"]).get_json()["flags"]


def test_two_stores_hours_apart_is_a_customer_who_travelled(app, api):
    _, card = api.customer_with_card()
    morning = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    assert api.tap(url=card["url"], tapped_at=morning).status_code == 200
    r = api.tap(url=card["url"], headers=_other_store_till(app))
    assert r.status_code == 200 and "card-two-stores" not in r.get_json()["flags"]
    assert _flags(app, card["card_id"]) == []


def test_a_card_tapped_faster_than_a_person_is_refused_and_flagged(app, api):
    app.config.update(CARD_TAP_LIMIT=3, CARD_TAP_WINDOW=60)
    _, card = api.customer_with_card()
    for _ in range(3):
        assert api.tap(url=card["url"]).status_code == 200
    event = str(uuid.uuid4())
    body = assert_problem(api.tap(url=card["url"], event_id=event), 429, "card-rate-limited")
    assert body["card_id"] == card["card_id"]
    assert [k for k, _ in _flags(app, card["card_id"])] == ["card-tap-rate"]
    # the refused tap wrote no visit, and its retry adds no second flag
    assert_problem(api.tap(url=card["url"], event_id=event), 429, "card-rate-limited")
    with Session(app.extensions["loyalty.db"].main) as s:
        assert len(s.scalars(select(Visit.id).where(Visit.card_id == card["card_id"])).all()) == 3
    assert len(_flags(app, card["card_id"])) == 1


def test_an_accepted_tap_retried_later_is_still_answered(app, api):
    app.config.update(CARD_TAP_LIMIT=2, CARD_TAP_WINDOW=60)
    _, card = api.customer_with_card()
    first = str(uuid.uuid4())
    assert api.tap(url=card["url"], event_id=first).status_code == 200
    assert api.tap(url=card["url"]).status_code == 200
    # the till never got the first answer and retries: it is a replay, not a third tap
    r = api.tap(url=card["url"], event_id=first)
    assert r.status_code == 200 and r.get_json()["replayed"] is True


def test_offline_taps_replayed_in_a_burst_are_judged_by_when_they_happened(app, api):
    """An agent queues a day of taps during an outage and sends them in one second."""
    app.config.update(CARD_TAP_LIMIT=3, CARD_TAP_WINDOW=60)
    _, card = api.customer_with_card()
    start = datetime.now(UTC) - timedelta(hours=5)
    for i in range(6):
        at = (start + timedelta(minutes=20 * i)).isoformat()
        r = api.tap(url=card["url"], tapped_at=at)
        assert r.status_code == 200, r.get_data(as_text=True)
    assert _flags(app, card["card_id"]) == []


def test_visit_points_of_an_offline_tap_count_when_it_happened(app, api):
    """Yesterday's queued tap and today's both earn visit points (default programme: 5
    points per visit, at least 20 h apart), though the server gets them a second apart."""
    _, card = api.customer_with_card()
    yesterday = (datetime.now(UTC) - timedelta(hours=26)).isoformat()
    assert api.tap(url=card["url"], tapped_at=yesterday).get_json()["points"] == WELCOME + 5
    assert api.tap(url=card["url"]).get_json()["points"] == WELCOME + 10
    # a tap "from the future" is taken as now, and now is too soon after the last one
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.tap(url=card["url"], tapped_at=tomorrow).get_json()["points"] == WELCOME + 10
