"""The desk reader: a till agent in desk mode publishes each read on /events and /last for one
web origin and sends nothing to the service; the back office's search page fills and sends
itself from it (Chromium)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests
from werkzeug.wrappers import Request, Response

from tests.support.backoffice_browser import log_in
from tests.support.fixtures_devices import serve, wait_until
from tests.test_backoffice import BO, office
from tests.test_backoffice_customer import _card, _enrol, _searches

ORIGIN = "https://loyalty.example.com"
CARD_URL = "https://shop.example/c/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"


@contextlib.contextmanager
def recording_service() -> Iterator[tuple[str, list]]:
    """A stand-in for the loyalty service that notes every request made to it."""
    seen: list[tuple[str, str]] = []

    @Request.application
    def app(request):
        seen.append((request.method, request.path))
        return Response("", status=503)

    with serve(app) as url:
        yield url, seen


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def desk_agent(tmp_path):
    """``desk_agent(SERVER_URL=..., **config)``: an agent in desk mode with a ``sim:`` reader;
    no device key, and a heartbeat interval that would show at once if one ran."""
    from device_drivers.agent import create_app

    apps = []

    def make(**config):
        app = create_app({"INSTANCE_PATH": str(tmp_path / f"desk{len(apps)}"),
                          "SERVER_URL": dead_url(), "READERS": "sim:", "REOPEN_DELAY": 0.5,
                          "HEARTBEAT_INTERVAL": 0.1, "DESK_MODE": True,
                          "DESK_ALLOWED_ORIGIN": ORIGIN, **config})
        app.extensions["agent"].start()
        apps.append(app)
        client = app.test_client()
        wait_until(lambda: client.get("/status").json["readers"][0]["status"] == "ready",
                   what="the sim reader to be ready")
        return app

    yield make
    for app in apps:
        app.extensions["agent"].stop()


def next_event(lines) -> dict:
    """The next server-sent event of a stream's lines: its fields, ``data`` as JSON."""
    event: dict = {}
    for line in lines:
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                return event
            event = {}
            continue
        key, _, value = line.partition(": ")
        event[key] = value
    raise AssertionError("the stream ended")


# --------------------------------------------------------------------------- the agent


