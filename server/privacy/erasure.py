"""Right to erasure: crypto-shredding of the vault row; the pseudonymous history stays.

What goes: the vault row (ciphertext, the data key wrapped under the master key, the email
and phone blind indexes), the PIN hash, the link to a legacy system's customer number, the
NFC UIDs of the cards, survey answers in free text, staff notes on points adjustments, the
birthday's month-day kept for campaigns, and on tickets the notes' text, the subjects and
the serial numbers (typed by staff, they may name the customer).
What changes: every card is revoked (reason ``erased``); every consent is withdrawn in the
ledger (channel ``erasure``). What stays, for the shop's statistics: the neutral customer id
with its visits, purchases, points, tier, and the coarse profile it had.

Safe to run twice: the second run finds nothing left and reports the first one's date.
"""

from __future__ import annotations

import re

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.campaigns.models import BirthdayDay
from server.cards.models import LIVE, Card
from server.customers.models import Customer, SurveyResponse
from server.db import after_commit, databases, shred_wal, utcnow
from server.loyalty.models import ImportedCustomer, PointsEntry
from server.privacy import audit, consent
from server.privacy.models import PURPOSES
from server.tickets.models import Ticket, TicketNote
from server.vault.service import destroy_personal_data

# survey answers that are a choice code, a number or a yes/no stay; free text goes
_CHOICE = re.compile(r"[a-z0-9_-]{1,32}")


def _keep_answer(value) -> bool:
    if isinstance(value, str):
        return bool(_CHOICE.fullmatch(value))
    return isinstance(value, bool | int)


def shred_after_commit() -> None:
    """In a request that erased someone: empty the SQLite WALs once the commit is done."""
    dbs = databases()
    after_commit(lambda: shred_wal(dbs.vault, dbs.main))


def erase(main: Session, vault: Session, actor: str, customer_id: str,
          reason: str, principal=None, view: str = "erasure") -> dict:
    """Erase one customer's personal data. ``actor`` names who did it in the audit log.

    Raises:
        Problem: ``customer-not-found``.
    """
    customer = main.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        raise Problem("customer-not-found")
    if customer.erased_at is not None:
        # vault row gone already; a crash between the two commits may have left it
        destroy_personal_data(vault, customer_id)
        return {"customer_id": customer_id, "erased_at": customer.erased_at.isoformat(),
                "already_erased": True, "cards_revoked": []}

    now = utcnow()
    had_vault_row = destroy_personal_data(vault, customer_id)
    revoked = list(main.scalars(select(Card.id).where(Card.customer_id == customer_id,
                                                      Card.status.in_(LIVE))))
    main.execute(update(Card).where(Card.customer_id == customer_id, Card.status.in_(LIVE))
                 .values(status="revoked", status_reason="erased", revoked_at=now))
    main.execute(update(Card).where(Card.customer_id == customer_id).values(nfc_uid=None))
    main.execute(update(Customer).where(Customer.id == customer_id)
                 .values(erased_at=now, pin_hash=None, pin_failures=0,
                         retention_notice_at=None))
    main.execute(ImportedCustomer.__table__.delete()
                 .where(ImportedCustomer.customer_id == customer_id))
    # the month and day of birth kept for birthday messages
    main.execute(BirthdayDay.__table__.delete().where(BirthdayDay.customer_id == customer_id))
    main.execute(update(PointsEntry).where(PointsEntry.customer_id == customer_id,
                                           PointsEntry.kind == "adjust")
                 .values(reason="(erased)"))
    ticket_ids = select(Ticket.id).where(Ticket.customer_id == customer_id).scalar_subquery()
    main.execute(update(TicketNote).where(TicketNote.ticket_id.in_(ticket_ids))
                 .values(text=""))
    main.execute(update(Ticket).where(Ticket.customer_id == customer_id)
                 .values(subject="(erased)", serial_number=None))
    for response in main.scalars(select(SurveyResponse)
                                 .where(SurveyResponse.customer_id == customer_id)):
        kept = {k: v for k, v in response.answers.items() if _keep_answer(v)}
        if kept != response.answers:
            response.answers = kept
    consent.append(main, principal, customer_id, {p: False for p in PURPOSES},
                   version="erasure", language=None, channel="erasure")
    audit.record(main, actor, "personal-data.erase", customer_id, view=view,
                 detail={"reason": reason, "vault_row": had_vault_row,
                         "cards_revoked": revoked})
    return {"customer_id": customer_id, "erased_at": now.isoformat(), "already_erased": False,
            "cards_revoked": revoked}
