"""Who is calling: a device by its bearer key, a staff member by their credential.

Devices send ``Authorization: Bearer <key>``. A staff member confirming an action on a
kiosk adds ``X-Staff-Authorization: Basic <base64 user:password>``, or ``Session <token>`` from
staff mode (``server.staff.kiosk``); a staff client without a device sends its credential as
``Authorization: Basic``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, wraps

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import g, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.db import main_session
from server.devices.models import Device
from server.hotsql import Prepared
from server.staff import lockout
from server.staff.models import Staff
from server.stores.models import Store

KEY_PREFIX = "lk_"
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so timing does not reveal usernames."""
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class StaffMember:
    id: int
    username: str
    role: str


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a device (maybe with a confirming staff member) or staff."""

    kind: str  # "device" | "staff"
    role: str  # device role (kiosk/till) or staff role
    id: int
    store_id: int | None
    staff: StaffMember | None = None
    store_code: str | None = None
    country: str | None = None  # the store's, for phone numbers typed without +33/+370

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        name = f"{self.kind}:{self.id}"
        return name + (f"+staff:{self.staff.id}" if self.staff and self.kind == "device" else "")


def new_device_key() -> tuple[str, str]:
    """Return ``(key, sha256 hex)``: the key is shown once, the hash is stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> None:
    """Check a secret against its argon2 hash.

    Raises:
        Problem: ``invalid-credentials``.
    """
    try:
        _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Problem("invalid-credentials") from None


def _basic(value: str) -> tuple[str, str]:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Problem("invalid-credentials", "malformed Basic credential") from None
    return user, password


def verify_staff(session: Session, username: str, password: str, *,
                 source: dict[str, int] | None = None) -> StaffMember:
    """Check a staff credential with argon2, unless the name or ``source`` is locked out.

    ``source`` is where the attempt comes from, as a lockout subject (``lockout.device(id)``);
    by default the client's address. The lock is checked first, in one indexed query: checked
    only after a wrong password, a locked name would still open to the right one, so guessing
    would go on. Nothing is verified while locked; a failure counts for the name and source.

    Raises:
        Problem: ``invalid-credentials``, the same for a wrong user or password;
            ``staff-locked-out`` (with ``retry_after``), known name or not.
    """
    subjects = {**lockout.user(username), **(source or lockout.address())}
    lockout.check(session, subjects)
    row = session.execute(
        select(Staff.id, Staff.username, Staff.role, Staff.password_hash)
        .where(Staff.username == username, Staff.disabled_at.is_(None))
    ).first()
    try:
        _hasher.verify(row.password_hash if row else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        row = None
    if row is None:
        lockout.fail(session, subjects)
        raise Problem("invalid-credentials", "unknown staff member or wrong password")
    return StaffMember(row.id, row.username, row.role)


# every device request starts here: compiled once (server/hotsql.py)
_DEVICE = Prepared(
    select(Device.id, Device.role, Device.store_id, Store.code, Store.country)
    .join(Store, Store.id == Device.store_id)
    .where(Device.key_hash == bindparam("key_hash"), Device.revoked_at.is_(None)))


def authenticate() -> Principal:
    """Identify the caller of the current request.

    Raises:
        Problem: ``unauthenticated`` or ``invalid-credentials``.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    session = main_session()
    if scheme.lower() == "bearer" and value:
        # the store's code comes with the device: the tap needs it, in the same read
        row = _DEVICE.first(session, key_hash=hash_key(value.strip()))
        if row is None:
            raise Problem("invalid-credentials", "unknown or revoked device key")
        staff = None
        confirm = request.headers.get("X-Staff-Authorization", "")
        c_scheme, _, c_value = confirm.partition(" ")
        if confirm:
            if c_scheme.lower() == "basic":
                # counted against the device, which its key has already identified
                staff = verify_staff(session, *_basic(c_value.strip()),
                                     source=lockout.device(row.id))
            elif c_scheme.lower() == "session" and row.role == "kiosk":
                from server.staff.kiosk import staff_of_session

                staff = staff_of_session(session, row.id, c_value.strip())
            else:
                raise Problem("invalid-credentials",
                              "X-Staff-Authorization must be Basic (or Session, on a kiosk)")
        return Principal("device", row.role, row.id, row.store_id, staff, row.code, row.country)
    if scheme.lower() == "basic" and value:
        member = verify_staff(session, *_basic(value.strip()))
        return Principal("staff", member.role, member.id, None, member)
    raise Problem("unauthenticated")


def require(*roles: str) -> Callable:
    """Let only callers with one of ``roles`` (device or staff roles) run the view."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate()
            if principal.role not in roles:
                raise Problem("forbidden-role",
                              f"a {principal.kind} with role {principal.role!r} may not do this")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.required_roles = roles  # read by the OpenAPI document
        return wrapper

    return decorate
