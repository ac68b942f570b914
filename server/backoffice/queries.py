"""What the back office's pages show, read in one place; personal data only through
``server.privacy.service``, so that every read is in the audit log."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards.models import Card
from server.cards.service import card_flags
from server.customers.models import Customer
from server.devices.auth import Principal
from server.privacy import consent, service
from server.privacy.models import AuditEntry
from server.staff.models import Staff
from server.stores.models import Store

AUDIT_PAGE = 50
_STAFF = re.compile(r"staff:(\d+)")


@dataclass
class CustomerFile:
    customer: Customer
    home_store: str | None
    personal: dict | None  # None once erased
    consents: dict[str, dict]
    history: list[dict]
    cards: list[Card]
    flags: list  # replays and clone signals on the customer's cards, newest first


def customer_file(main: Session, vault: Session, principal: Principal, customer_id: str,
                  view: str) -> CustomerFile:
    """Everything the customer page shows; the identity is read (and audited) unless erased.

    Raises:
        Problem: ``customer-not-found``.
    """
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    personal = None
    if customer.erased_at is None:
        personal = service.read(main, vault, principal, customer_id, view=view)
    return CustomerFile(
        customer=customer,
        home_store=main.scalar(select(Store.code).where(Store.id == customer.home_store_id)),
        personal=personal,
        consents=consent.current(main, customer_id),
        history=consent.history(main, customer_id),
        cards=list(main.scalars(select(Card).where(Card.customer_id == customer_id)
                                .order_by(Card.issued_at, Card.id))),
        flags=main.execute(select(card_flags.c.card_id, card_flags.c.kind, card_flags.c.at,
                                  Store.code.label("store"))
                           .outerjoin(Store, Store.id == card_flags.c.store_id)
                           .where(card_flags.c.customer_id == customer_id)
                           .order_by(card_flags.c.id.desc()).limit(50)).all(),
    )


@dataclass
class AuditPage:
    entries: list[AuditEntry]
    older: int | None  # the ``before`` of the next page, if there is one
    staff: dict[int, str]  # usernames of the staff members the entries name


def audit_page(main: Session, customer_id: str | None, before: int | None,
               size: int | None = None) -> AuditPage:
    """One page of the audit log, newest first, optionally of one customer."""
    size = size or AUDIT_PAGE
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(size + 1)
    if customer_id:
        query = query.where(AuditEntry.customer_id == customer_id)
    if before:
        query = query.where(AuditEntry.id < before)
    entries = list(main.scalars(query))
    older = entries[size - 1].id if len(entries) > size else None
    return AuditPage(entries[:size], older, staff_names(main, [e.actor for e in entries]))


def audit_entry(main: Session, entry_id: int | None) -> AuditEntry | None:
    return main.get(AuditEntry, entry_id) if entry_id else None


def staff_names(main: Session, actors: list[str]) -> dict[int, str]:
    """``{staff id: username}`` for the staff members named in ``actors`` (``staff:3``)."""
    ids = {int(m) for actor in actors for m in _STAFF.findall(actor or "")}
    if not ids:
        return {}
    return dict(main.execute(select(Staff.id, Staff.username).where(Staff.id.in_(ids))).all())
