"""Schemathesis against the service's own OpenAPI document, on SQLite and PostgreSQL.

Every operation of ``/api/v1/openapi.json`` gets requests generated from its schema (valid and
deliberately invalid), sent through the real WSGI app with real device keys and staff
credentials of the seeded test app. Each answer must be documented: no 5xx, a documented status
code and content type, a body matching its schema, and a problem document whose ``type`` is one
of the project's stable types with the status that type is registered under.

Most examples run as the caller the operation is meant for (a till taps, a kiosk enrols, a desk
member searches), some as any other caller, so the refusals are checked too; about half
name a real customer, card or ticket instead of a made-up one, so the examples get past
"not found" into the services.

Bounded and deterministic: ``LOYALTY_FUZZ_EXAMPLES`` examples per operation (default 6, to keep
the whole suite well under 20 minutes; every bug found so far has its own regression below),
derandomized (the same examples on every run). A longer run:
``LOYALTY_FUZZ_EXAMPLES=500 pytest tests/test_fuzz_api.py``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from server.api import openapi
from server.api.problems import MEDIA_TYPE, PROBLEMS, TYPE_PREFIX
from tests.support.fixtures_server import assert_problem

EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_EXAMPLES", "6"))
SMS_SECRET = "fuzz-sms-gateway-secret"

schema = schemathesis.openapi.from_dict(openapi.build())
# PUT /programme takes the TOML document as text
schemathesis.serializer.alias("application/toml", "text/plain")
PROGRAMME = (Path(__file__).parents[1] / "server/loyalty/default_programme.toml").read_text()

# who each operation is for (the roles its description names); the rest of the examples pick
# any caller, so that refusals (401, 403) are exercised and must be documented as well
DESK = ("desk", "manager", "admin", "kiosk+desk")
FOR = {
    "POST /enrolments": ("kiosk",),
    "POST /customers/{customer_id}/cards": ("kiosk", "kiosk+desk", "desk"),
    "POST /taps": ("till",),
    "POST /taps/batch": ("till",),
    "POST /purchases": ("till",),
    "POST /refunds": ("till",),
    "POST /redemptions": ("till", "till+desk"),
    "POST /customers/{customer_id}/points": ("manager", "admin"),
    "GET /customers/{customer_id}/points": ("desk", "manager"),
    "GET /programme": ("till", "kiosk", "desk"),
    "PUT /programme": ("manager", "admin"),
    "POST /devices/heartbeat": ("till", "kiosk"),
    "PUT /anonymous-sales": ("till",),
    "GET /consent-texts": ("nobody",),
    "POST /customers/{customer_id}/erasure": ("manager", "admin"),
    "GET /privacy/retention": ("manager", "admin"),
    "GET /audit": ("admin",),
    "GET /audit/verify": ("admin",),
    "POST /cards/{card_id}/activation": ("kiosk", "desk"),
    "POST /cards/{card_id}/void": ("kiosk", "desk"),
    "POST /staff/kiosk-sessions": ("kiosk",),
    "POST /accounts/{customer_id}/payments": ("till", "manager"),
    "POST /sms/inbound": ("sms",),
}
CALLERS = ("till", "kiosk", "kiosk+desk", "till+desk", "desk", "cashier", "manager", "admin",
           "sms", "nobody")


def _headers(creds, who: str) -> dict[str, str]:
    device, _, staff = who.partition("+")
    if who == "nobody":
        return {}
    if who == "sms":
        return {"Authorization": f"Bearer {SMS_SECRET}"}
    if device in ("till", "kiosk"):
        return creds.h(device, staff=f"{staff}1" if staff else None)
    return creds.staff_auth(f"{who}1")


@pytest.fixture
def world(app, api, creds, manager, admin):
    """Real things to name: a customer with a QR card, a pending NFC card, a purchase, a
    ticket, an open account; the SMS gateway's secret set.

    The staff passwords are hashed again with argon2's cheapest parameters: the same
    verification code runs, in milliseconds instead of a second on this machine (the cost of
    a hash is not what this test is about, and each staff example verifies one).
    """
    from argon2 import PasswordHasher
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from server.accounts.service import open_account
    from server.staff.models import Staff

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with Session(app.extensions["loyalty.db"].main) as main:
        for username, password in creds.passwords.items():
            main.execute(update(Staff).where(Staff.username == username)
                         .values(password_hash=cheap.hash(password)))
        main.commit()
    app.config["SMS_INBOUND_SECRET"] = SMS_SECRET
    customer_id, qr = api.customer_with_card()
    nfc = api.issue_card(customer_id, "nfc").get_json()
    bought = api.purchase([api.line("SKU-1", 2, "9.90")], card=qr["url"])
    assert bought.status_code == 201, bought.get_json()
    ticket = api.client.post(f"/api/v1/customers/{customer_id}/tickets",
                             json={"kind": "support", "subject": "Fuzz", "note": "first"},
                             headers=creds.staff_auth("desk1"))
    assert ticket.status_code == 201, ticket.get_json()
    with Session(app.extensions["loyalty.db"].main) as main:
        open_account(main, "test", customer_id, credit_limit_cents=50_000, terms_days=30)
        main.commit()
    return {
        "customer_id": customer_id,
        "card_ids": [qr["card_id"], nfc["card_id"]],
        "card_url": qr["url"],
        "purchase_id": bought.get_json()["purchase_id"],
        "ticket_id": ticket.get_json()["id"],
    }


def _name_real_things(case, world: dict, pick: int) -> None:
    """Put real ids where the generated case has made-up ones (path and body)."""
    params = case.path_parameters or {}
    if "customer_id" in params:
        params["customer_id"] = world["customer_id"]
    if "card_id" in params:
        params["card_id"] = world["card_ids"][pick % 2]
    if "ticket_id" in params:
        params["ticket_id"] = world["ticket_id"]
    body = case.body
    if case.path == "/programme" and isinstance(body, str):
        case.body = PROGRAMME  # the one a fresh install runs: a valid one
    if isinstance(body, dict):
        for name in ("card", "url"):
            if isinstance(body.get(name), str):
                body[name] = world["card_url"]
        if "customer_id" in body and "card" not in body:
            body["customer_id"] = world["customer_id"]
        if "purchase_id" in body:
            body["purchase_id"] = world["purchase_id"]
        if "event_id" in body and pick % 3 == 0:
            body["event_id"] = str(uuid.uuid4())


def problem_type_is_stable(ctx, response, case):
    """A problem document's ``type`` is a registered one, with the status it is registered
    under (schemathesis' schema check already holds it to the types the operation lists)."""
    if response.headers.get("content-type", [""])[0].split(";")[0] != MEDIA_TYPE:
        return None
    body = response.json()
    slug = body.get("type", "").removeprefix(TYPE_PREFIX)
    assert slug in PROBLEMS, f"unregistered problem type {body.get('type')!r}"
    assert PROBLEMS[slug][0] == response.status_code == body["status"], (
        f"{slug} is registered as {PROBLEMS[slug][0]}, answered {response.status_code}")
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection, problem_type_is_stable]


