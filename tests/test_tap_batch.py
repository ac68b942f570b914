"""POST /api/v1/taps/batch on SQLite and PostgreSQL: a till agent's offline queue, in order.

Each tap of a batch is what POST /taps would record (the same problems, the same idempotence
on its event id), each on its own (a refused tap undoes nothing else), without the customer
record, in one commit; a batch over the limit is refused whole; each tap counts against the
till's tap rate limit.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.cards.service import card_flags
from server.taps.batch import _driver
from server.taps.models import Visit
from server.taps.schemas import BATCH_MAX
from tests.support.fixtures_server import assert_problem
from tests.test_clone_signals import _other_store_till

BATCH = "/api/v1/taps/batch"
PROBLEM = "/api/v1/problems/"


def _tap(url: str, event_id: str | None = None, **kw) -> dict:
    return {"event_id": event_id or str(uuid.uuid4()), "url": url, "reader": "sim:",
            "tapped_at": datetime.now(UTC).isoformat(), **kw}


def _post(api, taps: list[dict], headers: dict | None = None):
    return api.client.post(BATCH, json={"taps": taps},
                           headers=api.creds.h("till") if headers is None else headers)


def _visits(app) -> dict[str, tuple[int, str, int]]:
    """event id -> (visit id, card id, device id)."""
    with Session(app.extensions["loyalty.db"].main) as s:
        return {r.event_id: (r.id, r.card_id, r.device_id) for r in s.execute(
            select(Visit.id, Visit.event_id, Visit.card_id, Visit.device_id))}


def _points(app, customer_id: str) -> int:
    from server.customers.models import Customer

    with Session(app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(Customer.points).where(Customer.id == customer_id))


def test_a_mixed_batch_answers_each_tap_as_taps_would(app, api, creds):
    customer_id, card = api.customer_with_card()
    _, other = api.customer_with_card()
    _, lost = api.customer_with_card()
    old_customer, old = api.customer_with_card()
    # a tap recorded online before the outage (its answer was lost: it is in the queue too)
    earlier = str(uuid.uuid4())
    assert api.tap(event_id=earlier, url=card["url"]).status_code == 200
    # a card blocked as lost; another replaced
    blocked = api.client.post(f"/api/v1/cards/{lost['card_id']}/block",
                              json={"reason": "lost"}, headers=creds.staff_auth("desk1"))
    assert blocked.status_code == 200, blocked.get_json()
    new = api.issue_card(old_customer, replace=True, reason="damaged",
                         headers=creds.h("kiosk", staff="desk1"))
    assert new.status_code == 201, new.get_json()
    # an event id another till used for its own tap
    taken = str(uuid.uuid4())
    assert api.tap(event_id=taken, url=other["url"], headers=creds.h("till_uid")).status_code \
        == 200
    forged = card["url"][:-1] + ("A" if card["url"][-1] != "A" else "B")
    before = _points(app, customer_id)

    taps = [_tap(card["url"]), _tap(card["url"], earlier), _tap(forged), _tap(lost["url"]),
            _tap(other["url"]), _tap(old["url"]), _tap(other["url"], taken),
            _tap(new.get_json()["url"]), _tap("https://shop.example/c/nonsense")]
    r = _post(api, taps)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    got = [(o["event_id"], o["status"], (o["problem"] or {}).get("type")) for o in
           body["results"]]
    assert got == [
        (taps[0]["event_id"], "recorded", None),
        (earlier, "replayed", None),
        (taps[2]["event_id"], "problem", PROBLEM + "card-token-forged"),
        (taps[3]["event_id"], "problem", PROBLEM + "card-revoked"),
        (taps[4]["event_id"], "recorded", None),
        (taps[5]["event_id"], "problem", PROBLEM + "card-revoked"),
        (taps[6]["event_id"], "problem", PROBLEM + "event-id-conflict"),
        (taps[7]["event_id"], "recorded", None),
        (taps[8]["event_id"], "problem", PROBLEM + "card-token-malformed"),
    ]
    assert (body["recorded"], body["replayed"], body["problems"]) == (3, 1, 5)
    # each problem is the document POST /taps answers, with its extra fields
    for outcome, tap in zip(body["results"], taps, strict=True):
        if outcome["status"] == "problem":
            single = api.client.post("/api/v1/taps", json=tap, headers=creds.h("till"))
            assert outcome["problem"] == single.get_json(), tap
    assert body["results"][3]["problem"]["reason"] == "lost"
    assert body["results"][5]["problem"]["reason"] == "damaged"
    # no record built: no personal data, no loyalty view
    assert all(set(o) == {"event_id", "status", "visit_id", "card_id", "flags", "problem"}
               for o in body["results"])
    visits = _visits(app)
    for outcome in body["results"]:
        if outcome["status"] == "problem":
            assert outcome["visit_id"] is None
            if outcome["event_id"] != taken:
                assert outcome["event_id"] not in visits
        else:
            assert visits[outcome["event_id"]][0] == outcome["visit_id"]
            assert visits[outcome["event_id"]][2] == creds.device_ids["till"]
    assert body["results"][0]["card_id"] == card["card_id"]
    assert visits[taken][2] == creds.device_ids["till_uid"]  # still the other till's
    assert len(visits) == 2 + 3  # the two online taps and the three recorded now
    # the taps counted as POST /taps counts them (visit points, at most once a day)
    assert _points(app, customer_id) == before


def test_sun_cards_in_a_batch(app, api, creds):
    """A copied SUN URL is refused and flagged (the service rolls its own work back: only
    that tap's savepoint), and the taps around it stay."""
    from server.cards.sun_keys import load_sun_keyring
    from tests.test_card_sun import UID, _read_url, _tag

    ring = load_sun_keyring(app.config["SUN_KEYS_FILE"])
    sun_keys = ring.sets[ring.current]
    _, card = api.customer_with_card("nfc", uid=UID, sun=True)
    tag = _tag(sun_keys, bytes.fromhex(UID))
    _, qr = api.customer_with_card()
    first, second = _read_url(tag), _read_url(tag)
    taps = [_tap(first), _tap(qr["url"]), _tap(first), _tap(second)]
    r = _post(api, taps)
    assert r.status_code == 200, r.get_json()
    results = r.get_json()["results"]
    assert [o["status"] for o in results] == ["recorded", "recorded", "problem", "recorded"]
    assert results[2]["problem"]["type"] == PROBLEM + "card-replayed"
    assert results[3]["flags"] == []  # a tap's own signals; the file's flags are the record's
    with Session(app.extensions["loyalty.db"].main) as s:
        assert s.scalars(select(card_flags.c.kind)).all() == ["card-replayed"]
    assert set(_visits(app)) == {taps[0]["event_id"], taps[1]["event_id"], taps[3]["event_id"]}
    # the whole batch again: the same answers, nothing more written
    again = _post(api, taps).get_json()["results"]
    assert [o["status"] for o in again] == ["replayed", "replayed", "problem", "replayed"]
    assert len(_visits(app)) == 3


def test_the_same_batch_sent_twice_writes_once(app, api):
    customer_id, card = api.customer_with_card()
    _, other = api.customer_with_card()
    taps = [_tap(card["url"]), _tap(other["url"]), _tap(card["url"] + "x")]
    first = _post(api, taps)
    assert first.status_code == 200, first.get_json()
    visits, points = _visits(app), _points(app, customer_id)
    again = _post(api, taps)
    assert again.status_code == 200, again.get_json()
    one, two = first.get_json()["results"], again.get_json()["results"]
    assert [o["status"] for o in one] == ["recorded", "recorded", "problem"]
    assert [o["status"] for o in two] == ["replayed", "replayed", "problem"]
    assert [o["visit_id"] for o in one] == [o["visit_id"] for o in two]
    assert one[2]["problem"] == two[2]["problem"]
    assert _visits(app) == visits and _points(app, customer_id) == points
    # and POST /taps agrees: the first attempt's visit, replayed
    single = api.tap(event_id=taps[0]["event_id"], url=card["url"])
    assert single.status_code == 200
    assert single.get_json()["replayed"] is True
    assert single.get_json()["visit_id"] == one[0]["visit_id"]


def test_an_event_id_twice_in_one_batch_is_recorded_once(app, api):
    _, card = api.customer_with_card()
    tap = _tap(card["url"])
    r = _post(api, [tap, tap])
    assert r.status_code == 200, r.get_json()
    a, b = r.get_json()["results"]
    assert (a["status"], b["status"]) == ("recorded", "replayed")
    assert a["visit_id"] == b["visit_id"]
    assert len(_visits(app)) == 1


def test_clone_signals_in_a_batch_are_flagged_and_kept(app, api):
    """A card seen in two stores is flagged; a card tapped faster than a person is refused
    and flagged; the flags stay although the batch goes on, and a replay adds none."""
    app.config.update(CARD_TAP_LIMIT=2, CARD_TAP_WINDOW=60)
    _, card = api.customer_with_card()
    assert api.tap(url=card["url"], headers=_other_store_till(app)).status_code == 200
    _, other = api.customer_with_card()
    now = datetime.now(UTC)
    taps = [_tap(card["url"], tapped_at=(now - timedelta(seconds=3 - i)).isoformat())
            for i in range(3)] + [_tap(other["url"])]
    r = _post(api, taps)
    assert r.status_code == 200, r.get_json()
    results = r.get_json()["results"]
    assert [o["status"] for o in results] == ["recorded", "problem", "problem", "recorded"]
    assert "card-two-stores" in results[0]["flags"]
    assert results[1]["problem"]["type"] == PROBLEM + "card-rate-limited"
    assert results[1]["card_id"] == card["card_id"]
    with Session(app.extensions["loyalty.db"].main) as s:
        kinds = s.scalars(select(card_flags.c.kind).where(card_flags.c.card_id ==
                                                          card["card_id"])).all()
    assert sorted(kinds) == ["card-tap-rate", "card-tap-rate", "card-two-stores"]
    again = _post(api, taps)
    assert [o["status"] for o in again.get_json()["results"]] == \
        ["replayed", "problem", "problem", "replayed"]
    with Session(app.extensions["loyalty.db"].main) as s:
        assert s.scalar(select(func.count()).select_from(card_flags)) == 3


def test_a_batch_over_the_limit_is_refused_whole(app, api):
    _, card = api.customer_with_card()
    taps = [_tap(card["url"]) for _ in range(BATCH_MAX + 1)]
    body = assert_problem(_post(api, taps), 413, "batch-too-large")
    assert body["max"] == BATCH_MAX and str(BATCH_MAX) in body["detail"]
    assert _visits(app) == {}
    # a tap that does not validate refuses the batch, as it would refuse POST /taps
    bad = assert_problem(_post(api, [_tap(card["url"]), {"event_id": str(uuid.uuid4())}]),
                         422, "validation-error")
    assert bad["errors"][0]["field"].startswith("taps.1")
    assert_problem(_post(api, []), 422, "validation-error")
    assert _visits(app) == {}


def test_only_a_till_sends_a_batch(app, api, creds):
    _, card = api.customer_with_card()
    assert_problem(_post(api, [_tap(card["url"])], headers=creds.h("kiosk")), 403,
                   "forbidden-role")
    assert_problem(_post(api, [_tap(card["url"])], headers={}), 401, "unauthenticated")
    assert _visits(app) == {}


def test_each_tap_of_a_batch_counts_against_the_tap_rate_limit(app, api):
    from server import ratelimit

    app.config["RATELIMIT_TAPS"] = "5/minute"
    app.config["RATELIMIT_URL"] = "memory://"
    ratelimit.init_app(app)
    urls = [api.customer_with_card()[1]["url"] for _ in range(6)]
    # a batch larger than the whole limit could never pass: too large, and by how much
    body = assert_problem(_post(api, [_tap(u) for u in urls]), 413, "batch-too-large")
    assert body["max"] == 5
    first = _post(api, [_tap(u) for u in urls[:3]])
    assert first.status_code == 200
    # 3 of 5 spent: a batch of 3 does not fit (and spends nothing), one of 2 still does
    limited = assert_problem(_post(api, [_tap(u) for u in urls[3:]]), 429, "rate-limited")
    assert limited["retry_after"] >= 1
    assert len(_visits(app)) == 3
    assert _post(api, [_tap(u) for u in urls[3:5]]).status_code == 200
    assert_problem(api.tap(url=urls[5]), 429, "rate-limited")
    assert len(_visits(app)) == 5


def test_the_batch_savepoints_raise_sqlalchemys_errors(app):
    """The batch's own savepoint statements go to the driver's cursor; a failure there (a
    database gone mid-batch) must reach the app as SQLAlchemy's error, which it answers 503,
    not as the driver's, which would be an internal error."""
    with app.extensions["loyalty.db"].main.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        with pytest.raises(DBAPIError) as caught:
            _driver(conn, cursor, "RELEASE SAVEPOINT no_such_savepoint")
        assert "no_such_savepoint" in str(caught.value.orig)
