"""The permission matrix, endpoint by endpoint: who may call each API endpoint and open each
back-office page, checked by real requests with each role's own credentials.

``MATRIX`` below is the one definition: ``"METHOD /rule"`` → the roles let through. Every
rule of the app under ``/api/v1`` and ``/backoffice`` (static files aside) must be in it, and
``docs/ROLES.md`` must say the same. A role is *refused* when the answer is 401, a 403 for its
role (``forbidden-role``, ``staff-required`` in the API; the back office's 403 page) or the
back office's redirect to its login page; anything else (200, 404 for the made-up id, 422 for
the empty body, ...) means the request got past the role checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from argon2 import PasswordHasher
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.support.fixtures_server import ADMIN, MANAGER, _add_staff, app_config, seed
from tests.test_backoffice import TOKEN

ROLES = ("anonymous", "kiosk", "kiosk+staff", "till", "cashier", "desk", "manager", "admin")
DOC = Path(__file__).resolve().parents[1] / "docs" / "ROLES.md"
COOKIE = "loyalty_backoffice"

EVERYONE = frozenset(ROLES)
NOBODY_ANONYMOUS = EVERYONE - {"anonymous"}
KIOSK = frozenset({"kiosk", "kiosk+staff"})
TILL = frozenset({"till"})
DESK = frozenset({"desk", "manager", "admin"})  # server.staff.models.CARD_ROLES
MANAGERS = frozenset({"manager", "admin"})
ADMINS = frozenset({"admin"})

MATRIX: dict[str, frozenset[str]] = {
    # --- API: public documents
    "GET /api/v1/openapi.json": EVERYONE,
    "GET /api/v1/problems/<slug>": EVERYONE,
    "GET /api/v1/consent-texts": EVERYONE,
    # --- API: devices
    "POST /api/v1/enrolments": KIOSK,
    "POST /api/v1/staff/kiosk-sessions": KIOSK,
    "POST /api/v1/devices/heartbeat": KIOSK | TILL,
    "POST /api/v1/taps": TILL,
    "POST /api/v1/taps/batch": TILL,
    "POST /api/v1/purchases": TILL,
    "POST /api/v1/refunds": TILL,
    "POST /api/v1/redemptions": TILL,
    "PUT /api/v1/anonymous-sales": TILL,
    "GET /api/v1/programme": NOBODY_ANONYMOUS,
    "PUT /api/v1/programme": MANAGERS,
    # --- API: cards (a kiosk alone: the cards of the customers it has just enrolled)
    "POST /api/v1/customers/<customer_id>/cards": KIOSK | DESK,
    "POST /api/v1/cards/<card_id>/activation": KIOSK | DESK,
    "POST /api/v1/cards/<card_id>/void": KIOSK | DESK,
    "POST /api/v1/cards/<card_id>/block": DESK,
    "POST /api/v1/cards/<card_id>/unblock": DESK,
    # --- API: finding customers (a kiosk only with a desk member's staff session)
    "POST /api/v1/cards/lookup": DESK | {"kiosk+staff"},
    "POST /api/v1/customers/lookup": DESK | {"kiosk+staff"},
    "POST /api/v1/customers/search": DESK,
    # --- API: personal data, consents, points
    "GET /api/v1/customers/<customer_id>/personal-data": DESK,
    "PATCH /api/v1/customers/<customer_id>/personal-data": DESK,
    "GET /api/v1/customers/<customer_id>/consents": DESK,
    "POST /api/v1/customers/<customer_id>/consents": DESK,
    "GET /api/v1/customers/<customer_id>/export": DESK,
    "POST /api/v1/customers/<customer_id>/erasure": MANAGERS,
    "GET /api/v1/customers/<customer_id>/points": DESK,
    "POST /api/v1/customers/<customer_id>/points": MANAGERS,
    "GET /api/v1/privacy/retention": MANAGERS,
    "GET /api/v1/audit": ADMINS,
    "GET /api/v1/audit/verify": ADMINS,
    # --- API: the SMS gateway (its shared secret, no role's credential)
    "POST /api/v1/sms/inbound": frozenset(),
    # --- API: tickets
    "GET /api/v1/customers/<customer_id>/tickets": DESK,
    "POST /api/v1/customers/<customer_id>/tickets": DESK,
    "GET /api/v1/tickets/<int:ticket_id>": DESK,
    "PATCH /api/v1/tickets/<int:ticket_id>": DESK,
    "POST /api/v1/tickets/<int:ticket_id>/notes": DESK,
    # --- API: account customers (payments at the till or by a manager)
    "POST /api/v1/accounts/<customer_id>/payments": TILL | MANAGERS,
    "GET /api/v1/accounts/<customer_id>": DESK,
    # --- back office: session
    "GET /backoffice/login": EVERYONE,
    "POST /backoffice/login": EVERYONE,
    "POST /backoffice/logout": EVERYONE,
    "POST /backoffice/language": EVERYONE,
    # --- back office: customers
    "GET /backoffice/": DESK,
    "POST /backoffice/search": DESK,
    "GET /backoffice/customers/<customer_id>": DESK,
    "POST /backoffice/customers/<customer_id>/personal-data": DESK,
    "POST /backoffice/customers/<customer_id>/consents": DESK,
    "POST /backoffice/customers/<customer_id>/export.json": DESK,
    "POST /backoffice/customers/<customer_id>/export.html": DESK,
    "POST /backoffice/customers/<customer_id>/erasure": MANAGERS,
    "POST /backoffice/customers/<customer_id>/cards/reissue": DESK,
    "POST /backoffice/customers/<customer_id>/cards/block": DESK,
    "POST /backoffice/customers/<customer_id>/cards/unblock": DESK,
    "GET /backoffice/customers/<customer_id>/cards/<card_id>/print": DESK,
    "GET /backoffice/retention": MANAGERS,
    "GET /backoffice/audit": ADMINS,
    # --- back office: campaigns
    "GET /backoffice/campaigns": MANAGERS,
    "GET /backoffice/campaigns/new": MANAGERS,
    "POST /backoffice/campaigns/new": MANAGERS,
    "GET /backoffice/campaigns/<int:campaign_id>": MANAGERS,
    "GET /backoffice/campaigns/<int:campaign_id>/send": MANAGERS,
    "POST /backoffice/campaigns/<int:campaign_id>/send": MANAGERS,
    "POST /backoffice/campaigns/<int:campaign_id>/active": MANAGERS,
    "GET /backoffice/campaigns/<int:campaign_id>/log": MANAGERS,
    "GET /backoffice/campaigns/stuck": MANAGERS,
    "POST /backoffice/campaigns/stuck": MANAGERS,
    # --- back office: tickets
    "GET /backoffice/tickets": DESK,
    "GET /backoffice/customers/<customer_id>/tickets/new": DESK,
    "POST /backoffice/customers/<customer_id>/tickets/new": DESK,
    "GET /backoffice/tickets/<int:ticket_id>": DESK,
    "POST /backoffice/tickets/<int:ticket_id>/assignee": DESK,
    "POST /backoffice/tickets/<int:ticket_id>/due": DESK,
    "POST /backoffice/tickets/<int:ticket_id>/notes": DESK,
    "POST /backoffice/tickets/<int:ticket_id>/status": DESK,
    # --- back office: value and segments (managers and admins)
    "GET /backoffice/value": MANAGERS,
    "POST /backoffice/value/refresh": MANAGERS,
    "GET /backoffice/segments": MANAGERS,
    "GET /backoffice/segments/new": MANAGERS,
    "POST /backoffice/segments/new": MANAGERS,
    "GET /backoffice/segments/<int:segment_id>": MANAGERS,
    "POST /backoffice/segments/<int:segment_id>": MANAGERS,
    "POST /backoffice/segments/<int:segment_id>/delete": MANAGERS,
    "POST /backoffice/segments/<int:segment_id>/export.csv": MANAGERS,
    # --- back office: accounts and statements
    "POST /backoffice/customers/<customer_id>/account": MANAGERS,
    "POST /backoffice/customers/<customer_id>/account/close": MANAGERS,
    "POST /backoffice/customers/<customer_id>/account/payments": MANAGERS,
    "GET /backoffice/customers/<customer_id>/statements/<int:statement_id>.pdf": DESK,
    "GET /backoffice/statements/stuck": MANAGERS,
    "POST /backoffice/statements/stuck": MANAGERS,
    # --- back office: administration (stores, devices, staff for admins; the programme)
    "GET /backoffice/admin/devices": ADMINS,
    "POST /backoffice/admin/devices": ADMINS,
    "GET /backoffice/admin/devices/<int:device_id>/revoke": ADMINS,
    "POST /backoffice/admin/devices/<int:device_id>/revoke": ADMINS,
    "GET /backoffice/admin/programme": MANAGERS,
    "POST /backoffice/admin/programme": MANAGERS,
    "GET /backoffice/admin/programme/versions/<int:version>": MANAGERS,
    "GET /backoffice/admin/staff": ADMINS,
    "POST /backoffice/admin/staff": ADMINS,
    "GET /backoffice/admin/staff/<int:staff_id>": ADMINS,
    "POST /backoffice/admin/staff/<int:staff_id>/<action>": ADMINS,
    "GET /backoffice/admin/stores": ADMINS,
    "POST /backoffice/admin/stores": ADMINS,
    "GET /backoffice/admin/stores/<int:store_id>": ADMINS,
    "POST /backoffice/admin/stores/<int:store_id>": ADMINS,
    # --- back office: reports (figures of the chain, no personal data)
    "GET /backoffice/reports": MANAGERS,
    "GET /backoffice/reports/best-sellers": MANAGERS,
    "GET /backoffice/reports/visits": MANAGERS,
    "GET /backoffice/reports/habits": MANAGERS,
    "GET /backoffice/reports/sellers": MANAGERS,
}

# values for the rules' variables: well-formed, but naming nothing that exists
SAMPLE = {"customer_id": "C-0000-0000", "card_id": "0000000000000000", "slug": "not-found"}
# bodies that pass validation where a service, not the decorator, checks who asks
BODIES = {
    "POST /api/v1/cards/lookup": {"uid": "04A1B2C3D4E5F6"},
    "POST /api/v1/customers/lookup": {"customer_id": "C-0000-0000"},
}
# the API's 403 problems that say "not you" (others, such as step-up-required, come after)
ROLE_PROBLEMS = {"forbidden-role", "staff-required"}
VARIABLE = re.compile(r"<(?:([a-z]+):)?([a-z_]+)>")
# a kiosk staff session for desk1, opened with this PIN
PIN = "246810"


def rules(app) -> dict[str, object]:
    """``"METHOD /rule"`` → rule, for every API endpoint and back-office page."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static") or not rule.rule.startswith(
                ("/api/v1/", "/backoffice/")):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found[f"{method} {rule.rule}"] = rule
    return found


