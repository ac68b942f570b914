"""The back office's pages: each checks the role, validates the form, calls one service.

Personal data is read and changed only through ``server.privacy`` (audited, naming the
screen). A refusal from a service (``Problem``) becomes a message on the page: what the
failed request wrote is discarded, then the page the staff member came from is shown again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from datetime import timedelta

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError

from server import db
from server.api.problems import Problem
from server.backoffice import queries
from server.backoffice.forms import (
    FIELD_ERRORS,
    AuditFilterForm,
    ConsentForm,
    EraseForm,
    LoginForm,
    RectifyForm,
    SearchForm,
    parse,
    parse_customer_id,
)
from server.backoffice.security import (
    URL_PREFIX,
    forget_stale_login,
    load_staff,
    local_url,
    restart_session,
    roles_required,
)
from server.db import main_session, utcnow, vault_session
from server.devices.auth import verify_staff
from server.i18n import LANGUAGES
from server.privacy import audit, consent, erasure, retention, service
from server.privacy.schemas import ConsentChangeIn, ErasureIn, RectifyIn, SearchIn
from server.privacy.service import AUDIT_ROLES, ERASE_ROLES, READ_ROLES
from server.privacy.views import render_export

log = logging.getLogger(__name__)
bp = Blueprint("backoffice", __name__, url_prefix=URL_PREFIX, static_folder="static")

T = "server/backoffice/"
# the screen named in the audit log for each read or change made from it
SCREEN = "backoffice:customer"
# data: images only for the empty icon, which spares every page a request for /favicon.ico
CSP = ("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'")

LANGUAGE_NAMES = {"fr": "Français", "lt": "Lietuvių", "en": "English"}
ROLE_NAMES = {"cashier": _l("cashier"), "desk": _l("desk"), "manager": _l("manager"),
              "admin": _l("administrator")}
PURPOSES = {"terms": _l("Programme terms"), "marketing_email": _l("Offers by email"),
            "marketing_sms": _l("Offers by text message"),
            "profiling": _l("Offers based on your purchases")}
# what a staff member is told when a service refuses (by problem type)
PROBLEMS = {
    "customer-not-found": _l("There is no customer with this number."),
    "customer-erased": _l("This customer's personal data has been erased."),
    "consent-terms-withdrawal": _l("The programme terms cannot be withdrawn on their own: to "
                                   "leave the programme, the customer's data is erased."),
    "consent-version-unknown": _l("These consent texts are not published."),
    "validation-error": _l("These details are not valid."),
}


def _principal():
    return current_user.principal


def _locale() -> str:
    return str(get_locale())


def _here() -> str:
    """The page to come back to after switching language."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    if (request.view_args or {}).get("customer_id"):
        return url_for(".customer", customer_id=request.view_args["customer_id"])
    return url_for(".login") if request.endpoint == "backoffice.login" else url_for(".index")


def _back_to_customer(customer_id: str):
    return redirect(url_for(".customer", customer_id=customer_id), 303)


# --------------------------------------------------------------------------- hooks


@bp.before_request
def _session_still_valid():
    forget_stale_login()


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # CSRF checks the referrer
    if request.endpoint != "backoffice.static":
        response.headers.setdefault("Cache-Control", "no-store")  # pages show personal data
    return response


@bp.context_processor
def _globals() -> dict:
    role = current_user.role if current_user.is_authenticated else None
    return {"languages": LANGUAGE_NAMES, "current_language": _locale(), "here": _here(),
            "role_names": ROLE_NAMES, "can_read": role in READ_ROLES,
            "can_erase": role in ERASE_ROLES, "can_audit": role in AUDIT_ROLES}


@bp.errorhandler(403)
def _forbidden(_exc):
    return render_template(T + "forbidden.html"), 403


@bp.errorhandler(CSRFError)
def _csrf(_exc):
    log.info("back-office form refused: CSRF token missing or wrong on %s", request.path)
    return render_template(T + "error.html", message=_(
        "This form has expired or did not come from this page. Go back, reload the page and "
        "try again.")), 400


@bp.errorhandler(Problem)
def _problem(exc: Problem):
    # nothing the refused action wrote is kept (the redirect would otherwise commit it)
    db.finish_request(success=False)
    log.info("back office %s %s -> %s", request.method, request.path, exc.slug)
    flash(str(PROBLEMS.get(exc.slug, _l("This could not be done."))), "error")
    customer_id = (request.view_args or {}).get("customer_id")
    if customer_id and exc.slug != "customer-not-found":
        return _back_to_customer(customer_id)
    return redirect(url_for(".index"), 303)


