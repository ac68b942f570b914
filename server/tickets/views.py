"""Tickets under /api/v1: a customer's tickets, one ticket, its changes and notes."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.api.body import parse_body
from server.api.problems import Problem
from server.api.replies import created
from server.customers.models import Customer
from server.db import main_session
from server.devices.auth import require
from server.tickets import service
from server.tickets.schemas import NoteIn, TicketChangeIn, TicketIn
from server.tickets.service import TICKET_ROLES, UNSET

bp = Blueprint("tickets", __name__)


@bp.get("/customers/<customer_id>/tickets")
@require(*TICKET_ROLES)
def customer_tickets(customer_id: str):
    """Every ticket of the customer, open ones first."""
    main = main_session()
    if main.get(Customer, customer_id) is None:
        raise Problem("customer-not-found")
    today = service.today(main)
    tickets = [service.as_dict(main, service.get(main, row.id), on=today)
               for row in service.customer_tickets(main, customer_id)]
    return jsonify({"customer_id": customer_id, "tickets": tickets})


@bp.post("/customers/<customer_id>/tickets")
@require(*TICKET_ROLES)
def open_ticket(customer_id: str):
    """Open a ticket; a warranty claim is filled from the purchase line it names."""
    req = parse_body(TicketIn)
    main = main_session()
    ticket = service.open_ticket(
        main, g.principal, customer_id, kind=req.kind, subject=req.subject,
        purchase_line_id=req.purchase_line_id, serial_number=req.serial_number,
        due_date=req.due_date, assignee_staff_id=service.staff_id_of(main, req.assignee),
        note=req.note)
    return created(service.as_dict(main, ticket, notes=service.history(main, ticket.id)), True)


@bp.get("/tickets/<int:ticket_id>")
@require(*TICKET_ROLES)
def get_ticket(ticket_id: int):
    """One ticket with its history of notes and changes."""
    main = main_session()
    ticket = service.get(main, ticket_id)
    return jsonify(service.as_dict(main, ticket, notes=service.history(main, ticket_id)))


@bp.patch("/tickets/<int:ticket_id>")
@require(*TICKET_ROLES)
def change_ticket(ticket_id: int):
    """Change the status, assignee or due date (each change goes into the history)."""
    req = parse_body(TicketChangeIn)
    main = main_session()
    given = req.model_fields_set
    service.change(
        main, g.principal, ticket_id,
        status=req.status if "status" in given else UNSET,
        assignee_staff_id=service.staff_id_of(main, req.assignee) if "assignee" in given
        else UNSET,
        due_date=req.due_date if "due_date" in given else UNSET, note=req.note)
    ticket = service.get(main, ticket_id)
    return jsonify(service.as_dict(main, ticket, notes=service.history(main, ticket_id)))


@bp.post("/tickets/<int:ticket_id>/notes")
@require(*TICKET_ROLES)
def add_note(ticket_id: int):
    """Add a note to the ticket's history."""
    req = parse_body(NoteIn)
    main = main_session()
    note = service.add_note(main, g.principal, ticket_id, req.text)
    return created(service.note_dict(note), True)
