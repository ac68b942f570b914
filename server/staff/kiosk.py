"""Staff mode on a kiosk: a staff card tap or a name and PIN open a short, signed session.

The kiosk keeps the token and sends it as ``X-Staff-Authorization: Session <token>`` with
each request it makes for the staff member. The token names the staff member and the
device: it is worth nothing on another kiosk, and nothing after ``KIOSK_STAFF_SESSION``
seconds. The staff row is read again at every use, so a disabled account or a changed role
counts at once.

Failed attempts are counted by ``server.staff.lockout`` (every worker sees them): five for one
name or one card within ``STAFF_LOCKOUT_WINDOW`` lock it (a name's count is shared with the
back office and the API's password checks); twenty from one kiosk lock the kiosk's staff
mode, so nobody can try every PIN by changing names.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from functools import cache

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.db import utcnow
from server.devices.auth import Principal, StaffMember, hash_password, verify_password
from server.secrets_file import app_secret_key
from server.staff import lockout
from server.staff.models import Staff

SALT = "loyalty.kiosk-staff-session"
PIN_PATTERN = r"^[0-9]{4,8}$"


def card_uid_hash(uid: str) -> str:
    """How a staff card's UID is stored: SHA-256 of the upper-case hex."""
    return hashlib.sha256(b"staff-card:" + uid.strip().upper().encode()).hexdigest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(app_secret_key(current_app), salt=SALT)


def _ttl() -> int:
    return int(current_app.config["KIOSK_STAFF_SESSION"])


def open_session(main: Session, device: Principal, *, uid: str | None = None,
                 username: str | None = None, pin: str | None = None) -> dict:
    """Check a staff card or a name and PIN; return a session token for this kiosk.

    Raises:
        Problem: ``invalid-credentials`` or ``staff-locked-out`` (with ``retry_after``).
    """
    subjects = lockout.device(device.id)
    if uid:
        digest = card_uid_hash(uid)
        subjects.update(lockout.card(digest))
        lockout.check(main, subjects)
        row = main.execute(select(Staff.id, Staff.username, Staff.role).where(
            Staff.card_uid_hash == digest, Staff.disabled_at.is_(None))).first()
    else:
        subjects.update(lockout.user(username))
        lockout.check(main, subjects)
        row = main.execute(select(Staff.id, Staff.username, Staff.role, Staff.pin_hash).where(
            Staff.username == username, Staff.disabled_at.is_(None))).first()
        try:
            # an unknown name or a staff member without a PIN costs the same argon2 check
            verify_password(row.pin_hash if row and row.pin_hash else _dummy(), pin or "")
        except Problem:
            row = None
    if row is None:
        lockout.fail(main, subjects)
        raise Problem("invalid-credentials", "unknown staff card, or wrong name or PIN")
    ttl = _ttl()
    token = _serializer().dumps({"s": row.id, "d": device.id})
    return {"token": token, "ttl": ttl,
            "expires_at": (utcnow() + timedelta(seconds=ttl)).isoformat(),
            "staff": {"username": row.username, "role": row.role}}


def staff_of_session(main: Session, device_id: int, token: str) -> StaffMember:
    """The staff member a kiosk session token names, if it is this device's and still valid.

    Raises:
        Problem: ``staff-session-expired`` or ``invalid-credentials``.
    """
    try:
        data = _serializer().loads(token, max_age=_ttl())
    except SignatureExpired:
        raise Problem("staff-session-expired") from None
    except BadSignature:
        raise Problem("invalid-credentials", "not a staff session of this service") from None
    if not isinstance(data, dict) or data.get("d") != device_id:
        raise Problem("invalid-credentials", "this staff session belongs to another device")
    row = main.execute(select(Staff.id, Staff.username, Staff.role).where(
        Staff.id == data.get("s"), Staff.disabled_at.is_(None))).first()
    if row is None:
        raise Problem("invalid-credentials", "this staff account is disabled")
    return StaffMember(row.id, row.username, row.role)


@cache
def _dummy() -> str:
    return hash_password(secrets.token_hex(8))
