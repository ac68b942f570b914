"""POST /api/v1/taps and POST /api/v1/taps/batch."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from server import ratelimit
from server.api.body import parse_body
from server.db import main_session, vault_session
from server.devices.auth import require
from server.taps import batch, service
from server.taps.schemas import TapBatchIn, TapIn

bp = Blueprint("taps", __name__)


@bp.post("/taps")
@require("till")
def create_tap():
    """A card tapped at a till: the customer record. Idempotent on event_id."""
    ratelimit.hit("taps", "device", g.principal.id)
    req = parse_body(TapIn)
    return jsonify(service.tap(main_session(), vault_session(), g.principal, req))


@bp.post("/taps/batch")
@require("till")
def create_tap_batch():
    """Taps from a till's offline queue, in order: each one's outcome, no records. Each tap
    counts against the till's tap rate limit."""
    batch.check_size(request.get_json(silent=True) if request.is_json else None,
                     batch.limit(ratelimit.most("taps")))
    req = parse_body(TapBatchIn)
    ratelimit.hit("taps", "device", g.principal.id, cost=len(req.taps))
    return jsonify(batch.record(main_session(), vault_session(), g.principal, req))
