"""The kiosk pages: enrol, card printed (or what to do), start again."""

from __future__ import annotations

import io
import logging
import uuid

import qrcode
import qrcode.image.svg
from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from markupsafe import Markup

from device_drivers.base import CardSlip, PrinterError
from device_drivers.forwarder import ServerProblem, ServerUnavailable
from kiosk_app import LANGUAGES
from kiosk_app.forms import EnrolForm

log = logging.getLogger(__name__)
bp = Blueprint("kiosk", __name__)

CONSENTS = ("terms", "marketing_email", "marketing_sms", "profiling")
CARD_EVENTS = uuid.UUID("5b0c1d3e-6f0a-4c1e-9a57-3f1d2b7c8e90")


def _client():
    return current_app.extensions["kiosk.client"]


def _printer():
    return current_app.extensions["kiosk.printer"]


def _start_over() -> None:
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


@bp.get("/")
def start():
    """A blank form in the chosen language; nothing of a previous customer survives."""
    lang = request.args.get("lang")
    _start_over()
    if lang in LANGUAGES:
        session["lang"] = lang
    form = EnrolForm(formdata=None, event_id=str(uuid.uuid4()))
    return render_template("kiosk/enrol.html", form=form)


@bp.post("/enrol")
def enrol():
    form = EnrolForm()
    if not form.validate():
        return render_template("kiosk/enrol.html", form=form), 422
    body = {
        "event_id": form.event_id.data,
        "first_name": form.first_name.data.strip(),
        "last_name": form.last_name.data.strip(),
        "email": (form.email.data or "").strip() or None,
        "phone": (form.phone.data or "").strip() or None,
        "language": session.get("lang") or current_app.config["DEFAULT_LANGUAGE"],
        "consents": {name: bool(getattr(form, name).data) for name in CONSENTS},
        "consent_version": current_app.config["CONSENT_VERSION"],
    }
    try:
        customer = _client().post("/enrolments", body)
    except ServerUnavailable:
        # the same event id goes out again on the next try: the server cannot enrol twice
        return render_template("kiosk/enrol.html", form=form, error=_(
            "We cannot reach the loyalty service right now. Your details are kept: "
            "please try again in a moment.")), 503
    except ServerProblem as exc:
        log.warning("enrolment refused: %s", exc.slug)
        return render_template("kiosk/enrol.html", form=form, error=_(
            "Your details could not be registered. Please check them or ask a member of "
            "staff.")), 422
    _start_over()
    session["customer"] = {"id": customer["customer_id"], "first_name": body["first_name"],
                           "language": body["language"]}
    # derived from the enrolment's event id: a resubmitted enrolment (same event id) asks
    # for the same card, so no retry can ever make a second one
    session["card_event_id"] = str(uuid.uuid5(CARD_EVENTS, f"{body['event_id']}:qr"))
    _issue_and_print()
    return redirect(url_for("kiosk.done"))


def _issue_and_print() -> None:
    """Issue the QR card (idempotent on the kept event id) and print it; record the outcome."""
    customer = session["customer"]
    try:
        card = _client().post(f"/customers/{customer['id']}/cards",
                              {"event_id": session["card_event_id"], "kind": "qr"})
    except ServerUnavailable:
        session["outcome"] = "server-down"
        return
    except ServerProblem as exc:
        log.warning("card issue refused: %s", exc.slug)
        session["outcome"] = "card-refused"
        return
    if current_app.config["SHOW_CARD_ON_SCREEN"]:
        session["card_url"] = card["url"]
    slip = CardSlip(
        shop_name=current_app.config["SHOP_NAME"],
        first_name=customer["first_name"],
        customer_code=customer["id"],
        card_url=card["url"],
        lines=(_("Show this card at the till to collect your points."),
               _("Keep it safe: a lost card can be replaced at the desk.")),
    )
    try:
        _printer().print_card(slip, float(current_app.config["PRINT_TIMEOUT"]))
    except PrinterError as exc:
        session["outcome"] = f"printer-{exc.reason}"
        return
    session["outcome"] = "printed"


@bp.get("/done")
def done():
    customer = session.get("customer")
    if not customer:
        return redirect(url_for("kiosk.start"))
    card_url = session.get("card_url")
    qr_svg = None
    if card_url:
        image = qrcode.make(card_url.upper(), image_factory=qrcode.image.svg.SvgPathImage,
                            box_size=8)
        buffer = io.BytesIO()
        image.save(buffer)
        qr_svg = Markup(buffer.getvalue().decode())  # noqa: S704 - made by qrcode, not input
    return render_template("kiosk/done.html", customer=customer,
                           outcome=session.get("outcome"), card_url=card_url, qr_svg=qr_svg)


@bp.post("/print")
def print_again():
    """Print the same card again (or issue it, if the service was down the first time)."""
    if not session.get("customer"):
        return redirect(url_for("kiosk.start"))
    _issue_and_print()
    return redirect(url_for("kiosk.done"))


@bp.post("/reset")
def reset():
    _start_over()
    return redirect(url_for("kiosk.start"))


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}
