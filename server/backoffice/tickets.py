"""Tickets in the back office: the list, a ticket's page and its changes, a new ticket for a
customer (a warranty claim from one of their purchase lines), and the customer page's part.

Pages over ``server.tickets.service``: the forms below check what was typed, the service
applies the rules and writes each change into the ticket's history.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, DateField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice as Choice
from wtforms.validators import DataRequired, Length, Optional

from server import db
from server.api.problems import Problem
from server.backoffice.blueprint import (
    PROBLEMS,
    ROLE_NAMES,
    T,
    bp,
    customer_section,
    nav,
    principal,
)
from server.backoffice.security import roles_required
from server.customers.models import Customer
from server.db import main_session
from server.staff.models import Staff
from server.stores.models import Store
from server.tickets import service
from server.tickets.models import NOTE_MAX, OPEN_STATUSES, SERIAL_MAX, STATUSES, SUBJECT_MAX
from server.tickets.service import TICKET_ROLES

log = logging.getLogger(__name__)
TT = T + "tickets/"
nav("backoffice.tickets", _l("Tickets"), TICKET_ROLES,
    also=("backoffice.ticket", "backoffice.new_ticket"), order=20)
PROBLEMS.update({
    "ticket-not-found": _l("There is no ticket with this number."),
    "ticket-closed": _l("This ticket is closed: reopen it first."),
    "purchase-line-not-found": _l("This purchase line is not one of this customer's."),
})

KIND_NAMES = {"warranty": _l("Warranty claim"), "support": _l("Support issue"),
              "complaint": _l("Complaint")}
STATUS_NAMES = {"open": _l("open"), "in-progress": _l("in progress"), "waiting": _l("waiting"),
                "resolved": _l("resolved"), "closed": _l("closed")}
WARRANTY_NAMES = {"in": _l("in warranty"), "out": _l("out of warranty"),
                  "unknown": _l("warranty unknown")}
REQUIRED = _l("This is required.")


# --------------------------------------------------------------------------- forms


def _staff_choices(first: list[Choice]) -> list[Choice]:
    return first + [Choice(str(s.id), f"{s.username} ({ROLE_NAMES.get(s.role, s.role)})")
                    for s in service.assignable_staff(main_session())]


class FilterForm(FlaskForm):
    """A GET form: it changes nothing, and its values may sit in the URL."""

    class Meta:
        csrf = False

    status = SelectField(_l("Status"), default="open")
    kind = SelectField(_l("Kind"), default="")
    assignee = SelectField(_l("Assigned to"), default="")
    store = SelectField(_l("Store"), default="")
    overdue = BooleanField(_l("Overdue only"))

    def fill_choices(self) -> None:
        self.status.choices = [Choice("open", _l("open, in progress or waiting")),
                               Choice("all", _l("all"))] + \
            [Choice(s, STATUS_NAMES[s]) for s in STATUSES]
        self.kind.choices = [Choice("", _l("all"))] + \
            [Choice(k, v) for k, v in KIND_NAMES.items()]
        self.assignee.choices = _staff_choices([Choice("", _l("anyone")),
                                                Choice("me", _l("me")),
                                                Choice("none", _l("nobody yet"))])
        stores = main_session().execute(select(Store.id, Store.code).order_by(Store.code))
        self.store.choices = [Choice("", _l("all"))] + [Choice(str(s.id), s.code)
                                                        for s in stores]


class NewTicketForm(FlaskForm):
    kind = SelectField(_l("Kind"), choices=[Choice(k, v) for k, v in KIND_NAMES.items()])
    line = HiddenField()
    subject = StringField(_l("Subject"), validators=[
        DataRequired(REQUIRED), Length(max=SUBJECT_MAX, message=_l(
            "At most %(max)d characters."))],
        description=_l("A few words: what is wrong, what the customer asks."))
    serial_number = StringField(_l("Serial number"), validators=[
        Optional(), Length(max=SERIAL_MAX, message=_l("At most %(max)d characters."))])
    due_date = DateField(_l("Due date"), validators=[Optional()])
    assignee = SelectField(_l("Assigned to"), default="")
    note = TextAreaField(_l("First note"), validators=[
        Optional(), Length(max=NOTE_MAX, message=_l("At most %(max)d characters."))])


class StatusForm(FlaskForm):
    status = SelectField(_l("New status"))
    note = TextAreaField(_l("Why (optional)"), validators=[
        Optional(), Length(max=NOTE_MAX, message=_l("At most %(max)d characters."))])


class AssigneeForm(FlaskForm):
    assignee = SelectField(_l("Assigned to"))


class DueForm(FlaskForm):
    due_date = DateField(_l("Due date"), validators=[Optional()],
                         description=_l("Leave empty to remove the due date."))


class NoteForm(FlaskForm):
    text = TextAreaField(_l("Note"), validators=[
        DataRequired(REQUIRED), Length(max=NOTE_MAX, message=_l(
            "At most %(max)d characters."))])


def _status_choices(current: str) -> list[Choice]:
    allowed = OPEN_STATUSES if current == "closed" else STATUSES  # closed: reopen only
    return [Choice(s, STATUS_NAMES[s]) for s in allowed if s != current]


def _staff_id(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


# --------------------------------------------------------------------------- list


@bp.get("/tickets")
@roles_required(*TICKET_ROLES)
def tickets():
    """Tickets by status, kind, assignee, store, overdue: open ones first, overdue marked."""
    form = FilterForm(request.args)
    form.fill_choices()
    if not form.validate():  # a value from an old link: show the default list instead
        form = FilterForm(formdata=None)
        form.fill_choices()
    who = form.assignee.data or ""
    filters = service.Filters(
        status=form.status.data or "open", kind=form.kind.data or None,
        assignee_staff_id=current_user.id if who == "me" else _staff_id(who),
        unassigned=who == "none", store_id=_staff_id(form.store.data),
        overdue=bool(form.overdue.data))
    main = main_session()
    today = service.today(main)
    rows = service.list_tickets(main, filters, on=today)
    return render_template(TT + "list.html", form=form, rows=rows, today=today,
                           limit=service.LIST_LIMIT, **_names())


def _names() -> dict:
    return {"kind_names": KIND_NAMES, "status_names": STATUS_NAMES,
            "warranty_names": WARRANTY_NAMES, "open_statuses": OPEN_STATUSES}


# --------------------------------------------------------------------------- one ticket


def _ticket_page(ticket_id: int, **forms):
    main = main_session()
    ticket = service.get(main, ticket_id)
    today = service.today(main)
    staff = dict(main.execute(select(Staff.id, Staff.username)).all())
    status = forms.get("status") or StatusForm(formdata=None)
    status.status.choices = _status_choices(ticket.status)
    assignee = forms.get("assignee") or AssigneeForm(formdata=None)
    assignee.assignee.choices = _staff_choices([Choice("", _l("nobody"))])
    assignee.assignee.data = assignee.assignee.data or str(ticket.assignee_staff_id or "")
    due = forms.get("due") or DueForm(formdata=None, due_date=ticket.due_date)
    note = forms.get("note") or NoteForm(formdata=None)
    claimed = service.local_date(main, ticket.created_at)
    return render_template(
        TT + "ticket.html", ticket=ticket, notes=service.history(main, ticket_id),
        staff=staff, today=today, status_form=status, assignee_form=assignee, due_form=due,
        note_form=note, store=main.scalar(select(Store.code).where(Store.id == ticket.store_id)),
        warranty=service.warranty_state(ticket.warranty_end, claimed)
        if ticket.purchase_line_id else None,
        overdue=service.is_overdue(ticket.status, ticket.due_date, today),
        **_names()), 422 if any(f.errors for f in forms.values()) else 200


def _back(ticket_id: int):
    return redirect(url_for(".ticket", ticket_id=ticket_id), 303)


def _refused(ticket_id: int, exc: Problem):
    """A refusal on a ticket's page: nothing is kept, the page says why."""
    db.finish_request(success=False)
    log.info("back office ticket %s -> %s", ticket_id, exc.slug)
    if exc.slug == "ticket-not-found":
        raise exc
    flash(str(PROBLEMS.get(exc.slug, _l("This could not be done."))), "error")
    return _back(ticket_id)


