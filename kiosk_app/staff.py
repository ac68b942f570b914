"""Staff mode: reissue a lost, stolen or damaged card.

A staff member opens it with a staff card tap or their name and PIN (``POST
/staff/kiosk-sessions``); the token is kept in the Flask session (never logged) and sent as
``X-Staff-Authorization: Session <token>``. They find the customer by the old card (tapped on
the reader, or scanned by a keyboard-wedge scanner) or by code, email or phone, check who it
is, pick a reason and the new card, and hand over to the issuing pages with ``replace``: the
old cards are refused at every till at once. "Leave staff mode" is the kiosk's reset (as the
idle timeout): the session, the staff token with it, is wiped.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext

from device_drivers.base import Tap
from device_drivers.forwarder import ServerProblem, ServerUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("staff", __name__, url_prefix="/staff")

REISSUE_ROLES = ("desk", "manager", "admin")  # who may look up and reissue (the contract's)
REASONS = ("lost", "stolen", "damaged")
CHOICES = ("nfc", "qr", "both")
READ_TIMEOUT = 60.0  # seconds of one read job; the page starts another while it is shown


def _client():
    return current_app.extensions["kiosk.client"]


def _devices():
    return current_app.extensions["kiosk.devices"]


def _staff() -> dict | None:
    """The staff member logged in on this screen, or ``None`` (never logged in, or expired)."""
    staff = session.get("staff")
    if not staff:
        return None
    if staff.get("expires", 0) <= time.time():
        session.pop("staff", None)
        flash(_("Your staff session has ended. Please log in again."), "error")
        return None
    return staff


def _headers() -> dict:
    return {"X-Staff-Authorization": f"Session {session['staff']['token']}"}


def _forget_customer() -> None:
    for key in ("customer", "issue", "staff_customer", "staff_results"):
        session.pop(key, None)


def _server_down() -> None:
    flash(_("We cannot reach the loyalty service right now. Please try again in a moment."),
          "error")


# -- logging in ------------------------------------------------------------------------------


def _open_session(body: dict) -> bool:
    """Ask for a staff session; keep it or say why not (flashed). ``True`` when logged in."""
    try:
        answer = _client().post("/staff/kiosk-sessions", body)
    except ServerUnavailable:
        _server_down()
        return False
    except ServerProblem as exc:
        if exc.slug == "staff-locked-out":
            minutes = max(1, -(-int(exc.body.get("retry_after") or 900) // 60))
            flash(ngettext("Too many wrong tries. Staff mode is locked for %(num)d minute.",
                           "Too many wrong tries. Staff mode is locked for %(num)d minutes.",
                           minutes), "error")
        elif "uid" in body:
            flash(_("This card is not a staff card."), "error")
        else:
            flash(_("Wrong name or PIN. Please try again."), "error")
        log.info("staff login refused: %s", exc.slug)
        return False
    staff = answer.get("staff") or {}
    if staff.get("role") not in REISSUE_ROLES:
        flash(_("Card replacement needs a desk, manager or admin account. Please ask a "
                "colleague."), "error")
        log.info("staff login of a %s on the kiosk: refused", staff.get("role"))
        return False
    _forget_customer()
    ttl = float(answer.get("ttl") or 300)
    session["staff"] = {"token": answer["token"], "username": staff.get("username"),
                        "role": staff.get("role"), "expires": time.time() + ttl - 5}
    log.info("staff mode opened by %s", staff.get("username"))
    return True


def _ensure_read(purpose: str) -> None:
    """A read job on the staff reader for this page, unless one is still waiting."""
    read = session.get("staff_read") or {}
    job = _devices().job(read.get("job"))
    if read.get("purpose") == purpose and job is not None and job.active:
        return
    if not _devices().enabled:
        return
    job = _devices().read(timeout=READ_TIMEOUT)
    session["staff_read"] = {"job": job.id, "purpose": purpose}


def _stop_read() -> None:
    read = session.pop("staff_read", None) or {}
    if read.get("job"):
        _devices().cancel(read["job"])


@bp.get("/")
def start():
    """Tap your staff card, or enter your staff name and PIN."""
    if _staff():
        return redirect(url_for("staff.find"))
    _ensure_read("login")
    return render_template("kiosk/staff/login.html", reader=_devices().enabled)


@bp.post("/login")
def login():
    username = (request.form.get("username") or "").strip()
    pin = (request.form.get("pin") or "").strip()
    if not username or not pin.isdigit():
        flash(_("Enter your staff name and your PIN (digits only)."), "error")
        return redirect(url_for("staff.start"))
    _stop_read()
    if _open_session({"username": username, "pin": pin}):
        return redirect(url_for("staff.find"))
    return redirect(url_for("staff.start"))


@bp.get("/read")
def read_status():
    """Polled by the login and find pages: a card tapped on the staff reader, used at once."""
    read = session.get("staff_read") or {}
    # the page says what it waits for: a read given up meanwhile (a form sent) starts again
    purpose = read.get("purpose") or request.args.get("purpose")
    job = _devices().job(read.get("job"))
    if purpose not in ("login", "find") or (purpose == "find" and not _staff()):
        return jsonify(state="gone", next=url_for("staff.start"))
    if job is None or job.state == "cancelled" or (job.state == "failed"
                                                   and job.reason == "no-card"):
        _ensure_read(purpose)  # the page is still shown: wait for a card again
        return jsonify(state="waiting")
    if job.active:
        return jsonify(state="waiting")
    session.pop("staff_read", None)
    if job.state == "failed":
        log.warning("staff reader: %s (%s)", job.error, job.reason)
        if job.reason == "unavailable":
            return jsonify(state="reader-error", stop=True)
        flash(_("The card could not be read. Please tap it again."), "error")
        return jsonify(state="error", next=url_for("staff.start" if purpose == "login"
                                                   else "staff.find"))
    tap: Tap = job.result
    if purpose == "login":
        if not tap.uid:
            flash(_("This card is not a staff card."), "error")
            return jsonify(state="error", next=url_for("staff.start"))
        ok = _open_session({"uid": tap.uid})
        return jsonify(state="done", next=url_for("staff.find" if ok else "staff.start"))
    body = {"url": tap.url} if tap.url else {"qr": tap.qr} if tap.qr else {"uid": tap.uid}
    return jsonify(state="done", next=_lookup("/cards/lookup", body))


# -- finding the customer ----------------------------------------------------------------------


def _lookup(path: str, body: dict) -> str:
    """Ask the service who it is; keep the answer; the URL of the page to show next."""
    try:
        answer = _client().post(path, body, headers=_headers())
    except ServerUnavailable:
        _server_down()
        return url_for("staff.find")
    except ServerProblem as exc:
        log.info("lookup refused: %s", exc.slug)
        if exc.slug in ("staff-session-expired", "invalid-credentials"):
            session.pop("staff", None)
            flash(_("Your staff session has ended. Please log in again."), "error")
            return url_for("staff.start")
        if exc.slug == "forbidden-role":
            flash(_("Your staff account cannot replace cards. Please ask someone at the desk "
                    "or a manager."), "error")
        elif exc.status == 404 or exc.slug.startswith("card-"):
            flash(_("No customer was found for this card. Check it, or search by code, "
                    "email or phone."), "error")
        else:
            flash(_("No customer was found. Check what you typed."), "error")
        return url_for("staff.find")
    customers = answer.get("customers")
    if customers is None:  # a card lookup: one customer, and the card that was read
        session["staff_customer"] = answer
        return url_for("staff.customer")
    if not customers:
        flash(_("No customer was found. Check what you typed."), "error")
        return url_for("staff.find")
    if len(customers) == 1:
        session["staff_customer"] = customers[0]
        return url_for("staff.customer")
    session["staff_results"] = customers
    return url_for("staff.results")


@bp.get("/find")
def find():
    """Tap or scan the old card, or search by customer code, email or phone."""
    if not _staff():
        return redirect(url_for("staff.start"))
    _forget_customer()  # the customer of the last reissue is not shown again
    _ensure_read("find")
    return render_template("kiosk/staff/find.html", reader=_devices().enabled)


@bp.post("/find")
def search():
    if not _staff():
        return redirect(url_for("staff.start"))
    scanned = (request.form.get("scan") or "").strip()
    code = (request.form.get("code") or "").strip()
    email = (request.form.get("email") or "").strip()
    phone = (request.form.get("phone") or "").strip()
    if scanned:
        path, body = "/cards/lookup", {"qr": scanned}
    elif code:
        path, body = "/customers/lookup", {"customer_id": code}
    elif email:
        path, body = "/customers/lookup", {"email": email}
    elif phone:
        path, body = "/customers/lookup", {"phone": phone}
    else:
        flash(_("Scan the old card, or type a customer code, an email or a phone number."),
              "error")
        return redirect(url_for("staff.find"))
    _stop_read()
    return redirect(_lookup(path, body))


@bp.get("/results")
def results():
    if not _staff():
        return redirect(url_for("staff.start"))
    customers = session.get("staff_results")
    if not customers:
        return redirect(url_for("staff.find"))
    return render_template("kiosk/staff/results.html", customers=customers)


@bp.post("/results")
def pick():
    if not _staff():
        return redirect(url_for("staff.start"))
    wanted = request.form.get("customer_id")
    for found in session.get("staff_results") or []:
        if found.get("customer_id") == wanted:
            session["staff_customer"] = found
            session.pop("staff_results", None)
            return redirect(url_for("staff.customer"))
    return redirect(url_for("staff.find"))


@bp.get("/customer")
def customer():
    """Who it is, their cards; the reason and the new card."""
    if not _staff():
        return redirect(url_for("staff.start"))
    found = session.get("staff_customer")
    if not found:
        return redirect(url_for("staff.find"))
    return render_template("kiosk/staff/customer.html", found=found, reasons=REASONS,
                           nfc=_devices().enabled)


@bp.post("/reissue")
def reissue():
    """Hand the new card over to the issuing pages, as a replacement."""
    if not _staff():
        return redirect(url_for("staff.start"))
    found = session.get("staff_customer")
    if not found:
        return redirect(url_for("staff.find"))
    reason = request.form.get("reason")
    choice = request.form.get("choice")
    if reason not in REASONS or choice not in CHOICES:
        flash(_("Pick a reason and the new card."), "error")
        return redirect(url_for("staff.customer"))
    session["customer"] = {"id": found["customer_id"], "first_name": _first_name(found),
                           "language": found.get("language"), "points": found.get("points", 0),
                           "welcome_points": 0}
    # a new base for the card event ids: this reissue's cards, made once however often the
    # page is reloaded
    session["issue"] = {"choice": choice, "enrol_event_id": str(uuid.uuid4()), "replace": True,
                        "reason": reason, "staff": True}
    log.info("reissue (%s, %s) by %s", reason, choice, session["staff"].get("username"))
    return redirect(url_for("issuing.start"))


def _first_name(found: dict[str, Any]) -> str:
    """The first name in the service's display name ("Jūratė K.")."""
    name = (found.get("display_name") or "").strip()
    head, _sep, tail = name.rpartition(" ")
    return head if head and len(tail) <= 3 and tail.endswith(".") else name
