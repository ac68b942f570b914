"""The whole kiosk against the live service: a customer walks through the steps, the card is
written on an emulated NFC tag and printed over ESC/POS, and both are tapped at a till."""

from __future__ import annotations

import pytest

from device_drivers.ndefmsg import first_uri
from tests.support.escpos_capture import CapturePrinter
from tests.support.escpos_parse import decode_qr_codes, text_lines
from tests.support.kiosk_flow import cards_of, poll, tap
from tests.test_kiosk_flow import Walk

pytestmark = pytest.mark.hardware
DETAILS = {"first_name": "Jūratė", "last_name": "Kazlauskienė",
           "email": "jurate.e2e@example.lt", "phone": "+370 612 34567"}


@pytest.fixture
def kiosk(make_kiosk):
    """``kiosk(printer, **config) -> client``; the kiosk's threads stopped at the end."""
    from kiosk_app import issuing

    apps = []

    def make(printer: str, **config):
        app = make_kiosk(printer, **{"HEARTBEAT_INTERVAL": 0, **config})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        issuing.shutdown(app)


def walk_to_issue(client, lang: str, choice: str, email: str) -> Walk:
    walk = Walk(client, lang)
    walk.to_card(lang, details={**DETAILS, "email": email})
    r = walk.post("/card", nav="next", choice=choice)
    assert r.status_code == 302 and r.location == "/issue/", walk.page
    return walk


@pytest.mark.parametrize("qr_mode", ["image", "native"])
def test_enrol_print_decode_and_tap(live_server, kiosk, qr_mode):
    with CapturePrinter() as printer:
        client = kiosk(f"{printer.uri}?qr={qr_mode}", WRITER="")
        walk = walk_to_issue(client, "lt", "qr", f"jurate.{qr_mode}@example.lt")
        walk.get("/issue/")
        poll(client)
        walk.get("/issue/done")
        done = walk.page
        (job,) = printer.wait_for_jobs(1)

    customer = walk.session()["customer"]
    assert "Jūratė" in done and customer["id"] in done
    (qr,) = decode_qr_codes(job)
    assert qr.startswith(live_server.url.upper() + "/C/")
    text = "\n".join(text_lines(job))
    assert "Boutique Rivoli" in text
    assert "Jūratė" in text and customer["id"] in text
    # the card carries no personal data beyond the first name
    for private in ("Kazlauskienė", "Kazlauskiene", "jurate", "+370", "61234567"):
        assert private not in text and private.upper() not in qr

    r = tap(live_server, qr=qr)
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == customer["id"]
    assert r.json()["display_name"] == "Jūratė K."
    assert r.json()["language"] == "lt"


def test_enrol_both_nfc_written_on_a_type4_tag_and_printed_each_taps(live_server, kiosk, pcscd,
                                                                     vcard):
    card = vcard(bytes.fromhex("04E2E2E2E2E2E2"), b"")
    with CapturePrinter() as printer:
        client = kiosk(printer.uri, WRITER=f"pcsc:{pcscd.reader0}")
        walk = walk_to_issue(client, "fr", "both", "jurate.both@example.lt")
        walk.get("/issue/")
        assert 'data-poll="/issue/status"' in walk.page
        poll(client)
        walk.get("/issue/done")
        done = walk.page
        (job,) = printer.wait_for_jobs(1)

    customer = walk.session()["customer"]
    assert 'data-made="nfc"' in done and 'data-made="qr"' in done
    if customer["points"]:
        assert f'data-points="{customer["points"]}"' in done
    url = first_uri(card.card.ndef)
    (qr,) = decode_qr_codes(job)
    for what in ({"url": url, "uid": "04E2E2E2E2E2E2"}, {"qr": qr}):
        r = tap(live_server, **what)
        assert r.status_code == 200, r.text
        assert r.json()["customer_id"] == customer["id"]
    cards = cards_of(live_server, customer["id"])
    assert sorted((c.kind, c.status) for c in cards) == [("nfc", "active"), ("qr", "active")]
    assert [c.nfc_uid for c in cards if c.kind == "nfc"] == ["04E2E2E2E2E2E2"]
