"""Security headers on every page of the back office, the kiosk and the till agent.

Each app is walked like a visitor would: from its first page, every same-site link is followed
(the back office as an administrator, with a customer, a card, a purchase and a ticket to show),
and every GET route without a parameter is asked too. Every answer must carry a CSP without
``'unsafe-inline'`` or ``'unsafe-eval'`` for scripts and with ``frame-ancestors 'none'``,
``X-Content-Type-Options: nosniff`` and a ``Referrer-Policy``; every HTML page must hold no
inline script and no ``on...=`` handler (the CSP would block them). HSTS and the proxy's
headers are settings of the service (docs/DEPLOY.md). A Chromium check that the pages load
without a CSP violation is in tests/test_security_browser.py.
"""

from __future__ import annotations

import uuid
from collections import deque
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from tests.test_backoffice import BO, office

REFERRER_POLICIES = {"same-origin", "no-referrer", "strict-origin-when-cross-origin",
                     "strict-origin"}
# links not to follow while walking: they change something or stream forever
SKIP = ("/logout", "/events")


def csp_directives(value: str) -> dict[str, list[str]]:
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def check_headers(response, where: str) -> None:
    headers = response.headers
    csp = headers.get("Content-Security-Policy")
    assert csp, f"{where}: no Content-Security-Policy"
    directives = csp_directives(csp)
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts is not None, f"{where}: the CSP does not limit scripts: {csp}"
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts, where
    assert "*" not in scripts and "data:" not in scripts, where
    assert directives.get("frame-ancestors") == ["'none'"], f"{where}: {csp}"
    assert "object-src" in directives or directives.get("default-src") == ["'self'"], where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Referrer-Policy") in REFERRER_POLICIES, where


class Page(HTMLParser):
    """The links of a page, and whatever in it a strict CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.inline: list[str] = []
        self._script_is_code = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").lower().startswith(
                    "javascript:"):
                self.inline.append(f"<{tag} {name}=javascript:...>")
            if name == "style":
                self.inline.append(f"<{tag} style=...>")
        if tag == "script" and not attrs.get("src"):
            # a data block (type=application/json) is never run: allowed
            self._script_is_code = attrs.get("type") not in ("application/json",
                                                             "application/ld+json")
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])

    def handle_data(self, data):
        if self._script_is_code and data.strip():
            self.inline.append(f"<script>{data.strip()[:60]}</script>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._script_is_code = False


def walk(get, starts: list[str], prefix: str = "/", limit: int = 400) -> dict[str, int]:
    """GET ``starts`` and every same-site link under ``prefix`` they lead to; check each.

    Returns the status of each path visited.
    """
    seen: dict[str, int] = {}
    todo = deque(starts)
    while todo and len(seen) < limit:
        path = todo.popleft()
        if path in seen:
            continue
        response = get(path)
        seen[path] = response.status_code
        check_headers(response, path)
        if response.mimetype != "text/html":
            continue
        page = Page()
        page.feed(response.get_data(as_text=True))
        assert not page.inline, f"{path}: inline code a strict CSP blocks: {page.inline}"
        for href in page.links:
            target = urlsplit(urljoin("http://app" + path, href))
            if target.netloc != "app" or not target.path.startswith(prefix):
                continue
            link = target.path + (f"?{target.query}" if target.query else "")
            if not any(s in target.path for s in SKIP) and link not in seen:
                todo.append(link)
    return seen


def plain_get_rules(app, prefix: str = "/") -> list[str]:
    """Every GET route without a URL parameter under ``prefix`` (static files aside)."""
    return sorted(r.rule for r in app.url_map.iter_rules()
                  if "GET" in r.methods and not r.arguments and r.rule.startswith(prefix)
                  and not r.endpoint.endswith("static") and not any(s in r.rule for s in SKIP))


# --------------------------------------------------------------------------- the service


@pytest.fixture
def busy_app(app, api, creds, admin):
    """The app with a customer, a card, a purchase and a ticket, and an admin's browser."""
    customer_id, card = api.customer_with_card()
    assert api.tap(url=card["url"]).status_code == 200
    r = api.purchase([api.line("SKU-1", 1, "10.00")], card=card["url"])
    assert r.status_code == 201, r.get_json()
    r = app.test_client().post(f"/api/v1/customers/{customer_id}/tickets",
                               headers=creds.staff_auth("desk1"),
                               json={"kind": "support", "subject": "Zip broken",
                                     "event_id": str(uuid.uuid4())})
    assert r.status_code in (201, 422), r.get_json()  # the ticket is extra; the rest matters
    return app, office(app, creds, admin), customer_id


