"""The till agent through an outage: the durable outbox, the local API, metrics, heartbeat.

(a) the outbox file itself, with processes killed by SIGKILL; (b) the outage end to end with
real processes (the service and the agent under gunicorn, both killed with -9 and restarted):
every tap and purchase reaches the service exactly once, in order; (c) the local API around
it: purchases, /metrics, /display, /queue, and the heartbeat's trace on the device row.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from device_drivers.forwarder import ServerProblem, ServerUnavailable
from device_drivers.outbox import Dispatcher, Outbox
from tests.support.fixtures_devices import last_after, wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tap_body(n: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "qr": f"card-{n}"}


# --------------------------------------------------------------------------- (a) the outbox


ENQUEUE_THEN_WAIT = textwrap.dedent("""
    import sys, time, uuid
    from device_drivers.outbox import Outbox
    outbox = Outbox(sys.argv[1]).open()
    for n in range(int(sys.argv[2])):
        seq = outbox.add("tap", {"event_id": str(uuid.uuid4()), "qr": f"card-{n}"})
        print(f"recorded {seq} card-{n}", flush=True)
    time.sleep(60)  # killed with -9 long before
""")


def test_an_event_recorded_survives_kill_9_right_after(tmp_path):
    path = tmp_path / "queue.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", ENQUEUE_THEN_WAIT, str(path), "20"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    said = []
    try:
        while len(said) < 20:
            line = child.stdout.readline()
            assert line, "the child died before recording"
            said.append(line.split())
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no atexit, no close: the file as it is
        child.wait(5)
    assert child.returncode == -signal.SIGKILL
    with Outbox(path) as outbox:
        pending = outbox.pending()
        assert [(str(i.seq), i.body["qr"]) for i in pending] == [(s[1], s[2]) for s in said]
        assert [i.body["qr"] for i in pending] == [f"card-{n}" for n in range(20)]
        assert all(i.state == "pending" and i.attempts == 0 for i in pending)
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # card tokens: nobody else reads it


SEND_THEN_DIE = textwrap.dedent("""
    import os, signal, sys
    from device_drivers.outbox import Dispatcher, Outbox
    log = open(sys.argv[2], "a")
    def post(kind, body):
        log.write(body["event_id"] + "\\n"); log.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # the service has it; we die before forgetting it
    dispatcher = Dispatcher(Outbox(sys.argv[1]).open(), post)
    dispatcher.start()
    dispatcher.drained(30)
