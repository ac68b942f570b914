"""Staff mode on the kiosk: staff card or name and PIN, finding the customer by the old card
or by code, reissuing; the old card is refused at the till at once, the new one works."""

from __future__ import annotations

import time

import pytest
import requests

from tests.support.escpos_capture import CapturePrinter
from tests.support.escpos_parse import decode_qr_codes
from tests.support.fixtures_devices import wait_until
from tests.support.kiosk_flow import (
    add_staff,
    cards_of,
    enrol,
    issue_state,
    new_kiosk_key,
    poll,
    post,
    tap,
)

pytestmark = pytest.mark.hardware
STAFF_UID = "04DEADBEEF0042"


@pytest.fixture
def kiosk(make_kiosk, live_server, tmp_path):
    """``kiosk(printer=None, **config) -> (app, client)``: a kiosk device of its own."""
    from kiosk_app import issuing

    apps = []

    def make(printer: str | None = None, **config):
        config.setdefault("HEARTBEAT_INTERVAL", 0)
        config.setdefault("WRITER", "sim:")
        config.setdefault("DEFAULT_LANGUAGE", "en")  # the messages the tests read
        config.setdefault("DEVICE_KEY", new_kiosk_key(live_server))
        app = make_kiosk(printer or f"file:{tmp_path / f'slip{len(apps)}.bin'}", **config)
        apps.append(app)
        return app, app.test_client()

    yield make
    for app in apps:
        issuing.shutdown(app)


def customer_with_card(live_server) -> tuple[dict, dict]:
    """A customer enrolled at the demo kiosk with a printed card; ``(customer, card)``."""
    customer = enrol(live_server, first_name="Aušra", last_name="Petrauskienė",
                     phone="+370 612 34567")
    r = requests.post(f"{live_server.url}/api/v1/customers/{customer['customer_id']}/cards",
                      json={"event_id": customer["event_id"], "kind": "qr"}, timeout=10,
                      headers={"Authorization": f"Bearer {live_server.creds['kiosk_key']}"})
    assert r.status_code in (200, 201), r.text
    return customer, r.json()


def login(client, username: str, pin: str = "2468"):
    page = client.get("/staff/").get_data(as_text=True)
    return post(client, "/staff/login", page, username=username, pin=pin)


def test_pin_login_find_by_code_reissue_lost_old_card_refused_new_card_works(live_server,
                                                                              kiosk):
    customer, old = customer_with_card(live_server)
    assert tap(live_server, url=old["url"]).status_code == 200
    desk = add_staff(live_server, "desk")
    with CapturePrinter() as printer:
        app, client = kiosk(printer.uri)

        page = client.get("/staff/").get_data(as_text=True)
        assert 'data-keyboard="digits"' in page and 'id="pin"' in page
        r = post(client, "/staff/login", page, username=desk, pin="2468")
        assert r.status_code == 302 and r.headers["Location"] == "/staff/find"
        with client.session_transaction() as session:
            token = session["staff"]["token"]
        find = client.get("/staff/find").get_data(as_text=True)
        assert desk in find and token not in find
        for kind in ("code", "email", "phone"):
            assert f'data-keyboard="{kind}"' in find

        code = customer["customer_id"].lower().replace("-", "")  # as staff may type it
        r = post(client, "/staff/find", find, code=code)
        assert r.headers["Location"] == "/staff/customer"
        who = client.get("/staff/customer").get_data(as_text=True)
        assert "Aušra P." in who and customer["customer_id"] in who
        assert "Petrauskienė" not in who  # the display name only
        assert f'data-card-id="{old["card_id"]}" data-status="active"' in who

        r = post(client, "/staff/reissue", who, reason="lost", choice="qr")
        assert r.headers["Location"] == "/issue/"
        client.get("/issue/")
        poll(client)
        (job,) = printer.wait_for_jobs(1)
        done = client.get("/issue/done").get_data(as_text=True)

    assert 'id="replaced"' in done and 'id="another-customer"' in done
    r = tap(live_server, url=old["url"])
    assert r.status_code == 410, r.text
    assert r.json()["type"].endswith("/card-revoked") and r.json().get("replaced") is True
    assert r.json().get("reason") == "lost"
    (qr,) = decode_qr_codes(job)
    record = tap(live_server, qr=qr)
    assert record.status_code == 200 and record.json()["customer_id"] == customer["customer_id"]
    assert record.json()["points"] >= customer.get("points", 0)  # the balance is kept
    statuses = {c.id: c.status for c in cards_of(live_server, customer["customer_id"])}
    assert statuses[old["card_id"]] == "revoked" and list(statuses.values()).count("active") == 1

    # another customer: nothing of this one is shown again
    find = client.get("/staff/find").get_data(as_text=True)
    assert "Aušra" not in find and "/issue/" not in find
    with client.session_transaction() as session:
        assert "customer" not in session and "issue" not in session


