"""The till agent replays its offline queue in batches, and writes each event ahead of its send.

(a) the dispatcher over a real outbox file, the service stood in for by a recording function
(the batching rules: which events go together, what a refusal of the whole batch does);
(b) the real agent against the real service over HTTP: a queue made during an outage drains
in batches, in order, each event once, refused ones set aside; an older service without
``POST /taps/batch`` gets the same queue one event at a time; (c) the agent under gunicorn,
killed with SIGKILL while a tap is on the wire and started again: the tap arrives once.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from device_drivers.forwarder import ServerProblem, ServerUnavailable
from device_drivers.outbox import BATCH_RETRY_AFTER, Dispatcher, Outbox
from tests.support.faults import Partition
from tests.support.fixtures_devices import wait_until
from tests.test_agent_offline import Processes, clean_env, free_port, metric

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tap_body(n: int, **extra) -> dict:
    return {"event_id": str(uuid.uuid4()), "qr": f"card-{n}", **extra}


def other_body(n: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "n": n}


class BatchService:
    """``post`` and ``post_batch`` for a dispatcher, recording each call; taps marked
    ``bad`` are refused, as the service refuses a forged card."""

    def __init__(self, batch: str = "ok", max_batch: int | None = None) -> None:
        self.batch = batch  # ok | missing (an older service) | invalid (refuses a batch)
        self.max_batch = max_batch
        self.calls: list[tuple[str, list[str]]] = []  # (kind or "batch", event ids)
        self.lock = threading.Lock()

    def post(self, kind: str, body: dict) -> dict:
        with self.lock:
            self.calls.append((kind, [body["event_id"]]))
        if body.get("bad"):
            raise ServerProblem(status=422, type="/api/v1/problems/card-token-forged",
                                title="The card token signature does not match")
        return {"kind": kind, "event_id": body["event_id"]}

    def post_batch(self, bodies: list[dict]) -> list[dict]:
        with self.lock:
            if self.batch == "missing":
                raise ServerProblem(status=404, type="/api/v1/problems/not-found",
                                    title="No such resource")
            if self.max_batch and len(bodies) > self.max_batch:
                raise ServerProblem(status=413, type="/api/v1/problems/batch-too-large",
                                    title="Too many", body={"max": self.max_batch})
            if self.batch == "invalid":
                raise ServerProblem(status=422, type="/api/v1/problems/validation-error",
                                    title="The request does not match the schema")
            self.calls.append(("batch", [b["event_id"] for b in bodies]))
        return [{"event_id": b["event_id"], "status": "problem", "visit_id": None,
                 "problem": {"type": "/api/v1/problems/card-token-forged", "status": 422,
                             "title": "The card token signature does not match"}}
                if b.get("bad") else
                {"event_id": b["event_id"], "status": "recorded", "visit_id": n}
                for n, b in enumerate(bodies)]


def fill(outbox: Outbox, kinds: str) -> list[str]:
    """Queue one event per letter: t a tap, p a purchase, s a day's sales, x a refused tap."""
    ids = []
    for n, letter in enumerate(kinds):
        kind = {"t": "tap", "x": "tap", "p": "purchase", "s": "anonymous_sales"}[letter]
        body = tap_body(n, bad=True) if letter == "x" else \
            tap_body(n) if letter == "t" else other_body(n)
        outbox.add(kind, body)
        ids.append(body["event_id"])
    return ids


def drain(outbox: Outbox, service: BatchService, **options) -> Dispatcher:
    dispatcher = Dispatcher(outbox, service.post, post_batch=service.post_batch,
                            backoff_min=0.01, backoff_max=0.05, **options)
    dispatcher.start()
    assert dispatcher.drained(10)
    dispatcher.stop()
    return dispatcher


# --------------------------------------------------------------------------- (a) the rules