def path_of(rule: str) -> str:
    return VARIABLE.sub(lambda m: "1" if m[1] == "int" else SAMPLE.get(m[2], "x1"), rule)


# --------------------------------------------------------------------------- the callers


@dataclass
class Callers:
    """How each role calls: API headers, and a back-office session cookie with its token."""

    app: object
    headers: dict[str, dict] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, key: str, role: str):
        method, rule = key.split(" ", 1)
        path = path_of(rule)
        client = self.app.test_client()
        if rule.startswith("/backoffice/"):
            # a device's key opens no back-office session: it comes as a browser would
            who = role if role in self.cookies else "anonymous"
            client.set_cookie(COOKIE, self.cookies[who], path="/backoffice")
            if method == "GET":
                return client.get(path, headers=self.headers[role])
            data = {"csrf_token": self.tokens[who]}
            if rule == "/backoffice/login":
                data.update(username=f"probe-{role}", password="not-a-password")
            return client.open(path, method=method, data=data, headers=self.headers[role])
        if method == "GET":
            return client.get(path, headers=self.headers[role])
        return client.open(path, method=method, json=BODIES.get(key, {}),
                           headers=self.headers[role])


def refused(key: str, response) -> bool:
    """Whether the answer is a refusal of the caller (not of what it sent)."""
    if key.split(" ", 1)[1].startswith("/backoffice/"):
        if response.status_code == 403:
            return True
        location = urlsplit(response.headers.get("Location", "")).path
        return response.status_code == 302 and location == "/backoffice/login"
    if response.status_code == 401:
        return True
    if response.status_code == 403:
        return response.get_json(force=True)["type"].rsplit("/", 1)[-1] in ROLE_PROBLEMS
    return False


