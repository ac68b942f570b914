"""The kiosk enrol page in Chromium, as a customer uses it with a finger."""

import pytest

from tests.support.escpos_capture import CapturePrinter
from tests.support.escpos_parse import decode_qr_codes
from tests.support.fixtures_devices import serve

pytestmark = pytest.mark.browser


@pytest.fixture
def kiosk_url(make_kiosk):
    with CapturePrinter() as printer:
        app = make_kiosk(printer.uri, IDLE_TIMEOUT=60)
        with serve(app) as url:
            yield url, printer


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    page = context.new_page()
    errors = []
    # a form sent back with its errors answers 422 on purpose; Chromium logs that as a failure
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and "status of 422" not in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"the page logged errors: {errors}"


def test_enrol_in_lithuanian_and_leave_with_a_printed_card(kiosk_url, page, screenshots,
                                                           live_server):
    url, printer = kiosk_url
    page.goto(f"{url}/?lang=fr")
    assert page.locator("h1").inner_text() == "Obtenez votre carte de fidélité"
    page.screenshot(path=screenshots / "kiosk-enrol-fr-800x480.png", full_page=True)

    with page.expect_navigation():
        page.get_by_role("link", name="Lietuvių").tap()
    assert page.locator("h1").inner_text() == "Gaukite lojalumo kortelę"
    assert page.locator("html").get_attribute("lang") == "lt"

    # a half-filled form: clear errors, nothing lost
    page.get_by_label("Vardas").fill("Jūratė")
    with page.expect_navigation():
        page.get_by_role("button", name="Gauti kortelę").tap()
    assert page.get_by_label("Vardas").input_value() == "Jūratė"
    alerts = page.get_by_role("alert").all_inner_texts()
    assert "Įveskite savo pavardę." in alerts
    assert "Norėdami gauti kortelę, sutikite su programos sąlygomis." in alerts
    page.screenshot(path=screenshots / "kiosk-enrol-lt-errors-800x480.png", full_page=True)

    page.get_by_label("Pavardė").fill("Kazlauskienė")
    page.get_by_label("El. paštas").fill("jurate@example.lt")
    consents = page.locator("input[type=checkbox]")
    assert consents.count() == 4
    assert not any(consents.nth(i).is_checked() for i in range(4))  # nothing pre-ticked
    page.get_by_text("Sutinku su lojalumo programos sąlygomis.").tap()
    assert consents.nth(0).is_checked()
    with page.expect_navigation(url=f"{url}/done"):
        page.get_by_role("button", name="Gauti kortelę").tap()
    assert page.locator("#welcome").inner_text() == "Sveiki, Jūratė!"
    assert page.locator("#outcome").get_attribute("data-outcome") == "printed"
    code = page.locator("#customer-code").inner_text()
    page.screenshot(path=screenshots / "kiosk-done-lt-800x480.png", full_page=True)

    (job,) = printer.wait_for_jobs(1)
    (qr,) = decode_qr_codes(job)
    import uuid

    import requests

    r = requests.post(f"{live_server.url}/api/v1/taps", timeout=5, json={
        "event_id": str(uuid.uuid4()), "qr": qr},
        headers={"Authorization": f"Bearer {live_server.creds['till_key']}"})
    assert r.json()["customer_id"] == code

    with page.expect_navigation(url=f"{url}/"):
        page.get_by_role("button", name="Baigti").tap()
    assert page.get_by_label("Vardas").input_value() == ""  # nothing of the customer left


@pytest.mark.parametrize("size", [(800, 480), (1280, 800), (1920, 1080)])
def test_touch_targets_are_big_enough(kiosk_url, browser, size, screenshots):
    url, _ = kiosk_url
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    page.goto(f"{url}/?lang=en")
    # a checkbox is reached through its label, which is the touch target
    targets = page.locator("input:not([type=hidden]):not([type=checkbox]), button, a.lang, "
                           "label.check")
    assert targets.count() >= 12
    for i in range(targets.count()):
        box = targets.nth(i).bounding_box()
        assert box["height"] >= 48, (targets.nth(i).evaluate("e => e.outerHTML"), box)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size[0], f"horizontal scrolling at {size}: {width}px"
    page.screenshot(path=screenshots / f"kiosk-enrol-en-{size[0]}x{size[1]}.png")
    context.close()
