"""The kiosk's customer steps through Flask's test client: welcome, language, details, consents,
survey, card choice and the enrolment, against a service that is down, refuses, or answers."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from device_drivers.forwarder import ServiceClient
from kiosk_app import create_app, survey

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
DETAILS = {"first_name": "Jūratė", "last_name": "Kazlauskienė",
           "email": "jurate@example.lt", "phone": "+370 612 34567"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(tmp_path, **config):
    # a port nobody listens on: the service is down unless a test says otherwise
    return create_app({"SERVER_URL": f"http://127.0.0.1:{free_port()}", "DEVICE_KEY": "lk_x",
                       "PRINTER": f"file:{tmp_path / 'out.bin'}",
                       "INSTANCE_PATH": str(tmp_path), "REQUEST_TIMEOUT": 2.0,
                       "HEARTBEAT_INTERVAL": 0.0, **config})


class Walk:
    """A customer at the kiosk: each call posts a step's form with the page's CSRF token."""

    def __init__(self, client, lang: str = "en") -> None:
        self.client = client
        self.token = ""
        self.get(f"/?lang={lang}")

    def _read(self, r):
        self.page = r.get_data(as_text=True)
        found = CSRF.search(self.page)
        if found:  # the token of the last page seen, as a browser would post it
            self.token = found.group(1)
        return r

    def get(self, path: str):
        return self._read(self.client.get(path))

    def post(self, path: str, **data):
        return self._read(self.client.post(path, data={"csrf_token": self.token, **data}))

    def session(self) -> dict:
        with self.client.session_transaction() as s:
            return dict(s)

    def to_details(self, lang: str = "en"):
        self.get("/")
        assert self.post("/begin").location == "/language"
        assert self.post("/language", lang=lang).location == "/details"
        return self.get("/details")

    def to_card(self, lang: str = "en", details: dict | None = None, **consents):
        self.to_details(lang)
        assert self.post("/details", nav="next", **(details or DETAILS)).location == "/consents"
        self.get("/consents")
        r = self.post("/consents", nav="next", terms="y", **consents)
        assert r.location == "/survey/1", r.status_code
        self.get("/survey/1")
        assert self.post("/survey/1", nav="skip").location == "/card"
        return self.get("/card")


@pytest.fixture
def app(tmp_path):
    return make(tmp_path)


@pytest.fixture
def walk(app):
    return Walk(app.test_client())


def alerts(page: str) -> list[str]:
    return [re.sub(r"\s+", " ", a).strip()
            for a in re.findall(r'role="alert"[^>]*>(.*?)</', page, re.S)]


def value_of(page: str, name: str) -> str:
    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', page).group(0)
    return re.search(r'value="([^"]*)"', tag).group(1)


def checked(page: str, name: str, value: str | None = None) -> bool:
    for tag in re.findall(rf'<input[^>]*name="{name}"[^>]*>', page):
        if value is None or f'value="{value}"' in tag:
            return " checked" in tag
    raise AssertionError(f"no input {name}={value}")


# --------------------------------------------------------------------------- the steps


@pytest.mark.parametrize(("lang", "button"), [("fr", "Obtenez votre carte de fidélité"),
                                              ("lt", "Gaukite lojalumo kortelę"),
                                              ("en", "Get your loyalty card")])
def test_welcome_speaks_each_language_and_offers_the_three(walk, lang, button):
    r = walk.get(f"/?lang={lang}")
    assert r.status_code == 200
    assert f'<html lang="{lang}">' in walk.page
    assert button in walk.page
    for code, name in (("fr", "Français"), ("lt", "Lietuvių"), ("en", "English")):
        assert f'href="/?lang={code}"' in walk.page and name in walk.page
    assert 'href="/staff/"' in walk.page  # the discreet staff entrance


def test_a_step_without_a_started_flow_goes_back_to_the_start(walk):
    for path in ("/language", "/details", "/consents", "/survey/1", "/card"):
        assert walk.get(path).location == "/", path


def test_steps_cannot_be_skipped(walk):
    walk.to_details()
    assert walk.get("/consents").location == "/details"
    assert walk.get("/card").location == "/details"


def test_language_step_sets_the_language(walk):
    walk.post("/begin")
    walk.get("/language")
    for code in ("fr", "lt", "en"):
        assert f'name="lang" value="{code}"' in walk.page
    walk.post("/language", lang="lt")
    walk.get("/details")
    assert '<html lang="lt">' in walk.page and "Vardas" in walk.page


@pytest.mark.parametrize(("lang", "errors"), [
    ("fr", ["Veuillez saisir votre nom.",
            "Indiquez une adresse e-mail ou un numéro de téléphone."]),
    ("lt", ["Įveskite savo pavardę.", "Nurodykite el. pašto adresą arba telefono numerį."]),
    ("en", ["Please enter your last name.", "Please give an email address or a phone number."]),
])
def test_details_errors_in_each_language_keep_what_was_typed(walk, lang, errors):
    walk.to_details(lang)
    r = walk.post("/details", nav="next", first_name="Élodie")
    assert r.status_code == 422
    assert alerts(walk.page) == errors
    assert value_of(walk.page, "first_name") == "Élodie"
    assert 'aria-invalid="true"' in walk.page and "None" not in re.findall(
        r"<input[^>]*>", walk.page)[2]
    # the step is not done: the next one refuses to show
    assert walk.get("/consents").location == "/details"


def test_details_check_email_and_phone(walk):
    walk.to_details()
    walk.post("/details", nav="next", first_name="A", last_name="B", email="not-an-email",
              phone="12ab")
    assert alerts(walk.page) == ["This email address does not look right.",
                                 "Use digits, spaces and + only."]


@pytest.mark.parametrize(("lang", "error"), [
    ("fr", "Veuillez accepter les conditions du programme pour obtenir une carte."),
    ("lt", "Norėdami gauti kortelę, sutikite su programos sąlygomis."),
    ("en", "Please accept the programme terms to get a card."),
])
def test_consents_need_the_terms_in_each_language(walk, lang, error):
    walk.to_details(lang)
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    r = walk.post("/consents", nav="next", marketing_sms="y")
    assert r.status_code == 422
    assert alerts(walk.page) == [error]
    assert checked(walk.page, "marketing_sms") and not checked(walk.page, "terms")


def test_nothing_is_pre_ticked_or_pre_chosen(walk):
    walk.to_details()
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    boxes = re.findall(r'<input[^>]*type="checkbox"[^>]*>', walk.page)
    assert len(boxes) == 4 and not [b for b in boxes if "checked" in b]
    walk.post("/consents", nav="next", terms="y")
    for n in (1, 2, 3):
        walk.get(f"/survey/{n}")
        assert "checked" not in walk.page
    walk.post("/survey/3", nav="next")
    walk.get("/card")
    assert not re.findall(r'<input[^>]*name="choice"[^>]*checked', walk.page)
    assert value_of(walk.page, "pin") == ""


def test_going_back_keeps_every_value(walk):
    walk.to_details()
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    # back without the terms: nothing is checked, nothing is lost
    assert walk.post("/consents", nav="back", marketing_email="y").location == "/details"
    walk.get("/details")
    for name, value in DETAILS.items():
        assert value_of(walk.page, name) == value
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    assert checked(walk.page, "marketing_email") and not checked(walk.page, "terms")
    walk.post("/consents", nav="next", terms="y", marketing_email="y")
    walk.get("/survey/1")
    walk.post("/survey/1", nav="next", answer=["shoes", "gifts"])
    walk.get("/survey/2")
    assert walk.post("/survey/2", nav="back", answer="no").location == "/survey/1"
    walk.get("/survey/1")
    assert checked(walk.page, "answer", "shoes") and checked(walk.page, "answer", "gifts")
    assert not checked(walk.page, "answer", "home")
    walk.get("/survey/2")
    assert checked(walk.page, "answer", "no")
    walk.post("/survey/2", nav="next", answer="no")
    walk.get("/survey/3")
    walk.post("/survey/3", nav="next")
    walk.get("/card")
    assert walk.post("/card", nav="back", choice="qr", pin="1234").location == "/survey/3"
    walk.get("/card")
    assert checked(walk.page, "choice", "qr") and value_of(walk.page, "pin") == "1234"


def test_a_language_switch_midway_keeps_the_form(walk):
    walk.to_details("en")
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    assert 'href="/lang/fr?next=/consents"' in walk.page
    assert walk.get("/lang/fr?next=/consents").location == "/consents"
    walk.get("/details")
    assert '<html lang="fr">' in walk.page and value_of(walk.page, "email") == DETAILS["email"]
    assert walk.get("/lang/lt?next=//evil.example/").location == "/"


def test_card_step_checks_the_pin_and_the_choice(walk):
    walk.to_card()
    r = walk.post("/card", nav="next", pin="12")
    assert r.status_code == 422
    assert alerts(walk.page) == ["Please choose a card.", "A PIN is 4 to 6 digits."]


def test_card_choices_follow_the_writer(tmp_path):
    with_nfc = Walk(make(tmp_path / "a", WRITER="sim:").test_client())
    with_nfc.to_card()
    assert re.findall(r'name="choice" value="(\w+)"', with_nfc.page) == ["nfc", "qr", "both"]
    qr_only = Walk(make(tmp_path / "b", WRITER="").test_client())
    qr_only.to_card()
    assert re.findall(r'name="choice" value="(\w+)"', qr_only.page) == ["qr"]
    assert checked(qr_only.page, "choice", "qr")  # the only card there is
    assert qr_only.post("/card", nav="next", choice="nfc").status_code == 422


# --------------------------------------------------------------------------- the service


def test_service_down_keeps_everything_and_the_event_id(walk):
    walk.to_card("fr")
    event_id = walk.session()["flow"]["event_id"]
    r = walk.post("/card", nav="next", choice="qr", pin="4321")
    assert r.status_code == 503
    assert "Le service de fidélité est injoignable" in walk.page
    assert 'data-error="server-down"' in walk.page
    assert checked(walk.page, "choice", "qr") and value_of(walk.page, "pin") == "4321"
    flow = walk.session()["flow"]
    assert flow["event_id"] == event_id and flow["details"] == DETAILS
    # try again: still down, still the same enrolment
    assert walk.post("/card", nav="next", choice="qr", pin="4321").status_code == 503
    assert walk.session()["flow"]["event_id"] == event_id


def _customers(live_server) -> int:
    from server.customers.models import Customer

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(func.count()).select_from(Customer))


def _survey_of(live_server, customer_id: str):
    from server.customers.models import SurveyResponse

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(SurveyResponse.answers)
                        .where(SurveyResponse.customer_id == customer_id))


def _use(app, live_server) -> None:
    app.extensions["kiosk.client"] = ServiceClient(live_server.url,
                                                   live_server.creds["kiosk_key"], 5.0)


def test_try_again_once_the_service_is_back_enrols_once(walk, app, live_server):
    walk.to_card("lt")
    event_id = walk.session()["flow"]["event_id"]
    assert walk.post("/card", nav="next", choice="both", pin="2468").status_code == 503
    _use(app, live_server)
    before = _customers(live_server)
    r = walk.post("/card", nav="next", choice="both", pin="2468")
    assert r.status_code == 302 and r.location == "/issue/"
    s = walk.session()
    assert "flow" not in s  # the personal details are the service's now
    customer = s["customer"]
    assert re.fullmatch(r"C-[0-9A-Z]{4}-[0-9A-Z]{4}", customer["id"])
    assert customer["first_name"] == "Jūratė" and customer["language"] == "lt"
    assert customer["points"] >= customer["welcome_points"] >= 0
    assert s["issue"] == {"choice": "both", "enrol_event_id": event_id}
    assert _customers(live_server) == before + 1
    # Back (or a resubmitted form) after the enrolment never enrols again
    assert walk.get("/card").location == "/issue/"
    assert walk.get("/details").location == "/issue/"
    walk.post("/card", nav="next", choice="qr")
    assert _customers(live_server) == before + 1


def test_survey_answers_reach_the_service(tmp_path, live_server):
    app = make(tmp_path)
    _use(app, live_server)
    walk = Walk(app.test_client())
    walk.to_details("fr")
    walk.post("/details", nav="next", **{**DETAILS, "email": f"s{uuid.uuid4().hex[:8]}@ex.fr"})
    walk.get("/consents")
    walk.post("/consents", nav="next", terms="y", profiling="y")
    walk.get("/survey/1")
    walk.post("/survey/1", nav="next", answer=["gifts", "clothing", "made-up"])
    walk.get("/survey/2")
    walk.post("/survey/2", nav="next", answer="furniture")
    walk.get("/survey/3")
    assert walk.post("/survey/3", nav="next").location == "/card"
    walk.get("/card")
    assert walk.post("/card", nav="next", choice="qr").location == "/issue/"
    answers = _survey_of(live_server, walk.session()["customer"]["id"])
    assert answers == {"_survey": "default-2026", "interests": "clothing,gifts",
                       "planned_purchase": "furniture"}


def test_skipping_the_survey_sends_no_answers(tmp_path, live_server):
    app = make(tmp_path)
    _use(app, live_server)
    walk = Walk(app.test_client())
    walk.to_details()
    walk.post("/details", nav="next", **{**DETAILS, "email": f"k{uuid.uuid4().hex[:8]}@ex.lt"})
    walk.get("/consents")
    walk.post("/consents", nav="next", terms="y")
    walk.get("/survey/1")
    walk.post("/survey/1", nav="next", answer="shoes")
    walk.get("/survey/2")
    assert walk.post("/survey/2", nav="skip").location == "/card"
    walk.get("/card")
    assert walk.post("/card", nav="next", choice="qr").location == "/issue/"
    assert _survey_of(live_server, walk.session()["customer"]["id"]) is None


def test_a_refused_enrolment_says_so_and_keeps_the_form(tmp_path, live_server):
    app = make(tmp_path, CONSENT_VERSION="1999-01")  # a version the service never published
    _use(app, live_server)
    walk = Walk(app.test_client())
    walk.to_card()
    r = walk.post("/card", nav="next", choice="qr")
    assert r.status_code == 422
    assert "Your details could not be registered." in walk.page
    assert 'href="/details"' in walk.page and checked(walk.page, "choice", "qr")
    assert walk.session()["flow"]["details"] == DETAILS


# --------------------------------------------------------------------------- leaving


def test_idle_session_is_wiped_on_the_server(tmp_path):
    walk = Walk(make(tmp_path, IDLE_TIMEOUT=1).test_client(), "lt")
    walk.to_details("lt")
    walk.post("/details", nav="next", **DETAILS)
    time.sleep(0.6)
    assert walk.get("/consents").status_code == 200  # a request is activity
    time.sleep(0.6)
    assert walk.client.post("/alive").status_code == 204  # so is a touch reported by kiosk.js
    time.sleep(0.6)
    assert walk.get("/consents").status_code == 200
    time.sleep(1.2)
    r = walk.get("/consents")
    assert r.location == "/"
    s = walk.session()
    assert "flow" not in s and "lang" not in s  # the next customer starts from scratch
    walk.get("/details")
    assert "Jūratė" not in walk.page


def test_a_page_that_only_polls_does_not_keep_the_session_alive(tmp_path):
    from tests.support.kiosk_flow import hand_over

    client = make(tmp_path, IDLE_TIMEOUT=1).test_client()
    client.get("/")
    hand_over(client, {"customer_id": "C-7F3K-9Q2M", "first_name": "Jūratė",
                       "event_id": "6f1c8a52-4d0e-4a4e-9a57-3f1d2b7c8e90"}, "qr")
    assert client.get("/issue/status").get_json()["state"] != "gone"
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # what issuing.js does, with nobody touching
        client.get("/issue/status")
        time.sleep(0.2)
    assert client.get("/issue/status").get_json()["state"] == "gone"
    with client.session_transaction() as s:
        assert "customer" not in s and "issue" not in s


def test_reset_calls_issuing_first_then_wipes(walk, monkeypatch):
    import kiosk_app.issuing

    seen = []
    monkeypatch.setattr(kiosk_app.issuing, "on_reset",
                        lambda: seen.append(dict(__import__("flask").session)))
    walk.to_details("lt")
    walk.post("/details", nav="next", **DETAILS)
    seen.clear()
    r = walk.client.post("/reset")  # no CSRF token needed: the session may be gone already
    assert r.location == "/"
    assert seen and seen[0]["flow"]["details"] == DETAILS
    s = walk.session()
    assert "flow" not in s and s["lang"] == "lt"  # Cancel keeps the language
    walk.to_details("lt")
    walk.client.post("/reset", data={"why": "idle"})
    assert "lang" not in walk.session()  # the idle timer does not


def test_reset_gives_the_browser_a_new_session_id(walk):
    walk.to_details()
    before = walk.client.get_cookie("kiosk_session").value
    walk.client.post("/reset")
    after = walk.client.get_cookie("kiosk_session").value
    assert before != after
    # the old id names nothing any more
    walk.client.set_cookie("kiosk_session", before)
    assert walk.get("/details").location == "/"


def test_the_session_never_leaves_the_kiosk(walk):
    walk.to_details()
    walk.post("/details", nav="next", **DETAILS)
    cookie = walk.client.get_cookie("kiosk_session").value
    assert "Jūratė" not in cookie and len(cookie) < 64


def test_a_form_without_its_token_goes_back_to_the_start(walk):
    walk.to_details()
    r = walk.client.post("/details", data={"nav": "next", **DETAILS})
    assert r.status_code == 302 and r.location == "/"


def test_pages_are_never_cached(walk):
    for path in ("/", "/details"):
        assert walk.get(path).headers["Cache-Control"] == "no-store"


# --------------------------------------------------------------------------- the survey file


def write(tmp_path, text: str):
    path = tmp_path / "survey.toml"
    path.write_text(text, encoding="utf-8")
    return path


T = 'text = { fr = "f", lt = "l", en = "e" }'


def test_default_survey_is_valid_and_complete():
    s = survey.load(None)
    assert s.id == "default-2026"
    assert [q.kind for q in s.questions] == ["multiple", "single", "single"]
    for q in s.questions:
        assert set(q.text) == {"fr", "lt", "en"}
        for c in q.choices:
            assert all(c.text[lang] for lang in ("fr", "lt", "en"))


@pytest.mark.parametrize(("text", "message"), [
    ('id = "s"\n[[question]]\nid = "q"\ntype = "single"\n' + T
     + '\n[[question.choice]]\nid = "a"\ntext = { fr = "f", en = "e" }\n'
     + '[[question.choice]]\nid = "b"\n' + T,
     "question 1 (q), choice 1: no text in lt"),
    ('id = "s"\n[[question]]\nid = "q"\ntype = "radio"\n' + T,
     "question 1 (q): type must be one of single, multiple, text, not 'radio'"),
    ('id = "s"\n[[question]]\nid = "Q 1"\ntype = "text"\n' + T,
     "question 1: id 'Q 1' must be 1-64 characters"),
    ('id = "s"\n[[question]]\nid = "q"\ntype = "single"\n' + T
     + '\n[[question.choice]]\nid = "a"\n' + T,
     "question 1 (q): a single-choice question needs at least 2"),
    ('id = "s"\n[[question]]\nid = "q"\ntype = "text"\nmax_length = 500\n' + T,
     "question 1 (q): max_length must be a number from 1 to 200"),
    ('id = "s"\n' + '\n'.join(f'[[question]]\nid = "q{i}"\ntype = "text"\n{T}'
                              for i in range(30)),
     "at most 29 questions"),
    ('id = "s"\ncolour = "red"', "unknown key colour"),
    ('id = "s"\n[[question]]\nid = "q"\ntype = "text"\n' + T
     + '\n[[question]]\nid = "q"\ntype = "text"\n' + T, "two questions have the same id"),
    ('id = "s"\n[[question]\n', "not valid TOML"),
])
def test_a_wrong_survey_file_is_refused_with_a_clear_message(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(survey.SurveyError) as exc:
        survey.load(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_the_kiosk_does_not_start_with_a_wrong_survey(tmp_path):
    with pytest.raises(survey.SurveyError, match="cannot read the survey file"):
        make(tmp_path, SURVEY_FILE=str(tmp_path / "missing.toml"))


def test_a_shop_survey_with_a_text_question(tmp_path):
    path = write(tmp_path, 'id = "shop-1"\n[[question]]\nid = "wish"\ntype = "text"\n'
                 'max_length = 12\ntext = { fr = "Un souhait ?", lt = "Norai?", en = "A wish?" }')
    walk = Walk(make(tmp_path, SURVEY_FILE=str(path)).test_client())
    walk.to_details("fr")
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    walk.post("/consents", nav="next", terms="y")
    walk.get("/survey/1")
    assert "Un souhait ?" in walk.page and 'data-keyboard="text"' in walk.page
    r = walk.post("/survey/1", nav="next", answer="far too long an answer")
    assert r.status_code == 422 and value_of(walk.page, "answer") == "far too long an answer"
    assert "12 caractères au maximum" in " ".join(alerts(walk.page))
    assert walk.post("/survey/1", nav="next", answer=" Plus de thé ").location == "/card"
    s = survey.load(path)
    assert s.answers_for_service(walk.session()["flow"]["survey"]) == {
        "_survey": "shop-1", "wish": "Plus de thé"}


def test_an_empty_survey_has_no_step(tmp_path):
    path = write(tmp_path, 'id = "none"\n')
    walk = Walk(make(tmp_path, SURVEY_FILE=str(path)).test_client())
    walk.to_details()
    walk.post("/details", nav="next", **DETAILS)
    walk.get("/consents")
    assert "Questions" not in walk.page
    assert walk.post("/consents", nav="next", terms="y").location == "/card"
    walk.get("/card")
    assert walk.post("/card", nav="back").location == "/consents"
    assert walk.get("/survey/1").location == "/card"