@bp.get("/tickets/<int:ticket_id>")
@roles_required(*TICKET_ROLES)
def ticket(ticket_id: int):
    return _ticket_page(ticket_id)


@bp.post("/tickets/<int:ticket_id>/status")
@roles_required(*TICKET_ROLES)
def ticket_status(ticket_id: int):
    form = StatusForm()
    form.status.choices = [Choice(s, STATUS_NAMES[s]) for s in STATUSES]
    if not form.validate():
        return _ticket_page(ticket_id, status=form)
    try:
        written = service.change(main_session(), principal(), ticket_id,
                                 status=form.status.data, note=form.note.data)
    except Problem as exc:
        return _refused(ticket_id, exc)
    if written:
        flash(_("Status changed to %(status)s.", status=STATUS_NAMES[form.status.data]), "ok")
    return _back(ticket_id)


@bp.post("/tickets/<int:ticket_id>/assignee")
@roles_required(*TICKET_ROLES)
def ticket_assignee(ticket_id: int):
    form = AssigneeForm()
    form.assignee.choices = _staff_choices([Choice("", _l("nobody"))])
    if not form.validate():
        return _ticket_page(ticket_id, assignee=form)
    try:
        written = service.change(main_session(), principal(), ticket_id,
                                 assignee_staff_id=_staff_id(form.assignee.data))
    except Problem as exc:
        return _refused(ticket_id, exc)
    if written:
        flash(_("Assignment changed."), "ok")
    return _back(ticket_id)


