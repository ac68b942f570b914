"""Finding a customer and their page: identity, consents, access exports, erasure."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re

from flask import (
    Response,
    flash,
    render_template,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

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
    locale,
    nav,
    principal,
)
from server.backoffice.forms import (
    FIELD_ERRORS,
    ConsentForm,
    EraseForm,
    RectifyForm,
    SearchForm,
    parse,
    parse_customer_id,
)
from server.backoffice.security import (
    roles_required,
)
from server.db import main_session, vault_session
from server.privacy import consent, erasure, service
from server.privacy.schemas import ConsentChangeIn, ErasureIn, RectifyIn, SearchIn
from server.privacy.service import ERASE_ROLES, READ_ROLES
from server.privacy.views import render_export

log = logging.getLogger(__name__)
nav("backoffice.index", _l("Find a customer"), READ_ROLES,
    also=("backoffice.search", "backoffice.customer"))

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
        return back_to_customer(customer_id)
    by = {"email": text} if "@" in text else {"phone": text}
    req, _errors = parse(SearchIn, {**by, "country": form.country.data or None})
    if req is None:
        form.query.errors = [_("Type an email address, a phone number or a customer number "
                               "(C-XXXX-XXXX).")]
        return render_template(T + "search.html", form=form, results=None), 422
    results = service.search(main_session(), vault_session(), principal(), email=req.email,
                             phone=req.phone, country=req.country, view="backoffice:search")
    return render_template(T + "search.html", form=form, results=results)


def _customer_page(customer_id: str, rectify: RectifyForm | None = None):
    """The customer page; its identity is read through the privacy service (audited)."""
    file = queries.customer_file(main_session(), vault_session(), principal(), customer_id,
                                 view=SCREEN)
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
    return render_template(T + "customer.html", file=file, customer_id=customer_id,
                           rectify=rectify, consents=consents, erase=EraseForm(formdata=None),
                           purposes=PURPOSES, version=version,
                           texts=texts["versions"][version], sections=sections)


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



