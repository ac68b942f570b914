"""Purchases, returns, redemptions, adjustments and the programme document, under /api/v1."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from server.api.body import parse_body
from server.api.problems import Problem
from server.api.replies import created
from server.customers.models import Customer
from server.db import main_session
from server.devices.auth import require
from server.loyalty import ledger, programmes, service
from server.loyalty.schemas import AdjustmentIn, PurchaseIn, RedemptionIn, RefundIn

bp = Blueprint("loyalty", __name__)


@bp.post("/purchases")
@require("till")
def create_purchase():
    """A purchase at a till: the points each line earns. Idempotent on event_id."""
    req = parse_body(PurchaseIn)
    return created(*service.record_purchase(main_session(), g.principal, req))


@bp.post("/refunds")
@require("till")
def create_refund():
    """A whole or partial return: the points those lines earned are taken back."""
    req = parse_body(RefundIn)
    return created(*service.record_refund(main_session(), g.principal, req))


@bp.post("/redemptions")
@require("till")
def create_redemption():
    """Spend points on a reward; above the step-up threshold a staff member confirms."""
    req = parse_body(RedemptionIn)
    return created(*service.redeem(main_session(), g.principal, req))


@bp.post("/customers/<customer_id>/points")
@require("manager", "admin")
def create_adjustment(customer_id: str):
    """A manual correction of a balance, with its reason (managers)."""
    req = parse_body(AdjustmentIn)
    return created(*service.adjust(main_session(), g.principal, customer_id, req))


@bp.get("/customers/<customer_id>/points")
@require("desk", "manager", "admin")
def customer_ledger(customer_id: str):
    """The ledger of one customer, newest first, and the balance it adds up to."""
    main = main_session()
    entries = main.execute(
        ledger.ledger.select().where(ledger.ledger.c.customer_id == customer_id)
        .order_by(ledger.ledger.c.id.desc()).limit(500)).mappings().all()
    if not entries and main.get(Customer, customer_id) is None:
        raise Problem("customer-not-found")
    keep = ("id", "delta", "kind", "reason", "at", "expires_at", "purchase_id", "refund_id",
            "redemption_id", "staff_id")
    return jsonify({"customer_id": customer_id, "balance": ledger.balance(main, customer_id),
                    "entries": [{k: e[k] for k in keep} for e in entries]})


@bp.get("/programme")
@require("kiosk", "till", "cashier", "desk", "manager", "admin")
def get_programme():
    """The programme in force: rules, tiers and the rewards catalogue."""
    version, programme = programmes.current(main_session())
    return jsonify({"version": version, "programme": programme.model_dump(mode="json")})


@bp.put("/programme")
@require("manager", "admin")
def put_programme():
    """Load a new version of the programme (TOML body); in force at once."""
    if request.mimetype not in ("application/toml", "text/plain"):
        raise Problem("unsupported-media-type", "send the programme as application/toml")
    text = request.get_data(as_text=True)
    version, _ = programmes.load(main_session(), text, g.principal.actor)
    return jsonify({"version": version})