""")


def test_a_crash_between_send_and_forget_resends_the_same_event_id(tmp_path):
    path, sent = tmp_path / "queue.sqlite3", tmp_path / "sent.log"
    with Outbox(path) as outbox:
        first = tap_body(1)
        outbox.add("tap", first)
        outbox.add("purchase", {"event_id": str(uuid.uuid4()), "total": "1.00"})
    child = subprocess.run([sys.executable, "-c", SEND_THEN_DIE, str(path), str(sent)],
                           cwd=ROOT, timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert sent.read_text().split() == [first["event_id"]]

    received = []
    with Outbox(path) as outbox:
        dispatcher = Dispatcher(outbox, lambda kind, body: received.append(body) or {})
        dispatcher.start()
        assert dispatcher.drained(5)
        dispatcher.stop()
        assert outbox.depth() == 0
    # the same id again: the service answers with its first result and writes nothing
    assert received[0]["event_id"] == first["event_id"]
    assert len(received) == 2


class FakeService:
    """``post(kind, body)`` for a dispatcher: down, then up; refuses events marked bad."""

    def __init__(self) -> None:
        self.up = False
        self.received: list[tuple[str, dict]] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def post(self, kind: str, body: dict) -> dict:
        with self.lock:
            self.attempts += 1
            if not self.up:
                raise ServerUnavailable("the loyalty service does not answer")
            if body.get("bad"):
                raise ServerProblem(status=422, type="/api/v1/problems/validation-error",
                                    title="The request is not valid", detail="1 field")
            self.received.append((kind, body))
            return {"kind": kind, "event_id": body["event_id"]}


def test_order_is_kept_and_a_refused_event_does_not_block_the_queue(tmp_path):
    service = FakeService()
    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        dispatcher = Dispatcher(outbox, service.post, wait=0.2, backoff_min=0.05,
                                backoff_max=0.1)
        dispatcher.start()
        sent = []
        for n in range(6):
            kind = "tap" if n % 2 == 0 else "purchase"
            body = tap_body(n) if kind == "tap" else {"event_id": str(uuid.uuid4()), "n": n}
            if n == 3:
                body["bad"] = True  # the service will refuse this one for good
            delivery = dispatcher.submit(kind, body)
            assert delivery.outcome == "queued", delivery
            sent.append((kind, body["event_id"]))
        assert dispatcher.depth == 6 and outbox.depth() == 6
        time.sleep(0.3)  # a few attempts while down: nothing sent, nothing lost
        assert service.received == [] and outbox.depth() == 6

        service.up = True
        dispatcher.kick()
        assert dispatcher.drained(5)
        # in order, each once; the refused one is kept aside, the ones after it went through
        assert [(k, b["event_id"]) for k, b in service.received] == sent[:3] + sent[4:]
        assert dispatcher.failed == 1
        [refused] = outbox.failed()
        assert refused.event_id == sent[3][1] and refused.state == "failed"
        assert refused.problem["status"] == 422 and refused.problem["type"] == "validation-error"
        assert refused.last_error.startswith("422 validation-error")

        # the service is up and nothing waits: the next event goes at once, not via the file
        service.received.clear()
        delivery = dispatcher.submit("tap", tap_body(7))
        assert delivery.outcome == "sent" and delivery.answer["kind"] == "tap"
        assert outbox.depth() == 0 and outbox.find(delivery.event_id) is None
        # the same refused event posted again is answered from the file, not sent again
        again = dispatcher.submit("purchase", {"event_id": sent[3][1], "bad": True})
        assert again.outcome == "refused" and len(service.received) == 1
        dispatcher.stop()


def test_an_event_behind_others_waits_its_turn_and_is_answered_when_delivered(tmp_path):
    service = FakeService()
    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        dispatcher = Dispatcher(outbox, service.post, wait=2.0, backoff_min=5, backoff_max=5)
        dispatcher.start()
        first = dispatcher.submit("tap", tap_body(1))
        assert first.outcome == "queued"  # down: recorded, the sender now backs off 5 s
        service.up = True
        # a new event does not overtake the first: it queues behind it, wakes the sender
        # and, delivered within the wait, gets its answer
        second = dispatcher.submit("purchase", {"event_id": str(uuid.uuid4())})
        assert second.outcome == "sent" and second.answer["kind"] == "purchase"
        assert [k for k, _ in service.received] == ["tap", "purchase"]
        dispatcher.stop()


# --------------------------------------------------------------------------- (b) the outage


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any LOYALTY_* of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(extra)
    return env


class Processes:
    """gunicorn masters in sessions of their own, killed with -9 as a group."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict, health: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - kept by the process
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log,
                                start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited: {(self.tmp_path / f'{name}.log').read_text()}")
            try:
                if requests.get(health, timeout=1).status_code == 200:
                    return proc
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not start: {(self.tmp_path / f'{name}.log').read_text()}")
            time.sleep(0.1)

    @staticmethod
    def kill9(proc: subprocess.Popen) -> None:
        """SIGKILL to the master and every worker (its process group)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def test_outage_every_tap_and_purchase_reaches_the_service_exactly_once_in_order(
        tmp_path, processes):
    server_dir, agent_dir = tmp_path / "server", tmp_path / "agent"
    server_dir.mkdir()
    port, agent_port = free_port(), free_port()
    url, agent = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{agent_port}"
    # one card tapped nine times in seconds is a clone signal (429); this test is about the
    # outbox, so the per-card limit is off here (tests/test_clone_signals.py covers it)
    server_env = clean_env(LOYALTY_INSTANCE_PATH=str(server_dir), LOYALTY_CARD_BASE_URL=url,
                           LOYALTY_CARD_TAP_LIMIT="0")
    for args in (["db", "upgrade"], ["demo", "init"]):
        subprocess.run([str(BIN / "flask"), "--app", "server", *args], cwd=ROOT, env=server_env,
                       check=True, capture_output=True, timeout=60)
    creds = json.loads((server_dir / "demo-credentials.json").read_text())
    key_file = tmp_path / "till.key"
    key_file.write_text(creds["till_key"])
    key_file.chmod(0o600)

    server_cmd = [str(BIN / "gunicorn"), "--no-control-socket", "-w", "2", "-b",
                  f"127.0.0.1:{port}", "server:create_app()"]
    agent_cmd = [str(BIN / "gunicorn"), "--no-control-socket", "-c",
                 str(ROOT / "device_drivers" / "agent_gunicorn.py"),
                 "device_drivers.agent:create_app()"]
    agent_env = clean_env(LOYALTY_AGENT_BIND=f"127.0.0.1:{agent_port}", LOYALTY_READERS="sim:",
                          LOYALTY_SERVER_URL=url, LOYALTY_DEVICE_KEY_FILE=str(key_file),
                          LOYALTY_INSTANCE_PATH=str(agent_dir), LOYALTY_REQUEST_TIMEOUT="2",
                          LOYALTY_QUEUE_BACKOFF_MIN="0.1", LOYALTY_QUEUE_BACKOFF_MAX="0.5",
                          LOYALTY_HEARTBEAT_INTERVAL="1")
    server = processes.start("server", server_cmd, server_env, f"{url}/healthz")
    agent_proc = processes.start("agent", agent_cmd, agent_env, f"{agent}/status")

    # a customer and a card, made by the kiosk over HTTP
    kiosk = {"Authorization": f"Bearer {creds['kiosk_key']}"}
    r = requests.post(f"{url}/api/v1/enrolments", headers=kiosk, timeout=5, json={
        "event_id": str(uuid.uuid4()), "first_name": "Rūta", "last_name": "Žukauskienė",
        "email": f"{uuid.uuid4().hex[:8]}@example.lt", "language": "lt",
        "consents": {"terms": True}, "consent_version": "2026-11"})
    assert r.status_code == 201, r.text
    customer_id = r.json()["customer_id"]
    r = requests.post(f"{url}/api/v1/customers/{customer_id}/cards", headers=kiosk, timeout=5,
                      json={"event_id": str(uuid.uuid4()), "kind": "qr"})
    assert r.status_code == 201, r.text
    card_url = r.json()["url"]

    expected: list[tuple[str, str]] = []  # (kind, receipt or tap number), in the till's order
    seq = 0

    def tap(offline: bool) -> dict:
        nonlocal seq
        assert requests.post(f"{agent}/simulate", json={"url": card_url},
                             timeout=5).status_code == 202
        result = wait_until(lambda: (lambda r: r if r["seq"] > seq else None)(
            requests.get(f"{agent}/last", timeout=5).json()), 10, "the tap's outcome")
        seq = result["seq"]
        expected.append(("tap", result["event_id"]))
        if offline:
            assert result["ok"] is False and result["queued"] is True, result
            assert result["error"]["title"] == "Offline — recorded"
        else:
            assert result["ok"] is True, result
            assert result["record"]["customer_id"] == customer_id
        return result

    def purchase(n: int, offline: bool) -> dict:
        receipt = f"R-{n:03d}"
        r = requests.post(f"{agent}/purchases", timeout=10, json={
            "customer_id": customer_id, "currency": "EUR", "total": "12.50",
            "receipt": receipt, "lines": [{"sku": "TEA-1", "name": "Tea", "quantity": "1",
                                           "unit_price": "12.50"}]})
        assert r.status_code == (202 if offline else 201), r.text
        body = r.json()
        assert body["queued"] is offline and uuid.UUID(body["event_id"])
        expected.append(("purchase", receipt))
        return body

    n = 0
    for _ in range(3):  # the service is up: answered at once
        tap(offline=False)
        purchase(n := n + 1, offline=False)

    processes.kill9(server)
    for _ in range(3):  # the service is gone: recorded
        tap(offline=True)
        purchase(n := n + 1, offline=True)
    assert requests.get(f"{agent}/queue", timeout=5).json()["depth"] == 6
    metrics = requests.get(f"{agent}/metrics", timeout=5).text
    assert "loyalty_agent_queue_depth 6.0" in metrics
    assert "loyalty_agent_server_up 0.0" in metrics

    processes.kill9(agent_proc)  # the agent dies too, with everything in its queue
    agent_proc = processes.start("agent", agent_cmd, agent_env, f"{agent}/status")
    seq = 0  # a new agent process counts its outcomes from 1 again
    queue = requests.get(f"{agent}/queue", timeout=5).json()
    assert queue["depth"] == 6, queue
    for _ in range(2):  # still offline after the restart: recorded behind the others
        tap(offline=True)
        purchase(n := n + 1, offline=True)
    assert requests.get(f"{agent}/queue", timeout=5).json()["depth"] == 10

    started = time.monotonic()
    processes.start("server", server_cmd, server_env, f"{url}/healthz")
    wait_until(lambda: requests.get(f"{agent}/queue", timeout=5).json()["depth"] == 0, 15,
               "the queue to drain")
    drained = time.monotonic() - started
    queue = requests.get(f"{agent}/queue", timeout=5).json()
    assert queue["failed"] == 0 and queue["refused"] == [] and queue["online"] is True, queue
    tap(offline=False)  # and the till is online again
    purchase(n := n + 1, offline=False)

    db = sqlite3.connect(server_dir / "loyalty.db")
    visits = db.execute("SELECT 'tap', event_id, recorded_at, tapped_at FROM visits "
                        "WHERE customer_id = ?", (customer_id,)).fetchall()
    bought = db.execute("SELECT 'purchase', receipt, recorded_at, paid_at, event_id "
                        "FROM purchases WHERE customer_id = ?", (customer_id,)).fetchall()
    db.close()
    taps_expected = [e for k, e in expected if k == "tap"]
    receipts_expected = [e for k, e in expected if k == "purchase"]
    # 3 online, 3 + 2 offline, 1 after: none lost, none twice
    assert len(visits) == len(taps_expected) == 9
    assert len(bought) == len(receipts_expected) == 9
    assert sorted(v[1] for v in visits) == sorted(taps_expected)
    assert sorted(p[1] for p in bought) == sorted(receipts_expected)
    assert len({p[4] for p in bought}) == 9
    # in order: the service recorded them in the order the till took them
    recorded = sorted([(v[2], "tap", v[1]) for v in visits] +
                      [(p[2], "purchase", p[1]) for p in bought])
    assert [(kind, ident) for _, kind, ident in recorded] == expected
    # and each is dated when it happened at the till, not when it was replayed
    client_times = [v[3] for v in sorted(visits, key=lambda v: v[2])]
    assert client_times == sorted(client_times)
    assert drained < 10


# --------------------------------------------------------------------------- (c) local API


@pytest.fixture
def agent_app(live_server, tmp_path):
    """An agent with a sim: reader, its queue in tmp_path, a heartbeat every 0.2 s."""
    from device_drivers.agent import create_app

    apps = []

    def make(**config):
        app = create_app({"SERVER_URL": live_server.url,
                          "DEVICE_KEY": live_server.creds["till_key"], "READERS": "sim:",
                          "REOPEN_DELAY": 0.5, "INSTANCE_PATH": str(tmp_path / "agent"),
                          "HEARTBEAT_INTERVAL": 0.2, **config})
        app.extensions["agent"].start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["agent"].stop()


def enrol(live_server, first_name: str, last_name: str) -> tuple[str, dict]:
    from tests.test_e2e_till import enrol_with_card

    return enrol_with_card(live_server, first_name, last_name)


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_metrics_display_and_purchases_through_the_agent(live_server, agent_app):
    customer_id, card = enrol(live_server, "Gabrielė", "Vaitkutė")
    client = agent_app().test_client()
    wait_until(lambda: client.get("/status").json["readers"][0]["status"] == "ready")
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, 'loyalty_agent_reader_up{reader="sim:"}') == 1.0
    assert metric(text, "loyalty_agent_queue_depth") == 0.0
    assert metric(text, 'loyalty_agent_taps_total{reader="sim:"}') == 0.0

    client.post("/simulate", json={"url": card["url"]})
    result = last_after(client, 0)
    assert result["ok"] is True and result["queued"] is False and result["event_id"]

    page = client.get("/display").get_data(as_text=True)
    assert "Gabrielė V." in page and customer_id not in page.split("<main")[1].split(">", 1)[1]
    assert '<h1 id="greeting">Bonjour, <span id="name">' in page  # the customer's language
    assert f'<span id="points">{result["record"]["points"]}</span>' in page

    r = client.post("/purchases", json={
        "customer_id": customer_id, "currency": "EUR", "total": "20.00", "receipt": "A-1",
        "lines": [{"sku": "BOOK-1", "name": "Book", "quantity": "2", "unit_price": "10.00"}]})
    assert r.status_code == 201, r.json
    assert r.json["customer_id"] == customer_id and r.json["queued"] is False
    assert r.json["points_earned"] > 0 and uuid.UUID(r.json["event_id"])
    # posted again with its event id: the service's first answer, nothing written twice
    again = client.post("/purchases", json={
        "event_id": r.json["event_id"], "customer_id": customer_id, "currency": "EUR",
        "total": "20.00", "receipt": "A-1", "paid_at": "2026-11-24T10:00:00+01:00",
        "lines": [{"sku": "BOOK-1", "name": "Book", "quantity": "2", "unit_price": "10.00"}]})
    assert again.status_code == 201 and again.json["purchase_id"] == r.json["purchase_id"]

    # the agent checks what it can before queueing; the service checks the rest
    bad = client.post("/purchases", json={"currency": "EUR", "total": "1.00", "lines": []})
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert {e["field"] for e in bad.json["errors"]} == {"lines", "(body)"}
    refused = client.post("/purchases", json={
        "customer_id": "C-0000-0000", "currency": "EUR", "total": "1.00",
        "lines": [{"sku": "X", "name": "X", "quantity": "1", "unit_price": "1.00"}]})
    assert refused.status_code == 404 and refused.json["type"].endswith("/customer-not-found")

    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, 'loyalty_agent_taps_total{reader="sim:"}') == 1.0
    assert metric(text, 'loyalty_agent_forward_seconds_count{kind="tap",outcome="sent"}') == 1.0
    assert metric(text, 'loyalty_agent_forward_seconds_count{kind="purchase",outcome="sent"}') \
        == 2.0
    assert metric(text, 'loyalty_agent_forward_seconds_count{kind="purchase",outcome="refused"}'
                  ) == 1.0
    assert metric(text, "loyalty_agent_server_up") == 1.0
    assert metric(text, "loyalty_agent_last_server_contact_timestamp_seconds") > time.time() - 60


def test_offline_tap_and_purchase_are_recorded_and_said_so(live_server, agent_app, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    app = agent_app(SERVER_URL=dead, REQUEST_TIMEOUT=1.0, QUEUE_BACKOFF_MAX=0.2,
                    HEARTBEAT_INTERVAL=0)
    client = app.test_client()
    wait_until(lambda: client.get("/status").json["readers"][0]["status"] == "ready")
    client.post("/simulate", json={"qr": "CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"})
    result = last_after(client, 0)
    assert result["ok"] is False and result["queued"] is True and result["queue_depth"] == 1
    assert result["error"] == {"type": "server-unreachable", "title": "Offline — recorded",
                               "detail": result["error"]["detail"]}
    r = client.post("/purchases", json={
        "customer_id": "C-7F3K-9Q2M", "currency": "EUR", "total": "1.00",
        "lines": [{"sku": "X", "name": "X", "quantity": "1", "unit_price": "1.00"}]})
    assert r.status_code == 202 and r.json["queued"] is True and r.json["queue_depth"] == 2

    assert "Offline — recorded" in client.get("/display").get_data(as_text=True)
    page = client.get("/").get_data(as_text=True)
    assert 'id="queue-depth">2<' in page and "unreachable" in page
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "loyalty_agent_queue_depth") == 2.0
    assert metric(text, "loyalty_agent_server_up") == 0.0
    queue = client.get("/queue").json
    assert [i["kind"] for i in queue["pending"]] == ["tap", "purchase"]
    assert all("body" not in i for i in queue["pending"])  # a card token stays in the file
    assert queue["pending"][1]["event_id"] == r.json["event_id"]


def test_heartbeat_puts_reader_health_on_the_device_row(live_server, agent_app):
    from server.devices.auth import hash_key
    from server.devices.models import Device

    app = agent_app(READERS="sim:, nosuch:thing")
    client = app.test_client()
    wait_until(lambda: client.get("/status").json["last_heartbeat"], what="a heartbeat")

    def device():
        with Session(live_server.app.extensions["loyalty.db"].main) as session:
            return session.scalar(select(Device).where(
                Device.key_hash == hash_key(live_server.creds["till_key"])))

    row = wait_until(lambda: (lambda d: d if d.health and d.health["readers"][0]["status"]
                              == "ready" else None)(device()), what="the reader to be ready")
    assert row.last_seen_at is not None
    assert time.time() - row.last_seen_at.timestamp() < 30
    readers = {r["uri"]: r for r in row.health["readers"]}
    assert readers["nosuch:thing"]["status"] == "failed"
    assert "unknown reader URI" in readers["nosuch:thing"]["error"]
    assert row.health["queue"] == {"depth": 0, "failed": 0}
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, 'loyalty_agent_reader_up{reader="nosuch:thing"}') == 0.0
    listed = live_server.app.test_cli_runner().invoke(args=["devices", "list"]).output
    till = next(line for line in listed.splitlines() if line.startswith(f"{row.id}\t"))
    assert "seen 20" in till and "readers 1/2 ready" in till


def test_heartbeat_endpoint_roles_and_body(client, creds):
    from tests.support.fixtures_server import assert_problem

    body = {"readers": [{"uri": "pcsc:ACR122", "status": "failed", "error": "unplugged"}],
            "queue": {"depth": 3, "failed": 1}}
    for device in ("till", "kiosk"):
        r = client.post("/api/v1/devices/heartbeat", json=body, headers=creds.h(device))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["device_id"] == creds.device_ids[device]
    assert_problem(client.post("/api/v1/devices/heartbeat", json=body,
                               headers=creds.staff_auth("desk1")), 403, "forbidden-role")
    assert_problem(client.post("/api/v1/devices/heartbeat", json=body), 401, "unauthenticated")
    assert_problem(client.post("/api/v1/devices/heartbeat", headers=creds.h("till"),
                               json={"readers": [{"uri": "x", "status": "on fire"}]}),
                   422, "validation-error")


# ------------------------------------------------------------------ (d) sales without a card


OLD_SCHEMA = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('tap', 'purchase')),
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    problem TEXT,
    failed_at TEXT
);
CREATE INDEX outbox_state_seq ON outbox (state, seq);
"""


