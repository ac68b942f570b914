"""POST /api/v1/enrolments."""

from __future__ import annotations

from flask import Blueprint, g

from server import ratelimit
from server.api.body import parse_body
from server.api.replies import created
from server.db import main_session, vault_session
from server.devices.auth import require
from server.enrolment import service
from server.enrolment.schemas import EnrolmentIn

bp = Blueprint("enrolment", __name__)


@bp.post("/enrolments")
@require("kiosk")
def create_enrolment():
    """Enrol a customer (kiosk). Idempotent on event_id."""
    ratelimit.hit("enrolments", "device", g.principal.id)
    req = parse_body(EnrolmentIn)
    return created(*service.enrol(main_session(), vault_session(), g.principal, req))