@schema.given(pick=st.integers(min_value=0, max_value=99))
@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case, pick, app, creds, world):
    op = f"{case.method.upper()} {case.path}"
    meant = FOR.get(op, DESK)
    who = meant[pick % len(meant)] if pick < 75 else CALLERS[pick % len(CALLERS)]
    if pick % 2 == 0 and not case.meta.generation.mode.is_negative:
        _name_real_things(case, world, pick)
    # in the case itself (not as extra headers), so that schemathesis sees what is sent when it
    # decides whether a deliberately invalid request should have been refused
    case.headers = {**(case.headers or {}), **_headers(creds, who)}
    case.call_and_validate(app=app, base_url="/api/v1", checks=CHECKS)


# --------------------------------------------------------------------------- regressions
# What the fuzzing found, one request each, answered as documented (the same checks but the
# one about deliberately invalid requests, which needs schemathesis' own generation).

DOCUMENTED = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, problem_type_is_stable]
BIG = 10**20  # over 64 bits: SQLite cannot bind it
OVER = 2**31  # over PostgreSQL's integer


def _send(app, path: str, method: str, headers: dict, *, status: int, slug: str | None = None,
          **case_kw):
    """Send one request through the real app, check it as the fuzzing does, return it."""
    case = schema[path][method].Case(headers=headers, **case_kw)
    response = case.call(app=app, base_url="/api/v1")
    case.validate_response(response, checks=DOCUMENTED)
    assert response.status_code == status, response.text
    if slug:
        assert response.json()["type"] == TYPE_PREFIX + slug
    return response