def make_callers(app, creds) -> Callers:
    """Credentials for every role on a seeded app (manager and admin added here)."""
    cheap = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    for username, role in ((MANAGER, "manager"), (ADMIN, "admin")):
        if username not in creds.passwords:
            _add_staff(app, creds, username, role)
    from server.staff.models import Staff

    # argon2 reads its cost from each hash: cheap hashes keep 250 checks fast, same code path
    with Session(app.extensions["loyalty.db"].main) as s:
        for username, password in creds.passwords.items():
            s.execute(update(Staff).where(Staff.username == username)
                      .values(password_hash=cheap.hash(password)))
        s.commit()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["staff", "pin", "desk1", "--pin", PIN]).exit_code == 0
    opened = app.test_client().post("/api/v1/staff/kiosk-sessions", headers=creds.h("kiosk"),
                                    json={"username": "desk1", "pin": PIN})
    assert opened.status_code == 201, opened.get_json()

    callers = Callers(app)
    callers.headers = {
        "anonymous": {}, "kiosk": creds.h("kiosk"), "till": creds.h("till"),
        "kiosk+staff": {**creds.h("kiosk"),
                        "X-Staff-Authorization": f"Session {opened.get_json()['token']}"},
        **{role: creds.staff_auth(user) for role, user in (
            ("cashier", "cashier1"), ("desk", "desk1"), ("manager", MANAGER),
            ("admin", ADMIN))},
    }
    for role, user in (("anonymous", None), ("cashier", "cashier1"), ("desk", "desk1"),
                       ("manager", MANAGER), ("admin", ADMIN)):
        client = app.test_client()
        page = client.get("/backoffice/login")
        token = TOKEN.search(page.get_data(as_text=True))[1]
        if user:
            r = client.post("/backoffice/login", data={
                "csrf_token": token, "username": user, "password": creds.passwords[user]})
            assert r.status_code == 303, (user, r.status_code)
            # a login starts a new session, so a new token: the logout form has it
            page = client.get("/backoffice/retention")
            token = TOKEN.search(page.get_data(as_text=True))[1]
        callers.cookies[role] = client.get_cookie(COOKIE, path="/backoffice").value
        callers.tokens[role] = token
    return callers


