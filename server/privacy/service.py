"""Reading, finding and correcting personal data: every call is entered in the audit log.

The API and the back office both come through here, so neither can read the vault without
leaving a trace. ``view`` names the screen or endpoint that showed the data.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.customers.models import Customer
from server.devices.auth import Principal
from server.privacy import access, audit, consent
from server.privacy.models import Consent
from server.privacy.schemas import RectifyIn
from server.vault.service import (
    display_name,
    find_customers,
    normalised,
    read_personal_data,
    rewrite_personal_data,
)

# who may see and correct personal data, export it, erase it, and read the audit log
READ_ROLES = ("desk", "manager", "admin")
ERASE_ROLES = ("manager", "admin")
AUDIT_ROLES = ("admin",)
# who may take many customers' contact details at once (a segment's export for a campaign)
LIST_ROLES = ("manager", "admin")
# the contact details a purpose allows to export, besides the name and language
PURPOSE_FIELDS = {"marketing_email": ("email",), "marketing_sms": ("phone",)}
CHUNK = 500


def country_of(principal: Principal) -> str:
    return principal.country or current_app.config["DEFAULT_COUNTRY"]


def _customer(main: Session, customer_id: str, *, live: bool = True) -> Customer:
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    if live and customer.erased_at is not None:
        raise Problem("customer-erased")
    return customer


def read(main: Session, vault: Session, principal: Principal, customer_id: str,
         view: str) -> dict:
    """One customer's personal data, for a role allowed to see it; audited."""
    _customer(main, customer_id)
    data = read_personal_data(vault, customer_id) or {}
    audit.record(main, principal.actor, "personal-data.read", customer_id, view=view)
    return {"customer_id": customer_id, **data}


def read_as_system(main: Session, vault: Session, actor: str, customer_id: str, view: str,
                   fields: tuple[str, ...] | None = None) -> dict:
    """One customer's personal data for a job of the service itself (``job:...``); audited.

    With ``fields``, only those (the audit entry names them). Empty when the customer has no
    personal data left (erased).
    """
    data = read_personal_data(vault, customer_id) or {}
    if fields is None:
        audit.record(main, actor, "personal-data.read", customer_id, view=view)
        return data
    audit.record(main, actor, "personal-data.read", customer_id, view=view,
                 detail={"fields": list(fields)})
    return {k: data.get(k) for k in fields}


# a name is common: at most this many customers are answered for one
NAME_RESULTS = 50


def search(main: Session, vault: Session, principal: Principal, *, email: str | None,
           phone: str | None, country: str | None, view: str,
           name: str | None = None) -> list[dict]:
    """Customers whose email, phone or name is exactly this; audited (which fields, not
    values). A name (last name, or "first last") only for the roles that see names.

    Raises:
        Problem: ``forbidden-role`` for a name search by a role that may not see names.
    """
    if name and principal.role not in READ_ROLES:
        raise Problem("forbidden-role", f"a {principal.role} may not search customers by name")
    ids = find_customers(vault, email=email, phone=phone, name=name,
                         country=country or country_of(principal),
                         limit=NAME_RESULTS if name else None)
    rows = main.execute(select(Customer.id, Customer.tier, Customer.points)
                        .where(Customer.id.in_(ids), Customer.erased_at.is_(None))
                        .order_by(Customer.id)).all()
    found = []
    for row in rows:
        found.append({"customer_id": row.id, "tier": row.tier, "points": row.points,
                      "display_name": display_name(read_personal_data(vault, row.id))})
    audit.record(main, principal.actor, "personal-data.search", None, view=view,
                 detail={"by": [k for k, v in (("email", email), ("phone", phone),
                                               ("name", name)) if v],
                         "found": [f["customer_id"] for f in found]})
    return found


def rectify(main: Session, vault: Session, principal: Principal, customer_id: str,
            req: RectifyIn, view: str) -> dict:
    """Correct personal data; the audit log names the fields changed, never their values."""
    _customer(main, customer_id)
    data = read_personal_data(vault, customer_id)
    if data is None:
        raise Problem("customer-erased")
    changes = normalised(req.model_dump(include=req.model_fields_set - {"reason"}, mode="json"),
                         country_of(principal))
    changed = sorted(k for k, v in changes.items() if data.get(k) != v)
    data.update(changes)
    rewrite_personal_data(vault, customer_id, data, country_of(principal))
    audit.record(main, principal.actor, "personal-data.rectify", customer_id, view=view,
                 detail={"fields": changed, "reason": req.reason})
    return {"customer_id": customer_id, "changed": changed,
            **(read_personal_data(vault, customer_id) or {})}


def export(main: Session, vault: Session, principal: Principal, customer_id: str,
           view: str) -> dict:
    """Everything held about the customer (right of access); audited."""
    _customer(main, customer_id, live=False)
    document = access.export(main, vault, customer_id)
    audit.record(main, principal.actor, "personal-data.export", customer_id, view=view)
    return document


def contacts(main: Session, vault: Session, principal: Principal, customer_ids: list[str],
             purpose: str, view: str, detail: dict | None = None) -> dict[str, dict]:
    """Names, language and the purpose's contact field of the customers who granted
    ``purpose`` (checked again here, on the consent ledger); one audit entry for the list.

    Raises:
        Problem: ``forbidden-role`` for a role that may not export contact details.
    """
    if principal.role not in LIST_ROLES:
        raise Problem("forbidden-role", f"a {principal.role} may not export contact details")
    fields = ("first_name", "last_name", *PURPOSE_FIELDS[purpose])
    allowed: set[str] = set()
    for start in range(0, len(customer_ids), CHUNK):
        chunk = customer_ids[start:start + CHUNK]
        allowed.update(main.scalars(consent.consenting(purpose)
                                    .where(Consent.customer_id.in_(chunk))))
    found = {}
    for customer_id in customer_ids:
        if customer_id in allowed:
            data = read_personal_data(vault, customer_id) or {}
            found[customer_id] = {f: data.get(f) for f in fields}
    audit.record(main, principal.actor, "personal-data.export-list", None, view=view,
                 detail={**(detail or {}), "purpose": purpose, "fields": list(fields),
                         "customers": sorted(found)})
    return found
