"""Finding a customer and their page: identity, consents, access exports, erasure."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import uuid

import qrcode
import qrcode.image.svg
from flask import (
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import select

from server import db
from server.api.problems import Problem
from server.backoffice import queries
from server.backoffice.blueprint import (
    CSP,
    CUSTOMER_SECTIONS,
    PURPOSES,
    SCREEN,
    T,
    back_to_customer,
    bp,
    desk_reader_url,
    locale,
    nav,
    principal,
)
from server.backoffice.forms import (
    FIELD_ERRORS,
    BlockForm,
    ConsentForm,
    EraseForm,
    RectifyForm,
    ReissueForm,
    SearchForm,
    UnblockForm,
    parse,
    parse_customer_id,
)
from server.backoffice.security import (
    roles_required,
)
from server.cards import service as cards
from server.cards import token
from server.cards.models import Card
from server.cards.schemas import BlockIn, CardIn, UnblockIn
from server.cards.service import card_by_sun, card_by_token, is_sun_url
from server.customers.lookup import customer_code
from server.customers.models import Customer
from server.db import main_session, vault_session
from server.privacy import audit, consent, erasure, service
from server.privacy.schemas import ConsentChangeIn, ErasureIn, RectifyIn, SearchIn
from server.privacy.service import ERASE_ROLES, READ_ROLES
from server.privacy.views import render_export
from server.staff.models import CARD_ROLES

log = logging.getLogger(__name__)
CARD_TOKEN = re.compile(r"[A-Z2-7]{32}")
PHONE = re.compile(r"\+?[0-9 ().-]{6,24}")
UID = re.compile(r"[0-9A-Fa-f]{8,20}")
# built by the tickets feature: each purchase line links to a new warranty claim for it
TICKET_ENDPOINT = "backoffice.new_ticket"
nav("backoffice.index", _l("Find a customer"), READ_ROLES,
    also=("backoffice.search", "backoffice.customer"), order=10)

# --------------------------------------------------------------------------- customers


@bp.get("/")
@roles_required(*READ_ROLES)
def index():
    return _search_page(SearchForm(formdata=None))


def _search_page(form: SearchForm, results=None, **context) -> str:
    """The search page; with a desk reader configured, its script fills and sends the form."""
    return render_template(T + "search.html", form=form, results=results,
                           desk_reader=desk_reader_url(), **context)


def _what(text: str) -> str:
    """What was typed or read: ``card``, ``email``, ``phone`` or ``name``."""
    if "/" in text or CARD_TOKEN.fullmatch(text.upper()) or is_sun_url(text):
        return "card"  # a card URL (pasted, or typed by a keyboard-wedge reader), or a token
    if "@" in text:
        return "email"
    if PHONE.fullmatch(text):
        return "phone"
    if UID.fullmatch(text) and re.search(r"\d", text):
        return "card"  # a reader that types the chip's UID rather than its URL
    return "name"


def _code(text: str) -> str | None:
    """The customer code typed, if it is one. A word of letters only (``Schwartz``,
    ``Christian``) could be a name as well as a code: it is a code only if it is a
    customer's, else it is searched as a name."""
    code = customer_code(text) or parse_customer_id(text)
    if code is None:
        return None
    if re.search(r"[\d-]", text) or main_session().get(Customer, code) is not None:
        return code
    return None


def _search_error(form: SearchForm, message: str):
    form.query.errors = [message]
    return _search_page(form), 422


@bp.post("/search")
@roles_required(*READ_ROLES)
def search():
    """By customer code or card (straight to the page), or exactly by email, phone or name
    (a list); every search is audited, naming the field searched, never the value."""
    form = SearchForm()
    text = (form.query.data or "").strip()
    customer_id = _code(text)
    if customer_id:
        return back_to_customer(customer_id)
    what = _what(text) if text else None
    who = principal()
    if what == "card":
        try:
            found = _card_owner(text)
        except Problem as exc:
            log.info("back-office card search refused: %s", exc.slug)
            return _search_error(form, _("This card is not one of the programme's cards, or "
                                         "it was read badly: read it again or type the "
                                         "customer number."))
        audit.record(main_session(), who.actor, "personal-data.search", None,
                     view="backoffice:search", detail={"by": ["card"], "found": [found]})
        return back_to_customer(found)
    if what == "name" and who.role not in READ_ROLES:
        what = None  # a role that does not see names does not search by them either
    if what == "name" and not 2 <= len(text) <= 160:
        what = None
    req = None
    if what in ("email", "phone"):
        req, _errors = parse(SearchIn, {what: text, "country": form.country.data or None})
    if req is None and what != "name":
        return _search_error(form, _(
            "Type a name, an email address, a phone number or a customer number "
            "(C-XXXX-XXXX), or read the card on the desk reader."))
    results = service.search(main_session(), vault_session(), who,
                             email=req.email if req else None,
                             phone=req.phone if req else None,
                             country=req.country if req else None,
                             name=text if what == "name" else None, view="backoffice:search")
    return _search_page(form, results, by=what)