def test_staff_card_tap_logs_in_and_the_old_card_tap_finds_the_customer(live_server, kiosk,
                                                                         pcscd, vcard):
    customer, old = customer_with_card(live_server)
    add_staff(live_server, "desk", pin=None, uid=STAFF_UID)
    app, client = kiosk(STAFF_READER=f"pcsc:{pcscd.reader0}")

    page = client.get("/staff/").get_data(as_text=True)
    assert 'data-poll="/staff/read?purpose=login"' in page
    vcard(bytes.fromhex(STAFF_UID), None)  # a staff card: a UID and nothing else
    body = wait_until(lambda: (lambda b: b if b.get("next") else None)(
        client.get("/staff/read").get_json()), 10, "the staff card tap")
    assert body["next"] == "/staff/find"

    client.get("/staff/find")  # waits for the old card on the same reader
    from device_drivers.ndefmsg import uri_message

    vcard(bytes.fromhex("04111111111111"), uri_message(old["url"]))
    body = wait_until(lambda: (lambda b: b if b.get("next") else None)(
        client.get("/staff/read").get_json()), 10, "the old card tap")
    assert body["next"] == "/staff/customer"
    who = client.get("/staff/customer").get_data(as_text=True)
    assert customer["customer_id"] in who and 'id="card-read"' in who


def test_scanned_old_card_and_nfc_reissue(live_server, kiosk):
    customer, old = customer_with_card(live_server)
    desk = add_staff(live_server, "desk")
    app, client = kiosk()
    login(client, desk)
    find = client.get("/staff/find").get_data(as_text=True)

    # a keyboard-wedge scanner types the QR text and Enter
    r = post(client, "/staff/find", find, scan=old["url"].upper())
    assert r.headers["Location"] == "/staff/customer"
    who = client.get("/staff/customer").get_data(as_text=True)
    post(client, "/staff/reissue", who, reason="damaged", choice="nfc")
    client.get("/issue/")
    poll(client)

    nfc = issue_state(client)["nfc"]
    (uid, url, _), = app.extensions["kiosk.devices"].writer.written
    assert url == nfc["url"]
    assert tap(live_server, url=old["url"]).json().get("reason") == "damaged"
    assert tap(live_server, url=url).json()["customer_id"] == customer["customer_id"]


def test_find_by_tapping_the_old_card_on_the_sim_reader(live_server, kiosk):
    customer, old = customer_with_card(live_server)
    desk = add_staff(live_server, "desk")
    app, client = kiosk()
    login(client, desk)
    client.get("/staff/find")
    devices = app.extensions["kiosk.devices"]
    wait_until(lambda: devices.reader is not None, 5, "the staff reader")
    devices.reader.present(uid="04AB12CD34EF56", url=old["url"])
    body = wait_until(lambda: (lambda b: b if b.get("next") else None)(
        client.get("/staff/read").get_json()), 5, "the old card tap")
    assert body["next"] == "/staff/customer"
    assert customer["customer_id"] in client.get("/staff/customer").get_data(as_text=True)


def test_wrong_pin_then_lockout(live_server, kiosk):
    desk = add_staff(live_server, "desk")
    _, client = kiosk(WRITER="")

    r = login(client, desk, pin="1111")
    assert r.headers["Location"] == "/staff/"
    page = client.get("/staff/").get_data(as_text=True)
    assert "Wrong name or PIN" in page
    for _ in range(4):
        login(client, desk, pin="1111")
    client.get("/staff/")  # the messages of the tries before
    login(client, desk, pin="2468")  # the right PIN, too late
    page = client.get("/staff/").get_data(as_text=True)
    assert "Staff mode is locked for" in page
    assert client.get("/staff/find").headers["Location"] == "/staff/"


def test_cashier_is_refused_and_leaving_staff_mode_ends_it(live_server, kiosk):
    cashier = add_staff(live_server, "cashier")
    desk = add_staff(live_server, "desk")
    _, client = kiosk(WRITER="")

    login(client, cashier)
    page = client.get("/staff/").get_data(as_text=True)
    assert "Card replacement needs a desk, manager or admin account" in page
    assert client.get("/staff/find").status_code == 302

    login(client, desk)
    find = client.get("/staff/find")
    assert find.status_code == 200
    assert 'action="/reset"' in find.get_data(as_text=True)  # "Leave staff mode"
    r = post(client, "/reset", find.get_data(as_text=True))
    assert r.headers["Location"] == "/"
    assert client.get("/staff/find").headers["Location"] == "/staff/"


def test_an_expired_staff_session_asks_to_log_in_again(live_server, kiosk):
    desk = add_staff(live_server, "desk")
    _, client = kiosk(WRITER="")
    login(client, desk)
    with client.session_transaction() as session:
        session["staff"]["expires"] = time.time() - 1
    assert client.get("/staff/find").headers["Location"] == "/staff/"
    assert "Your staff session has ended" in client.get("/staff/").get_data(as_text=True)


def _key_boards(page, name: str, fields: tuple[str, ...]) -> None:
    """Each field's on-screen keyboard at each size: 48 px keys, the field above them."""
    from tests.support.kiosk_screens import PI, SIZES, check_keyboard

    try:
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            for field in fields:
                page.click(field)
                page.wait_for_selector(".kb:not([hidden])")
                page.evaluate("() => new Promise((r) => requestAnimationFrame(() => "
                              "requestAnimationFrame(r)))")  # keyboard.js fits the field
                check_keyboard(page, f"{name} {field} at {width}x{height}")
            page.click("h1")  # a tap elsewhere puts the keyboard away
            page.wait_for_selector(".kb", state="hidden")
    finally:
        page.set_viewport_size({"width": PI[0], "height": PI[1]})


