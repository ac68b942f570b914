"""The kiosk's pieces on their own: the in-memory sessions, the survey's answers, the page frame."""

import re
import time

import pytest

from kiosk_app import create_app, survey
from kiosk_app.memory_session import COOKIE, MemorySessionInterface


@pytest.fixture
def app(tmp_path):
    return create_app({"SERVER_URL": "http://127.0.0.1:9", "DEVICE_KEY": "lk_x",
                       "PRINTER": f"file:{tmp_path / 'out.bin'}", "INSTANCE_PATH": str(tmp_path),
                       "HEARTBEAT_INTERVAL": 0.0, "IDLE_TIMEOUT": 45})


def test_sessions_live_in_memory_and_are_swept(app):
    store = app.session_interface
    assert isinstance(store, MemorySessionInterface)
    assert store.max_idle == 45 + 300
    client = app.test_client()
    with client.session_transaction() as s:
        s["flow"] = {"details": {"first_name": "Jūratė"}}
    sid = client.get_cookie(COOKIE).value
    assert store.sessions[sid]["flow"]["details"]["first_name"] == "Jūratė"
    store.sessions[sid].touched_at = time.monotonic() - store.max_idle - 1
    client.get("/healthz")  # any request sweeps
    assert sid not in store.sessions


def test_an_empty_session_is_not_kept(app):
    client = app.test_client()
    client.get("/healthz")
    assert client.get_cookie(COOKIE) is None
    assert not app.session_interface.sessions


def test_answers_for_the_service():
    s = survey.load(None)
    assert s.answers_for_service({}) is None
    assert s.answers_for_service({"interests": [], "planned_purchase": None}) is None
    # choice ids in the file's order, unknown ones dropped
    assert s.answers_for_service({"interests": ["gifts", "shoes", "x"],
                                  "heard_from": "friends", "planned_purchase": "nope"}) == {
        "_survey": "default-2026", "interests": "shoes,gifts", "heard_from": "friends"}


def test_every_page_has_the_idle_reset_the_overlay_and_no_inline_code(app):
    html = app.test_client().get("/?lang=en").get_data(as_text=True)
    assert re.search(r'<form id="idle-reset" method="post" action="/reset"', html)
    assert 'id="idle-overlay"' in html and 'id="idle-continue"' in html
    assert 'id="kb-labels"' in html and 'data-idle-timeout="45"' in html
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/static/kiosk.js" defer>', '<script src="/static/keyboard.js" defer>']
    assert " style=" not in html and "<style" not in html and " on" + "click" not in html
