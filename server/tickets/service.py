"""Tickets: open one (a warranty claim from a purchase line), change it, note on it, list them.

Services take plain values, flush, and never commit (``server.db`` does, once per request);
a refusal is a ``Problem``. Every change of status, assignee or due date is written to the
ticket's history as a note of that kind, with who made it and when. Whether a claim is in
warranty is said, never refused: a manager decides.

Dates are local dates in the programme's time zone (``programmes.current``): a purchase paid
at 23:30 UTC on 31 March is bought on 1 April in Paris, and its warranty runs from then.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.customers.models import Customer
from server.db import utcnow
from server.devices.auth import Principal
from server.loyalty import programmes
from server.loyalty.models import Purchase, PurchaseLine
from server.staff.models import Staff
from server.stores.models import Store
from server.tickets.models import (
    KINDS,
    NOTE_MAX,
    OPEN_STATUSES,
    SERIAL_MAX,
    STATUSES,
    SUBJECT_MAX,
    Product,
    Ticket,
    TicketNote,
)

log = logging.getLogger(__name__)

# who may open, read and change tickets (a cashier sees open ones in the tap record only)
TICKET_ROLES = ("desk", "manager", "admin")
# a staff member a ticket can be given to
ASSIGNABLE_ROLES = TICKET_ROLES
UNSET = object()  # "not asked to change", as opposed to None ("clear it")
LIST_LIMIT = 200


# --------------------------------------------------------------------------- dates


def local_date(main: Session, moment: datetime) -> date:
    """The calendar date of ``moment`` in the programme's time zone."""
    _, programme = programmes.current(main)
    return moment.astimezone(programme.zone).date()


def today(main: Session, now: datetime | None = None) -> date:
    return local_date(main, now or utcnow())


def add_months(day: date, months: int) -> date:
    """``day`` moved by calendar months; the day is clamped (31 Jan + 1 month = 28/29 Feb)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return day.replace(year=year, month=month,
                       day=min(day.day, calendar.monthrange(year, month)[1]))


def warranty_state(warranty_end: date | None, on: date) -> str:
    """``in`` (the end day included), ``out``, or ``unknown`` (no product, no months)."""
    if warranty_end is None:
        return "unknown"
    return "in" if on <= warranty_end else "out"


def is_overdue(status: str, due_date: date | None, on: date) -> bool:
    return status in OPEN_STATUSES and due_date is not None and due_date < on


# --------------------------------------------------------------------------- purchase lines


@dataclass(frozen=True)
class LineDetails:
    """What a warranty claim copies from a purchase line and the products catalogue."""

    line_id: int
    purchase_id: int
    sku: str
    product_name: str
    quantity_milli: int
    net_cents: int
    currency: str
    store_id: int
    paid_at: datetime
    purchase_date: date
    warranty_months: int | None  # None: the product is not in the catalogue
    warranty_end: date | None


def line_details(main: Session, customer_id: str, line_id: int) -> LineDetails:
    """A purchase line of this customer, with its product's warranty.

    Raises:
        Problem: ``purchase-line-not-found`` (also for a line of another customer: the
            answer does not tell whether it exists).
    """
    row = main.execute(
        select(PurchaseLine.id, PurchaseLine.purchase_id, PurchaseLine.sku, PurchaseLine.name,
               PurchaseLine.quantity_milli, PurchaseLine.net_cents, Purchase.currency,
               Purchase.store_id, Purchase.paid_at, Product.name.label("product"),
               Product.warranty_months)
        .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .outerjoin(Product, Product.sku == PurchaseLine.sku)
        .where(PurchaseLine.id == line_id, Purchase.customer_id == customer_id)).first()
    if row is None:
        raise Problem("purchase-line-not-found",
                      f"customer {customer_id} has no purchase line {line_id}")
    bought = local_date(main, row.paid_at)
    months = row.warranty_months
    return LineDetails(
        line_id=row.id, purchase_id=row.purchase_id, sku=row.sku,
        product_name=row.product or row.name, quantity_milli=row.quantity_milli,
        net_cents=row.net_cents, currency=row.currency, store_id=row.store_id,
        paid_at=row.paid_at, purchase_date=bought, warranty_months=months,
        warranty_end=add_months(bought, months) if months is not None else None)


def customer_lines(main: Session, customer_id: str, limit: int = 50) -> list[LineDetails]:
    """The customer's purchase lines, newest first: what a warranty claim can be about."""
    ids = main.scalars(
        select(PurchaseLine.id).join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .where(Purchase.customer_id == customer_id)
        .order_by(Purchase.paid_at.desc(), PurchaseLine.id).limit(limit)).all()
    return [line_details(main, customer_id, line_id) for line_id in ids]