@bp.errorhandler(OperationalError)
def _db_down(exc: OperationalError):
    log.error("database unavailable: %s", exc.orig.__class__.__name__ if exc.orig else exc)
    return render_template(T + "error.html", message=_(
        "The service cannot reach its database right now. Try again in a moment.")), 503


@bp.errorhandler(500)
def _internal(exc):
    log.error("internal error on %s %s", request.method, request.path,
              exc_info=getattr(exc, "original_exception", None))
    return render_template(T + "error.html", message=_(
        "Something went wrong on our side. Nothing was changed.")), 500


# --------------------------------------------------------------------------- session


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The staff member's user name and password (argon2); one message for every failure."""
    next_url = local_url(request.args.get("next"), bp.url_prefix)
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for(".index"))
    form = LoginForm()
    if request.method == "GET":
        return render_template(T + "login.html", form=form, next_url=next_url)
    try:
        member = verify_staff(main_session(), (form.username.data or "").strip(),
                              form.password.data or "")
    except Problem:
        log.info("back-office login refused")
        return render_template(T + "login.html", form=form, next_url=next_url, error=_(
            "Unknown user name or wrong password.")), 200
    restart_session()  # a new session for the new login: nothing carried over
    login_user(load_staff(member.id))
    session.permanent = True  # ends after PERMANENT_SESSION_LIFETIME without a request
    log.info("back-office login: staff %s (%s)", member.id, member.role)
    return redirect(next_url or url_for(".index"), 303)


@bp.post("/logout")
def logout():
    logout_user()
    restart_session()
    flash(_("You are logged out."), "info")
    return redirect(url_for(".login"), 303)


@bp.post("/language")
def language():
    """Keep the staff member's language in the session (``server.i18n`` reads it)."""
    if request.form.get("lang") in LANGUAGES:
        session["lang"] = request.form["lang"]
    return redirect(local_url(request.form.get("next"), bp.url_prefix) or url_for(".index"),
                    303)


# --------------------------------------------------------------------------- customers


@bp.get("/")
@roles_required(*READ_ROLES)
def index():
    return render_template(T + "search.html", form=SearchForm(formdata=None), results=None)


@bp.post("/search")
@roles_required(*READ_ROLES)
def search():
    """By customer number (straight to the page), or exactly by email or phone (audited)."""
    form = SearchForm()
    text = (form.query.data or "").strip()
    customer_id = parse_customer_id(text)
    if customer_id:
        return _back_to_customer(customer_id)
    by = {"email": text} if "@" in text else {"phone": text}
    req, _errors = parse(SearchIn, {**by, "country": form.country.data or None})
    if req is None:
        form.query.errors = [_("Type an email address, a phone number or a customer number "
                               "(C-XXXX-XXXX).")]
        return render_template(T + "search.html", form=form, results=None), 422
    results = service.search(main_session(), vault_session(), _principal(), email=req.email,
                             phone=req.phone, country=req.country, view="backoffice:search")
    return render_template(T + "search.html", form=form, results=results)


def _customer_page(customer_id: str, rectify: RectifyForm | None = None):
    """The customer page; its identity is read through the privacy service (audited)."""
    file = queries.customer_file(main_session(), vault_session(), _principal(), customer_id,
                                 view=SCREEN)
    texts = consent.texts()
    version = texts["current"]
    consents = ConsentForm(formdata=None)
    consents.fill(file.consents, version)
    if rectify is None and file.personal is not None:
        rectify = RectifyForm(formdata=None)
        rectify.fill(file.personal)
    return render_template(T + "customer.html", file=file, customer_id=customer_id,
                           rectify=rectify, consents=consents, erase=EraseForm(formdata=None),
                           purposes=PURPOSES, version=version,
                           texts=texts["versions"][version])


@bp.get("/customers/<customer_id>")
@roles_required(*READ_ROLES)
def customer(customer_id: str):
    return _customer_page(customer_id)


@bp.post("/customers/<customer_id>/personal-data")
@roles_required(*READ_ROLES)
def rectify(customer_id: str):
    """Correct personal data; the audit log keeps which fields and why, never the values."""
    form = RectifyForm()
    req, errors = parse(RectifyIn, form.as_data())
    if req is None:
        for name, messages in errors.items():
            if name in form:
                form[name].errors = messages
            else:
                form.form_errors.extend(messages)
        # answered 200: the page shows the identity again, and the audit entry of that read
        # must be committed (a 4xx answer rolls the request back)
        return _customer_page(customer_id, rectify=form)
    result = service.rectify(main_session(), vault_session(), _principal(), customer_id, req,
                             view=SCREEN)
    if result["changed"]:
        fields = ", ".join(str(form[name].label.text) for name in result["changed"])
        flash(_("Corrected: %(fields)s.", fields=fields), "ok")
    else:
        flash(_("Nothing was changed: the values are the same as before."), "info")
    return _back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/consents")