def _card_owner(text: str) -> str:
    """The customer of a card URL, SUN URL, token or NFC UID, whatever the card's status.

    Raises:
        Problem: a ``card-token-*`` or ``sun-*`` type, ``card-not-found``.
    """
    if UID.fullmatch(text):
        rows = main_session().execute(
            select(Card.id, Card.customer_id, Card.status).where(Card.nfc_uid == text.upper())
            .order_by(Card.issued_at.desc()).limit(10)).all()
        if not rows:
            raise Problem("card-not-found", "no card with this UID")
        return ([r for r in rows if r.status == "active"] or rows)[0].customer_id
    if is_sun_url(text):
        row, _result = card_by_sun(main_session(), text)  # no counter claimed: not a visit
    else:
        row, _generation = card_by_token(main_session(), text)
    return row.customer_id


def _customer_page(customer_id: str, rectify: RectifyForm | None = None):
    """The customer page; its identity is read through the privacy service (audited)."""
    file = queries.customer_file(main_session(), vault_session(), principal(), customer_id,
                                 view=SCREEN, ledger_before=_before("ledger"),
                                 purchases_before=_before("purchases"))
    texts = consent.texts()
    version = texts["current"]
    consents = ConsentForm(formdata=None)
    consents.fill(file.consents, version)
    if rectify is None and file.personal is not None:
        rectify = RectifyForm(formdata=None)
        rectify.fill(file.personal)
    who = principal()
    sections = []
    for section in CUSTOMER_SECTIONS:  # what other features add (tickets, value, ...)
        if who.role in section.roles:
            context = section.load(main_session(), vault_session(), who, customer_id)
            if context is not None:
                sections.append((section, context))
    reissue = ReissueForm(formdata=None)
    reissue.event_id.data = str(uuid.uuid4())
    return render_template(T + "customer.html", file=file, customer_id=customer_id,
                           rectify=rectify, consents=consents, erase=EraseForm(formdata=None),
                           purposes=PURPOSES, version=version,
                           texts=texts["versions"][version], sections=sections,
                           can_cards=who.role in CARD_ROLES and file.customer.erased_at is None,
                           block=BlockForm(formdata=None), unblock=UnblockForm(formdata=None),
                           reissue=reissue,
                           ticket_links=TICKET_ENDPOINT in current_app.view_functions)


def _before(name: str) -> int | None:
    """A page's ``?ledger=`` or ``?purchases=``: the id the older page starts below."""
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 12 else None


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
    result = service.rectify(main_session(), vault_session(), principal(), customer_id, req,
                             view=SCREEN)
    if result["changed"]:
        fields = ", ".join(str(form[name].label.text) for name in result["changed"])
        flash(_("Corrected: %(fields)s.", fields=fields), "ok")
    else:
        flash(_("Nothing was changed: the values are the same as before."), "info")
    return back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/consents")
@roles_required(*READ_ROLES)
def change_consents(customer_id: str):
    """The customer's decisions at the desk, on the text version shown with the boxes."""
    form = ConsentForm()
    if form.version.data != consent.texts()["current"]:
        flash(_("The consent texts have changed since the page was shown: show the new texts "
                "to the customer and ask again."), "error")
        return back_to_customer(customer_id)
    req, _errors = parse(ConsentChangeIn, {"consents": form.decisions(),
                                           "consent_version": form.version.data,
                                           "language": locale(), "channel": "desk"})
    if req is None:
        raise Problem("validation-error")
    result = consent.change(main_session(), vault_session(), principal(), customer_id,
                            req.consents, version=req.consent_version, language=req.language,
                            channel=req.channel, view="backoffice:customer")
    if result["changed"]:
        flash(_("Consents recorded: %(purposes)s.", purposes=", ".join(
            f"{PURPOSES[p]} ({_('given') if v else _('withdrawn')})"
            for p, v in result["changed"].items())), "ok")
    else:
        flash(_("Nothing was changed: these were already the customer's choices."), "info")
    return back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/export.json")
@roles_required(*READ_ROLES)
def export_json(customer_id: str):
    """Right of access: everything held, as a JSON file to hand over (audited)."""
    document = service.export(main_session(), vault_session(), principal(), customer_id,
                              view="backoffice:export.json")
    return Response(json.dumps(document, ensure_ascii=False, indent=2),
                    mimetype="application/json", headers={
                        "Content-Disposition":
                            f'attachment; filename="{document["customer_id"]}.json"'})