# --------------------------------------------------------------------------- checks


def _invalid(field: str, message: str) -> Problem:
    return Problem("validation-error", message, errors=[{"field": field, "message": message}])


def _text(value: str | None, field: str, limit: int, *, required: bool) -> str | None:
    value = (value or "").strip()
    if required and not value:
        raise _invalid(field, "required")
    if len(value) > limit:
        raise _invalid(field, f"at most {limit} characters")
    return value or None


def _assignee(main: Session, staff_id: int | None) -> int | None:
    if staff_id is None:
        return None
    ok = main.scalar(select(Staff.id).where(Staff.id == staff_id, Staff.disabled_at.is_(None),
                                            Staff.role.in_(ASSIGNABLE_ROLES)))
    if ok is None:
        raise _invalid("assignee", "no such staff member (desk, manager or admin)")
    return staff_id


def staff_id_of(main: Session, username: str | None) -> int | None:
    """The id of an assignable staff member named ``username`` (None for None).

    Raises:
        Problem: ``validation-error`` naming ``assignee``.
    """
    if username is None:
        return None
    staff_id = main.scalar(select(Staff.id).where(Staff.username == username))
    if staff_id is None:
        raise _invalid("assignee", "no such staff member (desk, manager or admin)")
    return _assignee(main, staff_id)


def assignable_staff(main: Session) -> list:
    """``(id, username, role)`` of the staff a ticket can be given to, by name."""
    return main.execute(select(Staff.id, Staff.username, Staff.role)
                        .where(Staff.disabled_at.is_(None), Staff.role.in_(ASSIGNABLE_ROLES))
                        .order_by(Staff.username)).all()


def get(main: Session, ticket_id: int, *, lock: bool = False) -> Ticket:
    """Raises: Problem ``ticket-not-found``."""
    ticket = main.get(Ticket, ticket_id, with_for_update=lock)
    if ticket is None:
        raise Problem("ticket-not-found")
    return ticket


def _home_store(main: Session, principal: Principal) -> int | None:
    """The store a ticket opened by this caller belongs to, when the caller has one."""
    if principal.store_id is not None:
        return principal.store_id
    if principal.staff is not None:
        return main.scalar(select(Staff.store_id).where(Staff.id == principal.staff.id))
    return None


def _note(main: Session, ticket: Ticket, principal: Principal, kind: str, text: str = "",
          old=None, new=None, at: datetime | None = None) -> TicketNote:
    note = TicketNote(ticket_id=ticket.id, kind=kind, author=principal.actor, at=at or utcnow(),
                      text=text, old_value=None if old is None else str(old),
                      new_value=None if new is None else str(new))
    main.add(note)
    return note


# --------------------------------------------------------------------------- changes


def open_ticket(main: Session, principal: Principal, customer_id: str, *, kind: str,
                subject: str, purchase_line_id: int | None = None,
                serial_number: str | None = None, due_date: date | None = None,
                assignee_staff_id: int | None = None, note: str | None = None,
                now: datetime | None = None) -> Ticket:
    """Open a ticket; a warranty claim names a purchase line of this customer.

    The product, purchase date and warranty end come from the line and the catalogue.

    Raises:
        Problem: ``customer-not-found``, ``customer-erased``, ``purchase-line-not-found``,
            ``validation-error``.
    """
    now = now or utcnow()
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    if customer.erased_at is not None:
        raise Problem("customer-erased")
    if kind not in KINDS:
        raise _invalid("kind", f"one of {', '.join(KINDS)}")
    subject = _text(subject, "subject", SUBJECT_MAX, required=True)
    serial_number = _text(serial_number, "serial_number", SERIAL_MAX, required=False)
    note = _text(note, "note", NOTE_MAX, required=False)
    if kind == "warranty" and purchase_line_id is None:
        raise _invalid("purchase_line_id", "a warranty claim names the purchase line")
    line = line_details(main, customer_id, purchase_line_id) if purchase_line_id else None
    ticket = Ticket(
        customer_id=customer_id, kind=kind, status="open", subject=subject,
        purchase_line_id=line.line_id if line else None, sku=line.sku if line else None,
        product_name=line.product_name if line else None, serial_number=serial_number,
        purchase_date=line.purchase_date if line else None,
        warranty_end=line.warranty_end if line else None,
        store_id=_home_store(main, principal) or (line.store_id if line else None)
        or customer.home_store_id,
        assignee_staff_id=_assignee(main, assignee_staff_id), due_date=due_date,
        created_by=principal.actor, created_at=now, updated_at=now)
    main.add(ticket)
    main.flush()
    _note(main, ticket, principal, "status", text=note or "", old=None, new="open", at=now)
    if ticket.assignee_staff_id is not None:
        _note(main, ticket, principal, "assignment", new=ticket.assignee_staff_id, at=now)
    if due_date is not None:
        _note(main, ticket, principal, "due", new=due_date.isoformat(), at=now)
    main.flush()
    log.info("ticket %s opened (%s) for %s by %s", ticket.id, kind, customer_id,
             principal.actor)
    return ticket


