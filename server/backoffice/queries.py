"""What the back office's pages show, read in one place; personal data only through
``server.privacy.service``, so that every read is in the audit log."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards.models import Card
from server.cards.service import card_flags
from server.customers.models import Customer, SurveyResponse
from server.devices.auth import Principal
from server.loyalty import programmes
from server.loyalty.models import PointsEntry, Purchase, PurchaseLine
from server.privacy import consent, service
from server.privacy.models import AuditEntry
from server.staff.models import Staff
from server.stores.models import Store
from server.taps.models import Visit
from server.value import service as value_service
from server.value.service import Explanation

AUDIT_PAGE = 50
_STAFF = re.compile(r"staff:(\d+)")


LEDGER_PAGE = 20
PURCHASE_PAGE = 10
CARD_LIMIT = 50
CARD_EVENTS = ("card.replace", "card.block", "card.unblock")
SURVEY_LIMIT = 10


@dataclass
class Page:
    """Rows newest first, and the ``before`` of the next (older) page if there is one."""

    rows: list
    older: int | None


@dataclass
class CustomerFile:
    customer: Customer
    home_store: str | None
    personal: dict | None  # None once erased
    consents: dict[str, dict]
    history: list[dict]
    cards: list  # rows: the card, its masked UID, its flags, newest first
    flags: list  # replays and clone signals on the customer's cards, newest first
    card_events: list = field(default_factory=list)  # replace/block/unblock, newest first
    staff: dict[int, str] = field(default_factory=dict)  # usernames named in card_events
    ledger: Page | None = None
    purchases: Page | None = None
    lines: dict[int, list] = field(default_factory=dict)  # purchase id -> its lines
    visits: list = field(default_factory=list)  # by store: count and last visit
    surveys: list = field(default_factory=list)
    value: Explanation | None = None  # the value score, explained (server.value)


def mask_uid(uid: str | None) -> str | None:
    """An NFC UID shown with its last 4 hex digits only: enough to match the card in hand."""
    if not uid:
        return None
    return "•" * max(len(uid) - 4, 0) + uid[-4:]


def customer_file(main: Session, vault: Session, principal: Principal, customer_id: str,
                  view: str, *, ledger_before: int | None = None,
                  purchases_before: int | None = None) -> CustomerFile:
    """Everything the customer page shows; the identity is read (and audited) unless erased.

    Every list is bounded: the ledger and purchases by pages (``*_before``: the id of the
    last row of the page before), the rest by a limit. A fixed number of queries, whatever
    the number of purchase lines.

    Raises:
        Problem: ``customer-not-found``.
    """
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    personal = None
    if customer.erased_at is None:
        personal = service.read(main, vault, principal, customer_id, view=view)
    flag_counts = (select(card_flags.c.card_id, func.count().label("n"))
                   .where(card_flags.c.customer_id == customer_id)
                   .group_by(card_flags.c.card_id).subquery())
    cards = [
        CardRow(row.Card, mask_uid(row.Card.nfc_uid), row.flags or 0)
        for row in main.execute(
            select(Card, flag_counts.c.n.label("flags"))
            .outerjoin(flag_counts, flag_counts.c.card_id == Card.id)
            .where(Card.customer_id == customer_id)
            .order_by(Card.issued_at.desc(), Card.id).limit(CARD_LIMIT))]
    events = list(main.scalars(
        select(AuditEntry).where(AuditEntry.customer_id == customer_id,
                                 AuditEntry.action.in_(CARD_EVENTS))
        .order_by(AuditEntry.id.desc()).limit(CARD_LIMIT)))
    purchases = purchase_page(main, customer_id, purchases_before)
    return CustomerFile(
        customer=customer,
        home_store=main.scalar(select(Store.code).where(Store.id == customer.home_store_id)),
        personal=personal,
        consents=consent.current(main, customer_id),
        history=consent.history(main, customer_id),
        cards=cards,
        flags=main.execute(select(card_flags.c.card_id, card_flags.c.kind, card_flags.c.at,
                                  Store.code.label("store"))
                           .outerjoin(Store, Store.id == card_flags.c.store_id)
                           .where(card_flags.c.customer_id == customer_id)
                           .order_by(card_flags.c.id.desc()).limit(50)).all(),
        card_events=events,
        staff=staff_names(main, [e.actor for e in events]),
        ledger=ledger_page(main, customer_id, ledger_before),
        purchases=purchases,
        lines=purchase_lines(main, [p.id for p in purchases.rows]),
        visits=visits_by_store(main, customer_id),
        surveys=list(main.scalars(
            select(SurveyResponse).where(SurveyResponse.customer_id == customer_id)
            .order_by(SurveyResponse.id.desc()).limit(SURVEY_LIMIT))),
        value=value_service.explain(main, programmes.current(main)[1], customer_id),
    )


@dataclass
class CardRow:
    card: Card
    uid: str | None  # masked
    flags: int


def ledger_page(main: Session, customer_id: str, before: int | None,
                size: int | None = None) -> Page:
    """One page of the points ledger, newest first, with the store of each entry."""
    size = size or LEDGER_PAGE
    query = (select(PointsEntry.id, PointsEntry.at, PointsEntry.delta, PointsEntry.kind,
                    PointsEntry.reason, PointsEntry.expires_at, PointsEntry.purchase_id,
                    Store.code.label("store"))
             .outerjoin(Store, Store.id == PointsEntry.store_id)
             .where(PointsEntry.customer_id == customer_id)
             .order_by(PointsEntry.id.desc()).limit(size + 1))
    if before:
        query = query.where(PointsEntry.id < before)
    rows = main.execute(query).all()
    return Page(rows[:size], rows[size - 1].id if len(rows) > size else None)


def purchase_page(main: Session, customer_id: str, before: int | None,
                  size: int | None = None) -> Page:
    """One page of purchases, newest first, with their store."""
    size = size or PURCHASE_PAGE
    query = (select(Purchase.id, Purchase.paid_at, Purchase.seller, Purchase.till,
                    Purchase.receipt, Purchase.currency, Purchase.total_cents,
                    Purchase.points_earned, Store.code.label("store"),
                    Store.name.label("store_name"))
             .join(Store, Store.id == Purchase.store_id)
             .where(Purchase.customer_id == customer_id)
             .order_by(Purchase.id.desc()).limit(size + 1))
    if before:
        query = query.where(Purchase.id < before)
    rows = main.execute(query).all()
    return Page(rows[:size], rows[size - 1].id if len(rows) > size else None)


def purchase_lines(main: Session, purchase_ids: list[int]) -> dict[int, list]:
    """The lines of these purchases, in one query: ``{purchase id: [line, ...]}``."""
    if not purchase_ids:
        return {}
    lines: dict[int, list] = {}
    for line in main.execute(
            select(PurchaseLine.id, PurchaseLine.purchase_id, PurchaseLine.line_no,
                   PurchaseLine.sku, PurchaseLine.name, PurchaseLine.quantity_milli,
                   PurchaseLine.net_cents, PurchaseLine.points_earned,
                   PurchaseLine.refunded_milli, PurchaseLine.reasons)
            .where(PurchaseLine.purchase_id.in_(purchase_ids))
            .order_by(PurchaseLine.purchase_id, PurchaseLine.line_no)):
        lines.setdefault(line.purchase_id, []).append(line)
    return lines


def visits_by_store(main: Session, customer_id: str) -> list:
    """Per store: how many visits and the last one, most visited first."""
    moment = func.coalesce(Visit.tapped_at, Visit.recorded_at)
    return main.execute(
        select(Store.code, Store.name, func.count(Visit.id).label("visits"),
               func.max(moment).label("last"))
        .join(Store, Store.id == Visit.store_id)
        .where(Visit.customer_id == customer_id)
        .group_by(Store.id, Store.code, Store.name)
        .order_by(func.count(Visit.id).desc(), Store.code).limit(100)).all()


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