def test_taps_in_a_row_go_together_purchases_and_sales_keep_their_place(tmp_path):
    service = BatchService()
    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        ids = fill(outbox, "tttptxtsttttt" + "p" + "t")
        dispatcher = drain(outbox, service, batch_max=4)
        assert service.calls == [
            ("batch", ids[0:3]), ("purchase", [ids[3]]), ("batch", ids[4:7]),
            ("anonymous_sales", [ids[7]]), ("batch", ids[8:12]),
            ("tap", [ids[12]]),  # the run's last tap, alone before the purchase
            ("purchase", [ids[13]]), ("tap", [ids[14]])]  # a lone tap goes by POST /taps
        # the refused tap is set aside with its problem; the others are gone from the file
        assert outbox.depth() == 0 and dispatcher.failed == 1
        [refused] = outbox.failed()
        assert refused.event_id == ids[5] and refused.state == "failed"
        assert refused.problem["type"] == "card-token-forged"
        assert refused.problem["status"] == 422
        assert refused.last_error.startswith("422 card-token-forged")


def test_an_older_service_gets_the_queue_one_event_at_a_time(tmp_path):
    service = BatchService(batch="missing")
    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        ids = fill(outbox, "ttxtt")
        dispatcher = drain(outbox, service)
        # asked once; then each event alone, and not asked again for a while
        assert service.calls == [("tap", [i]) for i in ids]
        assert dispatcher._batch_off_until > time.monotonic() + BATCH_RETRY_AFTER - 60
        assert outbox.depth() == 0 and dispatcher.failed == 1


def test_a_batch_refused_whole_goes_one_by_one_and_a_smaller_max_is_kept(tmp_path):
    service = BatchService(batch="invalid")
    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        ids = fill(outbox, "ttt")
        drain(outbox, service)
        # each tap gets its own answer (the one that does not validate is refused alone)
        assert service.calls == [("tap", [i]) for i in ids]

    service = BatchService(max_batch=2)
    with Outbox(tmp_path / "queue2.sqlite3") as outbox:
        ids = fill(outbox, "ttttt")
        drain(outbox, service)
        assert service.calls == [("batch", ids[0:2]), ("batch", ids[2:4]), ("tap", [ids[4]])]


def test_a_batch_that_does_not_get_through_stays_whole_in_the_queue(tmp_path):
    service = BatchService()
    down = True

    def post_batch(bodies: list[dict]) -> list[dict]:
        if down:
            raise ServerUnavailable("the loyalty service does not answer")
        return service.post_batch(bodies)

    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        ids = fill(outbox, "tttt")
        dispatcher = Dispatcher(outbox, service.post, post_batch=post_batch,
                                backoff_min=0.01, backoff_max=0.02)
        dispatcher.start()
        wait_until(lambda: all(i.attempts >= 2 for i in outbox.pending()), 5, "attempts")
        assert outbox.depth() == 4 and dispatcher.online is False
        down = False
        dispatcher.kick()
        assert dispatcher.drained(5)
        dispatcher.stop()
        assert service.calls == [("batch", ids)]


def test_a_tap_the_cashier_waits_for_is_sent_alone_with_its_record(tmp_path):
    service = BatchService()
    gate = threading.Event()

    def post_batch(bodies: list[dict]) -> list[dict]:
        gate.wait(5)
        return service.post_batch(bodies)

    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        ids = fill(outbox, "ttt")
        dispatcher = Dispatcher(outbox, service.post, post_batch=post_batch, wait=5)
        dispatcher.start()
        wait_until(lambda: dispatcher._busy, 5, "the first batch on the wire")
        live = tap_body(9)
        answer: dict = {}
        thread = threading.Thread(target=lambda: answer.update(
            d=dispatcher.submit("tap", live)))
        thread.start()
        wait_until(lambda: dispatcher.depth == 4, 5, "the live tap queued behind")
        gate.set()
        thread.join(10)
        assert answer["d"].outcome == "sent" and answer["d"].answer["kind"] == "tap"
        assert service.calls == [("batch", ids), ("tap", [live["event_id"]])]
        dispatcher.stop()


