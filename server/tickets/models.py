"""Products (warranty months), tickets and their history of notes and changes."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

KINDS = ("warranty", "support", "complaint")
STATUSES = ("open", "in-progress", "waiting", "resolved", "closed")
# "open-ish": what still needs someone (the till shows these, the list puts them first)
OPEN_STATUSES = ("open", "in-progress", "waiting")
# a note typed by staff, or the trace of a change of status, assignee or due date
NOTE_KINDS = ("note", "status", "assignment", "due")
SUBJECT_MAX = 120
NOTE_MAX = 2000
SERIAL_MAX = 64


class Product(Base):
    """A product of the catalogue by SKU: what a purchase line's warranty is worth."""

    __tablename__ = "products"
    __table_args__ = (CheckConstraint("warranty_months >= 0", name="warranty_months"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(64))
    warranty_months: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Ticket(Base):
    """A warranty claim (tied to a purchase line), a support issue or a complaint.

    The product, purchase date and warranty end are copied from the line and the catalogue
    when the ticket is opened: later catalogue changes do not rewrite a claim.
    """

    __tablename__ = "tickets"
    __table_args__ = (
        # the till's "open tickets of this customer", and the customer's page
        Index("ix_tickets_customer_status", "customer_id", "status"),
        Index("ix_tickets_status_due", "status", "due_date"),
        CheckConstraint("kind IN ('warranty', 'support', 'complaint')", name="kind"),
        CheckConstraint("status IN ('open', 'in-progress', 'waiting', 'resolved', 'closed')",
                        name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    subject: Mapped[str] = mapped_column(String(SUBJECT_MAX))
    purchase_line_id: Mapped[int | None] = mapped_column(ForeignKey("purchase_lines.id"),
                                                         index=True)
    sku: Mapped[str | None] = mapped_column(String(64))
    product_name: Mapped[str | None] = mapped_column(String(200))
    serial_number: Mapped[str | None] = mapped_column(String(SERIAL_MAX))
    # local dates (the programme's time zone); warranty_end is None when it is not known
    purchase_date: Mapped[date | None] = mapped_column(Date)
    warranty_end: Mapped[date | None] = mapped_column(Date)
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"), index=True)
    assignee_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    due_date: Mapped[date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TicketNote(Base):
    """One line of a ticket's history: a note, or a change (``old_value`` → ``new_value``).

    ``text`` is typed by staff and may hold personal details: erasure blanks it.
    """

    __tablename__ = "ticket_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="note")
    author: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    text: Mapped[str] = mapped_column(String(NOTE_MAX), default="")
    # status codes, staff ids or ISO dates, never free text
    old_value: Mapped[str | None] = mapped_column(String(64))
    new_value: Mapped[str | None] = mapped_column(String(64))
