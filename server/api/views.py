"""The API blueprint: mounts the feature blueprints under /api/v1, serves the document."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from server.accounts.views import bp as accounts_bp
from server.api import openapi
from server.api.problems import PROBLEMS, TYPE_PREFIX, Problem
from server.campaigns.views import bp as campaigns_bp
from server.cards.views import bp as cards_bp
from server.customers.views import bp as customers_bp
from server.devices.views import bp as devices_bp
from server.enrolment.views import bp as enrolment_bp
from server.loyalty.views import bp as loyalty_bp
from server.privacy.views import bp as privacy_bp
from server.reports.views import bp as reports_bp
from server.staff.views import bp as staff_bp
from server.taps.views import bp as taps_bp
from server.tickets.views import bp as tickets_bp

api = Blueprint("api", __name__, url_prefix="/api/v1")
api.register_blueprint(enrolment_bp)
api.register_blueprint(cards_bp)
api.register_blueprint(taps_bp)
api.register_blueprint(loyalty_bp)
api.register_blueprint(privacy_bp)
api.register_blueprint(devices_bp)
api.register_blueprint(customers_bp)
api.register_blueprint(staff_bp)
api.register_blueprint(tickets_bp)
api.register_blueprint(accounts_bp)
api.register_blueprint(campaigns_bp)
api.register_blueprint(reports_bp)


@api.before_request
def _no_nul():
    """A NUL character in the path or the query is no request (PostgreSQL text cannot hold
    one: compared with a column, it was a 500)."""
    if "\x00" in request.path or any("\x00" in v for v in request.args.values()):
        raise Problem("bad-request", "the path or the query contains a NUL character")


@api.get("/openapi.json")
def openapi_document():
    return jsonify(openapi.build())


@api.get("/problems/<slug>")
def problem_type(slug: str):
    """Each problem type URI resolves to its description."""
    if slug not in PROBLEMS:
        raise Problem("not-found")
    status, title = PROBLEMS[slug]
    return jsonify({"type": TYPE_PREFIX + slug, "status": status, "title": title})
