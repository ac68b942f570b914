"""POST /api/v1/taps."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server import ratelimit
from server.api.body import parse_body
from server.db import main_session, vault_session
from server.devices.auth import require
from server.taps import service
from server.taps.schemas import TapIn

bp = Blueprint("taps", __name__)


@bp.post("/taps")
@require("till")
def create_tap():
    """A card tapped at a till: the customer record. Idempotent on event_id."""
    ratelimit.hit("taps", "device", g.principal.id)
    req = parse_body(TapIn)
    return jsonify(service.tap(main_session(), vault_session(), g.principal, req))
