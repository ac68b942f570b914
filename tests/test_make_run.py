"""`make run` as a newcomer uses it: everything starts, a card goes round, Ctrl-C stops it all."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.support.escpos_parse import decode_qr_codes
from tests.support.fixtures_devices import wait_until

ROOT = Path(__file__).resolve().parent.parent
PORTS = (8000, 8080, 8765)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def system(tmp_path):
    busy = [p for p in PORTS if listening(p)]
    if busy:
        pytest.skip(f"ports {busy} are in use: make run needs 8000, 8080 and 8765")
    log = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_all.py")], cwd=ROOT,
                            env={**os.environ, "LOYALTY_INSTANCE_PATH": str(tmp_path / "inst"),
                                 # everything the processes can say, to search it for secrets
                                 "LOYALTY_LOG_LEVEL": "DEBUG"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        log.seek(0)
        return log.read()

    try:
        wait_until(lambda: "Loyalty system running" in output() or proc.poll() is not None,
                   timeout=90, what="make run to start")
        assert proc.poll() is None, output()
        yield proc, tmp_path / "inst", output
    finally:
        if proc.poll() is None:
            # a failed test: stop it as Ctrl-C does, so that the servers, which run in
            # sessions of their own, go too; kill only what does not stop
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


KIOSK = "http://127.0.0.1:8080"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def walk_the_kiosk(kiosk: requests.Session) -> str:
    """A customer through every step, as the touch screen posts them; the done page."""
    page = kiosk.get(f"{KIOSK}/?lang=en", timeout=5).text

    def post(path: str, **data: str) -> str:
        nonlocal page
        r = kiosk.post(f"{KIOSK}{path}", timeout=20,
                       data={"csrf_token": CSRF.search(page).group(1), **data})
        assert r.status_code == 200, (path, r.status_code, r.text)
        page = r.text
        return page

    post("/begin")
    post("/language", lang="en")
    post("/details", nav="next", first_name="Oniutė", last_name="Petraitytė",
         phone="+370 612 34567", email="Oniute.Petraityte@Example.LT")
    post("/consents", nav="next", terms="y")
    post("/survey/1", nav="skip")
    post("/card", nav="next", choice="both")  # the demo's sim: writer "writes" at once
    wait_until(lambda: kiosk.get(f"{KIOSK}/issue/status", timeout=5).json()["state"] == "done",
               timeout=30, what="the cards to be made")
    return kiosk.get(f"{KIOSK}/issue/done", timeout=5).text


def test_make_run_goes_round_and_stops_on_ctrl_c(system):
    proc, instance, output = system
    kiosk = requests.Session()
    done = walk_the_kiosk(kiosk)
    assert "Oniutė" in done, done
    # both cards made, and the programme's welcome bonus said
    assert 'data-made="nfc"' in done and 'data-made="qr"' in done
    assert 'id="welcome-bonus"' in done
    card_url = re.search(r'id="card-url">([^<]+)', done).group(1)
    code = re.search(r'id="customer-code">([^<]+)', done).group(1)

    printed = (instance / "printer-output.bin").read_bytes()
    assert decode_qr_codes(printed) == [card_url.upper()]

    r = requests.post("http://127.0.0.1:8765/simulate", json={"url": card_url}, timeout=5)
    assert r.status_code == 202
    last = wait_until(lambda: (lambda j: j if j["seq"] else None)(
        requests.get("http://127.0.0.1:8765/last", timeout=5).json()), what="the tap")
    assert last["ok"] is True, last
    assert last["record"]["customer_id"] == code
    assert last["record"]["display_name"] == "Oniutė P."
    till = {"Authorization": "Bearer " + json.loads(
        (instance / "demo-credentials.json").read_text())["till_key"]}
    bought = requests.post("http://127.0.0.1:8000/api/v1/purchases", headers=till, timeout=5,
                           json={"event_id": str(uuid.uuid4()), "card": card_url,
                                 "paid_at": datetime.now(UTC).isoformat(), "currency": "EUR",
                                 "total": "12.50", "lines": [{"sku": "SKU-1", "name": "Mug",
                                                              "quantity": "1",
                                                              "unit_price": "12.50"}]})
    assert bought.status_code == 201, bought.text

    # a phone opening the card: the page says nothing personal, the token reaches no log
    page = requests.get(card_url, timeout=5)
    assert page.status_code == 200 and "Petraitytė" not in page.text and code not in page.text
    token = card_url.rsplit("/", 1)[1]

    started = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the launcher
    assert proc.wait(timeout=20) == 0, output()
    assert time.monotonic() - started < 15
    assert not [p for p in PORTS if listening(p)], "a process outlived Ctrl-C"
    secrets = [instance / "demo-credentials.json", instance / "vault.key",
               instance / "card-keys.json", instance / "loyalty.db", instance / "vault.db"]
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    logs = output()
    assert "lk_" not in logs, "a device key reached the console"
    assert token not in logs, "a card token reached the console"
    assert " DEBUG " in logs, "the run did not log at DEBUG: the search below proves nothing"
    # no personal data in any log line, at DEBUG, in any spelling
    for needle in ("Oniutė", "Oniute", "Petraitytė", "Petraityte", "oniute.petraityte",
                   "612 34567", "61234567"):
        assert needle.lower() not in logs.lower(), f"{needle!r} reached a log"
    # the slip carries the first name, and nothing else of the customer
    slip = printed.decode("cp858", errors="replace")
    assert "Oniut" in slip  # the greeting (the printer's code page has no ė)
    for needle in ("Petraityt", "oniute.petraityte", "61234567", "612 34567"):
        assert needle.lower() not in slip.lower(), f"{needle!r} was printed"
