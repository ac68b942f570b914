"""Payments on account and an account's state, under /api/v1/accounts."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.accounts import service
from server.accounts.schemas import PaymentIn
from server.api.body import parse_body
from server.api.problems import Problem
from server.api.replies import created
from server.db import main_session
from server.devices.auth import require

bp = Blueprint("accounts", __name__)


@bp.post("/accounts/<customer_id>/payments")
@require(*service.PAYMENT_ROLES)
def create_payment(customer_id: str):
    """A payment towards the customer's account (a till or a manager). Idempotent."""
    req = parse_body(PaymentIn)
    return created(*service.record_payment(main_session(), g.principal, customer_id, req))


@bp.get("/accounts/<customer_id>")
@require(*service.READ_ROLES)
def get_account(customer_id: str):
    """The account: limit, terms, whether open, balance due, punctuality."""
    main = main_session()
    account = service.get(main, customer_id)
    if account is None:
        raise Problem("no-account")
    return jsonify({
        "customer_id": customer_id,
        "credit_limit": service.money(account.credit_limit_cents),
        "terms_days": account.terms_days,
        "opened_at": account.opened_at.isoformat(),
        "closed_at": account.closed_at.isoformat() if account.closed_at else None,
        "balance": service.money(service.balance(main, customer_id)),
        "punctuality": service.punctuality(main, customer_id),
    })