def test_a_queue_file_of_an_older_agent_takes_the_new_kind_and_keeps_its_events(tmp_path):
    path = tmp_path / "queue.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    waiting = tap_body(7)
    db.execute("INSERT INTO outbox (seq, kind, event_id, body, created_at) "
               "VALUES (5, 'tap', ?, ?, '2026-11-24T10:00:00+00:00')",
               (waiting["event_id"], json.dumps(waiting)))
    db.commit()
    db.close()
    with Outbox(path) as outbox:
        seq = outbox.add("anonymous_sales", {"event_id": str(uuid.uuid4()), "day": "2026-11-24",
                                             "baskets": 3, "total": "30.00", "currency": "EUR"})
        assert seq == 6  # after the tap that was waiting
        assert [(i.seq, i.kind) for i in outbox.pending()] == [(5, "tap"),
                                                               (6, "anonymous_sales")]
        assert outbox.pending()[0].body == waiting
    with Outbox(path) as outbox:  # opened again: nothing to upgrade, nothing lost
        assert outbox.depth() == 2


@pytest.fixture
def server_later(tmp_path):
    """A real service (SQLite, demo set-up) that starts listening on its port only when
    ``start()`` is called: until then a till agent finds nobody there."""
    from werkzeug.serving import make_server

    from server import create_app
    from server.migrate import upgrade
    from tests.support.fixtures_server import app_config

    app = create_app(app_config(tmp_path / "server"))
    upgrade(app)
    assert app.test_cli_runner().invoke(args=["demo", "init"]).exit_code == 0
    creds = json.loads((tmp_path / "server" / "demo-credentials.json").read_text())
    port = free_port()
    running = []

    class Later:
        url = f"http://127.0.0.1:{port}"
        till_key = creds["till_key"]
        flask_app = app

        @staticmethod
        def start() -> None:
            server = make_server("127.0.0.1", port, app, threaded=True)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            running.append((server, thread))

    try:
        yield Later
    finally:
        for server, thread in running:
            server.shutdown()
            thread.join(5)
            server.server_close()
        app.extensions["loyalty.db"].dispose()