@roles_required(*READ_ROLES)
def change_consents(customer_id: str):
    """The customer's decisions at the desk, on the text version shown with the boxes."""
    form = ConsentForm()
    if form.version.data != consent.texts()["current"]:
        flash(_("The consent texts have changed since the page was shown: show the new texts "
                "to the customer and ask again."), "error")
        return _back_to_customer(customer_id)
    req, _errors = parse(ConsentChangeIn, {"consents": form.decisions(),
                                           "consent_version": form.version.data,
                                           "language": _locale(), "channel": "desk"})
    if req is None:
        raise Problem("validation-error")
    result = consent.change(main_session(), vault_session(), _principal(), customer_id,
                            req.consents, version=req.consent_version, language=req.language,
                            channel=req.channel, view="backoffice:customer")
    if result["changed"]:
        flash(_("Consents recorded: %(purposes)s.", purposes=", ".join(
            f"{PURPOSES[p]} ({_('given') if v else _('withdrawn')})"
            for p, v in result["changed"].items())), "ok")
    else:
        flash(_("Nothing was changed: these were already the customer's choices."), "info")
    return _back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/export.json")
@roles_required(*READ_ROLES)
def export_json(customer_id: str):
    """Right of access: everything held, as a JSON file to hand over (audited)."""
    document = service.export(main_session(), vault_session(), _principal(), customer_id,
                              view="backoffice:export.json")
    return Response(json.dumps(document, ensure_ascii=False, indent=2),
                    mimetype="application/json", headers={
                        "Content-Disposition":
                            f'attachment; filename="{document["customer_id"]}.json"'})


@bp.post("/customers/<customer_id>/export.html")
@roles_required(*READ_ROLES)
def export_html(customer_id: str):
    """Right of access: the readable document, in the customer's language (audited)."""
    document = service.export(main_session(), vault_session(), _principal(), customer_id,
                              view="backoffice:export.html")
    html = render_export(document)
    # the document carries its own style block (it is saved and mailed as it is): allow
    # exactly that block, nothing else
    csp = CSP
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    if style:
        digest = base64.b64encode(hashlib.sha256(style[1].encode()).digest()).decode()
        csp += f"; style-src 'self' 'sha256-{digest}'"
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": csp})


@bp.post("/customers/<customer_id>/erasure")
@roles_required(*ERASE_ROLES)
def erase(customer_id: str):
    """Right to erasure, once the customer number has been typed again."""
    form = EraseForm()
    req, errors = parse(ErasureIn, {"reason": form.reason.data,
                                    "confirm": (form.confirm.data or "").strip().upper()})
    if req is None or req.confirm != customer_id:
        messages = [m for field in errors.values() for m in field]
        for message in messages or [str(FIELD_ERRORS["confirm"])]:
            flash(message, "error")
        return _back_to_customer(customer_id)
    principal = _principal()
    result = erasure.erase(main_session(), vault_session(), principal.actor, customer_id,
                           req.reason, principal, view="backoffice:customer")
    erasure.shred_after_commit()
    if result["already_erased"]:
        flash(_("This customer had already been erased."), "info")
    else:
        flash(_("The customer's personal data was erased and their cards were revoked."), "ok")
    return _back_to_customer(customer_id)


# --------------------------------------------------------------------------- audit, retention


@bp.get("/audit")
@roles_required(*AUDIT_ROLES)
def audit_log():
    """The audit log, newest first, with the chain checked from its first entry."""
    form = AuditFilterForm(request.args)
    typed = (form.customer_id.data or "").strip()
    customer_id = (parse_customer_id(typed) or typed.upper()) if typed else None
    main = main_session()
    report = audit.verify(main)
    page = queries.audit_page(main, customer_id, request.args.get("before", type=int))
    return render_template(T + "audit.html", form=form, report=report, page=page,
                           customer_id=customer_id,
                           broken=queries.audit_entry(main, report.broken_at))


@bp.get("/retention")
@roles_required(*ERASE_ROLES)
def retention_due():
    """Customers inactive for longer than the retention period, and where their notice is."""
    config = current_app.config
    notice = timedelta(days=int(config["RETENTION_NOTICE_DAYS"]))
    rows = retention.due(main_session(), utcnow(), int(config["RETENTION_INACTIVE_DAYS"]),
                         limit=500)
    for row in rows:
        row["erase_on"] = row["notice_at"] + notice if row["notice_at"] else None
    return render_template(T + "retention.html", rows=rows, limit=500,
                           inactive_days=config["RETENTION_INACTIVE_DAYS"],
                           notice_days=config["RETENTION_NOTICE_DAYS"])
