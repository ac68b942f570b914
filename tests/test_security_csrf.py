"""CSRF: every state-changing route of the back office and the kiosk refuses a form without its
token, the list taken from the apps' URL maps so that a new form cannot be forgotten.

Each view is wrapped to record whether it ran: a refused request must not reach it (Flask-WTF
checks the token before any view). The routes exempt from CSRF are the API (``/api/v1``,
authenticated by a header on every request: the back office's cookie opens nothing there,
checked too) and the unsubscribe link (its signed token is the authority), and nothing else.
The till agent has no cookie and no form: its ``POST /purchases`` takes JSON only, which a
page of another site cannot send without a CORS preflight the agent never grants.
"""

from __future__ import annotations

import pytest
from werkzeug.routing import IntegerConverter

from tests.test_backoffice import BO, office

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# the only state-changing routes outside the API that take no CSRF token, and why
EXEMPT = {
    "/unsubscribe/<token>": "a mail client's one-click unsubscribe (RFC 8058) carries no "
                            "cookie; the signed token in the URL is the authority",
}
SAMPLE = {"int": "1", "default": "C-AAAA-AAAA"}


def state_changing_rules(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & STATE_CHANGING):
            yield method, rule


def path_of(rule) -> str:
    values = {}
    for name, converter in rule._converters.items():  # noqa: SLF001 - werkzeug's own map
        values[name] = SAMPLE["int"] if isinstance(converter, IntegerConverter) else (
            "block" if name == "action" else SAMPLE["default"])
    return rule.build(values, append_unknown=False)[1]


def record_calls(app) -> set[str]:
    """Wrap every view so the endpoints that ran are recorded in the returned set."""
    ran: set[str] = set()
    for endpoint, view in list(app.view_functions.items()):
        def wrapper(*args, _endpoint=endpoint, _view=view, **kwargs):
            ran.add(_endpoint)
            return _view(*args, **kwargs)

        app.view_functions[endpoint] = wrapper
    return ran


def test_every_back_office_form_refuses_a_post_without_its_token(app, creds, admin):
    browser = office(app, creds, admin)  # logged in: only the token is missing
    ran = record_calls(app)
    checked = []

    for method, rule in state_changing_rules(app):
        if rule.rule.startswith("/api/v1") or rule.rule in EXEMPT:
            continue
        path = path_of(rule)
        response = browser.client.open(path, method=method, data={"x": "1"})
        assert response.status_code == 400, (method, rule.rule, response.status_code)
        assert rule.endpoint not in ran, f"{method} {rule.rule} ran without a CSRF token"
        # a token from another session is refused too
        response = browser.client.open(path, method=method, data={"csrf_token": "forged"})
        assert response.status_code == 400 and rule.endpoint not in ran, rule.rule
        checked.append(rule.rule)

    assert len(checked) >= 30 and BO + "/login" in checked, checked
    # and with the token, the same kind of request does reach its view
    browser.get(BO + "/")
    assert browser.post(BO + "/language", {"lang": "en"}).status_code in (302, 303)
    assert "backoffice.language" in ran


def test_the_exemptions_are_the_api_and_the_listed_ones(app):
    from server.backoffice.security import csrf

    exempt_blueprints = {bp.name for bp in csrf._exempt_blueprints}  # noqa: SLF001
    assert not csrf._exempt_views  # noqa: SLF001 - no single view slipped out
    for method, rule in state_changing_rules(app):
        blueprint = rule.endpoint.rpartition(".")[0]
        if blueprint in exempt_blueprints or rule.endpoint.split(".")[0] in exempt_blueprints:
            assert rule.rule.startswith("/api/v1/") or rule.rule in EXEMPT, (
                f"{method} {rule.rule} skips CSRF: add its token, or a reason to EXEMPT")


def test_the_api_opens_nothing_to_the_back_office_cookie(app, creds, admin):
    """Exempt from CSRF because a cookie alone is never a credential there."""
    browser = office(app, creds, admin)

    for method, rule in state_changing_rules(app):
        if not rule.rule.startswith("/api/v1"):
            continue
        response = browser.client.open(path_of(rule), method=method, json={})
        assert response.status_code in (401, 403), (method, rule.rule, response.status_code)


def test_every_kiosk_form_refuses_a_post_without_its_token(make_kiosk):
    from kiosk_app.memory_session import COOKIE

    app = make_kiosk("file:/dev/null")
    client = app.test_client()
    client.get("/")  # a session exists: only the token is missing
    assert client.get_cookie(COOKIE) is not None
    ran = record_calls(app)
    checked = []

    for method, rule in state_changing_rules(app):
        response = client.open(path_of(rule), method=method, data={"x": "1"})
        refused = response.status_code == 400 or (
            response.status_code == 302 and response.headers["Location"].endswith("/"))
        assert refused, (method, rule.rule, response.status_code)
        assert rule.endpoint not in ran, f"{method} {rule.rule} ran without a CSRF token"
        checked.append(rule.rule)

    assert {"/details", "/consents", "/card"} <= set(checked), checked


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data"])
def test_the_agent_takes_a_purchase_only_as_json(make_agent, content_type):
    """What a page of another site can send without a preflight is refused."""
    client = make_agent("sim:").test_client()
    body = '{"receipt": "R1", "total": "1.00", "currency": "EUR", "lines": []}'
    response = client.post("/purchases", data=body, content_type=content_type,
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 415
    assert "Access-Control-Allow-Origin" not in response.headers