def test_an_event_sent_at_once_is_written_ahead_and_forgotten_once_answered(tmp_path):
    seen: list[int] = []
    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        def post(kind: str, body: dict) -> dict:
            # on the wire: the file has it, pending, so that a crash now sends it again
            [item] = outbox.pending()
            assert item.event_id == body["event_id"] and item.attempts == 0
            seen.append(item.seq)
            if body.get("down"):
                raise ServerUnavailable("the loyalty service does not answer")
            if body.get("bad"):
                raise ServerProblem(status=422, type="/api/v1/problems/card-token-forged",
                                    title="forged")
            return {"ok": True}

        dispatcher = Dispatcher(outbox, post)  # no sender thread: nothing else reads it
        assert dispatcher.submit("tap", tap_body(1)).outcome == "sent"
        assert outbox.depth() == 0 and dispatcher.depth == 0
        refused = dispatcher.submit("tap", tap_body(2, bad=True))
        assert refused.outcome == "refused" and outbox.depth() == 0 and outbox.failed() == []
        queued = dispatcher.submit("tap", tap_body(3, down=True))
        assert queued.outcome == "queued" and dispatcher.depth == 1
        [item] = outbox.pending()  # the row written ahead stays, with its failed attempt
        assert item.seq == queued.seq == seen[-1] and item.attempts == 1
        assert len(seen) == 3


# --------------------------------------------------------------------------- (b) real service


def _cards(live_server, n: int) -> list[tuple[str, dict]]:
    from tests.test_e2e_till import enrol_with_card

    return [enrol_with_card(live_server, "Ona", f"Replay{i}") for i in range(n)]


def _visits(live_server, event_ids: list[str]) -> dict[str, int]:
    """event id -> how many visits it has."""
    from server.taps.models import Visit

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        rows = s.scalars(select(Visit.event_id).where(Visit.event_id.in_(event_ids))).all()
    return {e: rows.count(e) for e in event_ids}


def _agent(live_server, tmp_path: Path, server_url: str, **config):
    from device_drivers.agent import create_app

    app = create_app({"SERVER_URL": server_url, "DEVICE_KEY": live_server.creds["till_key"],
                      "READERS": "sim:", "INSTANCE_PATH": str(tmp_path / "agent"),
                      "HEARTBEAT_INTERVAL": 0.0, "QUEUE_WAIT": 0.3, "REQUEST_TIMEOUT": 2.0,
                      "QUEUE_BACKOFF_MIN": 0.05, "QUEUE_BACKOFF_MAX": 0.2, **config})
    return app


