"""Stores: add, edit, list. The CLI and the back office's administration pages call these.

Every change is entered in the audit log (``record_change``), naming who made it (``staff:7``,
``cli``) and where (``backoffice:admin``, ``cli``). Services flush, never commit.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.privacy import audit
from server.stores.models import Store

log = logging.getLogger(__name__)

VIEW = "backoffice:admin"
COUNTRIES = ("FR", "LT")
# letters, digits, - and _: a code goes into promotions' store lists and the CLI's arguments
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
NAME_MAX = 120
REGION_MAX = 80
KEEP = object()  # edit(): leave the region as it is


class Refused(ValueError):
    """An administration change the rules refuse.

    ``code`` names the refusal for the pages (which say it in the staff member's language),
    ``params`` fill their message; ``str(exc)`` is the English message the CLI prints.
    """

    def __init__(self, code: str, message: str, /, **params) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


def record_change(main: Session, actor: str, action: str, view: str, detail: dict) -> None:
    """Enter an administration change in the audit log (never a secret in ``detail``)."""
    audit.record(main, actor, action, None, view=view, detail=detail)


def clean_name(name: str | None, what: str = "name") -> str:
    """A display name, trimmed; 1 to 120 characters.

    Raises:
        Refused: ``name-invalid``.
    """
    name = " ".join((name or "").split())
    if not name or len(name) > NAME_MAX:
        raise Refused("name-invalid", f"a {what} has 1 to {NAME_MAX} characters")
    return name


def clean_region(region: str | None) -> str | None:
    """A region as typed ("Vilnius", "Île-de-France"), spaces tidied; empty is none.

    Raises:
        Refused: ``region-invalid``.
    """
    region = " ".join((region or "").split())
    if len(region) > REGION_MAX:
        raise Refused("region-invalid", f"a region has at most {REGION_MAX} characters")
    return region or None


def _country(country: str | None) -> str:
    country = (country or "").strip().upper()
    if country not in COUNTRIES:
        raise Refused("country-invalid", f"the country is one of {', '.join(COUNTRIES)}")
    return country


@dataclass(frozen=True)
class StoreRow:
    id: int
    code: str
    name: str
    country: str
    region: str | None
    allow_uid_only: bool
    devices: int
    staff: int


def list_stores(main: Session) -> list[StoreRow]:
    """Every store by code, with how many active devices and enabled staff it has."""
    from server.devices.models import Device
    from server.staff.models import Staff

    devices = (select(func.count(Device.id)).where(Device.store_id == Store.id,
                                                  Device.revoked_at.is_(None))
               .correlate(Store).scalar_subquery())
    staff = (select(func.count(Staff.id)).where(Staff.store_id == Store.id,
                                               Staff.disabled_at.is_(None))
             .correlate(Store).scalar_subquery())
    rows = main.execute(select(Store.id, Store.code, Store.name, Store.country, Store.region,
                               Store.allow_uid_only, devices, staff).order_by(Store.code))
    return [StoreRow(*row) for row in rows]


def get(main: Session, store_id: int) -> Store:
    """The store with this id.

    Raises:
        Refused: ``store-unknown``.
    """
    store = main.get(Store, store_id)
    if store is None:
        raise Refused("store-unknown", f"no store {store_id}", code=str(store_id))
    return store


def by_code(main: Session, code: str) -> Store:
    """The store with this code.

    Raises:
        Refused: ``store-unknown``.
    """
    store = main.scalar(select(Store).where(Store.code == code))
    if store is None:
        raise Refused("store-unknown", f"no store {code}", code=code)
    return store


def add(main: Session, *, code: str, name: str, country: str, allow_uid_only: bool = False,
        actor: str, view: str = VIEW, region: str | None = None) -> Store:
    """Add a store.

    Raises:
        Refused: ``code-invalid``, ``store-exists``, ``name-invalid``, ``country-invalid``,
            ``region-invalid``.
    """
    code = (code or "").strip()
    if not CODE_PATTERN.match(code):
        raise Refused("code-invalid", "a store code has 1 to 32 letters, digits, - or _")
    name = clean_name(name)
    country = _country(country)
    region = clean_region(region)
    if main.scalar(select(Store.id).where(Store.code == code)):
        raise Refused("store-exists", f"store {code} exists already", code=code)
    store = Store(code=code, name=name, country=country, allow_uid_only=bool(allow_uid_only),
                  region=region)
    main.add(store)
    main.flush()
    record_change(main, actor, "store.add", view,
                  {"store": code, "country": country, "allow_uid_only": bool(allow_uid_only),
                   "region": region})
    log.info("store %s added by %s", code, actor)
    return store


def edit(main: Session, store: Store, *, name: str, country: str, allow_uid_only: bool,
         actor: str, view: str = VIEW, region=KEEP) -> list[str]:
    """Change a store's name, country, UID-only setting or region; the fields changed
    (audited).

    Raises:
        Refused: ``name-invalid``, ``country-invalid``, ``region-invalid``.
    """
    new = {"name": clean_name(name), "country": _country(country),
           "allow_uid_only": bool(allow_uid_only)}
    if region is not KEEP:
        new["region"] = clean_region(region)
    changed = [field for field, value in new.items() if getattr(store, field) != value]
    if not changed:
        return []
    for field in changed:
        setattr(store, field, new[field])
    main.flush()
    record_change(main, actor, "store.edit", view, {"store": store.code, "fields": changed})
    log.info("store %s changed by %s: %s", store.code, actor, ", ".join(changed))
    return changed