@pytest.mark.parametrize("big", [OVER, BIG])
def test_ids_beyond_the_integer_keys_are_refused_not_a_500(app, api, creds, world, big):
    """Ids are PostgreSQL integers: a larger number was a 500 (PostgreSQL: integer out of
    range; SQLite: Python int too large to convert) instead of a validation error."""
    till, desk = creds.h("till"), creds.staff_auth("desk1")
    refund = {"event_id": str(uuid.uuid4()), "purchase_id": big}
    _send(app, "/refunds", "POST", till, body=refund, status=422, slug="validation-error")
    refund = {"event_id": str(uuid.uuid4()), "purchase_id": world["purchase_id"],
              "lines": [{"line_no": big, "quantity": "1"}]}
    _send(app, "/refunds", "POST", till, body=refund, status=422, slug="validation-error")
    line = {**api.line("SKU-1", 1, "1.00"), "redemption_id": big}
    _send(app, "/purchases", "POST", till, status=422, slug="validation-error",
          body=api.purchase_body([line], card=world["card_url"]))
    ticket = {"kind": "warranty", "subject": "Broken", "purchase_line_id": big}
    _send(app, "/customers/{customer_id}/tickets", "POST", desk, status=422,
          slug="validation-error", path_parameters={"customer_id": world["customer_id"]},
          body=ticket)
    # the path is no route at all beyond the range (schemathesis would not send it: the
    # document's maximum), so the Flask client asks; it used to reach the database
    response = api.client.get(f"/api/v1/tickets/{big}", headers=desk)
    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize("before", [str(BIG), "\u00b2", "12a", "-1"])
def test_audit_before_is_an_entry_id_or_a_validation_error(app, creds, world, before):
    """``?before=²`` passed ``str.isdigit`` and failed ``int()``; a huge number overflowed."""
    _send(app, "/audit", "GET", creds.staff_auth("admin1"), query={"before": before},
          status=422, slug="validation-error")
    _send(app, "/audit", "GET", creds.staff_auth("admin1"), query={"before": "5"}, status=200)


def test_answers_the_document_did_not_list(app, creds, world):
    """The programme's refusals, the export as HTML and the consent texts' JSON were not in
    the document (undocumented status codes and content types)."""
    _send(app, "/programme", "GET", {}, status=401, slug="unauthenticated")
    _send(app, "/programme", "GET", creds.h("till"), status=200)
    _send(app, "/programme", "PUT", creds.staff_auth("desk1"), body=PROGRAMME,
          media_type="application/toml", status=403, slug="forbidden-role")
    _send(app, "/programme", "PUT", creds.staff_auth("manager1"), body="x = [",
          media_type="application/toml", status=422, slug="invalid-programme")
    response = _send(app, "/customers/{customer_id}/export", "GET", creds.staff_auth("desk1"),
                     path_parameters={"customer_id": world["customer_id"]},
                     query={"format": "html"}, status=200)
    assert response.headers["content-type"][0].startswith("text/html")
    _send(app, "/consent-texts", "GET", {}, status=200)
    _send(app, "/tickets/{ticket_id}", "GET", creds.staff_auth("desk1"),
          path_parameters={"ticket_id": 0}, status=404, slug="ticket-not-found")


def test_each_problem_response_names_its_types():
    """The document lists, per operation and status, the exact problem types (so the
    schema check above refuses a type an operation does not document)."""
    document = openapi.build()
    tap = document["paths"]["/taps"]["post"]["responses"]["410"]
    types = tap["content"][MEDIA_TYPE]["schema"]["allOf"][1]["properties"]["type"]["enum"]
    assert types == [TYPE_PREFIX + "card-revoked", TYPE_PREFIX + "card-superseded"]


def test_an_unpublished_consent_version_is_documented(app, creds, world):
    """The enrolment answered ``consent-version-unknown`` (422), which its document did not
    list (found with LOYALTY_FUZZ_EXAMPLES=60)."""
    from tests.support.fixtures_server import Api

    _send(app, "/enrolments", "POST", creds.h("kiosk"),
          body=Api.enrolment(consent_version="1999-01"), status=422,
          slug="consent-version-unknown")


def test_a_nul_character_is_refused_not_a_500(app, api, creds, world, admin):
    """PostgreSQL text cannot hold NUL: stored (a purchase line's sku, a tap's reader, a
    ticket's subject) or compared (a customer id in the path, ``/audit?customer_id=``), it
    was a 500 there (and stored as is on SQLite). Found with LOYALTY_FUZZ_EXAMPLES=200."""
    till, desk = creds.h("till"), creds.staff_auth("desk1")
    _send(app, "/purchases", "POST", till, status=422, slug="validation-error",
          body=api.purchase_body([api.line("SKU\x00", 1, "1.00")], card=world["card_url"]))
    _send(app, "/taps", "POST", till, status=422, slug="validation-error",
          body={"event_id": str(uuid.uuid4()), "url": world["card_url"], "reader": "r\x00"})
    _send(app, "/customers/{customer_id}/tickets", "POST", desk, status=422,
          slug="validation-error", path_parameters={"customer_id": world["customer_id"]},
          body={"kind": "support", "subject": "a\x00"})
    _send(app, "/customers/{customer_id}/consents", "GET", desk, status=400,
          slug="bad-request", path_parameters={"customer_id": "C-\x00"})
    _send(app, "/audit", "GET", creds.staff_auth("admin1"), query={"customer_id": "\x00"},
          status=400, slug="bad-request")
