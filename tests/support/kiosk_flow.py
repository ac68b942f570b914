"""Helpers for the kiosk's issuing and staff tests: a customer enrolled through the live
service, the session the customer flow hands over, polling the progress, till taps."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def enrol(live_server, **overrides: Any) -> dict:
    """A customer enrolled with the kiosk's device key, as the customer flow does."""
    body = {"event_id": str(uuid.uuid4()), "first_name": "Élodie", "last_name": "Durand",
            "email": f"elodie.{uuid.uuid4().hex[:10]}@example.fr", "language": "fr",
            "consents": {"terms": True}, "consent_version": "2026-11", **overrides}
    r = requests.post(f"{live_server.url}/api/v1/enrolments", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {live_server.creds['kiosk_key']}"})
    assert r.status_code == 201, r.text
    return {**r.json(), "event_id": body["event_id"], "first_name": body["first_name"]}


def hand_over(client, enrolled: dict, choice: str) -> None:
    """Leave in the kiosk's session what the customer flow leaves before ``issuing.start``."""
    with client.session_transaction() as session:
        session["customer"] = {"id": enrolled["customer_id"],
                               "first_name": enrolled["first_name"], "language": "fr",
                               "points": enrolled.get("points", 0),
                               "welcome_points": enrolled.get("welcome_points", 0)}
        session["issue"] = {"choice": choice, "enrol_event_id": enrolled["event_id"]}


def issue_state(client) -> dict:
    """``session["issue"]`` as the issuing pages left it."""
    with client.session_transaction() as session:
        return dict(session.get("issue") or {})


def poll(client, until: tuple[str, ...] = ("done",), timeout: float = 15.0) -> dict:
    """Poll ``GET /issue/status`` like issuing.js until its state is one of ``until``."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/issue/status").get_json()
        if body["state"] in until:
            return body
        if body.get("next") and body["state"] not in until:
            raise AssertionError(f"the issuing stopped at {body}")
        if time.monotonic() > deadline:
            raise AssertionError(f"still {body} after {timeout} s")
        time.sleep(0.05)


def post(client, path: str, page: str, **data: str):
    """POST a kiosk form with the CSRF token of ``page`` (its HTML)."""
    token = CSRF.search(page).group(1)
    return client.post(path, data={"csrf_token": token, **data})


def tap(live_server, **what: Any) -> requests.Response:
    """A tap at the demo till."""
    return requests.post(f"{live_server.url}/api/v1/taps", timeout=10,
                         headers={"Authorization": f"Bearer {live_server.creds['till_key']}"},
                         json={"event_id": str(uuid.uuid4()), **what})


def card_row(live_server, card_id: str):
    """The card's row in the live service's database."""
    from server.cards.models import Card

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(Card).where(Card.id == card_id))


def cards_of(live_server, customer_id: str) -> list:
    from server.cards.models import Card

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        return list(s.scalars(select(Card).where(Card.customer_id == customer_id)
                              .order_by(Card.issued_at)))


def cli(live_server, *args: str) -> str:
    """Run ``flask --app server ARGS`` on the live service; its output."""
    result = live_server.app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def new_kiosk_key(live_server) -> str:
    """A kiosk device of its own (its staff lockout counts apart from the others')."""
    out = cli(live_server, "devices", "add", "--store", "DEMO", "--role", "kiosk",
              "--name", f"kiosk {uuid.uuid4().hex[:6]}")
    return out.strip().splitlines()[-1]


def add_staff(live_server, role: str = "desk", pin: str | None = "2468",
              uid: str | None = None) -> str:
    """A staff member with a kiosk PIN and maybe a staff card; their username."""
    username = f"{role}{uuid.uuid4().hex[:6]}"
    cli(live_server, "staff", "add", "--username", username, "--role", role, "--store", "DEMO",
        "--password", "a-long-password-1")
    if pin:
        cli(live_server, "staff", "pin", username, "--pin", pin)
    if uid:
        cli(live_server, "staff", "card", username, "--uid", uid)
    return username


def browser_page(browser, base_url: str, client, size: tuple[int, int] = (800, 480)):
    """A Chromium page that shares the Flask test ``client``'s kiosk session."""
    from kiosk_app.memory_session import COOKIE

    client.get("/healthz")
    context = browser.new_context(viewport={"width": size[0], "height": size[1]},
                                  has_touch=True)
    cookie = client.get_cookie(COOKIE)
    if cookie is not None:
        context.add_cookies([{"name": COOKIE, "value": cookie.value, "url": base_url}])
    return context.new_page()
