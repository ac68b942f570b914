"""The kiosk's customer steps in Chromium, driven with a finger on the on-screen keyboard.

The whole flow runs in each language at 800x480 (the Pi's 7" screen) and leaves a screenshot
of every step, kiosk-<lang>-<nn>-<step>.png, in test-artifacts/screens (in docs/screens with
LOYALTY_UPDATE_SCREENS=1). The layouts are measured at
800x480, 1280x800 and 1920x1080 (no overflow, 48 px targets, AA contrast), and the idle
overlay and reset are watched with a short IDLE_TIMEOUT.
"""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from device_drivers.forwarder import ServiceClient
from tests.support.escpos_capture import CapturePrinter
from tests.support.fixtures_devices import serve
from tests.support.kiosk_flow import add_staff
from tests.support.kiosk_screens import (
    CONTRAST,
    SIZES,
    TARGETS,
    check_keyboard,
    check_now,
    save,
)

pytestmark = pytest.mark.browser

# what each language's pages say (translated strings only; new ones are checked in English)
TEXTS = {
    "fr": {"button": "Obtenez votre carte de fidélité", "name": "Français",
           "last_name_error": "Veuillez saisir votre nom.", "get": "Obtenir ma carte",
           "down": "Le service de fidélité est injoignable"},
    "lt": {"button": "Gaukite lojalumo kortelę", "name": "Lietuvių",
           "last_name_error": "Įveskite savo pavardę.", "get": "Gauti kortelę",
           "down": None},
    "en": {"button": "Get your loyalty card", "name": "English",
           "last_name_error": "Please enter your last name.", "get": "Get my card",
           "down": "We cannot reach the loyalty service right now."},
}

# a writer that finds no card for 2 s: the "hold your card" screen is seen before it is written
WAITING_WRITER = "sim:fail=no-card,no-card,no-card,no-card"


@pytest.fixture
def kiosk(make_kiosk):
    """The kiosk app serving over HTTP, its printer capturing what it prints."""
    with CapturePrinter() as printer:
        app = make_kiosk(printer.uri, IDLE_TIMEOUT=120, WRITER=WAITING_WRITER,
                         STAFF_READER="sim:", HEARTBEAT_INTERVAL=0.0)
        with serve(app) as url:
            yield app, url


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    yield context
    context.close()


def watch(page) -> list[str]:
    errors: list[str] = []
    # a form sent back with its errors answers 422 (and 503: the service is down) on purpose;
    # Chromium logs those as failed loads
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not any(
        f"status of {s}" in m.text for s in (422, 503)) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def keyboard(page):
    return page.locator(".kb:not([hidden])")


def tap_keys(page, text: str) -> None:
    """Type ``text`` on the on-screen keyboard: a key is looked for in the panel shown, then in
    the accents or digits panel."""
    kb = keyboard(page)
    for ch in text:
        key = kb.locator(f'[data-key="{ch}"]')
        if not key.count():
            for panel in ("accents", "digits", "main"):
                switch = kb.locator(f'[data-fn="panel"][data-to="{panel}"]')
                if switch.count():
                    switch.tap()
                    if kb.locator(f'[data-key="{ch}"]').count():
                        break
        kb.locator(f'[data-key="{ch}"]').first.tap()