def test_the_agent_replays_an_outage_in_batches_in_order(live_server, tmp_path):
    cards = _cards(live_server, 8)
    # the service is away: the relay finds nobody behind it until it is pointed at it
    relay = Partition(free_port())
    app = _agent(live_server, tmp_path, f"http://127.0.0.1:{relay.port}", QUEUE_BATCH=4)
    agent = app.extensions["agent"]
    agent.start()
    client = app.test_client()
    try:
        reader = agent.sim_reader()
        forged = cards[0][1]["url"][:-1] + ("A" if cards[0][1]["url"][-1] != "A" else "B")
        order: list[tuple[str, str]] = []
        events = agent.subscribe()

        def tap(url: str) -> None:
            reader.present(url=url)
            while True:
                name, _seq, data = events.get(timeout=10)
                if name == "tap":
                    assert data["queued"] is True, data
                    order.append(("tap", data["event_id"]))
                    return

        def purchase(customer_id: str) -> None:
            r = client.post("/purchases", json={
                "customer_id": customer_id, "currency": "EUR", "total": "3.00",
                "lines": [{"sku": "TEA-1", "name": "Tea", "quantity": "1",
                           "unit_price": "3.00"}]})
            assert r.status_code == 202, r.get_json()
            order.append(("purchase", r.get_json()["event_id"]))

        for _, card in cards[:5]:
            tap(card["url"])
        tap(forged)
        tap(cards[5][1]["url"])
        purchase(cards[0][0])
        for _, card in cards[6:]:
            tap(card["url"])
        purchase(cards[1][0])
        tap("https://shop.example/c/nonsense")  # malformed: refused alone
        assert client.get("/queue").get_json()["depth"] == len(order) == 12

        relay.target_port = int(live_server.url.rsplit(":", 1)[1])  # the service is back
        agent.dispatcher.kick()
        assert agent.dispatcher.drained(20)
        queue = client.get("/queue").get_json()
        refused = {r["event_id"]: r["problem"]["type"] for r in queue["refused"]}
        assert refused == {order[5][1]: "card-token-forged",
                           order[11][1]: "card-token-malformed"}

        taps = [e for k, e in order if k == "tap" and e not in refused]
        assert _visits(live_server, taps) == {e: 1 for e in taps}
        from server.loyalty.models import Purchase
        from server.taps.models import Visit

        with Session(live_server.app.extensions["loyalty.db"].main) as s:
            recorded = sorted(
                [(r.recorded_at, r.id, "tap", r.event_id) for r in s.execute(
                    select(Visit.recorded_at, Visit.id, Visit.event_id)
                    .where(Visit.event_id.in_(taps)))] +
                [(r.recorded_at, r.id, "purchase", r.event_id) for r in s.execute(
                    select(Purchase.recorded_at, Purchase.id, Purchase.event_id)
                    .where(Purchase.event_id.in_([e for k, e in order if k == "purchase"])))])
        # in the till's order (visits of one batch share a transaction: their ids order them)
        assert [(k, e) for *_, k, e in recorded] == [o for o in order if o[1] not in refused]
        # in batches: 5 taps and the forged one in two batches of at most 4, then the lone
        # tap before the purchase... each a single request; count them from the metrics
        text = client.get("/metrics").get_data(as_text=True)
        batches = metric(text, 'loyalty_agent_forward_seconds_count{kind="tap_batch",'
                               'outcome="sent"}')
        singles = metric(text, 'loyalty_agent_forward_seconds_count{kind="tap",'
                               'outcome="sent"}') or 0
        assert batches == 3 and singles == 0, text
    finally:
        agent.stop()
        relay.close()


