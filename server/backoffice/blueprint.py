"""The back office's blueprint: its hooks, error pages, navigation, and what pages share.

The pages themselves are modules by feature (``session_views``, ``customers``,
``privacy_pages``, ...), each adding its routes to ``bp`` and its entries to ``NAV``; each
checks the role, validates the form, calls one service. Personal data is read and changed
only through ``server.privacy`` (audited, naming the screen). A refusal from a service
(``Problem``) becomes a message on the page: what the failed request wrote is discarded, then
the page the staff member came from is shown again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError

from server import db
from server.api.problems import Problem
from server.backoffice.security import (
    URL_PREFIX,
    forget_stale_login,
)
from server.loyalty import programmes
from server.privacy.service import AUDIT_ROLES, ERASE_ROLES, READ_ROLES

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


def desk_reader_url() -> str | None:
    """The desk reader's base URL (``BACKOFFICE_DESK_READER_URL``), or None when it is off."""
    url = str(current_app.config.get("BACKOFFICE_DESK_READER_URL") or "").strip().rstrip("/")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        log.warning("BACKOFFICE_DESK_READER_URL is not an http(s) URL: desk reader off")
        return None
    return url


def csp() -> str:
    """The pages' CSP; the desk reader's origin may be read from (``connect-src``) if set."""
    url = desk_reader_url()
    if url is None:
        return CSP
    parts = urlsplit(url)
    return f"{CSP}; connect-src 'self' {parts.scheme}://{parts.netloc}"


def principal():
    return current_user.principal


def locale() -> str:
    return str(get_locale())


def _here() -> str:
    """The page to come back to after switching language."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    if (request.view_args or {}).get("customer_id"):
        return url_for(".customer", customer_id=request.view_args["customer_id"])
    return url_for(".login") if request.endpoint == "backoffice.login" else url_for(".index")


def back_to_customer(customer_id: str):
    return redirect(url_for(".customer", customer_id=customer_id), 303)


# --------------------------------------------------------------------------- hooks


@bp.before_request
def _session_still_valid():
    forget_stale_login()


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", csp())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # CSRF checks the referrer
    if request.endpoint != "backoffice.static":
        response.headers.setdefault("Cache-Control", "no-store")  # pages show personal data
    return response


@bp.context_processor
def _globals() -> dict:
    role = current_user.role if current_user.is_authenticated else None
    return {"languages": LANGUAGE_NAMES, "current_language": locale(), "here": _here(),
            "role_names": ROLE_NAMES, "can_read": role in READ_ROLES,
            "can_erase": role in ERASE_ROLES, "can_audit": role in AUDIT_ROLES,
            "tier_name": tier_name}


def tier_name(code: str | None) -> str | None:
    """A tier's name in the page's language, as the programme in force names it."""
    return programmes.current(db.main_session())[1].tier_name(code, locale())


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
        return back_to_customer(customer_id)
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


# --------------------------------------------------------------------------- navigation


@dataclass(frozen=True)
class NavEntry:
    """A section in the header: shown to the roles that may open it."""

    endpoint: str
    label: object  # a lazy string
    roles: frozenset[str]
    also: tuple[str, ...] = ()  # other endpoints of the same section (highlighted too)
    order: int = 0  # place in the header, whatever order the modules are imported in


NAV: list[NavEntry] = []


def nav(endpoint: str, label, roles, also: tuple[str, ...] = (), *, order: int) -> None:
    """Add a section to the header, at its ``order`` (smallest first)."""
    NAV.append(NavEntry(endpoint, label, frozenset(roles), also, order))
    NAV.sort(key=lambda entry: entry.order)


@bp.context_processor
def _navigation() -> dict:
    role = current_user.role if current_user.is_authenticated else None
    return {"nav": [e for e in NAV if role in e.roles]}


# --------------------------------------------------------------------------- customer file


@dataclass(frozen=True)
class CustomerSection:
    """A part of the customer's page that another feature adds (tickets, value, ...).

    ``load(main, vault, principal, customer_id)`` returns the template's context (or None to
    leave the section out); ``template`` is rendered with it as ``section``.
    """

    key: str
    template: str
    load: Callable
    roles: frozenset[str]


CUSTOMER_SECTIONS: list[CustomerSection] = []


def customer_section(key: str, template: str, roles, load: Callable) -> None:
    """Add a section to the customer's page, in the order of the calls."""
    CUSTOMER_SECTIONS.append(CustomerSection(key, template, load, frozenset(roles)))
