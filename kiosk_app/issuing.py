"""Making the customer's cards: the NFC write and the printed slip, with their progress.

The customer flow (or staff mode) leaves ``session["customer"]`` and ``session["issue"]``
(``choice``: ``nfc``, ``qr`` or ``both``; ``enrol_event_id``; for a reissue ``replace``,
``reason`` and ``staff``) and sends the browser to ``GET /issue/``. Each step is idempotent,
so the page can be reloaded and every step tried again:

1. NFC: the card is issued ``pending`` (event id derived from the enrolment's), the device
   worker writes its URL; once ``write()`` has returned (the driver read it back), the card
   is activated with the UID. A failed write leaves it pending: "try again" writes the same
   URL, on the same or another card; giving up voids it and prints a card instead.
2. QR: the card is issued and printed; a failed print is printed again (the same card).
3. ``GET /issue/done``.

The page polls ``GET /issue/status`` (``static/issuing.js``), which moves the work on.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import uuid
from typing import Any

import qrcode
import qrcode.image.svg
from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    session,
    url_for,
)
from flask_babel import gettext as _
from markupsafe import Markup

from device_drivers.base import CardSlip, PrinterError
from device_drivers.forwarder import ServerProblem, ServerUnavailable
from kiosk_app.devices import DeviceWorker
from kiosk_app.heartbeat import Heartbeat

log = logging.getLogger(__name__)
bp = Blueprint("issuing", __name__, url_prefix="/issue")

# the namespace of card event ids; the same as the enrolment page's, so a card asked for
# twice (a retry, a reload) is always the same card
CARD_EVENTS = uuid.UUID("5b0c1d3e-6f0a-4c1e-9a57-3f1d2b7c8e90")
# a failure that another card may not have (in-use: it is someone's loyalty card)
ANOTHER_CARD = ("too-small", "read-only", "in-use")
PROGRESS = ("nfc-waiting", "nfc-writing", "nfc-done", "printing")


def init_app(app: Flask) -> None:
    """Set up the device workers and the heartbeat (started lazily, not here)."""
    devices = DeviceWorker(app.config["WRITER"], app.config["STAFF_READER"])
    app.extensions["kiosk.devices"] = devices
    app.extensions["kiosk.heartbeat"] = Heartbeat(
        (app.config["SERVER_URL"], app.config["DEVICE_KEY"], float(app.config["REQUEST_TIMEOUT"]),
         str(app.config["SERVER_CA"])),
        float(app.config["HEARTBEAT_INTERVAL"] or 0), devices, app.extensions["kiosk.printer"])

    @app.before_request
    def _start_devices() -> None:
        # not in create_app: making the app must not open hardware or start threads
        if not app.extensions.get("kiosk.started"):
            app.extensions["kiosk.started"] = True
            if devices.enabled:
                devices.start()
            app.extensions["kiosk.heartbeat"].start()


def shutdown(app: Flask) -> None:
    """Stop the device worker, the heartbeat and the printer thread (tests, shutdown)."""
    app.extensions["kiosk.heartbeat"].stop()
    app.extensions["kiosk.devices"].stop()
    app.extensions["kiosk.printer"].stop()


def on_reset() -> None:
    """Called before the session is wiped: give up any card still being made."""
    _devices().cancel()
    issue = session.get("issue") or {}
    nfc = issue.get("nfc") or {}
    if nfc.get("card_id") and nfc.get("status") == "pending":
        _void(nfc, "abandoned")


# -- helpers -------------------------------------------------------------------------------


def _client():
    return current_app.extensions["kiosk.client"]


def _devices() -> DeviceWorker:
    return current_app.extensions["kiosk.devices"]


def _printer():
    return current_app.extensions["kiosk.printer"]


def _staff_headers(issue: dict) -> dict | None:
    staff = session.get("staff") or {}
    if issue.get("staff") and staff.get("token"):
        return {"X-Staff-Authorization": f"Session {staff['token']}"}
    return None


def card_event_id(enrol_event_id: str, kind: str) -> str:
    """The card's event id, derived from the enrolment's: asking again gives the same card."""
    return str(uuid.uuid5(CARD_EVENTS, f"{enrol_event_id}:{kind}"))


class _Stop(Exception):  # noqa: N818 - control flow: the state to show now
    def __init__(self, state: str, reason: str | None = None) -> None:
        super().__init__(state)
        self.state, self.reason = state, reason


def _problem_state(exc: ServerProblem, issue: dict) -> _Stop:
    if issue.get("staff") and exc.slug in ("staff-session-expired", "invalid-credentials"):
        return _Stop("error", "staff-expired")
    if exc.slug == "forbidden-role":
        return _Stop("error", "forbidden")
    return _Stop("error", "refused")


def _issue_card(issue: dict, kind: str) -> dict:
    """POST the card (idempotent on its event id); the card as the service answers it."""
    body: dict[str, Any] = {"event_id": card_event_id(issue["enrol_event_id"], kind),
                            "kind": kind}
    if issue.get("replace") and not issue.get("replaced"):
        body.update(replace=True, reason=issue.get("reason") or "other")
    customer = session["customer"]
    try:
        card = _client().post(f"/customers/{customer['id']}/cards", body,
                              headers=_staff_headers(issue))
    except ServerUnavailable:
        raise _Stop("error", "server-down") from None
    except ServerProblem as exc:
        log.warning("%s card refused: %s", kind, exc.slug)
        raise _problem_state(exc, issue) from None
    if body.get("replace"):
        issue["replaced"] = True  # only the first card of a reissue replaces the old ones
    return {"card_id": card["card_id"], "url": card["url"],
            "status": card.get("status", "active")}


def card_url_prefix(url: str) -> str | None:
    """The shop's card URLs' common start, ``https://shop.example/c/``, from one of them.

    The writer refuses a card holding another URL that starts with it: someone's working card.
    ``None`` (no check) for a URL without ``/c/``, which the service does not make.
    """
    at = url.lower().rfind("/c/")
    return url[: at + 3] if at >= 0 else None


def _void(nfc: dict, reason: str) -> None:
    """Give up a pending card, best effort: a pending card opens nothing anyway."""
    try:
        _client().post(f"/cards/{nfc['card_id']}/void", {"reason": reason})
    except ServerUnavailable:
        log.warning("card %s left pending: the service is unreachable", nfc["card_id"])
        return
    except ServerProblem as exc:
        log.warning("voiding card %s: %s", nfc["card_id"], exc.slug)
        return
    nfc["status"] = "void"


def _want(issue: dict) -> tuple[bool, bool]:
    choice = issue.get("choice", "qr")
    nfc = choice in ("nfc", "both") and not issue.get("nfc_given_up")
    qr = choice in ("qr", "both") or bool(issue.get("nfc_given_up"))
    return nfc, qr


def _slip(customer: dict, url: str) -> CardSlip:
    values: dict[str, Any] = dict(
        shop_name=current_app.config["SHOP_NAME"],
        first_name=customer["first_name"],
        customer_code=customer["id"],
        card_url=url,
        lines=(_("Show this card at the till to collect your points."),
               _("Keep it safe: a lost card can be replaced at the desk.")),
    )
    # the logo field is newer than this code may run with
    if "logo" in {f.name for f in dataclasses.fields(CardSlip)}:
        values["logo"] = current_app.config.get("SHOP_LOGO") or None
    return CardSlip(**values)


# -- the state machine ---------------------------------------------------------------------


def advance() -> tuple[str, str | None]:
    """Move the making of the cards on by one step that does not wait; ``(state, reason)``.

    States: ``nfc-waiting``, ``nfc-writing`` (a card is on the writer), ``nfc-done`` (just
    activated, more to do), ``nfc-failed`` (reason: the ``WriteError``'s), ``printing``,
    ``print-failed`` (``paper-out``, ``offline``, ``failed``), ``error`` (``server-down``,
    ``refused``, ``staff-expired``, ``forbidden``), ``done``.
    """
    issue = session["issue"]
    session.modified = True  # the nested dicts change in place
    try:
        want_nfc, want_qr = _want(issue)
        if want_nfc and not _devices().enabled:
            issue["nfc_given_up"], issue["nfc_unavailable"] = True, True
            want_nfc, want_qr = False, True
        if want_nfc and (issue.get("nfc") or {}).get("status") != "active":
            state = _advance_nfc(issue, more=want_qr)
            if state is not None:
                return state
        if want_qr and not (issue.get("qr") or {}).get("printed"):
            return _advance_print(issue)
    except _Stop as stop:
        return stop.state, stop.reason
    return "done", None


def _advance_nfc(issue: dict, more: bool) -> tuple[str, str | None] | None:
    nfc = issue.get("nfc")
    if not nfc:
        nfc = issue["nfc"] = _issue_card(issue, "nfc")
    if nfc["status"] == "active":  # asked again after a restart: it was activated then
        _made(issue, "nfc")
        return None
    if nfc["status"] != "pending":
        raise _Stop("error", "refused")
    if nfc.get("failed"):
        return "nfc-failed", nfc["failed"]
    if not nfc.get("uid"):
        job = _devices().job(nfc.get("job"))
        if job is None or job.state == "cancelled":  # not started, or lost with a restart
            job = _devices().write(nfc["url"], timeout=float(current_app.config["WRITE_TIMEOUT"]),
                                   lock=bool(current_app.config["CARD_LOCK"]),
                                   keep=card_url_prefix(nfc["url"]))
            nfc["job"] = job.id
        if job.active:
            return ("nfc-writing" if job.state == "writing" else "nfc-waiting"), None
        if job.state == "failed":
            nfc["failed"] = job.reason or "failed"
            log.info("card %s not written: %s", nfc["card_id"], nfc["failed"])
            return "nfc-failed", nfc["failed"]
        nfc["uid"] = job.result.uid  # read back by the driver: it holds the URL
    try:
        card = _client().post(f"/cards/{nfc['card_id']}/activation", {"uid": nfc["uid"]})
    except ServerUnavailable:
        raise _Stop("error", "server-down") from None  # the UID is kept: activate again
    except ServerProblem as exc:
        log.warning("card %s not activated: %s", nfc["card_id"], exc.slug)
        raise _problem_state(exc, issue) from None
    nfc["status"] = card.get("status", "active")
    _made(issue, "nfc")
    return ("nfc-done", None) if more else None


def _advance_print(issue: dict) -> tuple[str, str | None]:
    qr = issue.get("qr")
    if not qr:
        qr = issue["qr"] = _issue_card(issue, "qr")
    if qr.get("failed"):
        return "print-failed", qr["failed"]
    job = _printer().job(qr.get("job"))
    if job is None:
        qr["job"] = _printer().submit(_slip(session["customer"], qr["url"]))
        return "printing", None
    if not job.done():
        return "printing", None
    exc = job.exception()
    if exc is not None:
        reason = exc.reason if isinstance(exc, PrinterError) else "failed"
        qr["failed"] = reason if reason in ("paper-out", "offline") else "failed"
        return "print-failed", qr["failed"]
    qr["printed"] = True
    _made(issue, "qr")
    return "done", None


def _made(issue: dict, kind: str) -> None:
    made = issue.setdefault("made", [])
    if kind not in made:
        made.append(kind)


# -- views ---------------------------------------------------------------------------------


def _ready() -> bool:
    return bool(session.get("customer") and session.get("issue"))


@bp.get("/")
def start():
    """The progress page; starts (or carries on with) the work for ``session["issue"]``."""
    if not _ready():
        return redirect(url_for("kiosk.start"))
    state, reason = advance()
    if state == "done":
        return redirect(url_for("issuing.done"))
    issue = session["issue"]
    want_nfc, want_qr = _want(issue)
    parts = [part for part, wanted in (("nfc", want_nfc), ("qr", want_qr)) if wanted]
    status = 503 if reason == "server-down" else 200
    return render_template("kiosk/issuing.html", state=state, reason=reason, issue=issue,
                           parts=parts,
                           customer=session["customer"], staff=bool(issue.get("staff")),
                           another_card=reason in ANOTHER_CARD,
                           progress=PROGRESS), status


@bp.get("/status")
def status():
    """Polled by the progress page: where the work is; ``next`` when the page must change."""
    if not _ready():
        return jsonify(state="gone", next=url_for("kiosk.start"))
    state, reason = advance()
    body: dict[str, Any] = {"state": state, "reason": reason}
    if state == "done":
        body["next"] = url_for("issuing.done")
    elif state not in PROGRESS:
        body["next"] = url_for("issuing.start")  # the page shows what to do about it
    return jsonify(body)


@bp.post("/retry")
def retry():
    """Try again: the same pending card and URL (or the same printed card, or the service)."""
    if not _ready():
        return redirect(url_for("kiosk.start"))
    issue = session["issue"]
    for part in ("nfc", "qr"):
        step = issue.get(part) or {}
        step.pop("failed", None)
        step.pop("job", None)
    session.modified = True
    return redirect(url_for("issuing.start"))


@bp.post("/give-up")
def give_up():
    """No NFC card after all: void the pending one and print a card instead."""
    if not _ready():
        return redirect(url_for("kiosk.start"))
    issue = session["issue"]
    nfc = issue.get("nfc") or {}
    _devices().cancel(nfc.get("job"))
    if nfc.get("card_id") and nfc.get("status") == "pending":
        _void(nfc, "write-failed")
    issue["nfc_given_up"] = True
    session.modified = True
    return redirect(url_for("issuing.start"))


@bp.get("/done")
def done():
    """The last screen: welcome, the customer code, the points, what was made."""
    if not _ready():
        return redirect(url_for("kiosk.start"))
    issue, customer = session["issue"], session["customer"]
    if advance()[0] != "done":
        return redirect(url_for("issuing.start"))
    qr_svg = card_url = None
    if current_app.config["SHOW_CARD_ON_SCREEN"] and (issue.get("qr") or {}).get("url"):
        card_url = issue["qr"]["url"]
        image = qrcode.make(card_url.upper(), image_factory=qrcode.image.svg.SvgPathImage,
                            box_size=8)
        buffer = io.BytesIO()
        image.save(buffer)
        qr_svg = Markup(buffer.getvalue().decode())  # noqa: S704 - made by qrcode, not input
    return render_template("kiosk/done.html", customer=customer, made=issue.get("made", []),
                           staff=bool(issue.get("staff")),
                           nfc_unavailable=bool(issue.get("nfc_unavailable")),
                           return_after=20, qr_svg=qr_svg, card_url=card_url)