def change(main: Session, principal: Principal, ticket_id: int, *, status=UNSET,
           assignee_staff_id=UNSET, due_date=UNSET, note: str | None = None,
           now: datetime | None = None) -> list[TicketNote]:
    """Change the status, assignee or due date; each change is a note in the history.

    ``note`` goes with the first change (why it changed). A closed ticket can only be
    reopened (its status set back to an open one). Returns the notes written (none if
    nothing changed).

    Raises:
        Problem: ``ticket-not-found``, ``ticket-closed``, ``validation-error``.
    """
    now = now or utcnow()
    ticket = get(main, ticket_id, lock=True)
    note = _text(note, "note", NOTE_MAX, required=False) or ""
    if status is not UNSET and status not in STATUSES:
        raise _invalid("status", f"one of {', '.join(STATUSES)}")
    reopening = status is not UNSET and status in OPEN_STATUSES
    if ticket.status == "closed" and not reopening:
        raise Problem("ticket-closed")
    if ticket.status == "closed" and (assignee_staff_id is not UNSET or due_date is not UNSET):
        raise Problem("ticket-closed", "reopen the ticket before changing anything else")
    written: list[TicketNote] = []
    if status is not UNSET and status != ticket.status:
        written.append(_note(main, ticket, principal, "status", old=ticket.status, new=status,
                             at=now))
        ticket.status = status
        ticket.closed_at = now if status == "closed" else None
    if assignee_staff_id is not UNSET and assignee_staff_id != ticket.assignee_staff_id:
        _assignee(main, assignee_staff_id)
        written.append(_note(main, ticket, principal, "assignment",
                             old=ticket.assignee_staff_id, new=assignee_staff_id, at=now))
        ticket.assignee_staff_id = assignee_staff_id
    if due_date is not UNSET and due_date != ticket.due_date:
        written.append(_note(main, ticket, principal, "due",
                             old=ticket.due_date.isoformat() if ticket.due_date else None,
                             new=due_date.isoformat() if due_date else None, at=now))
        ticket.due_date = due_date
    if note:
        if written:
            written[0].text = note
        else:  # nothing changed: what was typed is kept as a plain note
            written.append(_note(main, ticket, principal, "note", text=note, at=now))
    if written:
        ticket.updated_at = now
    main.flush()
    return written


def add_note(main: Session, principal: Principal, ticket_id: int, text: str,
             now: datetime | None = None) -> TicketNote:
    """Add a note to an open or resolved ticket.

    Raises:
        Problem: ``ticket-not-found``, ``ticket-closed``, ``validation-error``.
    """
    now = now or utcnow()
    ticket = get(main, ticket_id, lock=True)
    if ticket.status == "closed":
        raise Problem("ticket-closed")
    note = _note(main, ticket, principal, "note",
                 text=_text(text, "text", NOTE_MAX, required=True), at=now)
    ticket.updated_at = now
    main.flush()
    return note


# --------------------------------------------------------------------------- reads


def history(main: Session, ticket_id: int) -> list[TicketNote]:
    """The ticket's notes and changes, oldest first."""
    return list(main.scalars(select(TicketNote).where(TicketNote.ticket_id == ticket_id)
                             .order_by(TicketNote.at, TicketNote.id)))


