"""Finding a customer at the desk: by the card in hand, by code, email or phone.

Used by staff mode on a kiosk (and staff clients) before a reissue: the answer shows who it
is (display name, standing, every card and its status) so the staff member can confirm.
Nothing is recorded as a visit; each answer is one audited read of the vault.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards.models import Card
from server.cards.service import card_by_sun, card_by_token, is_sun_url
from server.customers.models import Customer
from server.devices.auth import Principal
from server.privacy import audit
from server.privacy.service import country_of
from server.staff.models import CARD_ROLES
from server.vault.service import display_name, find_customers, read_personal_data

CODE = re.compile(r"^C?([0-9A-HJKMNP-TV-Z]{8})$")
cards = Card.__table__


def require_desk(principal: Principal) -> None:
    """Only desk staff (on a kiosk, through a staff session) may look customers up.

    Raises:
        Problem: ``staff-required`` for a device alone, ``forbidden-role`` for a cashier.
    """
    if principal.staff is None:
        raise Problem("staff-required", "a member of staff must sign in to look customers up")
    if principal.staff.role not in CARD_ROLES:
        raise Problem("forbidden-role", f"a {principal.staff.role} may not look customers up")


def customer_code(text: str) -> str | None:
    """``C-7F3K-9Q2M`` from what was typed (any case, dashes and spaces optional)."""
    compact = re.sub(r"[\s-]", "", text.upper())
    match = CODE.match(compact)
    if match is None:
        return None
    body = match.group(1)
    return f"C-{body[:4]}-{body[4:]}"


def _card_list(main: Session, customer_id: str) -> list[dict]:
    rows = main.execute(select(cards.c.id, cards.c.kind, cards.c.status, cards.c.status_reason,
                               cards.c.issued_at)
                        .where(cards.c.customer_id == customer_id)
                        .order_by(cards.c.issued_at.desc())).all()
    return [{"card_id": r.id, "kind": r.kind, "status": r.status, "reason": r.status_reason,
             "issued_at": r.issued_at.isoformat()} for r in rows]


def _describe(main: Session, vault: Session, customer: Customer) -> dict:
    return {"customer_id": customer.id,
            "display_name": display_name(read_personal_data(vault, customer.id)),
            "tier": customer.tier, "points": customer.points, "language": customer.language,
            "cards": _card_list(main, customer.id)}


def by_card(main: Session, vault: Session, principal: Principal, *, url: str | None,
            qr: str | None, uid: str | None) -> dict:
    """The customer of a card read at the desk, whatever the card's status.

    Raises:
        Problem: ``staff-required``, ``forbidden-role``, a ``card-token-*`` or ``sun-*``
            type, ``card-not-found``, ``customer-erased``.
    """
    require_desk(principal)
    text = url or qr
    if text and is_sun_url(text):
        row, _result = card_by_sun(main, text)  # the counter is not claimed: not a visit
    elif text:
        row, _generation = card_by_token(main, text)
    else:
        rows = main.execute(select(cards.c.id, cards.c.customer_id, cards.c.status)
                            .where(cards.c.nfc_uid == uid.upper())
                            .order_by(cards.c.issued_at.desc())).all()
        if not rows:
            raise Problem("card-not-found", "no card with this UID")
        row = ([r for r in rows if r.status == "active"] or rows)[0]
    customer = main.get(Customer, row.customer_id)
    if customer.erased_at is not None:
        raise Problem("customer-erased")
    found = _describe(main, vault, customer)
    found["card"] = next(c for c in found["cards"] if c["card_id"] == row.id)
    audit.record(main, principal.actor, "personal-data.read", customer.id,
                 view="api:card-lookup", detail={"fields": ["display_name"]})
    return found


def by_details(main: Session, vault: Session, principal: Principal, *, customer_id: str | None,
               email: str | None, phone: str | None) -> list[dict]:
    """Customers with this code, or exactly this email or phone (blind index); audited.

    Raises:
        Problem: ``staff-required``, ``forbidden-role``.
    """
    require_desk(principal)
    if customer_id:
        code = customer_code(customer_id)
        ids = [code] if code else []
    else:
        ids = find_customers(vault, email=email, phone=phone, country=country_of(principal))
    customers = main.scalars(select(Customer).where(Customer.id.in_(ids),
                                                    Customer.erased_at.is_(None))).all()
    found = [_describe(main, vault, c) for c in customers]
    audit.record(main, principal.actor, "personal-data.search", None, view="api:lookup",
                 detail={"by": [k for k, v in (("customer_id", customer_id), ("email", email),
                                               ("phone", phone)) if v],
                         "found": [f["customer_id"] for f in found]})
    return found