def check(callers: Callers, key: str, roles=ROLES) -> list[str]:
    """What differs from the matrix for ``key``: one line per role."""
    wrong = []
    for role in roles:
        response = callers.call(key, role)
        assert response.status_code < 500, (key, role, response.get_data(as_text=True)[:400])
        allowed = not refused(key, response)
        if allowed != (role in MATRIX[key]):
            said = response.headers.get("Location", "")
            if response.mimetype == "application/problem+json":
                said = response.get_json()["type"]
            wrong.append(f"{key} as {role}: expected {'refused' if allowed else 'let through'}"
                         f", got {response.status_code} {said}")
    return wrong


@pytest.fixture(scope="module")
def callers(tmp_path_factory):
    """One app (SQLite) and every role's credentials, shared by the module's requests."""
    from server import create_app
    from server.migrate import upgrade

    app = create_app(app_config(tmp_path_factory.mktemp("permissions") / "instance",
                                LOGIN_LOCKOUT_ADDRESS=10_000, KIOSK_STAFF_SESSION=3600))
    try:
        upgrade(app)
        yield make_callers(app, seed(app))
    finally:
        app.extensions["loyalty.db"].dispose()


# --------------------------------------------------------------------------- tests


def test_every_endpoint_is_in_the_matrix(callers):
    present = rules(callers.app)
    missing = sorted(set(present) - set(MATRIX))
    assert not missing, (
        "endpoints with no line in MATRIX (tests/test_permissions.py) and docs/ROLES.md; "
        "add who may call them:\n" + "\n".join(
            f"  {key}  (its decorator lets: "
            f"{getattr(callers.app.view_functions[present[key].endpoint], 'required_roles', '-')})"
            for key in missing))
    gone = sorted(set(MATRIX) - set(present))
    assert not gone, "MATRIX names endpoints that no longer exist:\n  " + "\n  ".join(gone)


@pytest.mark.parametrize("key", sorted(MATRIX))
def test_each_role_gets_what_the_matrix_says(callers, key):
    if key not in rules(callers.app):
        pytest.fail(f"{key} is in MATRIX but not in the app")
    wrong = check(callers, key)
    assert not wrong, "\n".join(wrong)


def test_roles_doc_says_what_the_matrix_says():
    """docs/ROLES.md's table: one row per MATRIX key, a tick for each role let through."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(ROLES) + 2 and cells[0].startswith("`"):
            key = cells[0].strip("`")
            rows[key] = frozenset(r for r, c in zip(ROLES, cells[1:-1], strict=True)
                                  if c == "✓")
            assert cells[-1], f"{key}: say why in docs/ROLES.md"
    assert sorted(rows) == sorted(MATRIX), (
        f"docs/ROLES.md lacks {sorted(set(MATRIX) - set(rows))}, "
        f"has extra {sorted(set(rows) - set(MATRIX))}")
    differ = {k: (sorted(rows[k]), sorted(MATRIX[k])) for k in MATRIX if rows[k] != MATRIX[k]}
    assert not differ, f"docs/ROLES.md (doc, test) differ: {differ}"


# a few endpoints of each kind again on PostgreSQL: the same code, another database
PG_SAMPLE = ("POST /api/v1/customers/lookup", "POST /api/v1/cards/<card_id>/block",
             "GET /api/v1/audit", "PUT /api/v1/programme", "POST /api/v1/taps",
             "GET /backoffice/", "POST /backoffice/customers/<customer_id>/erasure",
             "GET /backoffice/audit")


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_sample_on_postgresql(app, creds):
    callers = make_callers(app, creds)
    wrong = [line for key in PG_SAMPLE if key in MATRIX for line in check(callers, key)]
    assert not wrong, "\n".join(wrong)
