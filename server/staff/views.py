"""POST /api/v1/staff/kiosk-sessions: staff mode on a kiosk, by staff card or name and PIN."""

from __future__ import annotations

from flask import Blueprint, g

from server import ratelimit
from server.api.body import parse_body
from server.api.replies import created
from server.db import main_session
from server.devices.auth import require
from server.staff import kiosk
from server.staff.schemas import KioskSessionIn

bp = Blueprint("staff", __name__)


@bp.post("/staff/kiosk-sessions")
@require("kiosk")
def open_kiosk_session():
    """A short session for the staff member at this kiosk (X-Staff-Authorization: Session)."""
    # failures lock a name, card or kiosk (server/staff/lockout.py); this caps the attempts
    ratelimit.hit("logins", "device", g.principal.id)
    req = parse_body(KioskSessionIn)
    return created(kiosk.open_session(main_session(), g.principal, uid=req.uid,
                                      username=req.username, pin=req.pin), True)
