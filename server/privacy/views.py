"""GDPR endpoints under /api/v1: consent, access, rectification, erasure, retention, audit."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request

from server.api.body import ROW_ID_MAX, parse_body
from server.api.problems import Problem
from server.db import main_session, utcnow, vault_session
from server.devices.auth import require
from server.i18n import LANGUAGES
from server.privacy import audit, consent, erasure, retention, service
from server.privacy.models import AuditEntry
from server.privacy.schemas import ConsentChangeIn, ErasureIn, RectifyIn, SearchIn
from server.privacy.service import AUDIT_ROLES, ERASE_ROLES, READ_ROLES

bp = Blueprint("privacy", __name__)


@bp.get("/consent-texts")
def consent_texts():
    """The published consent texts, by version, in each language (no authentication)."""
    return jsonify(consent.texts())


@bp.get("/customers/<customer_id>/consents")
@require(*READ_ROLES)
def get_consents(customer_id: str):
    """The current state of each purpose and every decision that led to it."""
    service._customer(main_session(), customer_id, live=False)
    main = main_session()
    return jsonify({"customer_id": customer_id, "current": consent.current(main, customer_id),
                    "history": consent.history(main, customer_id)})


@bp.post("/customers/<customer_id>/consents")
@require(*READ_ROLES)
def change_consents(customer_id: str):
    """Record the customer's new decisions (given or withdrawn) and the text shown."""
    req = parse_body(ConsentChangeIn)
    return jsonify(consent.change(main_session(), vault_session(), g.principal, customer_id,
                                  req.consents, version=req.consent_version,
                                  language=req.language, channel=req.channel,
                                  view="api:consents"))


@bp.post("/customers/search")
@require(*READ_ROLES)
def search_customers():
    """Exact lookup by email or phone: ``{"email": ...}`` or ``{"phone": ..., "country"}``."""
    req = parse_body(SearchIn)
    found = service.search(main_session(), vault_session(), g.principal, email=req.email,
                           phone=req.phone, country=req.country, view="api:search")
    return jsonify({"customers": found})


@bp.get("/customers/<customer_id>/personal-data")
@require(*READ_ROLES)
def get_personal_data(customer_id: str):
    """The customer's identity and contact details (audited)."""
    return jsonify(service.read(main_session(), vault_session(), g.principal, customer_id,
                                view="api:personal-data"))


@bp.patch("/customers/<customer_id>/personal-data")
@require(*READ_ROLES)
def rectify_personal_data(customer_id: str):
    """Correct the customer's personal data (audited: which fields, and why)."""
    req = parse_body(RectifyIn)
    return jsonify(service.rectify(main_session(), vault_session(), g.principal, customer_id,
                                   req, view="api:personal-data"))


@bp.get("/customers/<customer_id>/export")
@require(*READ_ROLES)
def export_customer(customer_id: str):
    """Right of access: everything held, as JSON (``?format=html``: a readable document)."""
    html = request.args.get("format") == "html"
    document = service.export(main_session(), vault_session(), g.principal, customer_id,
                              view="api:export.html" if html else "api:export.json")
    if html:
        return Response(render_export(document), mimetype="text/html")
    body = json.dumps(document, ensure_ascii=False, indent=2)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="{customer_id}.json"'})


def render_export(document: dict) -> str:
    """The readable document, in the customer's language unless ``?lang=`` asks otherwise."""
    from flask_babel import force_locale
    from flask_babel import gettext as _

    lang = request.args.get("lang")
    lang = lang if lang in LANGUAGES else document["profile"]["language"]
    with force_locale(lang):
        purposes = {"terms": _("Programme terms"), "marketing_email": _("Offers by email"),
                    "marketing_sms": _("Offers by text message"),
                    "profiling": _("Offers based on your purchases")}
        return render_template("server/privacy/export.html", doc=document, purposes=purposes,
                               lang=lang)


@bp.post("/customers/<customer_id>/erasure")
@require(*ERASE_ROLES)
def erase_customer(customer_id: str):
    """Right to erasure: the vault row and its key go, cards stop, history stays."""
    req = parse_body(ErasureIn)
    if req.confirm != customer_id:
        raise Problem("validation-error", "confirm must repeat the customer id",
                      errors=[{"field": "confirm", "message": "does not match"}])
    result = erasure.erase(main_session(), vault_session(), g.principal.actor, customer_id,
                           req.reason, g.principal, view="api:erasure")
    erasure.shred_after_commit()
    return jsonify(result)


@bp.get("/privacy/retention")
@require(*ERASE_ROLES)
def retention_due():
    """Customers inactive for longer than the retention period, and their notice state."""
    config = current_app.config
    rows = retention.due(main_session(), utcnow(),
                         int(config["RETENTION_INACTIVE_DAYS"]), limit=1000)
    return jsonify({
        "inactive_days": config["RETENTION_INACTIVE_DAYS"],
        "notice_days": config["RETENTION_NOTICE_DAYS"],
        "customers": [{"customer_id": r["customer_id"],
                       "last_activity": r["last_activity"].isoformat(),
                       "notice_at": r["notice_at"].isoformat() if r["notice_at"] else None}
                      for r in rows],
    })


@bp.get("/audit")
@require(*AUDIT_ROLES)
def audit_log():
    """The audit log, newest first; ``?customer_id=`` and ``?before=<id>`` narrow it."""
    query = AuditEntry.__table__.select().order_by(AuditEntry.id.desc()).limit(200)
    if request.args.get("customer_id"):
        query = query.where(AuditEntry.customer_id == request.args["customer_id"])
    before = request.args.get("before")
    if before is not None:
        # ASCII digits only ("²".isdigit() is true), within the key's range
        if not (before.isascii() and before.isdigit() and int(before) <= ROW_ID_MAX):
            raise Problem("validation-error", "1 field(s) are not valid", errors=[
                {"field": "before", "message": f"an entry id from 0 to {ROW_ID_MAX}"}])
        query = query.where(AuditEntry.id < int(before))
    rows = main_session().execute(query).mappings().all()
    return jsonify({"entries": [
        {**{k: v for k, v in r.items()}, "at": r["at"].isoformat()} for r in rows]})


@bp.get("/audit/verify")
@require(*AUDIT_ROLES)
def audit_verify():
    """Recompute the hash chain: ``ok`` false names the first entry that fails."""
    return jsonify(audit.verify(main_session()).as_dict())
