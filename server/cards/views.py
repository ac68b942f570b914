"""POST /api/v1/customers/{customer_id}/cards, and the page a phone opens from a card."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template

from server.api.body import parse_body
from server.api.replies import created
from server.cards import service
from server.cards.schemas import ActivationIn, BlockIn, CardIn, UnblockIn, VoidIn
from server.db import main_session
from server.devices.auth import require

bp = Blueprint("cards", __name__)
public = Blueprint("card_page", __name__)


@bp.post("/customers/<customer_id>/cards")
@require("kiosk", "desk", "manager", "admin")
def issue_card(customer_id: str):
    """Issue a card (kiosk, staff); ``replace`` revokes the customer's other cards."""
    req = parse_body(CardIn)
    return created(*service.issue(main_session(), g.principal, customer_id, req))


@bp.post("/cards/<card_id>/activation")
@require("kiosk", "desk", "manager", "admin")
def activate_card(card_id: str):
    """A pending NFC card was written and read back: it works from now on, with its UID."""
    req = parse_body(ActivationIn)
    return jsonify(service.activate(main_session(), g.principal, card_id, req.uid))


@bp.post("/cards/<card_id>/void")
@require("kiosk", "desk", "manager", "admin")
def void_card(card_id: str):
    """Give up a pending card whose write failed or was abandoned."""
    req = parse_body(VoidIn)
    return jsonify(service.void(main_session(), g.principal, card_id, req.reason))


@bp.post("/cards/<card_id>/block")
@require("desk", "manager", "admin")
def block_card(card_id: str):
    """Block a lost, stolen or damaged card: every till refuses it with the reason."""
    req = parse_body(BlockIn)
    return jsonify(service.block(main_session(), g.principal, card_id, req.reason, req.note))


@bp.post("/cards/<card_id>/unblock")
@require("desk", "manager", "admin")
def unblock_card(card_id: str):
    """A blocked card works again (found, blocked by mistake)."""
    req = parse_body(UnblockIn)
    return jsonify(service.unblock(main_session(), g.principal, card_id, req.reason, req.note))


@public.get("/c/<card_token>")
@public.get("/C/<card_token>")
def card_page(card_token: str):
    """What a phone shows when it taps or scans a card: no personal data, ever."""
    return render_template("server/card.html")
