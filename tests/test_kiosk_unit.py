"""The kiosk form on its own: validation, languages, and a service that is down."""

import re
import socket

import pytest

from kiosk_app import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def kiosk(tmp_path):
    # a port nobody listens on: the service is down
    app = create_app({"SERVER_URL": f"http://127.0.0.1:{free_port()}", "DEVICE_KEY": "lk_x",
                      "PRINTER": f"file:{tmp_path / 'out.bin'}", "INSTANCE_PATH": str(tmp_path),
                      "REQUEST_TIMEOUT": 2.0})
    return app.test_client()


def form_fields(html: str) -> dict:
    return {
        "csrf_token": re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1),
        "event_id": re.search(r'name="event_id"[^>]*value="([^"]+)"', html).group(1),
    }


@pytest.mark.parametrize(("lang", "title"), [("fr", "Obtenez votre carte de fidélité"),
                                             ("lt", "Gaukite lojalumo kortelę"),
                                             ("en", "Get your loyalty card")])
def test_start_page_speaks_each_language(kiosk, lang, title):
    html = kiosk.get(f"/?lang={lang}").get_data(as_text=True)
    assert title in html
    assert f'<html lang="{lang}">' in html


def test_nothing_is_pre_ticked(kiosk):
    html = kiosk.get("/?lang=en").get_data(as_text=True)
    boxes = re.findall(r"<input[^>]*type=\"checkbox\"[^>]*>", html)
    assert len(boxes) == 4
    assert not [b for b in boxes if "checked" in b]


def test_half_filled_form_shows_errors_and_keeps_values(kiosk):
    fields = form_fields(kiosk.get("/?lang=en").get_data(as_text=True))
    r = kiosk.post("/enrol", data={**fields, "first_name": "Élodie", "last_name": ""})
    html = r.get_data(as_text=True)
    assert r.status_code == 422
    assert "Please enter your last name." in html
    assert "Please give an email address or a phone number." in html
    assert "Please accept the programme terms to get a card." in html
    assert 'value="Élodie"' in html


def test_form_without_csrf_token_is_refused(kiosk):
    fields = form_fields(kiosk.get("/?lang=en").get_data(as_text=True))
    r = kiosk.post("/enrol", data={"event_id": fields["event_id"], "first_name": "A",
                                   "last_name": "B", "email": "a@example.com", "terms": "y"})
    assert r.status_code == 400


def test_service_down_keeps_the_form_and_its_event_id(kiosk):
    fields = form_fields(kiosk.get("/?lang=fr").get_data(as_text=True))
    data = {**fields, "first_name": "Élodie", "last_name": "Durand",
            "email": "elodie@example.fr", "terms": "y", "marketing_sms": "y"}
    r = kiosk.post("/enrol", data=data)
    html = r.get_data(as_text=True)
    assert r.status_code == 503
    assert "Le service de fidélité est injoignable" in html
    assert 'value="Élodie"' in html and 'value="elodie@example.fr"' in html
    # the retry goes out with the same event id, so the service cannot enrol twice
    assert form_fields(html)["event_id"] == fields["event_id"]
    ticked = re.search(r'<input[^>]*name="marketing_sms"[^>]*>', html).group(0)
    assert "checked" in ticked
