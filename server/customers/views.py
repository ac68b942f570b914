"""Finding a customer at the desk: POST /api/v1/cards/lookup and /api/v1/customers/lookup."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.api.body import parse_body
from server.cards.schemas import CardLookupIn, CustomerLookupIn
from server.customers import lookup
from server.db import main_session, vault_session
from server.devices.auth import require

bp = Blueprint("customers", __name__)
ROLES = ("kiosk", "desk", "manager", "admin")  # a kiosk with a staff session of the desk


@bp.post("/cards/lookup")
@require(*ROLES)
def card_lookup():
    """Who a card belongs to (any status); no visit is recorded; the read is audited."""
    req = parse_body(CardLookupIn)
    return jsonify(lookup.by_card(main_session(), vault_session(), g.principal, url=req.url,
                                  qr=req.qr, uid=req.uid))


@bp.post("/customers/lookup")
@require(*ROLES)
def customer_lookup():
    """Customers by code, or exact email or phone; audited."""
    req = parse_body(CustomerLookupIn)
    return jsonify({"customers": lookup.by_details(
        main_session(), vault_session(), g.principal, customer_id=req.customer_id,
        email=req.email, phone=req.phone)})
