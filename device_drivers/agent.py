"""The till agent: owns the readers, forwards each tap to the service, shows the answer.

One thread per reader reads taps and posts them to ``POST /api/v1/taps``; the answer is kept
as the last result, pushed to every open ``GET /events`` stream (server-sent events), and
returned by ``GET /last``. The page at ``/`` updates itself from the stream. A reader that
fails is reopened every few seconds and its state is shown; it never stops the agent.

Run it with gunicorn and ``device_drivers/agent_gunicorn.py`` (one worker owns the readers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from device_drivers.base import (
    DriverError,
    Reader,
    ReaderError,
    ReaderUnavailable,
    Tap,
    open_reader,
)
from device_drivers.forwarder import ServerProblem, ServerUnavailable, ServiceClient
from device_drivers.settings import configure_logging, load_settings

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

DEFAULTS: dict[str, Any] = {
    "SERVER_URL": "http://127.0.0.1:8000",
    "LOG_LEVEL": "INFO",
    "DEVICE_KEY": "",
    "READERS": "sim:",  # URIs separated by commas
    "REQUEST_TIMEOUT": 5.0,
    "REOPEN_DELAY": 3.0,
}


@dataclass
class ReaderState:
    uri: str
    status: str = "starting"  # starting | ready | failed
    error: str | None = None
    taps: int = 0


@dataclass
class TapResult:
    """The outcome of one tap as the cashier sees it."""

    seq: int
    at: str
    reader: str
    ok: bool
    record: dict | None = None
    error: dict | None = None

    def as_dict(self) -> dict:
        return {"seq": self.seq, "at": self.at, "reader": self.reader, "ok": self.ok,
                "record": self.record, "error": self.error}


@dataclass
class Agent:
    """The readers, their threads, the client to the service, and the last result."""

    settings: dict[str, Any]
    readers: list[Reader] = field(default_factory=list)
    states: dict[str, ReaderState] = field(default_factory=dict)
    last: TapResult | None = None
    _seq: int = 0
    _subscribers: list[queue.Queue] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = ServiceClient(self.settings["SERVER_URL"], self.settings["DEVICE_KEY"],
                                    float(self.settings["REQUEST_TIMEOUT"]))
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

    # -- threads -------------------------------------------------------------------------
    def start(self) -> None:
        """Start one thread per reader (idempotent)."""
        if self._threads:
            return
        for reader in self.readers:
            thread = threading.Thread(target=self._run_reader, args=(reader,),
                                      name=f"reader {reader.uri}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader threads and close the readers."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.client.close()
        self._publish(None)  # ends the event streams

    def _run_reader(self, reader: Reader) -> None:
        state = self.states[reader.uri]
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

    # -- taps ----------------------------------------------------------------------------
    def forward(self, tap: Tap) -> TapResult:
        """Send one tap to the service and publish the outcome."""
        body = {"event_id": str(uuid.uuid4()), **tap.as_payload()}
        try:
            record = self.client.post("/taps", body)
        except ServerProblem as exc:
            return self._record(tap.reader, error={"type": exc.slug, "title": exc.title,
                                                   "detail": exc.detail, "status": exc.status})
        except ServerUnavailable as exc:
            return self._record(tap.reader, error={"type": "server-unreachable",
                                                   "title": "The loyalty service is unreachable",
                                                   "detail": str(exc)})
        return self._record(tap.reader, record=record)

    def _record(self, reader: str, record: dict | None = None,
                error: dict | None = None) -> TapResult:
        with self._lock:
            self._seq += 1
            result = TapResult(self._seq, datetime.now(UTC).isoformat(), reader,
                               ok=record is not None, record=record, error=error)
            self.last = result
        self._publish(result)
        return result

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

    def _publish(self, result: TapResult | None) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            # a stalled client loses old events; it never blocks the till
            with contextlib.suppress(queue.Full):
                q.put_nowait(result)

    def sim_reader(self):
        from device_drivers.sim import SimReader

        return next((r for r in self.readers if isinstance(r, SimReader)), None)


bp = Blueprint("agent", __name__, static_folder="static", static_url_path="/static")


def _agent() -> Agent:
    return current_app.extensions["agent"]


@bp.get("/")
def index():
    agent = _agent()
    return render_template("agent/index.html", states=agent.states.values(),
                           last=agent.last, simulate=agent.sim_reader() is not None)


@bp.get("/last")
def last():
    """The outcome of the last tap, for the point-of-sale software."""
    result = _agent().last
    if result is None:
        return jsonify({"seq": 0, "ok": None, "record": None, "error": None})
    return jsonify(result.as_dict())


@bp.get("/status")
def status():
    agent = _agent()
    return jsonify({"readers": [vars(s) for s in agent.states.values()],
                    "server": agent.settings["SERVER_URL"]})


@bp.get("/events")
def events():
    """Server-sent events: one ``tap`` event per outcome, a comment every 15 s."""
    agent = _agent()
    q = agent.subscribe()

    def stream():
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    result = q.get(timeout=15)
                except queue.Empty:
                    yield ": keep-alive\n\n"
                    continue
                if result is None:
                    return
                yield f"event: tap\nid: {result.seq}\ndata: {json.dumps(result.as_dict())}\n\n"
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
    """Build the agent's local web app; ``app.extensions["agent"].start()`` starts the readers."""
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=None)
    settings = load_settings(DEFAULTS, config)
    configure_logging(settings["LOG_LEVEL"])
    app.config.update(settings)
    app.extensions["agent"] = Agent(settings)
    app.register_blueprint(bp)
    return app

