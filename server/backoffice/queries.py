"""What the back office's pages show, read in one place; personal data only through
``server.privacy.service``, so that every read is in the audit log."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards.models import Card
from server.customers.models import Customer
from server.devices.auth import Principal
from server.privacy import consent, service
from server.stores.models import Store


@dataclass
class CustomerFile:
    customer: Customer
    home_store: str | None
    personal: dict | None  # None once erased
    consents: dict[str, dict]
    history: list[dict]
    cards: list[Card]


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
    )