@bp.post("/tickets/<int:ticket_id>/due")
@roles_required(*TICKET_ROLES)
def ticket_due(ticket_id: int):
    form = DueForm()
    if not form.validate():
        form.due_date.errors = [_("Give a date as YYYY-MM-DD.")]
        return _ticket_page(ticket_id, due=form)
    try:
        written = service.change(main_session(), principal(), ticket_id,
                                 due_date=form.due_date.data)
    except Problem as exc:
        return _refused(ticket_id, exc)
    if written:
        flash(_("Due date changed."), "ok")
    return _back(ticket_id)


@bp.post("/tickets/<int:ticket_id>/notes")
@roles_required(*TICKET_ROLES)
def ticket_note(ticket_id: int):
    form = NoteForm()
    if not form.validate():
        return _ticket_page(ticket_id, note=form)
    try:
        service.add_note(main_session(), principal(), ticket_id, form.text.data)
    except Problem as exc:
        return _refused(ticket_id, exc)
    flash(_("Note added."), "ok")
    return _back(ticket_id)


# --------------------------------------------------------------------------- new ticket


def _line_param(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise Problem("purchase-line-not-found")
    return int(value)


def _new_page(customer_id: str, form: NewTicketForm, line_id: int | None, status: int = 200):
    main = main_session()
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    if customer.erased_at is not None:
        raise Problem("customer-erased")
    line = service.line_details(main, customer_id, line_id) if line_id else None
    form.assignee.choices = _staff_choices([Choice("", _l("nobody yet"))])
    form.line.data = str(line_id) if line_id else ""
    today = service.today(main)
    lines = [] if line else service.customer_lines(main, customer_id)
    return render_template(TT + "new.html", form=form, customer_id=customer_id, line=line,
                           lines=lines, today=today,
                           line_warranty=service.warranty_state(line.warranty_end, today)
                           if line else None,
                           **_names()), status


@bp.get("/customers/<customer_id>/tickets/new")
@roles_required(*TICKET_ROLES)
def new_ticket(customer_id: str):
    """A new ticket; ``?line=<purchase line id>`` makes it a warranty claim for that line."""
    line_id = _line_param(request.args.get("line"))
    form = NewTicketForm(formdata=None, kind="warranty" if line_id else "support")
    return _new_page(customer_id, form, line_id)


@bp.post("/customers/<customer_id>/tickets/new")
@roles_required(*TICKET_ROLES)
def create_ticket(customer_id: str):
    form = NewTicketForm()
    line_id = _line_param(form.line.data or request.args.get("line"))
    form.assignee.choices = _staff_choices([Choice("", _l("nobody yet"))])
    valid = form.validate()
    if form.due_date.errors:
        form.due_date.errors = [_("Give a date as YYYY-MM-DD.")]
    if form.kind.data == "warranty" and line_id is None:
        form.kind.errors = [_("A warranty claim is opened from a purchase line: choose the "
                              "product below.")]
        valid = False
    if not valid:
        return _new_page(customer_id, form, line_id, 422)
    ticket = service.open_ticket(
        main_session(), principal(), customer_id, kind=form.kind.data,
        subject=form.subject.data, purchase_line_id=line_id,
        serial_number=form.serial_number.data, due_date=form.due_date.data,
        assignee_staff_id=_staff_id(form.assignee.data), note=form.note.data)
    flash(_("Ticket %(id)s opened.", id=ticket.id), "ok")
    return redirect(url_for(".ticket", ticket_id=ticket.id), 303)


# --------------------------------------------------------------------------- customer page


def _customer_tickets(main, _vault, _principal, customer_id: str) -> dict:
    """The customer page's part: their tickets, open ones first."""
    customer = main.get(Customer, customer_id)
    return {"rows": service.customer_tickets(main, customer_id), "today": service.today(main),
            "erased": customer is not None and customer.erased_at is not None,
            **_names()}


customer_section("tickets", TT + "_customer.html", TICKET_ROLES, _customer_tickets)