def field_clear_of_keyboard(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    top = keyboard(page).bounding_box()["y"]
    assert box["y"] >= 0 and box["y"] + box["height"] <= top, (selector, box, top)


def enrolled(live_server, customer_id: str):
    from server.customers.models import Customer, SurveyResponse

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        customer = s.get(Customer, customer_id)
        answers = s.scalar(select(SurveyResponse.answers)
                           .where(SurveyResponse.customer_id == customer_id))
        return customer, answers


@pytest.mark.parametrize("lang", ["fr", "lt", "en"])
def test_whole_flow_on_the_touch_screen(kiosk, context, live_server, lang):
    app, url = kiosk
    text = TEXTS[lang]
    page = context.new_page()
    page.set_default_timeout(15000)  # a loaded CI machine; speed is for bench/
    errors = watch(page)
    shot = iter(range(1, 100))

    def step(name: str) -> None:
        # each language's words at 800x480: no scrolling (the keyboard's own rules while it
        # is up), 48 px targets, AA contrast
        if keyboard(page).count():
            check_keyboard(page, f"{lang} {name}")
        else:
            check_now(page, f"{lang} {name}")
        save(page, f"kiosk-{lang}-{next(shot):02d}-{name}")

    # welcome: the language buttons switch the screen; the big button starts
    page.goto(f"{url}/?lang=en")
    with page.expect_navigation():
        page.get_by_role("link", name=text["name"]).tap()
    assert page.locator("html").get_attribute("lang") == lang
    assert page.locator("#begin").inner_text() == text["button"]
    step("welcome")
    with page.expect_navigation(url=f"{url}/language"):
        page.locator("#begin").tap()
    assert page.locator(f'button[value="{lang}"]').get_attribute("class") == "choice selected"
    step("language")
    with page.expect_navigation(url=f"{url}/details"):
        page.locator(f'button[value="{lang}"]').tap()

    # details: an error first, then the keyboard of each field
    with page.expect_navigation():
        page.locator("#next").tap()
    assert text["last_name_error"] in page.get_by_role("alert").all_inner_texts()
    assert page.locator("#first_name").evaluate("e => e === document.activeElement")
    step("details-errors")

    page.locator("#first_name").tap()
    assert keyboard(page).locator('[data-fn="shift"]').get_attribute("aria-pressed") == "true"
    tap_keys(page, "šarūnė")
    assert page.locator("#first_name").input_value() == "Šarūnė"  # capital first, by itself
    field_clear_of_keyboard(page, "#first_name")
    step("keyboard-name")
    keyboard(page).locator('[data-fn="next"]').tap()  # on to the last name
    assert page.locator("#last_name").evaluate("e => e === document.activeElement")
    page.keyboard.type("Kazlauskienė")  # a physical keyboard works as well
    assert page.locator("#last_name").input_value() == "Kazlauskienė"

    page.locator("#email").tap()
    tag = uuid.uuid4().int % 10000
    tap_keys(page, f"sarune{tag}")
    keyboard(page).locator('[data-fn="panel"][data-to="main"]').tap()  # back from the digits
    keyboard(page).locator('[data-fn="domain"][data-key="@gmail.com"]').tap()
    assert page.locator("#email").input_value() == f"sarune{tag}@gmail.com"
    field_clear_of_keyboard(page, "#email")
    step("keyboard-email")

    page.locator("#phone").tap()
    assert keyboard(page).locator("[data-key]").count() == 11  # 0-9 and +
    tap_keys(page, "+37061234567")
    keyboard(page).locator('[data-fn="back"]').tap()
    tap_keys(page, "8")
    assert page.locator("#phone").input_value() == "+37061234568"
    field_clear_of_keyboard(page, "#phone")
    step("keyboard-phone")
    keyboard(page).locator('[data-fn="next"]').tap()  # Done: the last field
    page.locator(".kb").wait_for(state="hidden", timeout=2000)
    with page.expect_navigation(url=f"{url}/consents"):
        page.locator("#next").tap()

    # consents: nothing ticked; the terms and one optional box
    boxes = page.locator("input[type=checkbox]")
    assert boxes.count() == 4 and not any(boxes.nth(i).is_checked() for i in range(4))
    page.locator('[data-consent-text="terms"]').tap()
    page.locator('[data-consent-text="marketing_email"]').tap()
    step("consents")
    with page.expect_navigation(url=f"{url}/survey/1"):
        page.locator("#next").tap()

    # the survey: big choice buttons
    page.locator('label.choice:has(input[value="shoes"])').tap()
    page.locator('label.choice:has(input[value="gifts"])').tap()
    step("survey")
    with page.expect_navigation(url=f"{url}/survey/2"):
        page.locator("#next").tap()
    page.locator('label.choice:has(input[value="furniture"])').tap()
    with page.expect_navigation(url=f"{url}/survey/3"):
        page.locator("#next").tap()
    with page.expect_navigation(url=f"{url}/card"):
        page.locator("#next").tap()

    # the card: choose both, a PIN on the PIN pad
    assert page.locator('input[name="choice"]').count() == 3
    page.locator('label.choice:has(input[value="both"])').tap()
    page.locator("#pin").tap()
    tap_keys(page, "2580")
    assert page.locator("#pin").input_value() == "2580"
    step("card-pin")
    keyboard(page).locator('[data-fn="next"]').tap()
    step("card")

    # the service is down: said plainly, nothing lost; then it is back and "Try again" works
    real = app.extensions["kiosk.client"]
    app.extensions["kiosk.client"] = ServiceClient("http://127.0.0.1:9", "lk_x", 1.0)
    with page.expect_navigation():
        page.locator("#next").tap()
    banner = page.locator("#error")
    assert banner.get_attribute("data-error") == "server-down"
    if text["down"]:
        assert text["down"] in banner.inner_text()
    assert page.locator('input[value="both"]').is_checked()
    assert page.locator("#pin").input_value() == "2580"
    step("server-down")
    app.extensions["kiosk.client"] = real
    with page.expect_navigation(url=f"{url}/issue/**"):
        page.locator("#next").tap()  # now labelled "Try again"

    # issuing: hold the card (the writer finds none for 2 s), then it is printed too
    page.wait_for_selector("[data-panel=nfc-waiting]:not([hidden])")
    assert page.locator('[data-part="nfc"]').get_attribute("class") == "current"
    step("issuing")
    page.wait_for_url(f"{url}/issue/done", timeout=10000)
    assert page.locator('[data-made="nfc"]').is_visible()
    assert page.locator('[data-made="qr"]').is_visible()
    assert page.locator("#welcome-bonus").is_visible()  # the welcome gift, in points
    assert "Šarūnė" in page.inner_text("#welcome")
    step("done")
    assert not errors, errors

    # the service has the customer, with the PIN and the survey
    (customer_id,) = [s["customer"]["id"] for s in app.session_interface.sessions.values()
                      if s.get("customer")]
    customer, answers = enrolled(live_server, customer_id)
    assert customer.language == lang and customer.pin_hash
    assert answers == {"_survey": "default-2026", "interests": "shoes,gifts",
                       "planned_purchase": "furniture"}

    # Finish: back to the start in the same language; then staff mode finds the customer
    with page.expect_navigation(url=f"{url}/"):
        page.locator("#finish").tap()
    assert page.locator("html").get_attribute("lang") == lang
    desk = add_staff(live_server, "desk")
    page.goto(f"{url}/staff/")
    page.wait_for_selector("#tap-box [data-panel=waiting]")
    save(page, f"kiosk-{lang}-staff-login")
    check_now(page, f"{lang} staff login")
    page.locator("#username").fill(desk)
    page.locator("#pin").fill("2468")
    with page.expect_navigation(url=f"{url}/staff/find"):
        page.locator("#login").tap()
    check_now(page, f"{lang} staff find")
    save(page, f"kiosk-{lang}-staff-find")
    page.locator("#code").fill(customer_id)
    with page.expect_navigation(url=f"{url}/staff/customer"):
        page.locator("#search").tap()
    assert page.locator("#cards tbody tr").count() == 2  # the NFC card and the printed one
    check_now(page, f"{lang} staff customer")
    save(page, f"kiosk-{lang}-staff-customer")
    assert not errors, errors


def _walk_to_each_step(page, url: str):
    """Yield (name, page) at every customer step, filling what is needed to go on."""
    page.goto(f"{url}/?lang=lt")
    yield "welcome"
    with page.expect_navigation():
        page.locator("#begin").click()
    yield "language"
    with page.expect_navigation():
        page.locator('button[value="lt"]').click()
    yield "details"
    page.locator("#first_name").fill("Jūratė")
    page.locator("#last_name").fill("Kazlauskienė-Petraitienė")
    page.locator("#email").fill("jurate.kazlauskiene@example.lt")
    with page.expect_navigation():
        page.locator("#next").click()
    yield "consents"
    with page.expect_navigation():
        page.locator("#next").click()  # no terms: the error shows
    yield "consents-error"
    page.locator("input[name=terms]").check()
    with page.expect_navigation():
        page.locator("#next").click()
    for n in (1, 2, 3):
        yield f"survey-{n}"
        with page.expect_navigation():
            page.locator("#next").click()
    yield "card"
    with page.expect_navigation():
        page.locator("#next").click()  # no choice: the error shows
    yield "card-error"


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_step_fits_with_big_targets_and_good_contrast(kiosk, browser, size):
    _, url = kiosk
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True)
    page = context.new_page()
    for name in _walk_to_each_step(page, url):
        measured = page.evaluate(TARGETS)
        assert measured["scrollW"] <= width, (name, "scrolls sideways", measured["scrollW"])
        # the Pi's screen shows each step whole
        assert measured["scrollH"] <= height, (name, "needs scrolling", measured["scrollH"])
        for t in measured["targets"]:
            assert t["h"] >= 48 and t["w"] >= 48, (name, t)
            assert t["right"] <= width, (name, t)
        assert page.evaluate(CONTRAST) == [], name
        if name == "details":
            for field in ("#first_name", "#email", "#phone"):
                page.locator(field).click()
                field_clear_of_keyboard(page, field)
                keys = page.locator(".kb:not([hidden]) button").evaluate_all(
                    "ks => ks.map(k => [k.textContent, k.getBoundingClientRect().width, "
                    "k.getBoundingClientRect().height])")
                assert all(w >= 48 and h >= 48 for _, w, h in keys), (field, keys)
                assert page.evaluate(CONTRAST) == [], (name, field)
            page.locator("h1").click()  # a tap elsewhere puts the keyboard away
            page.locator(".kb").wait_for(state="hidden", timeout=2000)
    context.close()