@bp.post("/customers/<customer_id>/export.html")
@roles_required(*READ_ROLES)
def export_html(customer_id: str):
    """Right of access: the readable document, in the customer's language (audited)."""
    document = service.export(main_session(), vault_session(), principal(), customer_id,
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
        return back_to_customer(customer_id)
    who = principal()
    result = erasure.erase(main_session(), vault_session(), who.actor, customer_id,
                           req.reason, who, view="backoffice:customer")
    erasure.shred_after_commit()
    if result["already_erased"]:
        flash(_("This customer had already been erased."), "info")
    else:
        flash(_("The customer's personal data was erased and their cards were revoked."), "ok")
    return back_to_customer(customer_id)



# --------------------------------------------------------------------------- cards

# what the desk is told when a card action is refused (by problem type)
CARD_PROBLEMS = {
    "card-not-found": _l("This card is not one of this customer's cards."),
    "card-not-active": _l("Only an active card can be blocked."),
    "card-not-blocked": _l("This card cannot be unblocked: it was replaced or cancelled. "
                           "Issue a new card instead."),
    "card-exists": _l("The customer already has another active card of this kind: block it "
                      "first, or issue a new card."),
    "card-token-unknown-key": _l("This card's security key has been retired: issue a new "
                                 "card."),
    "customer-erased": _l("This customer's personal data has been erased."),
    "staff-required": _l("Your role may not change cards."),
}


def _card_refused(exc: Problem, customer_id: str):
    """Undo what the refused action wrote; say why on the customer's page."""
    db.finish_request(success=False)
    log.info("back-office card action refused: %s", exc.slug)
    flash(str(CARD_PROBLEMS.get(exc.slug, _l("This could not be done."))), "error")
    return back_to_customer(customer_id)


def _check_owner(result: dict, customer_id: str) -> None:
    if result["customer_id"] != customer_id:  # a card id from another customer's page
        raise Problem("card-not-found")


@bp.post("/customers/<customer_id>/cards/block")
@roles_required(*CARD_ROLES)
def block_card(customer_id: str):
    """Block a lost, stolen or damaged card: every till refuses it, with the reason."""
    form = BlockForm()
    req, _errors = parse(BlockIn, {"reason": form.reason.data,
                                   "note": (form.note.data or "").strip() or None})
    if req is None or not form.card_id.data:
        flash(_("Choose why the card is blocked; a note is 200 characters at most."), "error")
        return back_to_customer(customer_id)
    try:
        result = cards.block(main_session(), principal(), form.card_id.data, req.reason,
                             req.note)
        _check_owner(result, customer_id)
    except Problem as exc:
        return _card_refused(exc, customer_id)
    flash(_("Card %(card)s is blocked: it is refused at every till.", card=result["card_id"]),
          "ok")
    return back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/cards/unblock")
@roles_required(*CARD_ROLES)
def unblock_card(customer_id: str):
    """A blocked card works again (found, blocked by mistake)."""
    form = UnblockForm()
    req, _errors = parse(UnblockIn, {"reason": form.reason.data,
                                     "note": (form.note.data or "").strip() or None})
    if req is None or not form.card_id.data:
        flash(_("Choose why the card is unblocked; a note is 200 characters at most."),
              "error")
        return back_to_customer(customer_id)
    try:
        result = cards.unblock(main_session(), principal(), form.card_id.data, req.reason,
                               req.note)
        _check_owner(result, customer_id)
    except Problem as exc:
        return _card_refused(exc, customer_id)
    flash(_("Card %(card)s works again.", card=result["card_id"]), "ok")
    return back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/cards/reissue")
@roles_required(*CARD_ROLES)
def reissue_card(customer_id: str):
    """A new printed QR card, by the kiosk's rules: every other card stops at once."""
    form = ReissueForm()
    req, _errors = parse(CardIn, {"event_id": form.event_id.data, "kind": "qr",
                                  "replace": True, "reason": form.reason.data})
    if req is None:
        flash(_("Choose why the card is replaced."), "error")
        return back_to_customer(customer_id)
    customer = main_session().get(Customer, customer_id)
    if customer is not None and customer.erased_at is not None:
        return _card_refused(Problem("customer-erased"), customer_id)
    try:
        result, created = cards.issue(main_session(), principal(), customer_id, req)
    except Problem as exc:
        return _card_refused(exc, customer_id)
    if created:
        flash(_("A new card was issued; the customer's other cards no longer work. Print it "
                "and hand it over."), "ok")
    return redirect(url_for(".print_card", customer_id=customer_id,
                            card_id=result["card_id"]), 303)


@bp.get("/customers/<customer_id>/cards/<card_id>/print")
@roles_required(*CARD_ROLES)
def print_card(customer_id: str, card_id: str):
    """A QR card to print on any printer: its QR code (made here, as SVG) and its URL."""
    card = main_session().get(Card, card_id)
    if card is None or card.customer_id != customer_id:
        raise Problem("card-not-found")
    if card.kind != "qr" or card.status != "active":
        flash(_("Only an active QR card can be printed."), "error")
        return back_to_customer(customer_id)
    key = cards.keyring().keys.get(card.key_id)
    if key is None:
        flash(str(CARD_PROBLEMS["card-token-unknown-key"]), "error")
        return back_to_customer(customer_id)
    url = cards.card_url(token.encode(card.key_id, key, bytes.fromhex(card.id),
                                      card.generation))
    # upper case: the QR code's alphanumeric mode, smaller modules for the same size
    image = qrcode.make(url.upper(), image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    svg = Markup(svg[svg.index("<svg"):])  # noqa: S704 - made by qrcode, not input
    return render_template(T + "card_print.html", customer_id=customer_id, card=card,
                           url=url, qr_svg=svg)