def test_a_read_is_published_and_sent_to_no_one(desk_agent):
    with recording_service() as (service, seen):
        agent = desk_agent(SERVER_URL=service)
        queue_file = Path(agent.config["INSTANCE_PATH"]) / "agent-queue.sqlite3"
        with serve(agent) as url:
            assert requests.get(f"{url}/last", timeout=5).json()["seq"] == 0
            stream = requests.get(f"{url}/events", stream=True, timeout=10,
                                  headers={"Origin": ORIGIN})
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.headers["Access-Control-Allow-Origin"] == ORIGIN
            lines = stream.iter_lines(decode_unicode=True)
            assert next(lines).startswith("retry:")

            requests.post(f"{url}/simulate", json={"url": CARD_URL}, timeout=5)
            event = next_event(lines)
            assert event["event"] == "read"
            read = event["data"]
            assert read["url"] == CARD_URL and read["uid"] is None and read["qr"] is None
            assert read["reader"] == "sim:" and event["id"] == str(read["seq"])
            assert datetime.fromisoformat(read["at"]).tzinfo is not None
            assert requests.get(f"{url}/last", timeout=5).json() == read

            requests.post(f"{url}/simulate", json={"uid": "04A1B2C3D4E5F6"}, timeout=5)
            second = next_event(lines)["data"]
            assert second["uid"] == "04A1B2C3D4E5F6" and second["url"] is None
            assert second["seq"] == read["seq"] + 1
            stream.close()

            status = requests.get(f"{url}/status", timeout=5).json()
            assert status["desk_mode"] is True and status["readers"][0]["taps"] == 2
            # a point of sale that talks to a desk reader is told so, not queued
            r = requests.post(f"{url}/purchases", timeout=5, json={
                "card": CARD_URL, "currency": "EUR", "total": "1.00",
                "lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}]})
            assert r.status_code == 409 and r.json()["type"] == "/problems/desk-mode"
        time.sleep(0.5)  # five heartbeats' worth, had one been running
    assert seen == []  # no tap, no visit, no heartbeat
    assert not queue_file.exists()  # no outbox either


def test_only_the_allowed_origin_may_read_events_and_last(desk_agent):
    client = desk_agent().test_client()
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Private-Network": "true"}

    r = client.get("/last", headers={"Origin": ORIGIN})
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"]
    for path in ("/events", "/last"):
        r = client.options(path, headers={"Origin": ORIGIN, **preflight})
        assert r.status_code == 200
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert r.headers["Access-Control-Allow-Private-Network"] == "true"
        assert "GET" in r.headers["Access-Control-Allow-Methods"]
        assert "Origin" in r.headers["Vary"]

    for origin in ("https://evil.example", ORIGIN + ".evil.example", "null",
                   "http://loyalty.example.com"):
        for r in (client.get("/last", headers={"Origin": origin}),
                  client.options("/events", headers={"Origin": origin, **preflight})):
            assert "Access-Control-Allow-Origin" not in r.headers, origin
            assert "Access-Control-Allow-Private-Network" not in r.headers, origin
            assert "Origin" in r.headers["Vary"]  # a cache never serves one to the other
    assert "Access-Control-Allow-Origin" not in client.get("/last").headers
    # the other endpoints never answer across origins
    for r in (client.get("/status", headers={"Origin": ORIGIN}),
              client.options("/simulate", headers={"Origin": ORIGIN, **preflight}),
              client.get("/", headers={"Origin": ORIGIN})):
        assert r.status_code in (200, 404) and "Access-Control-Allow-Origin" not in r.headers

    # no origin configured: nobody; a till (not in desk mode) never, whatever is set
    for config in ({"DESK_ALLOWED_ORIGIN": ""},
                   {"DESK_MODE": False, "HEARTBEAT_INTERVAL": 0.0}):
        other = desk_agent(**config).test_client()
        r = other.get("/last", headers={"Origin": ORIGIN})
        assert "Access-Control-Allow-Origin" not in r.headers, config


# --------------------------------------------------------------------------- back office


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_the_search_page_has_the_reader_only_when_configured(app, creds):
    o = office(app, creds, "desk1")
    for url in ("", "127.0.0.1:8766", "javascript:alert(1)"):  # off, or not an http(s) URL
        app.config["BACKOFFICE_DESK_READER_URL"] = url
        r = o.get(BO + "/")
        body = r.get_data(as_text=True)
        assert "desk-reader.js" not in body and "data-desk-reader" not in body
        assert "connect-src" not in r.headers["Content-Security-Policy"]

    app.config["BACKOFFICE_DESK_READER_URL"] = "http://127.0.0.1:8766/"
    r = o.get(BO + "/")
    body = r.get_data(as_text=True)
    assert 'data-desk-reader="http://127.0.0.1:8766"' in body
    assert '/backoffice/static/desk-reader.js" defer></script>' in body
    assert "<script>" not in body  # nothing inline
    csp = r.headers["Content-Security-Policy"]
    assert "; connect-src 'self' http://127.0.0.1:8766" in csp
    assert "script-src" not in csp  # scripts stay 'self' (default-src)
    assert o.client.get(BO + "/static/desk-reader.js").status_code == 200
    # a search answered with an error or a list keeps the reader
    assert "data-desk-reader" in o.post(BO + "/search", {"query": "x"}).get_data(as_text=True)


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_a_card_read_on_the_desk_reader_opens_the_customer_file(app, api, creds, browser,
                                                               desk_agent):
    from tests.support.kiosk_screens import save

    cid = _enrol(api, first_name="Élodie", last_name="Martin")
    card = _card(api, cid)
    with serve(app) as office_url, recording_service() as (service, seen):
        # first the agent lets another origin in only: the page says it cannot reach it
        agent = desk_agent(SERVER_URL=service)
        with serve(agent) as agent_url:
            app.config["BACKOFFICE_DESK_READER_URL"] = agent_url
            context = browser.new_context(viewport={"width": 1280, "height": 800},
                                          locale="en-GB")
            page = context.new_page()
            errors: list[str] = []
            try:
                page.goto(f"{office_url}{BO}/")
                log_in(page, "desk1", creds.passwords["desk1"])
                page.get_by_text("Desk reader not reachable").wait_for(timeout=5000)
                requests.post(f"{agent_url}/simulate", json={"url": card["url"]}, timeout=5)
                page.wait_for_timeout(500)
                assert page.url == f"{office_url}{BO}/"  # nothing crossed

                # the agent lets the back office in: the page connects again by itself
                agent.extensions["agent"].settings["DESK_ALLOWED_ORIGIN"] = office_url
                page.on("console",
                        lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.get_by_text("Desk reader: ready").wait_for(timeout=10000)
                assert not page.get_by_text("Desk reader not reachable").is_visible()
                save(page, "backoffice-desk-reader")

                with page.expect_navigation(url=f"**{BO}/customers/{cid}"):
                    requests.post(f"{agent_url}/simulate", json={"url": card["url"]},
                                  timeout=5)
                assert page.locator("h1").inner_text().startswith(cid)
                assert page.get_by_text("Élodie").first.is_visible()
            finally:
                context.close()
    assert not errors, f"the page logged errors: {errors}"
    assert seen == []  # the desk reader told the service nothing: the page searched
    assert [e.detail for e in _searches(app)] == [{"by": ["card"], "found": [cid]}]


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_the_page_says_when_no_desk_reader_answers(app, creds, browser):
    with serve(app) as office_url:
        app.config["BACKOFFICE_DESK_READER_URL"] = dead_url()
        context = browser.new_context(locale="en-GB")
        page = context.new_page()
        try:
            page.goto(f"{office_url}{BO}/")
            log_in(page, "desk1", creds.passwords["desk1"])
            page.get_by_text("Desk reader not reachable").wait_for(timeout=5000)
            assert not page.get_by_text("Desk reader: ready").is_visible()
            # typing still works as before
            field = page.get_by_label("Name, card, email, phone number or customer number")
            assert field.is_editable()
        finally:
            context.close()
