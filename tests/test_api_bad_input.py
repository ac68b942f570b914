"""Bad input and bad callers: always a problem document, never a 500, never half a write."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from server.api.problems import PROBLEMS
from server.cards import token
from server.cards.keys import load_keyring
from tests.support.fixtures_server import Api, assert_problem, row_counts

ENROL = "/api/v1/enrolments"
TAPS = "/api/v1/taps"


@pytest.fixture
def ctx(app, api, creds):
    """A customer with a QR card, the card keys, and the row counts before the bad request."""
    customer_id, card = api.customer_with_card()
    return SimpleNamespace(app=app, api=api, client=api.client, creds=creds,
                           customer_id=customer_id, card=card,
                           ring=load_keyring(app.config["CARD_KEYS_FILE"]))


def _post(ctx, path: str, body, headers: dict | None = None, **kw):
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
        kw.setdefault("content_type", "application/json")
    return ctx.client.post(path, data=body, headers=headers or {}, **kw)


def _enrol(ctx, headers=None, **kw):
    return ctx.api.enrol(headers=headers, **kw)


def _without(*names):
    def case(ctx):
        body = Api.enrolment()
        for name in names:
            body.pop(name)
        return _post(ctx, ENROL, body, ctx.creds.h("kiosk"))
    return case


def _forged(ctx):
    tok = ctx.card["token"]
    last = "A" if tok[-1] != "A" else "B"
    return ctx.api.tap(url=ctx.card["url"][:-1] + last)


def _unknown_key(ctx):
    key_id = next(k for k in range(16) if k not in ctx.ring.keys)
    tok = token.encode(key_id, os.urandom(32), bytes.fromhex(ctx.card["card_id"]), 0)
    return ctx.api.tap(url=f"https://shop.example/c/{tok}")


def _other_version(ctx):
    key_id, key = ctx.ring.signing_key()
    head = bytes([(2 << 4) | key_id]) + bytes.fromhex(ctx.card["card_id"]) + b"\x00"
    tag = hmac.new(key, b"loyalty-card-token/v1" + head, hashlib.sha256).digest()[:10]
    return ctx.api.tap(qr=base64.b32encode(head + tag).decode())


def _no_such_card(ctx):
    key_id, key = ctx.ring.signing_key()
    return ctx.api.tap(url="https://shop.example/c/" + token.encode(key_id, key, os.urandom(8), 0))


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


# (id, request, status, slug)
CASES = [
    # --- the body
    ("malformed-json", lambda c: _post(c, ENROL, '{"event_id": ', c.creds.h("kiosk"),
                                       content_type="application/json"), 400, "malformed-json"),
    ("json-null", lambda c: _post(c, ENROL, "null", c.creds.h("kiosk"),
                                  content_type="application/json"), 400, "malformed-json"),
    ("bad-utf8", lambda c: _post(c, ENROL, b'{"first_name": "\xff\xfe"}', c.creds.h("kiosk"),
                                 content_type="application/json"), 400, "malformed-json"),
    ("json-array", lambda c: _post(c, ENROL, "[1, 2]", c.creds.h("kiosk"),
                                   content_type="application/json"), 422, "validation-error"),
    ("text-plain", lambda c: _post(c, ENROL, json.dumps(Api.enrolment()), c.creds.h("kiosk"),
                                   content_type="text/plain"), 415, "unsupported-media-type"),
    ("form", lambda c: c.client.post(ENROL, data={"first_name": "A"}, headers=c.creds.h("kiosk")),
     415, "unsupported-media-type"),
    ("no-content-type", lambda c: c.client.post(ENROL, data=json.dumps(Api.enrolment()),
                                                headers=c.creds.h("kiosk")),
     415, "unsupported-media-type"),
    ("too-large", lambda c: _enrol(c, first_name="x" * (70 * 1024)), 413, "payload-too-large"),
    ("missing-event-id", _without("event_id"), 422, "validation-error"),
    ("missing-first-name", _without("first_name"), 422, "validation-error"),
    ("missing-last-name", _without("last_name"), 422, "validation-error"),
    ("missing-language", _without("language"), 422, "validation-error"),
    ("missing-consents", _without("consents"), 422, "validation-error"),
    ("missing-terms", lambda c: _enrol(c, consents={"profiling": True}), 422, "validation-error"),
    ("extra-field", lambda c: _enrol(c, is_admin=True), 422, "validation-error"),
    ("extra-consent", lambda c: _enrol(c, consents={"terms": True, "sell_data": True}),
     422, "validation-error"),
    ("oversized-first-name", lambda c: _enrol(c, first_name="x" * 500), 422, "validation-error"),
    ("oversized-address", lambda c: _enrol(c, address="y" * 301), 422, "validation-error"),
    ("blank-last-name", lambda c: _enrol(c, last_name="   "), 422, "validation-error"),
    ("control-chars", lambda c: _enrol(c, first_name="Élo\x00die"), 422, "validation-error"),
    ("bad-email", lambda c: _enrol(c, email="not-an-email"), 422, "validation-error"),
    ("bad-phone", lambda c: _enrol(c, email=None, phone="call me"), 422, "validation-error"),
    ("bad-language", lambda c: _enrol(c, language="de"), 422, "validation-error"),
    ("bad-event-id", lambda c: _enrol(c, event_id="not-a-uuid"), 422, "validation-error"),
    ("future-birth-date", lambda c: _enrol(c, birth_date="2999-01-01"), 422, "validation-error"),
    ("first-name-number", lambda c: _enrol(c, first_name=42), 422, "validation-error"),
    ("no-email-no-phone", lambda c: _enrol(c, email=None), 422, "validation-error"),
    ("terms-false", lambda c: _enrol(c, consents={"terms": False, "marketing_email": True}),
     422, "consent-required"),
    # --- cards
    ("unknown-customer", lambda c: c.api.issue_card("C-0000-0000"), 404, "customer-not-found"),
    ("bad-kind", lambda c: c.api.issue_card(c.customer_id, "plastic"), 422, "validation-error"),
    ("replace-without-reason", lambda c: c.api.issue_card(
        c.customer_id, replace=True, headers=c.creds.h("kiosk", staff="desk1")),
     422, "validation-error"),
    ("bad-uid", lambda c: c.api.issue_card(c.customer_id, "nfc", uid="zz"),
     422, "validation-error"),
    # --- taps
    ("forged-token", _forged, 422, "card-token-forged"),
    ("unknown-key-id", _unknown_key, 422, "card-token-unknown-key"),
    ("token-version", _other_version, 422, "card-token-version"),
    ("garbage-url", lambda c: c.api.tap(url="https://shop.example/c/hello-world"),
     422, "card-token-malformed"),
    ("garbage-qr", lambda c: c.api.tap(qr="WIFI:S:shop;T:WPA;P:secret;;"),
     422, "card-token-malformed"),
    ("no-such-card", _no_such_card, 404, "card-not-found"),
    ("tap-nothing", lambda c: c.api.tap(), 422, "validation-error"),
    ("tap-bad-uid", lambda c: c.api.tap(uid="not-hex"), 422, "validation-error"),
    ("tap-long-url", lambda c: c.api.tap(url="https://shop.example/c/" + "A" * 600),
     422, "validation-error"),
    # --- who is calling
    ("no-authorization", lambda c: _enrol(c, headers={}), 401, "unauthenticated"),
    ("no-authorization-tap", lambda c: c.api.tap(headers={}, url=c.card["url"]),
     401, "unauthenticated"),
    ("no-authorization-card", lambda c: c.api.issue_card(c.customer_id, headers={}),
     401, "unauthenticated"),
    ("empty-bearer", lambda c: _enrol(c, headers={"Authorization": "Bearer "}),
     401, "unauthenticated"),
    ("unknown-scheme", lambda c: _enrol(c, headers={"Authorization": "Token abc"}),
     401, "unauthenticated"),
    ("unknown-key", lambda c: _enrol(c, headers=_bearer("lk_" + "x" * 43)),
     401, "invalid-credentials"),
    ("unknown-key-tap", lambda c: c.api.tap(headers=_bearer("nope"), url=c.card["url"]),
     401, "invalid-credentials"),
    ("basic-not-base64", lambda c: _enrol(c, headers={"Authorization": "Basic %%%"}),
     401, "invalid-credentials"),
    ("unknown-staff", lambda c: c.api.issue_card(
        c.customer_id, headers=c.creds.staff_auth("nobody", "whatever-pass")),
     401, "invalid-credentials"),
    ("wrong-staff-password", lambda c: c.api.issue_card(
        c.customer_id, replace=True, reason="lost",
        headers=c.creds.h("kiosk") | c.creds.staff_h("desk1", "not-the-password")),
     401, "invalid-credentials"),
    ("staff-header-not-basic", lambda c: c.api.issue_card(
        c.customer_id, replace=True, reason="lost",
        headers=c.creds.h("kiosk") | {"X-Staff-Authorization": "Bearer x"}),
     401, "invalid-credentials"),
    ("kiosk-taps", lambda c: c.api.tap(headers=c.creds.h("kiosk"), url=c.card["url"]),
     403, "forbidden-role"),
    ("till-enrols", lambda c: _enrol(c, headers=c.creds.h("till")), 403, "forbidden-role"),
    ("till-issues", lambda c: c.api.issue_card(c.customer_id, headers=c.creds.h("till")),
     403, "forbidden-role"),
    ("cashier-enrols", lambda c: _enrol(c, headers=c.creds.staff_auth("cashier1")),
     403, "forbidden-role"),
    # --- routing
    ("get-taps", lambda c: c.client.get(TAPS, headers=c.creds.h("till")),
     405, "method-not-allowed"),
    ("no-such-endpoint", lambda c: c.client.post("/api/v1/nothing-here", json={}),
     404, "not-found"),
    ("no-such-problem", lambda c: c.client.get("/api/v1/problems/no-such-thing"),
     404, "not-found"),
]


@pytest.mark.parametrize(("make", "status", "slug"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_request_is_a_problem_and_writes_nothing(ctx, make, status, slug):
    before = row_counts(ctx.app)
    response = make(ctx)
    body = assert_problem(response, status, slug)
    assert PROBLEMS[slug] == (status, body["title"])
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert "Traceback" not in response.get_data(as_text=True)
    assert row_counts(ctx.app) == before


def test_validation_errors_name_fields_without_echoing_values(ctx):
    secret = "Q" * 500
    response = _enrol(ctx, first_name=secret, language="xx", unexpected=1)
    body = assert_problem(response, 422, "validation-error")
    fields = {e["field"] for e in body["errors"]}
    assert {"first_name", "language", "unexpected"} <= fields
    assert all(e["message"] for e in body["errors"])
    assert "QQQQQQQQ" not in response.get_data(as_text=True)
    missing = assert_problem(_without("last_name")(ctx), 422)
    assert [e["field"] for e in missing["errors"]] == ["last_name"]


def test_phone_alone_is_enough(ctx):
    response = _enrol(ctx, email=None, phone="+370 612 34567")
    assert response.status_code == 201, response.get_json()


def test_revoked_device_key_is_refused_at_once(ctx):
    kiosk_id = ctx.creds.device_ids["kiosk"]
    assert _enrol(ctx).status_code == 201
    result = ctx.app.test_cli_runner().invoke(args=["devices", "revoke", str(kiosk_id)])
    assert result.exit_code == 0, result.output
    before = row_counts(ctx.app)
    response = _enrol(ctx)
    assert_problem(response, 401, "invalid-credentials")
    assert row_counts(ctx.app) == before
    assert _enrol(ctx, headers=ctx.creds.h("kiosk2")).status_code == 201  # others unaffected
    unknown = ctx.app.test_cli_runner().invoke(args=["devices", "revoke", "99999"])
    assert unknown.exit_code != 0


@pytest.mark.parametrize("failure", [
    OperationalError("COMMIT", None, ConnectionError("simulated: the main database went away")),
    RuntimeError("simulated: the main commit failed"),
], ids=["operational-error", "other-error"])
def test_vault_write_is_undone_when_main_commit_fails(ctx, monkeypatch, failure):
    main_engine = ctx.app.extensions["loyalty.db"].main
    real_commit = Session.commit
    failed = []

    def commit(self):
        # the main database fails, once, at the request's commit; the vault works
        if self.bind is main_engine and not failed:
            failed.append(self)
            raise failure
        return real_commit(self)

    before = row_counts(ctx.app)
    monkeypatch.setattr(Session, "commit", commit)
    response = _enrol(ctx, email=f"half.{uuid.uuid4().hex[:6]}@example.org")
    monkeypatch.undo()
    assert failed, "the request never committed the main database"
    if isinstance(failure, OperationalError):
        assert_problem(response, 503, "service-unavailable")
    else:
        # an unexpected failure is a 500, but still a problem document, never a traceback
        assert response.status_code == 500
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"] == "/api/v1/problems/internal-error"
    assert "Traceback" not in response.get_data(as_text=True)
    assert "simulated" not in response.get_data(as_text=True)
    after = row_counts(ctx.app)
    assert after == before, (before, after)
    assert after["vault_records"] == before["vault_records"]
    assert _enrol(ctx).status_code == 201  # and the service goes on
