"""Enrol at the kiosk, print the card over ESC/POS, read the QR back, tap it at a till."""

import re
import socket
import uuid

import pytest
import requests
from sqlalchemy import func, select

from server.cards.models import Card
from tests.support.escpos_capture import CapturePrinter
from tests.support.escpos_parse import decode_qr_codes, text_lines

pytestmark = pytest.mark.hardware


def fill(kiosk_client, lang="fr", **fields) -> dict:
    html = kiosk_client.get(f"/?lang={lang}").get_data(as_text=True)
    data = {
        "csrf_token": re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1),
        "event_id": re.search(r'name="event_id"[^>]*value="([^"]+)"', html).group(1),
        "first_name": "Élodie", "last_name": "Durand", "email": "elodie.durand@example.fr",
        "phone": "+33 6 12 34 56 78", "terms": "y",
    }
    data.update(fields)
    return data


def done_page(kiosk_client) -> tuple[str, str]:
    html = kiosk_client.get("/done").get_data(as_text=True)
    outcome = re.search(r'data-outcome="([^"]+)"', html).group(1)
    code = re.search(r'id="customer-code">([^<]+)', html).group(1)
    return outcome, code


def tap(live_server, **what) -> requests.Response:
    return requests.post(f"{live_server.url}/api/v1/taps", timeout=5,
                         headers={"Authorization": f"Bearer {live_server.creds['till_key']}"},
                         json={"event_id": str(uuid.uuid4()), **what})


def cards_of(live_server, customer_id: str) -> int:
    from sqlalchemy.orm import Session

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(func.count()).select_from(Card)
                        .where(Card.customer_id == customer_id))


@pytest.mark.parametrize("qr_mode", ["image", "native"])
def test_enrol_print_decode_and_tap(live_server, make_kiosk, qr_mode):
    with CapturePrinter() as printer:
        kiosk = make_kiosk(f"{printer.uri}?qr={qr_mode}").test_client()
        r = kiosk.post("/enrol", data=fill(kiosk, lang="lt", first_name="Jūratė",
                                          last_name="Kazlauskienė"))
        assert r.status_code == 302
        outcome, customer_code = done_page(kiosk)
        assert outcome == "printed"
        (job,) = printer.wait_for_jobs(1)

    (qr,) = decode_qr_codes(job)
    assert qr.startswith(live_server.url.upper() + "/C/")
    text = "\n".join(text_lines(job))
    assert "Boutique Rivoli" in text
    assert "Jūratė" in text and customer_code in text
    # the card carries no personal data beyond the first name
    for private in ("Kazlauskienė", "Kazlauskiene", "elodie", "+33", "612345678"):
        assert private not in text and private.upper() not in qr

    r = tap(live_server, qr=qr)
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == customer_code
    assert r.json()["display_name"] == "Jūratė K."
    assert r.json()["language"] == "lt"


def test_printer_out_of_paper_keeps_the_enrolment_and_prints_the_same_card(live_server,
                                                                          make_kiosk):
    with CapturePrinter(paper="out") as printer:
        kiosk = make_kiosk(f"{printer.uri}?status=1").test_client()
        assert kiosk.post("/enrol", data=fill(kiosk)).status_code == 302
        outcome, customer_code = done_page(kiosk)
        assert outcome == "printer-paper-out"
        html = kiosk.get("/done").get_data(as_text=True)
        assert "plus de papier" in html and 'id="print-again"' in html
        assert cards_of(live_server, customer_code) == 1  # enrolled, card issued, not printed
        # the first attempt asked for the paper status and sent nothing else
        assert printer.wait_for_jobs(1) == [b"\x10\x04\x04"]

        printer.paper = "ok"  # staff refill the printer
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
        assert kiosk.post("/print", data={"csrf_token": csrf}).status_code == 302
        assert done_page(kiosk) == ("printed", customer_code)
        # the reprint is the second connection: status query, then the whole card
        first, job = printer.wait_for_jobs(2)
        assert first == b"\x10\x04\x04" and job.startswith(b"\x10\x04\x04")

    (qr,) = decode_qr_codes(job)
    assert tap(live_server, qr=qr).json()["customer_id"] == customer_code
    assert cards_of(live_server, customer_code) == 1  # printing again issued no second card


def test_printer_offline_is_said_plainly_and_the_customer_is_kept(live_server, make_kiosk):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kiosk = make_kiosk(f"escpos:net:127.0.0.1:{port}?timeout=2").test_client()
    assert kiosk.post("/enrol", data=fill(kiosk, lang="en")).status_code == 302
    outcome, customer_code = done_page(kiosk)
    assert outcome == "printer-offline"
    assert "The printer is not responding" in kiosk.get("/done").get_data(as_text=True)
    assert cards_of(live_server, customer_code) == 1


def test_resubmitted_form_enrols_once(live_server, make_kiosk, tmp_path):
    kiosk = make_kiosk(f"file:{tmp_path / 'slip.bin'}").test_client()
    data = fill(kiosk)
    assert kiosk.post("/enrol", data=data).status_code == 302
    _, first = done_page(kiosk)
    # the customer presses again after a timeout: same form, same event id
    again = make_kiosk(f"file:{tmp_path / 'slip2.bin'}").test_client()
    data2 = fill(again)
    data2["event_id"] = data["event_id"]
    assert again.post("/enrol", data=data2).status_code == 302
    assert done_page(again) == ("printed", first)
    (qr,) = decode_qr_codes((tmp_path / "slip.bin").read_bytes())
    assert decode_qr_codes((tmp_path / "slip2.bin").read_bytes()) == [qr]  # the same card
    assert cards_of(live_server, first) == 1
    assert tap(live_server, url=qr).json()["customer_id"] == first
