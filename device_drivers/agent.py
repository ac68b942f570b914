"""The till agent: owns the readers, forwards each tap to the service, shows the answer.

One thread per reader reads taps and hands them to the dispatcher (``device_drivers.outbox``),
which posts them to ``POST /api/v1/taps`` at once or, when the service cannot be reached,
records them in the durable outbox and replays them later, in order. The outcome is kept as
the last result, pushed to every open ``GET /events`` stream (server-sent events), and
returned by ``GET /last``. The point-of-sale software posts purchases to ``POST /purchases``
and its end-of-day totals of sales without a card to ``PUT /anonymous-sales`` (same path
through the dispatcher). The page at ``/`` and the customer display at
``/display`` update themselves from the stream; ``/metrics`` is for Prometheus. A heartbeat
tells the service every ``HEARTBEAT_INTERVAL`` s how the readers are. A reader that fails is
reopened every few seconds and its state is shown; it never stops the agent.

In desk mode (``DESK_MODE``, at a back-office desk) a read is sent to no one: it is published
as a ``read`` event on ``/events`` and kept as ``/last``, which the page of one web origin
(``DESK_ALLOWED_ORIGIN``) may read; the back office's search fills itself from it.

The local API is described for integrators in docs/TILL-API.md. Run the agent with gunicorn
and ``device_drivers/agent_gunicorn.py`` (one worker owns the readers and the queue).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from device_drivers.base import (
    DriverError,
    Reader,
    ReaderError,
    ReaderUnavailable,
    Tap,
    open_reader,
)
from device_drivers.forwarder import ServerProblem, ServerUnavailable, ServiceClient
from device_drivers.outbox import Delivery, Dispatcher, Item, Outbox, OutboxError, describe
from device_drivers.settings import configure_logging, load_settings

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

DEFAULTS: dict[str, Any] = {
    "SERVER_URL": "http://127.0.0.1:8000",
    "LOG_LEVEL": "INFO",
    "DEVICE_KEY": "",
    "READERS": "sim:",  # URIs separated by commas
    "REQUEST_TIMEOUT": 5.0,
    "SERVER_CA": "",  # a CA file the service's HTTPS certificate must chain to (pinned)
    "REOPEN_DELAY": 3.0,
    "INSTANCE_PATH": "instance",
    # the offline queue; "" means <INSTANCE_PATH>/agent-queue.sqlite3
    "QUEUE_PATH": "",
    # how long a tap or purchase queued behind others waits to be delivered before the
    # answer is "offline - recorded"
    "QUEUE_WAIT": 1.0,
    "QUEUE_BACKOFF_MIN": 0.5,  # seconds between replay attempts while the service is down,
    "QUEUE_BACKOFF_MAX": 30.0,  # doubling up to this
    "QUEUE_KEEP_FAILED_DAYS": 30.0,  # events the service refused are shown this long
    # queued taps in a row are replayed this many at a time (POST /taps/batch, which takes up
    # to 200); 1: one by one. On SQLite a batch holds the database's write lock while it is
    # recorded (2-6 ms a tap in-process here, more under load): 50 keeps other tills' live
    # taps from waiting long behind a replay, for a few % more requests
    "QUEUE_BATCH": 50,
    "HEARTBEAT_INTERVAL": 30.0,  # reader health to the service; 0 turns it off
    "DISPLAY_CLEAR_AFTER": 30.0,  # the customer display forgets the customer after this
    "DISPLAY_LANGUAGE": "en",  # the customer display when no customer is known (fr, lt, en)
    # desk mode: a read is only published on /events and /last for the back office, never
    # sent to the service (no visit, no queue, no heartbeat, no device key)
    "DESK_MODE": False,
    # in desk mode, the one web origin (https://host[:port]) whose pages may read /events
    # and /last; "" lets no other origin read them
    "DESK_ALLOWED_ORIGIN": "",
}
# the endpoints a desk's back-office page reads across origins (desk mode only)
DESK_CORS_ENDPOINTS = {"agent.events", "agent.last"}
# how each kind of event reaches the service
ROUTES = {"tap": ("POST", "/taps"), "purchase": ("POST", "/purchases"),
          "anonymous_sales": ("PUT", "/anonymous-sales")}
OFFLINE = {"type": "server-unreachable", "title": "Offline — recorded",
           "detail": "The loyalty service cannot be reached; this will be sent when it is back."}
# the customer display's words, by the customer's language (DISPLAY_LANGUAGE when unknown)
DISPLAY_LABELS = {
    "en": {"welcome": "Welcome", "hello": "Hello", "tier": "Tier", "points": "points",
           "rewards": "Rewards you can use", "offline": "Offline — recorded",
           "offline_detail": "Your visit is recorded and will count.",
           "refused": "Please see the cashier"},
    "fr": {"welcome": "Bienvenue", "hello": "Bonjour", "tier": "Niveau", "points": "points",
           "rewards": "Vos récompenses disponibles", "offline": "Hors ligne — enregistré",
           "offline_detail": "Votre passage est enregistré et sera pris en compte.",
           "refused": "Merci de vous adresser à la caisse"},
    "lt": {"welcome": "Sveiki atvykę", "hello": "Sveiki", "tier": "Lygis", "points": "taškai",
           "rewards": "Galimi prizai", "offline": "Neprisijungta — užregistruota",
           "offline_detail": "Jūsų apsilankymas užregistruotas ir bus įskaitytas.",
           "refused": "Kreipkitės į kasininką"},
}
# forward latency: a tap should add under 5 ms; timeouts end at REQUEST_TIMEOUT (5 s)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AgentNotStarted(Exception):  # noqa: N818 - reads as the state it reports
    """The queue is not open yet (``Agent.start`` has not run)."""


@dataclass
class ReaderState:
    uri: str
    status: str = "starting"  # starting | ready | failed
    error: str | None = None
    taps: int = 0


@dataclass
class TapResult:
    """The outcome of one tap as the cashier sees it.

    ``ok`` is true when ``record`` is the customer's record. A tap recorded while the service
    is unreachable has ``queued`` true and the error ``server-unreachable`` ("Offline —
    recorded"); it is sent later and its record is not shown.
    """

    seq: int
    at: str
    reader: str
    ok: bool
    record: dict | None = None
    error: dict | None = None
    queued: bool = False
    event_id: str | None = None
    queue_depth: int = 0

    def as_dict(self) -> dict:
        return {"seq": self.seq, "at": self.at, "reader": self.reader, "ok": self.ok,
                "record": self.record, "error": self.error, "queued": self.queued,
                "event_id": self.event_id, "queue_depth": self.queue_depth}


class AgentMetrics:
    """The agent's Prometheus metrics, in a registry of its own (not the global one)."""

    def __init__(self, agent: Agent) -> None:
        self.registry = CollectorRegistry()
        self.taps = Counter("loyalty_agent_taps", "Cards read, by reader", ["reader"],
                            registry=self.registry)
        self.forward = Histogram(
            "loyalty_agent_forward_seconds",
            "Time of one request to the service; outcome sent, refused (4xx) or unavailable",
            ["kind", "outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        for uri in agent.states:
            self.taps.labels(uri)  # every configured reader shows, at 0
        self.registry.register(_StateCollector(agent))


class _StateCollector:
    """Gauges read at scrape time from the agent's state."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def describe(self):
        return []  # registered without calling collect() (the queue may not be open yet)

    def collect(self):
        agent = self.agent
        dispatcher = agent.dispatcher
        yield GaugeMetricFamily("loyalty_agent_queue_depth",
                                "Taps and purchases waiting for the service",
                                value=dispatcher.depth if dispatcher else 0)
        yield GaugeMetricFamily("loyalty_agent_queue_failed",
                                "Queued events the service refused (kept for a person)",
                                value=dispatcher.failed if dispatcher else 0)
        up = GaugeMetricFamily("loyalty_agent_reader_up", "1 when the reader is ready",
                               labels=["reader"])
        for state in list(agent.states.values()):
            up.add_metric([state.uri], 1.0 if state.status == "ready" else 0.0)
        yield up
        yield GaugeMetricFamily("loyalty_agent_server_up",
                                "1 when the last request reached the service",
                                value=1.0 if dispatcher and dispatcher.online else 0.0)
        yield GaugeMetricFamily(
            "loyalty_agent_last_server_contact_timestamp_seconds",
            "Unix time of the last answer from the service (0: none yet)",
            value=(dispatcher.last_contact or 0.0) if dispatcher else 0.0)


@dataclass
class Agent:
    """The readers, their threads, the dispatcher to the service, and the last result."""

    settings: dict[str, Any]
    readers: list[Reader] = field(default_factory=list)
    states: dict[str, ReaderState] = field(default_factory=dict)
    last: TapResult | None = None
    last_read: dict | None = None  # desk mode: the last card read
    dispatcher: Dispatcher | None = None
    last_heartbeat: str | None = None
    _seq: int = 0
    _subscribers: list[queue.Queue] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _queue_published: float = 0.0

    def __post_init__(self) -> None:
        self.client = ServiceClient(self.settings["SERVER_URL"], self.settings["DEVICE_KEY"],
                                    float(self.settings["REQUEST_TIMEOUT"]),
                                    str(self.settings["SERVER_CA"]))
        uris = [u.strip() for u in str(self.settings["READERS"]).split(",") if u.strip()]
        for uri in uris:
            try:
                reader = open_reader(uri)
            except DriverError as exc:
                self.states[uri] = ReaderState(uri, "failed", str(exc))
                log.error("reader %s: %s", uri, exc)
                continue
            self.readers.append(reader)
            self.states[uri] = ReaderState(uri)
        self.metrics = AgentMetrics(self)

    @property
    def desk(self) -> bool:
        """Desk mode: reads are published for the back office, never sent to the service."""
        return bool(self.settings["DESK_MODE"])

    @property
    def queue_path(self) -> Path:
        return Path(self.settings["QUEUE_PATH"] or
                    Path(self.settings["INSTANCE_PATH"]) / "agent-queue.sqlite3")

    # -- threads -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the queue, start its sender, the heartbeat and one thread per reader.

        Idempotent. Raises ``OutboxError`` if the queue file cannot be opened.
        """
        if self._threads:
            return
        self._stop.clear()
        targets = [(self._run_reader, (reader,), f"reader {reader.uri}")
                   for reader in self.readers]
        if self.desk:
            log.info("desk mode: reads are published on /events only, sent to no one")
        else:
            self._start_dispatcher()
            if float(self.settings["HEARTBEAT_INTERVAL"]) > 0:
                targets.append((self._run_heartbeat, (), "heartbeat"))
        for target, args, name in targets:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _start_dispatcher(self) -> None:
        outbox = Outbox(self.queue_path, float(self.settings["QUEUE_KEEP_FAILED_DAYS"])).open()
        batch = int(self.settings["QUEUE_BATCH"])
        self.dispatcher = Dispatcher(
            outbox, self._post, post_batch=self._post_batch if batch > 1 else None,
            batch_max=batch, wait=float(self.settings["QUEUE_WAIT"]),
            backoff_min=float(self.settings["QUEUE_BACKOFF_MIN"]),
            backoff_max=float(self.settings["QUEUE_BACKOFF_MAX"]),
            observe=lambda kind, outcome, seconds:
                self.metrics.forward.labels(kind, outcome).observe(seconds),
            on_change=self._queue_changed)
        self.dispatcher.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, close the readers and the queue (what waits stays in it)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout)
            self.dispatcher.outbox.close()
        self.client.close()
        self._publish(None)  # ends the event streams

    def _run_reader(self, reader: Reader) -> None:
        state = self.states[reader.uri]
        taps = self.metrics.taps.labels(reader.uri)
        while not self._stop.is_set():
            try:
                reader.open()
                state.status, state.error = "ready", None
                log.info("reader %s ready", reader.uri)
                while not self._stop.is_set():
                    try:
                        tap = reader.read(timeout=0.5)
                    except ReaderUnavailable:
                        raise  # the reader is gone: close it and open it again later
                    except ReaderError as exc:
                        # one bad card is not a broken reader: report it and go on
                        log.warning("reader %s: %s", reader.uri, exc)
                        self._record(reader.uri, error={"type": "reader-error",
                                                        "title": "The card could not be read",
                                                        "detail": str(exc)})
                        self._stop.wait(0.2)  # a driver that fails at once cannot spin
                        continue
                    if tap is not None:
                        state.taps += 1
                        taps.inc()
                        if self.desk:
                            self.publish_read(tap)
                        else:
                            self.forward(tap)
            except DriverError as exc:
                state.status, state.error = "failed", str(exc)
                log.error("reader %s failed: %s", reader.uri, exc)
            except Exception:  # a driver bug must not kill the till
                state.status, state.error = "failed", "unexpected error (see the log)"
                log.exception("reader %s crashed", reader.uri)
            finally:
                try:
                    reader.close()
                except Exception:
                    log.exception("closing reader %s", reader.uri)
            self._stop.wait(float(self.settings["REOPEN_DELAY"]))

    def _run_heartbeat(self) -> None:
        # a connection of its own: a heartbeat never waits behind a tap, nor a tap behind it
        client = ServiceClient(self.settings["SERVER_URL"], self.settings["DEVICE_KEY"],
                               float(self.settings["REQUEST_TIMEOUT"]),
                               str(self.settings["SERVER_CA"]))
        refused: str | None = None
        try:
            while not self._stop.is_set():
                try:
                    client.post("/devices/heartbeat", self.health())
                except ServerUnavailable:
                    pass  # the dispatcher shows the outage
                except ServerProblem as exc:
                    if exc.slug != refused:  # said once, not every 30 s
                        log.warning("heartbeat refused: %s %s", exc.status, exc.slug)
                    refused = exc.slug
                else:
                    refused = None
                    self.last_heartbeat = datetime.now(UTC).isoformat()
                    if self.dispatcher is not None:
                        self.dispatcher.contact()  # the service is back: replay now
                self._stop.wait(float(self.settings["HEARTBEAT_INTERVAL"]))
        finally:
            client.close()

    def health(self) -> dict:
        """The heartbeat's body: each reader's state and the queue."""
        dispatcher = self.dispatcher
        return {"readers": [{"uri": s.uri, "status": s.status, "error": s.error,
                             "taps": s.taps} for s in list(self.states.values())],
                "queue": {"depth": dispatcher.depth if dispatcher else 0,
                          "failed": dispatcher.failed if dispatcher else 0}}

    # -- taps and purchases --------------------------------------------------------------
    def _post(self, kind: str, body: dict) -> dict:
        method, path = ROUTES[kind]
        if kind == "anonymous_sales":
            # the event id orders and deduplicates the report in the outbox; the service's
            # PUT is idempotent by itself (the last report of a day and seller is kept)
            body = {k: v for k, v in body.items() if k != "event_id"}
        return self.client.send(method, path, body)

    def _post_batch(self, bodies: list[dict]) -> list[dict]:
        """Queued taps in one request: each one's outcome, in order (no records)."""
        answer = self.client.send("POST", "/taps/batch", {"taps": bodies})
        # checked by the dispatcher: anything but one outcome per tap sends them one by one
        return answer.get("results") if isinstance(answer, dict) else None  # type: ignore

    def _submit(self, kind: str, body: dict) -> Delivery:
        if self.dispatcher is None:
            raise AgentNotStarted("the agent is starting")
        return self.dispatcher.submit(kind, body)

    def forward(self, tap: Tap) -> TapResult:
        """Send one tap to the service (or record it while offline) and publish the outcome."""
        # the event id is made here, before any attempt: every retry of this tap reuses it
        body = {"event_id": str(uuid.uuid4()), **tap.as_payload()}
        try:
            delivery = self._submit("tap", body)
        except (OutboxError, AgentNotStarted) as exc:
            log.error("a tap could not be recorded: %s", exc)
            return self._record(tap.reader, event_id=body["event_id"], error={
                "type": "queue-unavailable", "title": "Offline and NOT recorded",
                "detail": str(exc)})
        if delivery.outcome == "sent":
            return self._record(tap.reader, record=delivery.answer, event_id=delivery.event_id)
        if delivery.outcome == "refused":
            return self._record(tap.reader, error=delivery.problem, event_id=delivery.event_id)
        return self._record(tap.reader, error=dict(OFFLINE), queued=True,
                            event_id=delivery.event_id)

    def publish_read(self, tap: Tap) -> dict:
        """Desk mode: publish one read as a ``read`` event and keep it as ``/last``."""
        with self._lock:
            self._seq += 1
            read = {"seq": self._seq, "at": tap.at.isoformat(), "reader": tap.reader,
                    "url": tap.url, "uid": tap.uid, "qr": tap.qr}
            self.last_read = read
        self._publish(("read", read["seq"], read))
        return read

    def purchase(self, body: dict) -> Delivery:
        """Send one purchase from the point of sale (or record it while offline).

        ``body`` has its ``event_id`` and ``paid_at`` already.

        Raises:
            OutboxError: offline, and it could not be recorded.
            AgentNotStarted: the queue is not open yet.
        """
        delivery = self._submit("purchase", body)
        self._publish(("purchase", None, self._purchase_event(delivery)))
        return delivery

    def anonymous_sales(self, body: dict) -> Delivery:
        """Send the point of sale's totals of sales without a card for one day (or record
        them while offline), behind every tap and purchase taken before.

        Raises:
            OutboxError: offline, and they could not be recorded.
            AgentNotStarted: the queue is not open yet.
        """
        delivery = self._submit("anonymous_sales", body)
        answer = delivery.answer or {}
        self._publish(("anonymous-sales", None, {
            "event_id": delivery.event_id, "outcome": delivery.outcome,
            "queued": delivery.outcome == "queued", "queue_depth": delivery.depth,
            "day": body.get("day"), "baskets": answer.get("baskets", body.get("baskets")),
            "problem": delivery.problem}))
        return delivery

    @staticmethod
    def _purchase_event(delivery: Delivery) -> dict:
        answer = delivery.answer or {}
        return {"event_id": delivery.event_id, "outcome": delivery.outcome,
                "queued": delivery.outcome == "queued", "queue_depth": delivery.depth,
                "customer_id": answer.get("customer_id"), "balance": answer.get("balance"),
                "tier": answer.get("tier"), "points_earned": answer.get("points_earned"),
                "problem": delivery.problem}

    def _record(self, reader: str, record: dict | None = None, error: dict | None = None,
                queued: bool = False, event_id: str | None = None) -> TapResult:
        depth = self.dispatcher.depth if self.dispatcher else 0
        with self._lock:
            self._seq += 1
            result = TapResult(self._seq, datetime.now(UTC).isoformat(), reader,
                               ok=record is not None, record=record, error=error,
                               queued=queued, event_id=event_id, queue_depth=depth)
            self.last = result
        self._publish(("tap", result.seq, result.as_dict()))
        return result

    def _queue_changed(self, item: Item | None, delivery: Delivery | None) -> None:
        """The sender delivered or gave up an event, or the service came or went."""
        refused = delivery is not None and delivery.outcome == "refused"
        now = time.monotonic()
        dispatcher = self.dispatcher
        # while a long queue drains, a few updates a second are enough for the page
        if (item is not None and not refused and dispatcher is not None and dispatcher.depth
                and now - self._queue_published < 0.25):
            return
        self._queue_published = now
        state = self.queue_state()
        if refused and item is not None and delivery is not None:
            state["refused"] = {**item.summary(), "state": "failed",
                                "problem": delivery.problem,
                                "last_error": describe(delivery.problem or {})}
        self._publish(("queue", None, state))

    def queue_state(self) -> dict:
        """Depth, refused count, connection state, last contact."""
        if self.dispatcher is None:
            return {"depth": 0, "failed": 0, "online": None, "last_contact": None,
                    "last_error": None}
        return self.dispatcher.summary()

    # -- server-sent events --------------------------------------------------------------
    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=100)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def _publish(self, event: tuple[str, int | None, dict] | None) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            # a stalled client loses old events; it never blocks the till
            with contextlib.suppress(queue.Full):
                q.put_nowait(event)

    def sim_reader(self):
        from device_drivers.sim import SimReader

        return next((r for r in self.readers if isinstance(r, SimReader)), None)


bp = Blueprint("agent", __name__, static_folder="static", static_url_path="/static")


def _agent() -> Agent:
    return current_app.extensions["agent"]


def _problem(status: int, slug: str, title: str, detail: str | None = None,
             **extra: Any) -> Response:
    """An RFC 9457 problem made by the agent itself (``type`` ends with a stable name)."""
    body = {"type": f"/problems/{slug}", "title": title, "status": status, **extra}
    if detail:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


# the till page and the customer display: scripts and styles from static files only
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@bp.after_request
def _desk_cors(response: Response) -> Response:
    """Desk mode: the back office's origin, and only it, may read ``/events`` and ``/last``."""
    if request.endpoint not in DESK_CORS_ENDPOINTS:
        return response
    response.vary.add("Origin")
    agent = _agent()
    allowed = str(agent.settings["DESK_ALLOWED_ORIGIN"] or "").rstrip("/")
    origin = request.headers.get("Origin")
    if not agent.desk or not allowed or origin != allowed:
        return response  # no CORS header: the browser keeps the answer from that page
    response.headers["Access-Control-Allow-Origin"] = allowed
    if request.method == "OPTIONS":  # a preflight
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = "Last-Event-ID"
        # Chrome's Private Network Access: a public page may then reach 127.0.0.1
        response.headers["Access-Control-Allow-Private-Network"] = "true"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


@bp.get("/")
def index():
    agent = _agent()
    return render_template("agent/index.html", states=agent.states.values(),
                           last=agent.last, simulate=agent.sim_reader() is not None,
                           queue=agent.queue_state(),
                           refused=agent.dispatcher.outbox.failed(10) if agent.dispatcher
                           else [])


@bp.get("/display")
def display():
    """The customer-facing display: first name and initial, tier, points, rewards."""
    agent = _agent()
    last = agent.last
    clear_after = float(agent.settings["DISPLAY_CLEAR_AFTER"])
    if last is not None and (datetime.now(UTC) - datetime.fromisoformat(last.at)
                             ).total_seconds() > clear_after:
        last = None  # the previous customer is not shown to the next one
    default = agent.settings["DISPLAY_LANGUAGE"]
    language = (last.record or {}).get("language") if last and last.ok else default
    return render_template("agent/display.html", last=last, clear_after=clear_after,
                           default=default if default in DISPLAY_LABELS else "en",
                           labels=DISPLAY_LABELS,
                           words=DISPLAY_LABELS.get(language) or DISPLAY_LABELS["en"])


@bp.get("/last")
def last():
    """The outcome of the last tap, for the point-of-sale software."""
    agent = _agent()
    if agent.desk:
        return jsonify(agent.last_read or {"seq": 0, "at": None, "reader": None, "url": None,
                                           "uid": None, "qr": None})
    result = agent.last
    if result is None:
        return jsonify({"seq": 0, "ok": None, "record": None, "error": None, "queued": False,
                        "event_id": None,
                        "queue_depth": agent.dispatcher.depth if agent.dispatcher else 0})
    return jsonify(result.as_dict())


@bp.get("/status")
def status():
    agent = _agent()
    return jsonify({"readers": [vars(s) for s in agent.states.values()],
                    "desk_mode": agent.desk,
                    "server": agent.settings["SERVER_URL"], "queue": agent.queue_state(),
                    "last_heartbeat": agent.last_heartbeat})


@bp.get("/queue")
def queue_view():
    """What waits for the service, and what it refused (without the bodies)."""
    agent = _agent()
    if agent.dispatcher is None:
        return _problem(503, "agent-starting", "The agent is starting")
    outbox = agent.dispatcher.outbox
    return jsonify({**agent.queue_state(),
                    "pending": [i.summary() for i in outbox.pending(100)],
                    "refused": [i.summary() for i in outbox.failed(50)]})


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    return Response(generate_latest(_agent().metrics.registry), mimetype=None,
                    content_type=CONTENT_TYPE_LATEST)


PURCHASE_REQUIRED = ("currency", "total", "lines")


def _check_purchase(data: dict) -> list[dict]:
    """What the agent can tell before the service sees it, so that a purchase taken while
    offline is not refused hours later for a missing field. The service checks everything."""
    errors = [{"field": name, "message": "Field required"}
              for name in PURCHASE_REQUIRED if data.get(name) in (None, "")]
    lines = data.get("lines")
    if lines is not None and (not isinstance(lines, list) or not lines
                              or not all(isinstance(line, dict) for line in lines)):
        errors.append({"field": "lines", "message": "a non-empty list of lines"})
    if bool(data.get("card")) == bool(data.get("customer_id")):
        errors.append({"field": "(body)",
                       "message": "give the customer's card or customer_id (one of them)"})
    if "event_id" in data:
        try:
            uuid.UUID(str(data["event_id"]))
        except ValueError:
            errors.append({"field": "event_id", "message": "a UUID"})
    if "paid_at" in data:
        try:
            paid = datetime.fromisoformat(str(data["paid_at"]).replace("Z", "+00:00"))
        except ValueError:
            paid = None
        if paid is None or paid.tzinfo is None:
            errors.append({"field": "paid_at", "message": "a date-time with its time zone"})
    return errors


@bp.post("/purchases")
def purchases():
    """A purchase from the point of sale: forwarded to the service, or queued while offline."""
    data, refusal = _event_body(_check_purchase, "the purchase",
                                  "The purchase is not valid")
    if refusal is not None:
        return refusal
    # made here when the POS gave none, before any attempt; a late purchase is dated paid
    body = {**data, "event_id": str(data.get("event_id") or uuid.uuid4()),
            "paid_at": data.get("paid_at") or datetime.now(UTC).isoformat()}
    return _deliver(lambda agent: agent.purchase(body), body, "the purchase", 201)


def _event_body(check, what: str, invalid: str):
    """``(the JSON object, None)`` of an event the POS hands over, or ``(None, the problem to
    answer)``: a desk reader sends nothing, the body must be a JSON object, and ``check``
    lists what is wrong with its fields (``invalid`` is then the problem's title)."""
    if _agent().desk:
        return None, _problem(409, "desk-mode", "This agent is a desk reader: it sends "
                              "nothing to the service")
    if not request.is_json:
        return None, _problem(415, "unsupported-media-type", f"Send {what} as JSON")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return None, _problem(400, "malformed-json", "The body is not a JSON object")
    errors = check(data)
    if errors:
        return None, _problem(422, "validation-error", invalid,
                              f"{len(errors)} field(s) are not valid", errors=errors)
    return data, None


def _deliver(send, body: dict, what: str, sent_status: int):
    """Hand ``body`` to the agent (``send(agent)``) and answer as the local API does: the
    service's answer, or 202 queued, or the service's refusal, or 503 if nothing took it."""
    try:
        delivery = send(_agent())
    except AgentNotStarted:
        return _problem(503, "agent-starting", "The agent is starting; try again")
    except OutboxError as exc:
        return _problem(503, "queue-unavailable",
                        f"The service is unreachable and {what} could not be recorded",
                        str(exc), event_id=body["event_id"])
    if delivery.outcome == "sent":
        return jsonify({**(delivery.answer or {}), "event_id": delivery.event_id,
                        "queued": False}), sent_status
    if delivery.outcome == "queued":
        return jsonify({"queued": True, "event_id": delivery.event_id,
                        "queue_depth": delivery.depth}), 202
    problem = delivery.problem or {}
    return _problem(int(problem.get("status") or 422), str(problem.get("type")),
                    str(problem.get("title")), problem.get("detail"),
                    event_id=delivery.event_id,
                    **({"errors": problem["errors"]} if problem.get("errors") else {}))


ANONYMOUS_SALES_FIELDS = {"event_id", "day", "seller", "baskets", "total", "currency"}


def _check_anonymous_sales(data: dict) -> list[dict]:
    """The shape of a day's totals without a card (the service checks the rest, e.g. that
    the currency is the programme's)."""
    import re
    from datetime import date
    from decimal import Decimal, InvalidOperation

    errors = [{"field": name, "message": "Field required"}
              for name in ("day", "baskets", "total", "currency") if data.get(name) in (None, "")]
    errors += [{"field": name, "message": "Extra inputs are not permitted"}
               for name in sorted(set(data) - ANONYMOUS_SALES_FIELDS)]
    if data.get("day") not in (None, ""):
        try:
            date.fromisoformat(str(data["day"]))
        except ValueError:
            errors.append({"field": "day", "message": "a date, YYYY-MM-DD"})
    baskets = data.get("baskets")
    if baskets is not None and (isinstance(baskets, bool) or not isinstance(baskets, int)
                                or not 0 <= baskets <= 1_000_000):
        errors.append({"field": "baskets", "message": "a whole number from 0"})
    if data.get("total") not in (None, ""):
        try:
            total = Decimal(str(data["total"]))
        except InvalidOperation:
            total = None
        if total is None or not total.is_finite() or total < 0 or \
                total != total.quantize(Decimal("0.01")):
            errors.append({"field": "total", "message": "an amount such as \"1234.50\""})
    if data.get("currency") not in (None, "") and \
            not re.fullmatch(r"[A-Z]{3}", str(data["currency"])):
        errors.append({"field": "currency", "message": "a currency code such as EUR"})
    if data.get("seller") is not None and (not isinstance(data["seller"], str)
                                           or len(data["seller"]) > 64):
        errors.append({"field": "seller", "message": "at most 64 characters"})
    if "event_id" in data:
        try:
            uuid.UUID(str(data["event_id"]))
        except ValueError:
            errors.append({"field": "event_id", "message": "a UUID"})
    return errors


@bp.put("/anonymous-sales")
def anonymous_sales():
    """The till's totals of sales without a card for one day (and seller): forwarded to the
    service's ``PUT /api/v1/anonymous-sales``, or queued while it is unreachable."""
    data, refusal = _event_body(_check_anonymous_sales, "the totals",
                                  "The totals are not valid")
    if refusal is not None:
        return refusal
    # a new id per report unless the POS gives one: a corrected report sent later must go
    # after the first, not be taken for it
    body = {**data, "event_id": str(data.get("event_id") or uuid.uuid4()),
            "total": str(data["total"])}
    return _deliver(lambda agent: agent.anonymous_sales(body), body, "the totals", 200)


@bp.get("/events")
def events():
    """Server-sent events: ``tap``, ``purchase`` and ``queue`` events (``read`` events in desk
    mode), a comment every 15 s."""
    agent = _agent()
    q = agent.subscribe()

    def stream():
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    event = q.get(timeout=15)
                except queue.Empty:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    return
                name, seq, data = event
                ident = f"id: {seq}\n" if seq is not None else ""
                yield f"event: {name}\n{ident}data: {json.dumps(data)}\n\n"
        finally:
            agent.unsubscribe(q)

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.post("/simulate")
def simulate():
    """Present a card to the ``sim:`` reader (demo and tests only)."""
    reader = _agent().sim_reader()
    if reader is None:
        return jsonify({"error": "no simulated reader is configured"}), 404
    data = request.get_json(silent=True) or request.form
    text = (data.get("url") or "").strip()
    try:
        reader.present(url=text or None, uid=(data.get("uid") or "").strip() or None,
                       qr=(data.get("qr") or "").strip() or None)
    except ReaderError as exc:
        return jsonify({"error": str(exc)}), 422
    if request.is_json:
        return jsonify({"queued": True}), 202
    return index()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the agent's local web app; ``app.extensions["agent"].start()`` opens the queue
    and starts the readers."""
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=None)
    settings = load_settings(DEFAULTS, config)
    configure_logging(settings["LOG_LEVEL"])
    app.config.update(settings)
    if settings["DESK_ALLOWED_ORIGIN"] and not settings["DESK_MODE"]:
        log.warning("DESK_ALLOWED_ORIGIN is ignored: the agent is not in desk mode")
    app.extensions["agent"] = Agent(settings)
    app.register_blueprint(bp)
    app.after_request(_security_headers)  # every answer, a 404 too
    return app
