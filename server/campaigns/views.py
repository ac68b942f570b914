"""The SMS gateway's inbound messages (``/api/v1/sms/inbound``) and the unsubscribe page
(``/unsubscribe/<token>``, no login: the signed link is the authority)."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, render_template, request
from flask_babel import force_locale

from server.api.problems import Problem
from server.campaigns import service
from server.db import main_session, vault_session

log = logging.getLogger(__name__)
bp = Blueprint("campaigns", __name__)
public = Blueprint("campaigns_public", __name__)
CSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"


@bp.post("/sms/inbound")
def sms_inbound():
    """A message a customer sent to the shop's number, posted by the gateway with the shared
    secret (``SMS_INBOUND_SECRET``) as a bearer token; a stop word withdraws SMS consent."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise Problem("unauthenticated")
    secret = service.setting(current_app.config, "SMS_INBOUND_SECRET")
    if not service.secret_matches(header.removeprefix("Bearer "), secret):
        raise Problem("invalid-credentials")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("from"), str) \
            or not isinstance(body.get("text"), str):
        raise Problem("validation-error", "give the sender as 'from' and the message as 'text'")
    result = service.inbound_sms(main_session(), vault_session(), current_app.config,
                                 body["from"], body["text"])
    log.info("inbound SMS: stop=%s, %d consent(s) withdrawn", result["stop"],
             result["withdrawn"])
    return jsonify(result)


def _page(customer, done: bool, status: int = 200):
    with force_locale(customer.language):
        html = render_template("server/campaigns/unsubscribe.html", done=done,
                               language=customer.language)
    return html, status, {"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                          "Referrer-Policy": "no-referrer"}


@public.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    """Confirm before withdrawing: a mail scanner that follows links changes nothing."""
    customer = service.customer_of_token(current_app, main_session(), token)
    return _page(customer, done=False)


@public.post("/unsubscribe/<token>")
def unsubscribe(token: str):
    """Withdraw email marketing: the page's button, or a mail client's one-click POST."""
    main = main_session()
    customer = service.customer_of_token(current_app, main, token)
    service.withdraw(main, customer, "email", "unsubscribe link", "customer:unsubscribe-link",
                     "unsubscribe")
    return _page(customer, done=True)
