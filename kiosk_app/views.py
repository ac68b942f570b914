"""The customer's steps: welcome, language, details, consents, survey, card choice, enrol.

Everything typed lives in the session (``session["flow"]``) between steps, so going back and
forth keeps it and every page is drawn from it; the session is wiped when the customer leaves,
when the kiosk has been idle for ``IDLE_TIMEOUT`` seconds, or by the reset button. The enrolment
goes out once, with an event id made when the flow starts: a retry (the service was down, a
double tap) can never enrol the customer twice. Issuing the card is ``kiosk_app.issuing``'s job.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import (
    Blueprint,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf.csrf import CSRFError

from device_drivers.forwarder import ServerProblem, ServerUnavailable
from kiosk_app import LANGUAGES, csrf, issuing
from kiosk_app.forms import CARD_HINTS, CARD_KINDS, CONSENTS, CardForm, ConsentsForm, DetailsForm
from kiosk_app.survey import Survey

log = logging.getLogger(__name__)
bp = Blueprint("kiosk", __name__)

STEPS = ("language", "details", "consents", "survey", "card")
STEP_LABELS = {"language": _l("Language"), "details": _l("Your details"),
               "consents": _l("Choices"), "survey": _l("Questions"),
               "card": _l("Your card")}
# endpoints that neither count as a customer's activity nor need a session
PASSIVE = {"static", "kiosk.healthz"}
# polled by the progress and staff pages every few hundred ms: subject to the idle timeout,
# but not a touch (a page left alone must still start over; kiosk.js pings /alive while a
# card is being written)
POLLS = {"issuing.status", "staff.read_status"}


def _client():
    return current_app.extensions["kiosk.client"]


def _survey() -> Survey:
    return current_app.extensions["kiosk.survey"]


def _language() -> str:
    return session.get("lang") or current_app.config["DEFAULT_LANGUAGE"]


def _start_over(keep_language: bool = True) -> None:
    """Wipe the session (a new id too); issuing first gives up any card it is making."""
    try:
        issuing.on_reset()  # before the wipe: it needs the session to know what to give up
    except Exception:
        # whatever went wrong there, the next customer must not see this one's data
        log.exception("issuing.on_reset failed; wiping the session anyway")
    lang = session.get("lang")
    session.clear()
    rotate = getattr(session, "rotate", None)
    if rotate:
        rotate()
    if keep_language and lang:
        session["lang"] = lang
    session["_seen"] = time.monotonic()


@bp.before_app_request
def _expire_when_idle():
    """A request after IDLE_TIMEOUT seconds of silence finds an empty session."""
    if request.endpoint in PASSIVE:
        return
    timeout = float(current_app.config["IDLE_TIMEOUT"])
    now = time.monotonic()
    seen = session.get("_seen")
    if timeout > 0 and seen is not None and now - seen > timeout:
        log.info("idle for %.0f s: the session is wiped", now - seen)
        _start_over(keep_language=False)
    if request.endpoint not in POLLS or seen is None:
        session["_seen"] = now


@bp.app_errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    """A form from a wiped session (or none): back to the start, not a dead-end error page."""
    if request.blueprint != "kiosk":
        return exc
    log.info("form refused (%s): back to the start", exc.description)
    return redirect(url_for("kiosk.start"))


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    rule = request.url_rule
    here = request.path if rule is not None and "GET" in (rule.methods or ()) else "/"
    return {"lang_next": here}


# --------------------------------------------------------------------------- the flow


def _flow() -> dict[str, Any] | None:
    return session.get("flow")


def _save(flow: dict[str, Any]) -> None:
    session["flow"] = flow
    session.modified = True


def _steps() -> list[str]:
    return [s for s in STEPS if s != "survey" or len(_survey())]


def _guard(step: str):
    """The flow, or a redirect when this step cannot be shown (no flow, an earlier step to do)."""
    flow = _flow()
    if flow is None:
        if session.get("customer"):  # enrolled already: Back must not enrol again
            return None, redirect(url_for("issuing.start"))
        return None, redirect(url_for("kiosk.start"))
    for earlier in _steps()[:_steps().index(step)]:
        if earlier not in flow["done"]:
            return None, redirect(_step_url(earlier))
    return flow, None


def _step_url(step: str, question: int = 1) -> str:
    if step == "survey":
        return url_for("kiosk.survey", n=question)
    return url_for(f"kiosk.{step}")


def _after(step: str) -> str:
    steps = _steps()
    return _step_url(steps[steps.index(step) + 1])


def _before(step: str) -> str:
    steps = _steps()
    earlier = steps[steps.index(step) - 1]
    return _step_url(earlier, question=len(_survey()))


def _done(flow: dict[str, Any], step: str) -> None:
    if step not in flow["done"]:
        flow["done"].append(step)


def _render(template: str, step: str, status: int = 200, **context):
    context.setdefault("card_kinds", CARD_KINDS)
    context.setdefault("card_hints", CARD_HINTS)
    steps = _steps()
    progress = [(name, STEP_LABELS[name], "done" if steps.index(name) < steps.index(step)
                 else "current" if name == step else "todo") for name in steps]
    return render_template(template, steps=progress, step=step, **context), status


@bp.get("/")
def start():
    """The welcome screen; nothing of a previous customer survives it."""
    lang = request.args.get("lang")
    _start_over()
    if lang in LANGUAGES:
        session["lang"] = lang
    return render_template("kiosk/welcome.html")


@bp.post("/begin")
def begin():
    """A new enrolment: its event id is made here and kept until the service has answered.

    The welcome screen has just wiped the session; a second tap finds the flow started.
    """
    if _flow() is None:
        session.pop("customer", None)
        session.pop("issue", None)
        _save({"event_id": str(uuid.uuid4()), "done": [], "details": {}, "consents": {},
               "survey": {}, "card": {}})
    return redirect(url_for("kiosk.language"))


@bp.get("/lang/<code>")
def set_language(code: str):
    """Switch the language and come back to the same screen, keeping what was typed."""
    if code in LANGUAGES:
        session["lang"] = code
    back = request.args.get("next", "/")
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"
    return redirect(back)


@bp.route("/language", methods=["GET", "POST"])
def language():
    flow, away = _guard("language")
    if away:
        return away
    if request.method == "POST":
        code = request.form.get("lang")
        if code in LANGUAGES:
            session["lang"] = code
            _done(flow, "language")
            _save(flow)
            return redirect(_after("language"))
    return _render("kiosk/language.html", "language")


@bp.route("/details", methods=["GET", "POST"])
def details():
    flow, away = _guard("details")
    if away:
        return away
    if request.method == "GET":
        return _render("kiosk/details.html", "details", form=DetailsForm(data=flow["details"]))
    form = DetailsForm()
    flow["details"] = form.values()
    if request.form.get("nav") == "back":
        _save(flow)
        return redirect(_before("details"))
    if not form.validate():
        if "details" in flow["done"]:
            flow["done"].remove("details")
        _save(flow)
        return _render("kiosk/details.html", "details", 422, form=form)
    _done(flow, "details")
    _save(flow)
    return redirect(_after("details"))


@bp.route("/consents", methods=["GET", "POST"])
def consents():
    flow, away = _guard("consents")
    if away:
        return away
    if request.method == "GET":
        return _render("kiosk/consents.html", "consents",
                       form=ConsentsForm(data=flow["consents"]))
    form = ConsentsForm()
    flow["consents"] = form.values()
    if request.form.get("nav") == "back":
        _save(flow)
        return redirect(_before("consents"))
    if not form.validate():
        if "consents" in flow["done"]:
            flow["done"].remove("consents")
        _save(flow)
        return _render("kiosk/consents.html", "consents", 422, form=form)
    _done(flow, "consents")
    _save(flow)
    return redirect(_after("consents"))


def _read_answer(question, form) -> tuple[Any, str | None]:
    """The answer to one survey question from the posted form, and an error if any."""
    choices = {c.id for c in question.choices}
    if question.kind == "multiple":
        return [v for v in form.getlist("answer") if v in choices], None
    if question.kind == "single":
        value = form.get("answer")
        return (value if value in choices else None), None
    value = (form.get("answer") or "").strip()
    if len(value) > question.max_length:
        return value, ngettext("At most %(num)d character, please.",
                               "At most %(num)d characters, please.", question.max_length)
    return value, None


@bp.route("/survey/<int:n>", methods=["GET", "POST"])
def survey(n: int):
    if not len(_survey()):
        return redirect(url_for("kiosk.card"))
    flow, away = _guard("survey")
    if away:
        return away
    questions = _survey().questions
    if not 1 <= n <= len(questions):
        return redirect(url_for("kiosk.survey", n=1))
    question = questions[n - 1]
    error = None
    if request.method == "POST":
        nav = request.form.get("nav")
        if nav == "skip":
            # skipping means no answers at all, not the ones given so far
            flow["survey"] = {}
            _done(flow, "survey")
            _save(flow)
            return redirect(_after("survey"))
        answer, error = _read_answer(question, request.form)
        flow["survey"][question.id] = answer
        _save(flow)
        if nav == "back":
            return redirect(url_for("kiosk.survey", n=n - 1) if n > 1 else _before("survey"))
        if error is None:
            if n < len(questions):
                return redirect(url_for("kiosk.survey", n=n + 1))
            _done(flow, "survey")
            _save(flow)
            return redirect(_after("survey"))
    return _render("kiosk/survey.html", "survey", 422 if error else 200, question=question,
                   number=n, count=len(questions), answer=flow["survey"].get(question.id),
                   error=error, lang=_language())


def _card_form(data: dict | None = None) -> CardForm:
    kinds = ("nfc", "qr", "both") if current_app.config["WRITER"] else ("qr",)
    if data is None:
        return CardForm(kinds=kinds)
    form = CardForm(data=data, kinds=kinds)
    if kinds == ("qr",) and not form.choice.data:
        form.choice.data = "qr"  # the only card there is
    return form


@bp.route("/card", methods=["GET", "POST"])
def card():
    flow, away = _guard("card")
    if away:
        return away
    if request.method == "GET":
        return _render("kiosk/card.html", "card", form=_card_form(flow["card"]))
    form = _card_form()
    flow["card"] = form.values()
    _save(flow)
    if request.form.get("nav") == "back":
        return redirect(_before("card"))
    if not form.validate():
        return _render("kiosk/card.html", "card", 422, form=form)
    return _enrol(flow, form)


def _enrol(flow: dict[str, Any], form: CardForm):
    """Send the enrolment; on success hand over to issuing, else keep everything and say why."""
    details = flow["details"]
    body: dict[str, Any] = {
        "event_id": flow["event_id"],
        "first_name": details["first_name"],
        "last_name": details["last_name"],
        "email": details["email"] or None,
        "phone": details["phone"] or None,
        "language": _language(),
        "consents": {name: bool(flow["consents"].get(name)) for name in CONSENTS},
        "consent_version": current_app.config["CONSENT_VERSION"],
    }
    if flow["card"].get("pin"):
        body["pin"] = flow["card"]["pin"]
    answers = _survey().answers_for_service(flow["survey"])
    if answers:
        body["survey"] = answers
    try:
        customer = _client().post("/enrolments", body)
    except ServerUnavailable:
        # the same event id goes out again on the next try: the server cannot enrol twice
        return _render("kiosk/card.html", "card", 503, form=form, retry=True, error=_(
            "We cannot reach the loyalty service right now. Your details are kept: "
            "please try again in a moment."))
    except ServerProblem as exc:
        log.warning("enrolment refused: %s", exc.slug)
        return _render("kiosk/card.html", "card", 422, form=form, check_details=True, error=_(
            "Your details could not be registered. Please check them or ask a member of "
            "staff."))
    session.pop("flow", None)  # the service has them now; the kiosk keeps only what it shows
    session["customer"] = {"id": customer["customer_id"], "first_name": body["first_name"],
                           "language": body["language"], "points": customer["points"],
                           "welcome_points": customer.get("welcome_points", 0)}
    session["issue"] = {"choice": flow["card"]["choice"], "enrol_event_id": flow["event_id"]}
    return redirect(url_for("issuing.start"))


# --------------------------------------------------------------------------- housekeeping


@bp.post("/reset")
@csrf.exempt  # harmless, and must work even after the session (and its token) expired
def reset():
    """Start over: the idle timer (``why=idle``, the language too) or a Cancel/Finish button."""
    _start_over(keep_language=request.form.get("why") != "idle")
    return redirect(url_for("kiosk.start"))


@bp.post("/alive")
@csrf.exempt  # it only keeps the session from expiring while the customer is busy
def alive():
    """The page was touched: the customer is still here (see kiosk.js)."""
    return "", 204


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}
