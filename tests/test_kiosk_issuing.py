"""The kiosk makes the customer's cards: NFC written on emulated tags (pcscd + vpcd Type 4,
nfcpy udp NTAG213) and activated only after the read-back, printed cards over ESC/POS, the
failures a customer can meet (card removed, too small, printer out of paper), the heartbeat."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from device_drivers.ndefmsg import first_uri, uri_message
from tests.support.escpos_capture import CapturePrinter
from tests.support.escpos_parse import decode_qr_codes, text_lines
from tests.support.fixtures_devices import wait_until
from tests.support.kiosk_flow import (
    card_row,
    cards_of,
    enrol,
    hand_over,
    issue_state,
    poll,
    post,
    tap,
)

pytestmark = pytest.mark.hardware
UID = bytes.fromhex("04C0FFEE123456")
OLD_URL = "https://old.example/c/OLD"


@pytest.fixture
def kiosk(make_kiosk, tmp_path):
    """``kiosk(printer=None, **config) -> (app, client)``; its threads stopped at the end."""
    from kiosk_app import issuing

    apps = []

    def make(printer: str | None = None, **config):
        config.setdefault("HEARTBEAT_INTERVAL", 0)
        app = make_kiosk(printer or f"file:{tmp_path / f'slip{len(apps)}.bin'}", **config)
        apps.append(app)
        return app, app.test_client()

    yield make
    for app in apps:
        issuing.shutdown(app)


def _update(offset: int, data: bytes) -> bytes:
    return bytes([0x00, 0xD6, offset >> 8, offset & 0xFF, len(data)]) + data


def _small_cc() -> bytes:  # a Type 4 tag whose NDEF file holds 30 bytes
    return bytes.fromhex("000F20003B00340406E104") + (0x0020).to_bytes(2, "big") + b"\0\0"


# -- NFC -------------------------------------------------------------------------------------


def test_sim_writer_card_is_activated_with_its_uid_and_the_done_screen_welcomes(live_server,
                                                                                 kiosk):
    app, client = kiosk(WRITER="sim:")
    customer = enrol(live_server, first_name="Jūratė")
    hand_over(client, customer, "nfc")

    page = client.get("/issue/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-poll="/issue/status"' in html
    assert poll(client)["next"] == "/issue/done"

    nfc = issue_state(client)["nfc"]
    writer = app.extensions["kiosk.devices"].writer
    (uid, url, locked), = writer.written
    assert url == nfc["url"] and not locked
    row = card_row(live_server, nfc["card_id"])
    assert (row.status, row.nfc_uid, row.kind) == ("active", uid, "nfc")

    done = client.get("/issue/done").get_data(as_text=True)
    assert "Jūratė" in done and customer["customer_id"] in done
    assert 'data-made="nfc"' in done and 'data-made="qr"' not in done
    assert 'data-return-after="20"' in done
    if customer.get("points"):
        assert f'data-points="{customer["points"]}"' in done


def test_pcsc_type4_written_read_back_activated_and_tapped_at_a_till(live_server, kiosk, pcscd,
                                                                     vcard):
    from device_drivers import open_reader

    _, client = kiosk(WRITER=f"pcsc:{pcscd.reader0}")
    customer = enrol(live_server)
    hand_over(client, customer, "nfc")
    card = vcard(UID, uri_message(OLD_URL))

    client.get("/issue/")
    poll(client)

    nfc = issue_state(client)["nfc"]
    assert first_uri(card.card.ndef) == nfc["url"]
    row = card_row(live_server, nfc["card_id"])
    assert (row.status, row.nfc_uid) == ("active", UID.hex().upper())
    with open_reader(f"pcsc:{pcscd.reader0}") as reader:
        read = reader.read(timeout=3)
    assert read is not None and read.url == nfc["url"]
    r = tap(live_server, url=read.url, uid=read.uid)
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == customer["customer_id"]


def test_nfcpy_udp_ntag213_written_activated_and_tapped_at_a_till(live_server, kiosk):
    from device_drivers import open_reader
    from tests.support.nfc_udp import UdpCard, free_udp_port, ntag213, synchronous_link

    port = free_udp_port()
    with synchronous_link():
        app, client = kiosk(WRITER=f"nfcpy:udp:127.0.0.1:{port}")
        customer = enrol(live_server)
        hand_over(client, customer, "nfc")
        with UdpCard(ntag213(UID, uri_message(OLD_URL)), port):
            client.get("/issue/")
            poll(client, timeout=30)
            app.extensions["kiosk.devices"].stop()  # the kiosk lets go of the reader
            with open_reader(f"nfcpy:udp:127.0.0.1:{port}") as reader:
                read = reader.read(timeout=10)

    nfc = issue_state(client)["nfc"]
    assert read is not None and read.url == nfc["url"]
    assert card_row(live_server, nfc["card_id"]).nfc_uid == UID.hex().upper()
    r = tap(live_server, url=read.url)
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == customer["customer_id"]


def test_card_removed_mid_write_stays_pending_and_try_again_activates_it(live_server, kiosk,
                                                                          pcscd, vcard):
    _, client = kiosk(WRITER=f"pcsc:{pcscd.reader0}")
    customer = enrol(live_server)
    hand_over(client, customer, "nfc")
    client.get("/issue/")  # the card is issued, the writer waits
    nfc = issue_state(client)["nfc"]
    message = uri_message(nfc["url"])
    vcard(UID, b"", responses={_update(2, message[:0x34]): None})  # gone mid-write

    body = poll(client, until=("nfc-failed",))
    assert body["reason"] == "interrupted" and body["next"] == "/issue/"
    assert card_row(live_server, nfc["card_id"]).status == "pending"
    r = tap(live_server, url=nfc["url"])
    assert r.status_code == 409 and r.json()["type"].endswith("/card-pending"), r.text
    page = client.get("/issue/").get_data(as_text=True)
    assert 'data-outcome="nfc-interrupted"' in page and 'id="try-again"' in page

    card = vcard(UID, b"")  # put back on the reader
    assert post(client, "/issue/retry", page).status_code == 302
    client.get("/issue/")
    poll(client)

    assert issue_state(client)["nfc"]["card_id"] == nfc["card_id"]  # the same card, same URL
    assert first_uri(card.card.ndef) == nfc["url"]
    assert card_row(live_server, nfc["card_id"]).status == "active"
    assert tap(live_server, url=nfc["url"]).status_code == 200
    assert [c.kind for c in cards_of(live_server, customer["customer_id"])] == ["nfc"]


def test_too_small_card_offers_another_card_and_giving_up_voids_and_prints(live_server, kiosk,
                                                                             pcscd, vcard):
    with CapturePrinter() as printer:
        _, client = kiosk(printer.uri, WRITER=f"pcsc:{pcscd.reader0}")
        customer = enrol(live_server)
        hand_over(client, customer, "nfc")
        small = vcard(UID, b"", _small_cc())
        client.get("/issue/")

        assert poll(client, until=("nfc-failed",))["reason"] == "too-small"
        page = client.get("/issue/").get_data(as_text=True)
        assert 'id="another-card"' in page and 'id="give-up"' in page
        assert not [a for a in small.card.apdus if a[:2] == b"\x00\xd6"]  # not touched
        nfc = issue_state(client)["nfc"]
        assert tap(live_server, url=nfc["url"]).status_code == 409

        assert post(client, "/issue/give-up", page).status_code == 302
        client.get("/issue/")
        poll(client)
        (job,) = printer.wait_for_jobs(1)

    assert card_row(live_server, nfc["card_id"]).status == "void"
    r = tap(live_server, url=nfc["url"])
    assert r.status_code == 410 and r.json().get("reason") == "void", r.text
    (qr,) = decode_qr_codes(job)
    assert tap(live_server, qr=qr).json()["customer_id"] == customer["customer_id"]
    assert 'data-made="qr"' in client.get("/issue/done").get_data(as_text=True)


def test_another_card_after_a_too_small_one_is_written_with_the_same_url(live_server, kiosk,
                                                                         pcscd, vcard):
    _, client = kiosk(WRITER=f"pcsc:{pcscd.reader0}")
    hand_over(client, enrol(live_server), "nfc")
    vcard(UID, b"", _small_cc())
    client.get("/issue/")
    poll(client, until=("nfc-failed",))
    page = client.get("/issue/").get_data(as_text=True)

    other = vcard(bytes.fromhex("04AABBCCDDEEFF"), b"")
    post(client, "/issue/retry", page)
    client.get("/issue/")
    poll(client)

    nfc = issue_state(client)["nfc"]
    assert first_uri(other.card.ndef) == nfc["url"]
    assert card_row(live_server, nfc["card_id"]).nfc_uid == "04AABBCCDDEEFF"


def test_a_card_holding_another_customers_url_is_refused_and_another_card_used(live_server,
                                                                               kiosk, pcscd,
                                                                               vcard):
    from kiosk_app.issuing import card_url_prefix

    _, client = kiosk(WRITER=f"pcsc:{pcscd.reader0}")
    first = enrol(live_server, first_name="Aušra")
    hand_over(client, first, "nfc")
    theirs = vcard(UID, b"")
    client.get("/issue/")
    poll(client)
    their_url = issue_state(client)["nfc"]["url"]
    updates = len([a for a in theirs.card.apdus if a[:2] == b"\x00\xd6"])
    assert card_url_prefix(their_url).lower().endswith("/c/")
    # the next customer puts the first one's card on the writer (taken off, put back)
    theirs.remove()
    theirs.insert(pcscd.port0)
    second = enrol(live_server, first_name="Marius")
    hand_over(client, second, "nfc")
    client.get("/issue/")

    body = poll(client, until=("nfc-failed",))
    assert (body["state"], body["reason"]) == ("nfc-failed", "in-use")
    assert client.get("/issue/status").get_json()["reason"] == "in-use"
    page = client.get("/issue/").get_data(as_text=True)
    assert 'data-outcome="nfc-in-use"' in page and 'id="another-card"' in page
    assert first_uri(theirs.card.ndef) == their_url  # not touched
    assert len([a for a in theirs.card.apdus if a[:2] == b"\x00\xd6"]) == updates
    nfc = issue_state(client)["nfc"]
    assert card_row(live_server, nfc["card_id"]).status == "pending"
    r = tap(live_server, url=their_url, uid=UID.hex().upper())  # their card still works
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == first["customer_id"]

    blank = vcard(bytes.fromhex("04AABBCCDDEEFF"), b"")  # "Use another card"
    assert post(client, "/issue/retry", page).status_code == 302
    client.get("/issue/")
    poll(client)

    assert first_uri(blank.card.ndef) == nfc["url"] != their_url
    assert card_row(live_server, nfc["card_id"]).nfc_uid == "04AABBCCDDEEFF"
    assert tap(live_server, url=nfc["url"]).json()["customer_id"] == second["customer_id"]
    assert first_uri(theirs.card.ndef) == their_url


def test_walking_away_voids_the_pending_card(live_server, kiosk):
    from kiosk_app import issuing

    app, client = kiosk(WRITER="sim:fail=" + ",".join(["no-card"] * 20), WRITE_TIMEOUT=30)
    hand_over(client, enrol(live_server), "nfc")
    client.get("/issue/")
    nfc = issue_state(client)["nfc"]
    job = app.extensions["kiosk.devices"].job(nfc["job"])

    with app.test_request_context("/"):
        from flask import session

        session["issue"] = issue_state(client)
        issuing.on_reset()

    assert job.wait(3) and job.state == "cancelled"
    assert card_row(live_server, nfc["card_id"]).status == "void"


def test_server_down_is_said_plainly_and_the_state_kept(live_server, kiosk):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app, client = kiosk(WRITER="sim:")
    hand_over(client, enrol(live_server), "both")
    app.extensions["kiosk.client"].base_url = f"http://127.0.0.1:{port}"  # the service is gone

    page = client.get("/issue/")
    assert page.status_code == 503
    html = page.get_data(as_text=True)
    assert 'data-outcome="server-down"' in html and 'id="try-again"' in html

    app.extensions["kiosk.client"].base_url = live_server.url  # back
    post(client, "/issue/retry", html)
    client.get("/issue/")
    poll(client)
    assert issue_state(client)["made"] == ["nfc", "qr"]


# -- printing --------------------------------------------------------------------------------


def test_printed_card_decoded_and_tapped_at_a_till(live_server, kiosk):
    with CapturePrinter() as printer:
        _, client = kiosk(f"{printer.uri}?qr=image", WRITER="")
        customer = enrol(live_server, first_name="Gintarė", language="lt")
        hand_over(client, customer, "qr")
        client.get("/issue/")
        poll(client)
        (job,) = printer.wait_for_jobs(1)

    (qr,) = decode_qr_codes(job)
    text = "\n".join(text_lines(job))
    assert "Boutique Rivoli" in text and customer["customer_id"] in text
    r = tap(live_server, qr=qr)
    assert r.status_code == 200 and r.json()["customer_id"] == customer["customer_id"]
    done = client.get("/issue/done").get_data(as_text=True)
    assert 'data-made="qr"' in done


def test_out_of_paper_then_print_again_prints_the_same_card(live_server, kiosk):
    with CapturePrinter(paper="out") as printer:
        app, client = kiosk(f"{printer.uri}?status=1")
        customer = enrol(live_server)
        hand_over(client, customer, "qr")
        client.get("/issue/")
        assert poll(client, until=("print-failed",))["reason"] == "paper-out"
        page = client.get("/issue/").get_data(as_text=True)
        assert 'data-outcome="printer-paper-out"' in page and 'id="print-again"' in page
        assert app.extensions["kiosk.printer"].status == "paper-out"

        printer.paper = "ok"
        post(client, "/issue/retry", page)
        client.get("/issue/")
        poll(client)
        first, job = printer.wait_for_jobs(2)

    assert first == b"\x10\x04\x04"  # the first attempt only asked for the paper status
    (qr,) = decode_qr_codes(job)
    assert tap(live_server, qr=qr).json()["customer_id"] == customer["customer_id"]
    assert len(cards_of(live_server, customer["customer_id"])) == 1  # no second card
    assert app.extensions["kiosk.printer"].status == "ready"


def test_both_writes_then_prints(live_server, kiosk):
    with CapturePrinter() as printer:
        _, client = kiosk(printer.uri, WRITER="sim:")
        customer = enrol(live_server)
        hand_over(client, customer, "both")
        html = client.get("/issue/").get_data(as_text=True)
        assert 'data-part="nfc"' in html and 'data-part="qr"' in html
        states = set()
        deadline = time.monotonic() + 10
        while (body := client.get("/issue/status").get_json())["state"] != "done":
            states.add(body["state"])
            assert time.monotonic() < deadline
        printer.wait_for_jobs(1)

    assert "nfc-done" in states
    kinds = sorted(c.kind for c in cards_of(live_server, customer["customer_id"]))
    assert kinds == ["nfc", "qr"]
    assert all(c.status == "active" for c in cards_of(live_server, customer["customer_id"]))


# -- heartbeat -------------------------------------------------------------------------------


def test_heartbeat_reaches_the_service(live_server, kiosk):
    from server.devices.auth import hash_key
    from server.devices.models import Device

    def seen():
        with Session(live_server.app.extensions["loyalty.db"].main) as s:
            return s.scalar(select(Device).where(
                Device.key_hash == hash_key(live_server.creds["kiosk_key"])))

    before = seen().last_seen_at
    app, client = kiosk(WRITER="sim:", HEARTBEAT_INTERVAL=0.2)
    assert app.extensions["kiosk.heartbeat"]._thread is None  # create_app started nothing
    client.get("/healthz")

    device = wait_until(lambda: (lambda d: d if d.last_seen_at and d.last_seen_at != before
                                 else None)(seen()), 5, "a heartbeat")
    assert device.health["readers"][0] == {"uri": "sim:", "status": "ready", "error": None,
                                           "taps": 0}


def test_the_writing_phase_is_seen_when_the_writer_finds_a_card(pcscd, vcard):
    from device_drivers import open_writer
    from kiosk_app.devices import _card_arrival

    seen = []
    vcard(UID, b"")
    writer = open_writer(f"pcsc:{pcscd.reader0}")
    with writer, _card_arrival(writer, lambda: seen.append(len(seen))):
        writer.write("https://shop.example/c/X", timeout=3)
    assert seen == [0]
    assert "_wait_for_card" not in vars(writer._reader)  # the instance is left as it was


# -- in Chromium -----------------------------------------------------------------------------


PANELS = ("nfc-writing", "nfc-done", "printing")  # shown by issuing.js as the device moves on


@pytest.mark.browser
def test_every_issuing_screen_fits_at_three_sizes(live_server, kiosk, browser):
    import socket

    from tests.support.fixtures_devices import serve
    from tests.support.kiosk_flow import browser_page
    from tests.support.kiosk_screens import check_sizes, save

    # the writer finds no card for 3 s, then the card moves away, then it is too small;
    # the printer is out of paper: every screen a customer can meet, each reached by the page
    fails = ",".join(["no-card"] * 6 + ["interrupted", "too-small"])
    with CapturePrinter(paper="out") as printer:
        app, client = kiosk(f"{printer.uri}?status=1", WRITER=f"sim:fail={fails}",
                            IDLE_TIMEOUT=120)
        customer = enrol(live_server, first_name="Élodie")
        hand_over(client, customer, "both")
        with client.session_transaction() as session:
            session["lang"] = "en"
        sizes = {}
        with serve(app) as url:
            page = browser_page(browser, url, client)
            page.set_default_timeout(10000)
            page.goto(url + "/issue/")
            page.wait_for_selector("[data-panel=nfc-waiting]:not([hidden])")
            sizes["hold"] = check_sizes(page, "hold the card")
            for panel in PANELS:  # the other progress panels, as issuing.js shows them
                page.evaluate("""(state) => { for (const p of document.querySelectorAll(
                    "[data-panel]")) p.hidden = p.dataset.panel !== state; }""", panel)
                sizes[panel] = check_sizes(page, panel)

            page.wait_for_selector("#try-again")  # the page reloaded by itself
            assert page.get_attribute("#outcome", "data-outcome") == "nfc-interrupted"
            sizes["nfc-failed-try-again"] = check_sizes(page, "card moved away")
            with page.expect_navigation():
                page.click("#try-again")
            page.wait_for_selector("#another-card")
            assert page.get_attribute("#outcome", "data-outcome") == "nfc-too-small"
            assert page.locator("#give-up").is_visible()
            sizes["nfc-failed-another-card"] = check_sizes(page, "card too small")
            save(page, "kiosk-en-issuing-too-small")
            with page.expect_navigation():
                page.click("#give-up")
            page.wait_for_selector("#print-again")
            assert page.get_attribute("#outcome", "data-outcome") == "printer-paper-out"
            sizes["paper-out"] = check_sizes(page, "out of paper")
            save(page, "kiosk-en-issuing-paper-out")

            printer.paper = "ok"
            with page.expect_navigation():
                page.click("#print-again")
            page.wait_for_url("**/issue/done")
            assert page.locator("#welcome-bonus").is_visible()
            assert 'data-made="qr"' in page.content()
            sizes["done"] = check_sizes(page, "done")
            app.config["SHOW_CARD_ON_SCREEN"] = True  # the printed card's QR on the screen too
            page.reload()
            assert page.locator(".card-qr svg").is_visible()
            sizes["done-with-qr"] = check_sizes(page, "done, QR on screen")

            # the service is gone: said plainly, with "Try again"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                dead = s.getsockname()[1]
            hand_over(client, enrol(live_server, first_name="Gintarė"), "qr")
            app.extensions["kiosk.client"].base_url = f"http://127.0.0.1:{dead}"
            page.goto(url + "/issue/")
            assert page.get_attribute("#outcome", "data-outcome") == "server-down"
            assert page.locator("#try-again").is_visible()
            sizes["server-down"] = check_sizes(page, "service down")
            save(page, "kiosk-en-issuing-server-down")
            app.extensions["kiosk.client"].base_url = live_server.url
            page.context.close()
    print({name: [m["height"] for m in found] for name, found in sizes.items()})
