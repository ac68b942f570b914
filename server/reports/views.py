"""PUT /api/v1/anonymous-sales: a till's sales without a card, for the reports' share of
sales to card holders."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.api.body import parse_body
from server.db import main_session
from server.devices.auth import require
from server.reports import sales
from server.reports.schemas import AnonymousSalesIn

bp = Blueprint("reports", __name__)


@bp.put("/anonymous-sales")
@require("till")
def put_anonymous_sales():
    """A till's sales without a card on one day and for one seller; the last report counts."""
    req = parse_body(AnonymousSalesIn)
    return jsonify(sales.record(main_session(), g.principal, req))
