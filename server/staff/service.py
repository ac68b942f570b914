"""Staff accounts: add, change role or store, disable, reset a password, set a kiosk PIN or a
staff card. The CLI and the back office's administration pages call these.

Passwords (10 characters at least) and PINs (4 to 8 digits) are stored as argon2 hashes, a
staff card as the SHA-256 of its UID (``server.staff.kiosk.card_uid_hash``); none of them is
ever logged or put in the audit log. The account is read again on every request (back office,
API, kiosk staff mode), so a disabled account or a new role counts at once. Nobody disables
themselves, and the last enabled administrator cannot be disabled or given another role.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db import utcnow
from server.devices.auth import hash_password
from server.staff import lockout
from server.staff.kiosk import PIN_PATTERN, card_uid_hash
from server.staff.models import ROLES, Staff
from server.stores.models import Store
from server.stores.service import VIEW, Refused, record_change

log = logging.getLogger(__name__)

PASSWORD_MIN = 10
# no ':' (it would split a Basic credential) and no spaces: a name typed on a kiosk keyboard
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
UID_PATTERN = re.compile(r"^[0-9A-F]{8,20}$")


@dataclass(frozen=True)
class StaffRow:
    id: int
    username: str
    role: str
    store_id: int | None
    store_code: str | None
    created_at: datetime
    disabled_at: datetime | None
    has_pin: bool
    has_card: bool


def list_staff(main: Session) -> list[StaffRow]:
    """Every staff account by name, with its store and whether it has a PIN or a card."""
    rows = main.execute(
        select(Staff.id, Staff.username, Staff.role, Staff.store_id, Store.code,
               Staff.created_at, Staff.disabled_at, Staff.pin_hash.is_not(None),
               Staff.card_uid_hash.is_not(None))
        .outerjoin(Store, Store.id == Staff.store_id).order_by(func.lower(Staff.username)))
    return [StaffRow(*row) for row in rows]


def get(main: Session, staff_id: int) -> Staff:
    """The staff account with this id.

    Raises:
        Refused: ``staff-unknown``.
    """
    staff = main.get(Staff, staff_id)
    if staff is None:
        raise Refused("staff-unknown", f"no staff member {staff_id}", username=str(staff_id))
    return staff


def by_username(main: Session, username: str) -> Staff:
    """The staff account with this name.

    Raises:
        Refused: ``staff-unknown``.
    """
    staff = main.scalar(select(Staff).where(Staff.username == username))
    if staff is None:
        raise Refused("staff-unknown", f"no staff member {username}", username=username)
    return staff


def _role(role: str) -> str:
    if role not in ROLES:
        raise Refused("role-invalid", f"a staff role is one of {', '.join(ROLES)}")
    return role


def _password(password: str | None) -> str:
    if len(password or "") < PASSWORD_MIN:
        raise Refused("password-short",
                      f"a staff password has at least {PASSWORD_MIN} characters")
    return hash_password(password)


def _store_code(main: Session, store_id: int | None) -> str | None:
    return main.scalar(select(Store.code).where(Store.id == store_id)) if store_id else None


def add(main: Session, *, username: str, role: str, store: Store | None, password: str,
        actor: str, view: str = VIEW) -> Staff:
    """Add a staff account.

    Raises:
        Refused: ``username-invalid``, ``staff-exists`` (names differing only in case too),
            ``role-invalid``, ``password-short``.
    """
    username = (username or "").strip()
    if not USERNAME_PATTERN.match(username):
        raise Refused("username-invalid", "a user name has 1 to 64 letters, digits, or . _ @ -")
    _role(role)
    if main.scalar(select(Staff.id).where(func.lower(Staff.username) == username.lower())):
        raise Refused("staff-exists", f"staff member {username} exists already",
                      username=username)
    staff = Staff(username=username, role=role, store_id=store.id if store else None,
                  password_hash=_password(password))
    main.add(staff)
    main.flush()
    record_change(main, actor, "staff.add", view, {
        "staff": staff.id, "username": username, "role": role,
        "store": store.code if store else None})
    log.info("staff member %s (%s) added by %s", staff.id, role, actor)
    return staff


def _enabled_admins(main: Session) -> list[int]:
    # locked on PostgreSQL: two administrators removing each other at once cannot both pass
    return list(main.scalars(select(Staff.id).where(
        Staff.role == "admin", Staff.disabled_at.is_(None)).with_for_update()))


def _keep_an_admin(main: Session, staff: Staff) -> None:
    if staff.role == "admin" and staff.disabled_at is None and \
            [i for i in _enabled_admins(main) if i != staff.id] == []:
        raise Refused("last-admin", "this is the last administrator: make another one first",
                      username=staff.username)


def _not_self(staff: Staff, by: int | None) -> None:
    if by is not None and staff.id == by:
        raise Refused("self", "nobody changes their own role, store or account state here",
                      username=staff.username)


def change(main: Session, staff: Staff, *, role: str, store: Store | None, actor: str,
           by: int | None = None, view: str = VIEW) -> list[str]:
    """Give a staff member another role or store; the fields changed (audited).

    ``by`` is the staff member making the change (None from the CLI).

    Raises:
        Refused: ``role-invalid``, ``self``, ``last-admin``.
    """
    _role(role)
    store_id = store.id if store else None
    changed = [name for name, old, new in (("role", staff.role, role),
                                            ("store", staff.store_id, store_id)) if old != new]
    if not changed:
        return []
    _not_self(staff, by)
    if "role" in changed:
        _keep_an_admin(main, staff)
    detail = {"staff": staff.id, "username": staff.username, "fields": changed}
    if "role" in changed:
        detail["role"] = [staff.role, role]
    if "store" in changed:
        detail["store"] = [_store_code(main, staff.store_id), store.code if store else None]
    staff.role, staff.store_id = role, store_id
    main.flush()
    record_change(main, actor, "staff.change", view, detail)
    log.info("staff member %s changed by %s: %s", staff.id, actor, ", ".join(changed))
    return changed


def set_enabled(main: Session, staff: Staff, enabled: bool, *, actor: str,
                by: int | None = None, view: str = VIEW) -> bool:
    """Enable or disable an account (out at once, everywhere); False if it already was.

    Raises:
        Refused: ``self``, ``last-admin``.
    """
    if enabled == (staff.disabled_at is None):
        return False
    _not_self(staff, by)
    if not enabled:
        _keep_an_admin(main, staff)
    staff.disabled_at = None if enabled else utcnow()
    main.flush()
    record_change(main, actor, "staff.enable" if enabled else "staff.disable", view,
                  {"staff": staff.id, "username": staff.username})
    log.info("staff member %s %s by %s", staff.id, "enabled" if enabled else "disabled", actor)
    return True


def reset_password(main: Session, staff: Staff, password: str, *, actor: str,
                   view: str = VIEW) -> None:
    """Give a new password (argon2) and lift a lockout of the name.

    Raises:
        Refused: ``password-short``.
    """
    staff.password_hash = _password(password)
    main.flush()
    lockout.clear(main, lockout.user(staff.username))
    record_change(main, actor, "staff.password-reset", view,
                  {"staff": staff.id, "username": staff.username})
    log.info("password of staff member %s reset by %s", staff.id, actor)


def set_pin(main: Session, staff: Staff, pin: str | None, *, actor: str,
            view: str = VIEW) -> None:
    """Set (4 to 8 digits) or, with None, clear the PIN that opens staff mode on a kiosk.

    Raises:
        Refused: ``pin-invalid``.
    """
    if pin is not None and not re.fullmatch(PIN_PATTERN, pin):
        raise Refused("pin-invalid", "a staff PIN has 4 to 8 digits")
    staff.pin_hash = None if pin is None else hash_password(pin)
    main.flush()
    record_change(main, actor, "staff.pin-clear" if pin is None else "staff.pin-set", view,
                  {"staff": staff.id, "username": staff.username})
    log.info("kiosk PIN of staff member %s %s by %s", staff.id,
             "cleared" if pin is None else "set", actor)


def normalise_uid(uid: str | None) -> str:
    """A card UID as hex digits in upper case (``04:a1:b2 ...`` as a reader may show it).

    Raises:
        Refused: ``uid-invalid``.
    """
    uid = re.sub(r"[\s:-]", "", uid or "").upper()
    if not UID_PATTERN.match(uid):
        raise Refused("uid-invalid", "a staff card's UID has 8 to 20 hex digits")
    return uid


def set_card(main: Session, staff: Staff, uid: str | None, *, actor: str,
             view: str = VIEW) -> None:
    """Register (stored hashed) or, with None, forget the staff card that opens staff mode.

    Raises:
        Refused: ``uid-invalid``, ``card-taken`` (another staff member's card).
    """
    digest = None if uid is None else card_uid_hash(normalise_uid(uid))
    if digest and main.scalar(select(Staff.id).where(Staff.card_uid_hash == digest,
                                                     Staff.id != staff.id)):
        raise Refused("card-taken", "this card belongs to another staff member")
    staff.card_uid_hash = digest
    main.flush()
    record_change(main, actor, "staff.card-clear" if uid is None else "staff.card-set", view,
                  {"staff": staff.id, "username": staff.username})
    log.info("staff card of staff member %s %s by %s", staff.id,
             "forgotten" if uid is None else "registered", actor)