class HideBatch:
    """The real service, as an older version without ``POST /taps/batch`` (404)."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/api/v1/taps/batch":
            from server.api.problems import problem_response

            with self.app.app_context():
                response = problem_response("not-found")
            return response(environ, start_response)
        return self.app(environ, start_response)


def test_an_older_service_without_the_batch_route_gets_the_queue_one_by_one(
        live_server, tmp_path):
    from werkzeug.serving import make_server

    old = make_server("127.0.0.1", 0, HideBatch(live_server.app), threaded=True)
    thread = threading.Thread(target=old.serve_forever, daemon=True)
    thread.start()
    cards = _cards(live_server, 4)
    (tmp_path / "agent").mkdir()
    bodies = [{"event_id": str(uuid.uuid4()), "url": card["url"], "reader": "sim:",
               "tapped_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}
              for _, card in cards]
    with Outbox(tmp_path / "agent" / "agent-queue.sqlite3") as outbox:
        for body in bodies:
            outbox.add("tap", body)
    app = _agent(live_server, tmp_path, f"http://127.0.0.1:{old.server_port}")
    agent = app.extensions["agent"]
    try:
        agent.start()
        assert agent.dispatcher.drained(20)
        ids = [b["event_id"] for b in bodies]
        assert _visits(live_server, ids) == {e: 1 for e in ids}
        assert agent.dispatcher.failed == 0
        text = app.test_client().get("/metrics").get_data(as_text=True)
        assert metric(text, 'loyalty_agent_forward_seconds_count{kind="tap_batch",'
                            'outcome="refused"}') == 1
        assert metric(text, 'loyalty_agent_forward_seconds_count{kind="tap",'
                            'outcome="sent"}') == 4
    finally:
        agent.stop()
        old.shutdown()
        thread.join(5)
        old.server_close()


# --------------------------------------------------------------------------- (c) SIGKILL


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def test_a_tap_on_the_wire_when_the_agent_is_killed_arrives_once(live_server, tmp_path,
                                                                processes):
    """SIGKILL to the agent (under gunicorn, as systemd runs it) while its tap is on the wire:
    once with the request lost on the way, once with the answer lost on the way back (the
    service has the visit). Started again on the same queue file, it sends the tap, which
    the service records once."""
    relay = Partition(int(live_server.url.rsplit(":", 1)[1]))
    port = free_port()
    agent_url = f"http://127.0.0.1:{port}"
    key_file = tmp_path / "till.key"
    key_file.write_text(live_server.creds["till_key"])
    key_file.chmod(0o600)
    queue = tmp_path / "agent" / "agent-queue.sqlite3"
    env = clean_env(LOYALTY_AGENT_BIND=f"127.0.0.1:{port}", LOYALTY_READERS="sim:",
                    LOYALTY_SERVER_URL=f"http://127.0.0.1:{relay.port}",
                    LOYALTY_DEVICE_KEY_FILE=str(key_file),
                    LOYALTY_INSTANCE_PATH=str(tmp_path / "agent"),
                    LOYALTY_REQUEST_TIMEOUT="30", LOYALTY_QUEUE_BACKOFF_MIN="0.1",
                    LOYALTY_QUEUE_BACKOFF_MAX="0.5", LOYALTY_HEARTBEAT_INTERVAL="0")
    cmd = [str(BIN / "gunicorn"), "--no-control-socket", "-c",
           str(ROOT / "device_drivers" / "agent_gunicorn.py"),
           "device_drivers.agent:create_app()"]
    cards = _cards(live_server, 2)

    def pending() -> list[str]:
        if not queue.exists():
            return []
        with sqlite3.connect(f"file:{queue}?mode=ro", uri=True) as db:
            return [r[0] for r in db.execute("SELECT event_id FROM outbox "
                                             "WHERE state = 'pending'")]

    try:
        for mode, (_, card) in zip(("blackhole", "drop-replies"), cards, strict=True):
            agent = processes.start("agent", cmd, env, f"{agent_url}/status")
            relay.cut(mode)
            assert requests.post(f"{agent_url}/simulate", json={"url": card["url"]},
                                 timeout=5).status_code == 202
            # written ahead, then on the wire (the relay holds it, or the answer)
            [event_id] = wait_until(pending, 10, "the tap written ahead")
            time.sleep(0.5)
            assert requests.get(f"{agent_url}/last", timeout=5).json()["seq"] == 0
            assert _visits(live_server, [event_id])[event_id] == \
                (0 if mode == "blackhole" else 1)
            processes.kill9(agent)
            relay.heal()
            agent = processes.start("agent", cmd, env, f"{agent_url}/status")
            wait_until(lambda: requests.get(f"{agent_url}/queue", timeout=5)
                       .json()["depth"] == 0, 15, "the queue to drain")
            assert _visits(live_server, [event_id]) == {event_id: 1}, mode
            assert requests.get(f"{agent_url}/queue", timeout=5).json()["failed"] == 0
            processes.kill9(agent)
    finally:
        relay.close()


def test_the_same_event_posted_again_while_on_the_wire_gets_its_answer(tmp_path):
    """A point of sale that retries a purchase while the first attempt is still on the wire
    finds it written ahead, waits, and gets the same answer (not "queued")."""
    gate, calls = threading.Event(), []

    def post(kind: str, body: dict) -> dict:
        calls.append(body["event_id"])
        gate.wait(5)
        return {"kind": kind}

    with Outbox(tmp_path / "queue.sqlite3") as outbox:
        dispatcher = Dispatcher(outbox, post, wait=5)
        dispatcher.start()
        body = other_body(1)
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(
            d=dispatcher.submit("purchase", body)))
        thread.start()
        wait_until(lambda: calls, 5, "the purchase on the wire")
        again: dict = {}
        retry = threading.Thread(target=lambda: again.update(
            d=dispatcher.submit("purchase", dict(body))))
        retry.start()
        wait_until(lambda: dispatcher._waiters, 5, "the retry waiting")
        gate.set()
        thread.join(10)
        retry.join(10)
        assert first["d"].outcome == again["d"].outcome == "sent"
        assert again["d"].answer == {"kind": "purchase"}
        assert calls == [body["event_id"]] and outbox.depth() == 0
        dispatcher.stop()
