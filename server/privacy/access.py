"""Right of access: everything held about one customer, from both databases.

``export`` gathers it as one JSON-ready document. Rows are exported column by column from
the tables, so a column added later is exported without anyone remembering to; only secrets
are left out (the PIN's hash: the document says whether a PIN is set).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from server.accounts.models import Account, AccountPayment, Statement
from server.api.problems import Problem
from server.campaigns.models import BirthdayDay, CampaignMessage
from server.cards.models import Card
from server.cards.service import card_flags
from server.customers.models import Customer, SurveyResponse
from server.db import utcnow
from server.loyalty.models import (
    ImportedCustomer,
    PointsEntry,
    Purchase,
    PurchaseLine,
    Redemption,
    Refund,
    RefundLine,
)
from server.privacy import consent
from server.privacy.models import AuditEntry
from server.stores.models import Store
from server.taps.models import Visit
from server.tickets.models import Ticket, TicketNote
from server.vault.service import read_personal_data

FORMAT = "loyalty-customer-export/1"
# never exported: secrets, and internal bookkeeping that says nothing about the customer
HIDDEN = {"customers": {"pin_hash"}, "audit_log": {"prev_hash", "hash"}}


def _value(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _rows(session: Session, table: Table, where, order) -> list[dict]:
    hidden = HIDDEN.get(table.name, set())
    cols = [c for c in table.columns if c.name not in hidden]
    return [{c.name: _value(v) for c, v in zip(cols, row, strict=True)}
            for row in session.execute(select(*cols).where(where).order_by(order))]


def export(main: Session, vault: Session, customer_id: str) -> dict:
    """The whole file of one customer. The caller audits the read.

    Raises:
        Problem: ``customer-not-found``.
    """
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    c = Customer.__table__
    profile = _rows(main, c, c.c.id == customer_id, c.c.id)[0]
    profile["pin_set"] = customer.pin_hash is not None
    profile["home_store"] = main.scalar(select(Store.code)
                                        .where(Store.id == customer.home_store_id))

    purchases = _rows(main, Purchase.__table__, Purchase.customer_id == customer_id,
                      Purchase.paid_at)
    purchase_ids = [p["id"] for p in purchases]
    lines = _rows(main, PurchaseLine.__table__, PurchaseLine.purchase_id.in_(purchase_ids),
                  PurchaseLine.id)
    for purchase in purchases:
        purchase["lines"] = [ln for ln in lines if ln["purchase_id"] == purchase["id"]]
    refunds = _rows(main, Refund.__table__, Refund.purchase_id.in_(purchase_ids), Refund.id)
    refund_lines = _rows(main, RefundLine.__table__,
                         RefundLine.refund_id.in_([r["id"] for r in refunds]), RefundLine.id)
    for refund in refunds:
        refund["lines"] = [ln for ln in refund_lines if ln["refund_id"] == refund["id"]]

    tickets = _rows(main, Ticket.__table__, Ticket.customer_id == customer_id, Ticket.id)
    notes = _rows(main, TicketNote.__table__,
                  TicketNote.ticket_id.in_([t["id"] for t in tickets]), TicketNote.id)
    for ticket in tickets:
        ticket["notes"] = [n for n in notes if n["ticket_id"] == ticket["id"]]

    return {
        "format": FORMAT,
        "generated_at": utcnow().isoformat(),
        "customer_id": customer_id,
        # None once erased: nothing personal is left to show
        "personal_data": read_personal_data(vault, customer_id),
        "profile": profile,
        "consents": {"current": consent.current(main, customer_id),
                     "history": consent.history(main, customer_id)},
        "cards": _rows(main, Card.__table__, Card.customer_id == customer_id, Card.issued_at),
        # replays, clone signals: what the shop noted about the customer's cards
        "card_flags": _rows(main, card_flags, card_flags.c.customer_id == customer_id,
                            card_flags.c.id),
        "visits": _rows(main, Visit.__table__, Visit.customer_id == customer_id, Visit.id),
        "purchases": purchases,
        "refunds": refunds,
        "redemptions": _rows(main, Redemption.__table__,
                             Redemption.customer_id == customer_id, Redemption.id),
        "points_ledger": _rows(main, PointsEntry.__table__,
                               PointsEntry.customer_id == customer_id, PointsEntry.id),
        "survey_responses": _rows(main, SurveyResponse.__table__,
                                  SurveyResponse.customer_id == customer_id, SurveyResponse.id),
        "imported_from": _rows(main, ImportedCustomer.__table__,
                               ImportedCustomer.customer_id == customer_id,
                               ImportedCustomer.source_id),
        # warranty claims, support issues and complaints, with their notes and changes
        "tickets": tickets,
        # buying on account: the account, payments on it, the monthly statements
        "account": _rows(main, Account.__table__, Account.customer_id == customer_id,
                         Account.customer_id),
        "account_payments": _rows(main, AccountPayment.__table__,
                                  AccountPayment.customer_id == customer_id, AccountPayment.id),
        "statements": _rows(main, Statement.__table__, Statement.customer_id == customer_id,
                            Statement.id),
        # the campaign messages sent (or not) to the customer, and the birthday's month-day
        "campaign_messages": _rows(main, CampaignMessage.__table__,
                                   CampaignMessage.customer_id == customer_id,
                                   CampaignMessage.id),
        "campaign_birthday": _rows(main, BirthdayDay.__table__,
                                   BirthdayDay.customer_id == customer_id,
                                   BirthdayDay.customer_id),
        # who has read or changed this customer's personal data
        "access_log": _rows(main, AuditEntry.__table__, AuditEntry.customer_id == customer_id,
                            AuditEntry.id),
    }