def test_sales_without_a_card_reach_the_service_through_an_outage_and_a_restart(
        tmp_path, server_later):
    from device_drivers.agent import create_app

    def agent():
        app = create_app({"SERVER_URL": server_later.url, "DEVICE_KEY": server_later.till_key,
                          "READERS": "", "INSTANCE_PATH": str(tmp_path / "agent"),
                          "REQUEST_TIMEOUT": 1.0, "QUEUE_WAIT": 0.2, "QUEUE_BACKOFF_MIN": 0.05,
                          "QUEUE_BACKOFF_MAX": 0.2, "HEARTBEAT_INTERVAL": 0})
        app.extensions["agent"].start()
        return app

    first = agent()
    client = first.test_client()
    # what the agent can tell at once
    bad = client.put("/anonymous-sales", json={"day": "24/11/2026", "baskets": -1,
                                               "total": "1.234", "currency": "eur", "x": 1})
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert {e["field"] for e in bad.json["errors"]} == {"day", "baskets", "total", "currency",
                                                         "x"}
    assert client.put("/anonymous-sales", data="day=1").status_code == 415

    # the service is down: the day's totals, then a corrected report, then one it will refuse
    day = {"day": "2026-11-23", "seller": "Asta", "currency": "EUR"}
    queued = [client.put("/anonymous-sales", json={**day, "baskets": 40, "total": "812.40"}),
              client.put("/anonymous-sales", json={**day, "baskets": 42, "total": "850.90"}),
              client.put("/anonymous-sales", json={**day, "seller": "Jonas", "baskets": 1,
                                                   "total": "5.00", "currency": "USD"})]
    assert [r.status_code for r in queued] == [202, 202, 202]
    assert [r.json["queue_depth"] for r in queued] == [1, 2, 3]
    assert all(r.json["queued"] is True and uuid.UUID(r.json["event_id"]) for r in queued)
    first.extensions["agent"].stop()  # the agent restarts with its queue on disk

    second = agent()
    client = second.test_client()
    assert client.get("/queue").json["depth"] == 3
    assert [i["kind"] for i in client.get("/queue").json["pending"]] == ["anonymous_sales"] * 3
    server_later.start()
    wait_until(lambda: client.get("/queue").json["depth"] == 0, 15, "the queue to drain")
    queue = client.get("/queue").json
    assert queue["failed"] == 1 and queue["refused"][0]["problem"]["type"] == "currency-mismatch"
    assert queue["refused"][0]["event_id"] == queued[2].json["event_id"]

    from sqlalchemy import select as sql_select

    from server.reports.models import AnonymousSales

    def rows():
        with Session(server_later.flask_app.extensions["loyalty.db"].main) as s:
            return [(r.day.isoformat(), r.seller, r.baskets, r.total_cents) for r in
                    s.scalars(sql_select(AnonymousSales).order_by(AnonymousSales.day))]

    # replayed in order: the corrected report is the one kept
    assert rows() == [("2026-11-23", "Asta", 42, 85090)]

    # online: answered by the service at once; the same report again changes nothing
    today = {"event_id": str(uuid.uuid4()), "day": "2026-11-24", "baskets": 7,
             "total": "99.99", "currency": "EUR"}
    sent = client.put("/anonymous-sales", json=today)
    assert sent.status_code == 200, sent.json
    assert sent.json["queued"] is False and sent.json["replaced"] is False
    assert (sent.json["baskets"], sent.json["total"]) == (7, "99.99")
    again = client.put("/anonymous-sales", json=today)
    assert again.status_code == 200 and again.json["replaced"] is True
    assert rows() == [("2026-11-23", "Asta", 42, 85090), ("2026-11-24", "", 7, 9999)]
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, 'loyalty_agent_forward_seconds_count{kind="anonymous_sales",'
                        'outcome="sent"}') == 4.0  # two replayed, today's twice
    second.extensions["agent"].stop()