@pytest.mark.browser
def test_every_staff_screen_fits_at_three_sizes(live_server, kiosk, browser):
    import uuid

    from tests.support.fixtures_devices import serve
    from tests.support.kiosk_flow import browser_page
    from tests.support.kiosk_screens import check_sizes

    phone = f"+3706{uuid.uuid4().int % 10**7:07d}"  # two customers share it: a list
    customer = enrol(live_server, first_name="Aušra", last_name="Petrauskienė", phone=phone)
    enrol(live_server, first_name="Élodie", last_name="Durand", phone=phone)
    desk = add_staff(live_server, "desk")
    key = new_kiosk_key(live_server)
    app, client = kiosk(STAFF_READER="sim:", IDLE_TIMEOUT=120, DEVICE_KEY=key)
    with client.session_transaction() as session:
        session["lang"] = "en"
    sizes = {}
    with serve(app) as url:
        page = browser_page(browser, url, client)
        page.set_default_timeout(15000)  # a loaded CI machine; speed is for bench/

        page.goto(url + "/staff/")
        page.wait_for_selector("#tap-box")  # the staff reader is there: tap or PIN
        sizes["login"] = check_sizes(page, "login")
        _key_boards(page, "login", ("#username", "#pin"))
        page.fill("#username", desk)
        page.fill("#pin", "1111")
        with page.expect_navigation():
            page.click("#login")
        assert page.locator("[data-flash=error]").count() == 1
        sizes["login-wrong-pin"] = check_sizes(page, "login, wrong PIN")
        page.fill("#username", desk)
        page.fill("#pin", "2468")
        with page.expect_navigation(url="**/staff/find"):
            page.click("#login")

        # the customer's cards of every kind: active, blocked (stolen), pending, cancelled
        with client.session_transaction() as session:
            token = session["staff"]["token"]
        cards_url = f"{live_server.url}/api/v1/customers/{customer['customer_id']}/cards"
        auth = {"Authorization": f"Bearer {key}", "X-Staff-Authorization": f"Session {token}"}
        made = []
        # a new pending NFC card voids the one before it (one pending card at a time)
        for body in ({"kind": "qr"}, {"kind": "qr", "replace": True, "reason": "stolen"},
                     {"kind": "nfc"}, {"kind": "nfc"}):
            r = requests.post(cards_url, json={"event_id": str(uuid.uuid4()), **body},
                              headers=auth, timeout=10)
            assert r.status_code == 201, r.text
            made.append(r.json())

        sizes["find"] = check_sizes(page, "find")
        _key_boards(page, "find", ("#code", "#email", "#phone"))
        with page.expect_navigation():
            page.click("#search")  # nothing typed: said plainly
        assert page.locator("[data-flash=error]").count() == 1
        sizes["find-nothing-typed"] = check_sizes(page, "find, nothing typed")

        page.fill("#phone", phone)
        with page.expect_navigation(url="**/staff/results"):
            page.click("#search")
        assert page.locator(".results button").count() == 2
        sizes["results"] = check_sizes(page, "results")
        with page.expect_navigation(url="**/staff/customer"):
            page.locator(f'button[value="{customer["customer_id"]}"]').click()

        statuses = page.locator("#cards tbody tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.status, r.cells[0].innerText, r.cells[1].innerText])")
        assert sorted(s for s, _, _ in statuses) == ["active", "pending", "revoked", "void"]
        words = {status: (kind, word) for status, kind, word in statuses}
        assert words["revoked"] == ("Printed card", "Blocked: stolen")
        assert words["pending"] == ("NFC card", "Not written yet")
        assert words["void"] == ("NFC card", "Cancelled")
        assert words["active"] == ("Printed card", "Active")
        sizes["customer"] = check_sizes(page, "customer")

        # the old card tapped on the reader: the customer, and which card it was
        page.click("#not-them")
        page.wait_for_url("**/staff/find")
        devices = app.extensions["kiosk.devices"]
        wait_until(lambda: devices.reader is not None, 5, "the staff reader")
        devices.reader.present(uid="04AB12CD34EF56", url=made[1]["url"])  # the active one
        page.wait_for_url("**/staff/customer")
        assert "Printed card · Active" in page.inner_text("#card-read")
        sizes["customer-card-read"] = check_sizes(page, "customer, card read")

        page.locator("#reasons label", has_text="Lost").click()
        page.locator("#kinds label", has_text="Printed card").click()
        with page.expect_navigation(url="**/issue/**"):
            page.click("#reissue")
        page.wait_for_url("**/issue/done", timeout=10000)
        page.wait_for_selector("#replaced")
        sizes["done-staff"] = check_sizes(page, "done, staff")
        page.context.close()
    print({name: [m["height"] for m in found] for name, found in sizes.items()})