def test_idle_overlay_then_reset_leaves_nothing(make_kiosk, browser):
    with CapturePrinter() as printer:
        app = make_kiosk(printer.uri, IDLE_TIMEOUT=3, HEARTBEAT_INTERVAL=0.0)
        with serve(app) as url:
            context = browser.new_context(viewport={"width": 800, "height": 480},
                                          has_touch=True)
            page = context.new_page()
            page.goto(f"{url}/?lang=en")
            with page.expect_navigation():
                page.locator("#begin").tap()
            with page.expect_navigation():
                page.locator('button[value="en"]').tap()
            page.locator("#first_name").fill("Jūratė")
            overlay = page.locator("#idle-overlay")
            # 1.5 s before the end, the question; Continue keeps everything
            overlay.wait_for(state="visible", timeout=4000)
            assert page.locator("#idle-title").inner_text() == "Are you still there?"
            page.locator("#idle-continue").tap()
            assert overlay.is_hidden()
            assert page.locator("#first_name").input_value() == "Jūratė"
            # a page busy writing a card pauses the timer (the session is kept alive)
            page.evaluate("window.kioskIdle.pause()")
            time.sleep(3.5)
            assert overlay.is_hidden() and page.url == f"{url}/details"
            page.evaluate("window.kioskIdle.resume()")
            # nobody answers: back to the welcome screen, in the shop's language
            overlay.wait_for(state="visible", timeout=4000)
            page.wait_for_url(f"{url}/", timeout=4000)
            assert page.locator("#begin").is_visible()
            assert page.locator("html").get_attribute("lang") == "fr"
            # Back shows nothing of the customer: the step is gone with the session
            page.go_back()
            page.wait_for_load_state()
            assert "Jūratė" not in page.content()
            assert page.url == f"{url}/"
            context.close()
