"""The strict CSPs in a real browser: Debian's Chromium loads every page without a violation.

The back office (logged in as the demo admin: a customer's file, administration, reports,
segments, the printable card), every step of the kiosk's customer flow, and the till page and
customer display while a card is tapped. Chromium reports each blocked script, style or image
as a ``securitypolicyviolation`` event and on the console; either fails the test.
"""

from __future__ import annotations

import uuid

import requests

from tests.support.fixtures_devices import serve, wait_until
from tests.test_e2e_browser import _walk_to_each_step, kiosk  # noqa: F401 - a fixture

WATCH = """() => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) =>
    window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}`));
}"""


def strict_page(browser):
    """A new page that records CSP violations (events and console) in ``page.violations``."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, has_touch=True)
    context.add_init_script(f"({WATCH})()")
    page = context.new_page()
    page.violations = []
    page.on("console", lambda m: page.violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    return page


def violations(page) -> list[str]:
    return page.violations + page.evaluate("window.__violations || []")


def test_the_back_office_pages_load_without_a_csp_violation(browser, live_server):
    base, creds = live_server.url, live_server.creds
    kiosk_h = {"Authorization": f"Bearer {creds['kiosk_key']}"}
    r = requests.post(f"{base}/api/v1/enrolments", headers=kiosk_h, timeout=10, json={
        "event_id": str(uuid.uuid4()), "first_name": "Csp", "last_name": "Check",
        "email": f"csp.{uuid.uuid4().hex[:8]}@example.org", "language": "en",
        "consents": {"terms": True}, "consent_version": "2026-11"})
    assert r.status_code == 201, r.text
    customer_id = r.json()["customer_id"]
    r = requests.post(f"{base}/api/v1/customers/{customer_id}/cards", headers=kiosk_h,
                      timeout=10, json={"event_id": str(uuid.uuid4()), "kind": "qr"})
    card_id = r.json()["card_id"]

    page = strict_page(browser)
    try:
        page.goto(f"{base}/backoffice/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", creds["admin_password"])
        with page.expect_navigation():
            page.locator("section.login button.primary").click()
        assert "/login" not in page.url, page.content()[:500]
        for path in ("/", f"/customers/{customer_id}",
                     f"/customers/{customer_id}/cards/{card_id}/print", "/tickets",
                     "/admin/stores", "/admin/devices", "/admin/staff", "/admin/programme",
                     "/reports", "/value", "/segments", "/segments/new", "/campaigns",
                     "/campaigns/new", "/retention", "/audit"):
            response = page.goto(f"{base}/backoffice{path}")
            assert response.status == 200, (path, response.status)
            page.wait_for_load_state("load")
            assert not violations(page), (path, violations(page))
        # a search: the form is posted and the customer's file opens
        page.goto(f"{base}/backoffice/")
        page.locator("#search-form input[name=query]").fill(customer_id)
        with page.expect_navigation():
            page.locator("#search-form button.primary").click()
        assert not violations(page), violations(page)
    finally:
        page.context.close()


def test_every_kiosk_step_loads_without_a_csp_violation(kiosk, browser):  # noqa: F811
    _, url = kiosk
    page = strict_page(browser)
    try:
        for name in _walk_to_each_step(page, url):
            page.wait_for_load_state("load")
            if name == "details":
                page.locator("#first_name").click()  # the on-screen keyboard's script
            assert not violations(page), (name, violations(page))
        page.goto(f"{url}/staff/")
        assert not violations(page), ("staff", violations(page))
    finally:
        page.context.close()


def test_the_till_page_and_display_show_a_tap_without_a_csp_violation(make_agent, browser,
                                                                        live_server):
    app = make_agent("sim:")
    with serve(app) as url:
        page, display = strict_page(browser), strict_page(browser)
        try:
            page.goto(url + "/")
            display.goto(url + "/display")
            before = requests.get(url + "/last", timeout=5).json()["seq"]
            requests.post(url + "/simulate", json={"qr": "NOT-A-CARD"}, timeout=5)
            wait_until(lambda: requests.get(url + "/last", timeout=5).json()["seq"] > before,
                       10, "the simulated tap")
            page.wait_for_timeout(500)  # the pages update themselves from /events
            assert not violations(page), violations(page)
            assert not violations(display), violations(display)
        finally:
            page.context.close()
            display.context.close()
