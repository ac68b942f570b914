"""Request rate limits (``server/ratelimit.py``): taps per till, enrolments per kiosk, sign-ins.

Counted in a storage every worker and node shares: the SQL default (a SQLite file of its own),
PostgreSQL, and a real Redis (Debian's ``redis-server``, started on a free port). Two gunicorn
workers count together, and two app instances (two nodes) on one Redis too. A 429 is a problem
document with the stable type ``rate-limited`` and ``Retry-After``; a till's agent keeps such an
event and sends it again later instead of setting it aside as refused.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from server import ratelimit
from tests.support.fixtures_server import PgDatabases, app_config, assert_problem, seed
from tests.test_backoffice import BO, Office

TYPE = "/api/v1/problems/rate-limited"


def limit(app, url: str | None = None, **limits: str):
    """Set limits (``TAPS="3/minute"``) and maybe the storage, as if configured at start."""
    app.config.update({f"RATELIMIT_{k}": v for k, v in limits.items()})
    if url:
        app.config["RATELIMIT_URL"] = url
    ratelimit.init_app(app)


def tap(client, headers) -> int:
    """A tap with an unknown card: past the limiter it is a 404, which is enough here."""
    return client.post("/api/v1/taps", headers=headers,
                       json={"event_id": str(uuid.uuid4()), "qr": "NOT-A-CARD"}).status_code


def test_taps_are_limited_per_till_with_a_problem_and_retry_after(app, creds):
    limit(app, TAPS="3/minute")
    client = app.test_client()

    assert [tap(client, creds.h("till")) for _ in range(3)] == [422] * 3
    r = client.post("/api/v1/taps", headers=creds.h("till"), json={"qr": "x"})
    body = assert_problem(r, 429, "rate-limited")
    assert body["type"] == TYPE and 1 <= body["retry_after"] <= 60
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # another till has its own count
    assert tap(client, creds.h("till_uid")) != 429


def test_the_limiter_runs_before_the_body_is_read_and_after_the_key(app, creds):
    limit(app, TAPS="1/minute")
    client = app.test_client()

    # an unknown key is refused before counting: it cannot use up a till's budget
    for _ in range(3):
        assert tap(client, {"Authorization": "Bearer nope"}) == 401
    assert tap(client, creds.h("till")) != 429
    assert tap(client, creds.h("till")) == 429


def test_enrolments_are_limited_per_kiosk(app, creds, api):
    limit(app, ENROLMENTS="2/minute")

    assert [api.enrol().status_code for _ in range(2)] == [201, 201]
    assert_problem(api.enrol(), 429, "rate-limited")
    assert api.enrol(headers=creds.h("kiosk2")).status_code == 201


def test_kiosk_staff_sign_ins_are_limited_per_kiosk(app, creds):
    limit(app, LOGINS="2/minute")
    client = app.test_client()

    def attempt(headers):
        return client.post("/api/v1/staff/kiosk-sessions", headers=headers,
                           json={"username": "nobody", "pin": "000000"})

    assert [attempt(creds.h("kiosk")).status_code for _ in range(2)] == [401, 401]
    assert_problem(attempt(creds.h("kiosk")), 429, "rate-limited")
    assert attempt(creds.h("kiosk2")).status_code == 401


def test_back_office_sign_ins_are_limited_per_address_on_the_page(app, creds):
    limit(app, LOGINS="2/minute")
    office = Office(app)

    for _ in range(2):
        assert office.post(BO + "/login", {"username": "x", "password": "y"}).status_code == 200
    r = office.post(BO + "/login", {"username": "desk1", "password": creds.passwords["desk1"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.mimetype == "text/html"  # the login page with its message, never JSON
    # from another address the right password works
    other = Office(app)
    other.client.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert other.login("desk1", creds.passwords["desk1"]).status_code == 303


def test_an_empty_limit_is_no_limit(app, creds):
    limit(app, TAPS="")
    client = app.test_client()
    assert 429 not in {tap(client, creds.h("till")) for _ in range(20)}


def test_a_storage_that_is_down_lets_requests_through(app, creds, caplog):
    limit(app, url="redis://127.0.0.1:1/0", TAPS="1/minute")  # nothing listens on port 1
    client = app.test_client()
    assert [tap(client, creds.h("till")) for _ in range(3)] == [422] * 3
    assert "rate limit storage unavailable" in caplog.text


# --------------------------------------------------------------------------- shared storages


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared-ratelimit.db'}"
    elif request.param == "redis":
        yield request.getfixturevalue("redis_url")
    else:
        pg = PgDatabases.create(request.getfixturevalue("postgres_server"))
        try:
            yield pg.urls["DATABASE_URL"]
        finally:
            pg.drop()


def test_two_nodes_count_together_in_the_shared_storage(tmp_path, storage_url):
    """Two apps (two nodes, or two workers) on one storage: one budget per till."""
    from server import create_app
    from server.migrate import upgrade

    node_a = create_app(app_config(tmp_path / "a", RATELIMIT_URL=storage_url,
                                   RATELIMIT_TAPS="4/minute"))
    upgrade(node_a)
    creds = seed(node_a)
    # node B serves the same databases (and so the same till keys)
    node_b = create_app({**node_a.config, "RATELIMIT_URL": storage_url})
    try:
        a, b = node_a.test_client(), node_b.test_client()
        statuses = [tap(client, creds.h("till")) for client in (a, b, a, b, a, b)]
        assert statuses == [422, 422, 422, 422, 429, 429]
    finally:
        node_a.extensions["loyalty.db"].dispose()
        node_b.extensions["loyalty.db"].dispose()


@pytest.mark.parametrize("storage", ["default", "redis"])
def test_two_gunicorn_workers_share_one_count(gunicorn_service, storage, request):
    """The real deployment: gunicorn with 2 workers; every worker answers, one budget."""
    env = {"LOYALTY_RATELIMIT_TAPS": "6/minute"}
    if storage == "redis":
        env["LOYALTY_RATELIMIT_URL"] = request.getfixturevalue("redis_url")
    server, creds = gunicorn_service(**env)
    headers = {"Authorization": f"Bearer {creds['till_key']}"}
    before = len(server.access())

    def send(_=None):  # a new connection each time
        return requests.post(server.url + "/api/v1/taps", headers=headers, timeout=10,
                             json={"event_id": str(uuid.uuid4()), "qr": "NOT-A-CARD"})

    # Linux may hand many connections in a row to the same worker: send eight at a time
    # until both workers have answered (and refused) some
    statuses: list[int] = []
    with ThreadPoolExecutor(8) as pool:
        while len(statuses) < 400:
            statuses += [r.status_code for r in pool.map(send, range(8))]
            served = server.access()[before:]
            if len({pid for pid, status in served if status == 429}) == 2:
                break

    assert len({pid for pid, _ in served}) == 2, served  # both workers took taps
    assert statuses.count(422) == 6 and statuses.count(429) == len(statuses) - 6
    # each worker refused some: neither counted alone
    assert len({pid for pid, status in served if status == 429}) == 2
    r = send()
    assert r.status_code == 429 and r.json()["type"] == TYPE and int(r.headers["Retry-After"])


def test_a_tills_agent_sends_a_rate_limited_event_again_later(app, creds):
    """``rate-limited`` is the till's pace, not a verdict on the tap: the agent retries."""
    from device_drivers.forwarder import ServerProblem, ServerUnavailable, ServiceClient
    from tests.support.fixtures_devices import serve

    limit(app, TAPS="1/minute", ENROLMENTS="1/minute")
    with serve(app) as url:
        till = ServiceClient(url, creds.till)
        with pytest.raises(ServerProblem):
            till.post("/taps", {"event_id": str(uuid.uuid4()), "qr": "NOT-A-CARD"})
        with pytest.raises(ServerUnavailable, match="slow down"):
            till.post("/taps", {"event_id": str(uuid.uuid4()), "qr": "NOT-A-CARD"})