def test_every_back_office_page_an_admin_reaches_has_the_headers(busy_app):
    app, browser, customer_id = busy_app

    seen = walk(browser.get, [BO + "/", f"{BO}/customers/{customer_id}",
                              *plain_get_rules(app, BO)], prefix=BO)

    assert f"{BO}/customers/{customer_id}" in seen
    pages = [p for p, status in seen.items() if status == 200]
    assert len(pages) >= 15, seen  # the walk went through the office, not just the login
    assert {BO + "/admin/stores", BO + "/campaigns", BO + "/tickets"} <= set(seen)


def test_the_login_page_errors_the_api_and_public_pages_have_the_headers(app, creds, api):
    client = app.test_client()
    _, card = api.customer_with_card()
    for path in (BO + "/login", BO + "/no-such-page", "/healthz", "/api/v1/openapi.json",
                 "/api/v1/no-such", urlsplit(card["url"]).path):
        check_headers(client.get(path), path)
    check_headers(client.post("/api/v1/taps", json={}), "POST /api/v1/taps (no key)")
    check_headers(api.tap(url=card["url"]), "POST /api/v1/taps")


def test_hsts_only_over_https_and_the_one_proxy_is_believed(tmp_path):
    """Behind one TLS proxy (PROXY_FIX=1): HSTS over HTTPS, the client's address counted."""
    from server import create_app
    from tests.support.fixtures_server import app_config

    app = create_app(app_config(tmp_path / "i", HSTS_MAX_AGE=31536000, PROXY_FIX=1))

    @app.get("/test-client-address")
    def _address():
        from flask import request

        return {"addr": request.remote_addr, "secure": request.is_secure}

    client = app.test_client()
    plain = client.get("/test-client-address")
    assert "Strict-Transport-Security" not in plain.headers
    secure = client.get("/test-client-address", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.9"})
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert secure.get_json() == {"addr": "198.51.100.9", "secure": True}
    # two addresses forwarded: only the last one (set by our proxy) is believed
    spoofed = client.get("/test-client-address", headers={
        "X-Forwarded-For": "203.0.113.66, 198.51.100.9"})
    assert spoofed.get_json()["addr"] == "198.51.100.9"

    without = create_app(app_config(tmp_path / "j", HSTS_MAX_AGE=31536000))
    r = without.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in r.headers  # no proxy configured: not believed


# --------------------------------------------------------------------------- kiosk and till


def test_every_kiosk_page_has_the_headers(make_kiosk):
    app = make_kiosk("file:/dev/null")
    client = app.test_client()

    seen = walk(client.get, ["/", *plain_get_rules(app)])

    assert seen["/"] == 200 and len(seen) >= 3, seen
    check_headers(client.get("/no-such-page"), "kiosk 404")


def test_every_till_agent_page_has_the_headers(make_agent):
    app = make_agent("sim:")
    client = app.test_client()

    seen = walk(client.get, ["/", *plain_get_rules(app)])

    assert {"/", "/display", "/last", "/status"} <= set(seen), seen
    check_headers(client.get("/no-such-page"), "agent 404")
    events = client.get("/events", buffered=False)
    try:
        check_headers(events, "/events")
    finally:
        events.close()