@dataclass(frozen=True)
class Filters:
    """What the list shows: ``status`` is ``open`` (any open one), ``all``, or a status."""

    status: str = "open"
    kind: str | None = None
    assignee_staff_id: int | None = None
    unassigned: bool = False
    store_id: int | None = None
    overdue: bool = False
    customer_id: str | None = None


def list_tickets(main: Session, filters: Filters, *, on: date | None = None,
                 limit: int = LIST_LIMIT) -> list:
    """Tickets matching ``filters``: open ones first, then by due date (overdue first),
    newest first; each row with its store code and assignee's name."""
    on = on or today(main)
    t = Ticket.__table__
    query = (select(t, Store.code.label("store_code"), Staff.username.label("assignee"))
             .outerjoin(Store, Store.id == t.c.store_id)
             .outerjoin(Staff, Staff.id == t.c.assignee_staff_id))
    if filters.status == "open":
        query = query.where(t.c.status.in_(OPEN_STATUSES))
    elif filters.status in STATUSES:
        query = query.where(t.c.status == filters.status)
    if filters.kind:
        query = query.where(t.c.kind == filters.kind)
    if filters.unassigned:
        query = query.where(t.c.assignee_staff_id.is_(None))
    elif filters.assignee_staff_id is not None:
        query = query.where(t.c.assignee_staff_id == filters.assignee_staff_id)
    if filters.store_id is not None:
        query = query.where(t.c.store_id == filters.store_id)
    if filters.customer_id:
        query = query.where(t.c.customer_id == filters.customer_id)
    if filters.overdue:
        query = query.where(t.c.status.in_(OPEN_STATUSES), t.c.due_date < on)
    still_open = case((t.c.status.in_(OPEN_STATUSES), 0), else_=1)
    no_due = case((t.c.due_date.is_(None), 1), else_=0)
    query = query.order_by(still_open, no_due, t.c.due_date, t.c.created_at.desc(),
                           t.c.id.desc()).limit(limit)
    return main.execute(query).all()


def customer_tickets(main: Session, customer_id: str) -> list:
    """Every ticket of one customer, open ones first."""
    return list_tickets(main, Filters(status="all", customer_id=customer_id), limit=500)


def open_count(main: Session, customer_id: str) -> int:
    return main.scalar(select(func.count()).select_from(Ticket).where(
        Ticket.customer_id == customer_id, Ticket.status.in_(OPEN_STATUSES)))


def as_dict(main: Session, ticket: Ticket, *, on: date | None = None,
            notes: list[TicketNote] | None = None) -> dict:
    """A ticket as the API answers it (with its history when ``notes`` are given)."""
    on = on or today(main)
    names = dict(main.execute(select(Staff.id, Staff.username)).all()) \
        if ticket.assignee_staff_id or notes else {}
    claimed = local_date(main, ticket.created_at)
    body = {
        "id": ticket.id,
        "customer_id": ticket.customer_id,
        "kind": ticket.kind,
        "status": ticket.status,
        "subject": ticket.subject,
        "purchase_line_id": ticket.purchase_line_id,
        "sku": ticket.sku,
        "product_name": ticket.product_name,
        "serial_number": ticket.serial_number,
        "purchase_date": _iso(ticket.purchase_date),
        "warranty_end": _iso(ticket.warranty_end),
        # as it stood on the day the claim was made
        "warranty": warranty_state(ticket.warranty_end, claimed)
        if ticket.purchase_line_id else None,
        "store": main.scalar(select(Store.code).where(Store.id == ticket.store_id))
        if ticket.store_id else None,
        "assignee": names.get(ticket.assignee_staff_id),
        "due_date": _iso(ticket.due_date),
        "overdue": is_overdue(ticket.status, ticket.due_date, on),
        "created_by": ticket.created_by,
        "created_at": _iso(ticket.created_at),
        "updated_at": _iso(ticket.updated_at),
        "closed_at": _iso(ticket.closed_at),
    }
    if notes is not None:
        body["notes"] = [note_dict(n, names) for n in notes]
    return body


def note_dict(note: TicketNote, names: dict[int, str] | None = None) -> dict:
    old, new = note.old_value, note.new_value
    if note.kind == "assignment" and names is not None:  # staff ids are shown by name
        old = names.get(int(old), old) if old else None
        new = names.get(int(new), new) if new else None
    return {"id": note.id, "kind": note.kind, "author": note.author, "at": _iso(note.at),
            "text": note.text, "old_value": old, "new_value": new}


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None
