"""What the tickets API takes and answers (the same models document it in OpenAPI)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from server.api.body import RowId
from server.tickets.models import NOTE_MAX, SERIAL_MAX, SUBJECT_MAX

Kind = Literal["warranty", "support", "complaint"]
Status = Literal["open", "in-progress", "waiting", "resolved", "closed"]
Username = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
NoteText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=NOTE_MAX)]


class TicketIn(BaseModel):
    """A new ticket; a warranty claim names the customer's purchase line."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    subject: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                              max_length=SUBJECT_MAX)]
    purchase_line_id: RowId | None = Field(default=None, description=(
        "Required for a warranty claim: the product, purchase date and warranty end are "
        "taken from it and the products catalogue"))
    serial_number: Annotated[str, StringConstraints(strip_whitespace=True,
                                                    max_length=SERIAL_MAX)] | None = None
    due_date: date | None = None
    assignee: Username | None = Field(default=None, description="a staff member's user name")
    note: NoteText | None = Field(default=None, description="the first note of the history")

    @model_validator(mode="after")
    def _warranty_names_a_line(self) -> TicketIn:
        if self.kind == "warranty" and self.purchase_line_id is None:
            raise ValueError("a warranty claim names the purchase line (purchase_line_id)")
        return self


class TicketChangeIn(BaseModel):
    """Fields to change; ``null`` clears the assignee or the due date. Each change is kept
    in the ticket's history, with ``note`` saying why."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    assignee: Username | None = None
    due_date: date | None = None
    note: NoteText | None = None

    @model_validator(mode="after")
    def _something(self) -> TicketChangeIn:
        if not self.model_fields_set:
            raise ValueError("name at least one of status, assignee, due_date, note")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        return self


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=NOTE_MAX)]


class NoteOut(BaseModel):
    id: int
    kind: Literal["note", "status", "assignment", "due"]
    author: str = Field(description="who wrote it, e.g. staff:3")
    at: str
    text: str
    old_value: str | None = Field(description="a change's previous status, assignee or date")
    new_value: str | None


class TicketOut(BaseModel):
    id: int
    customer_id: str
    kind: Kind
    status: Status
    subject: str
    purchase_line_id: int | None
    sku: str | None
    product_name: str | None
    serial_number: str | None
    purchase_date: date | None = Field(description="local date of the purchase")
    warranty_end: date | None = Field(description="purchase date + the product's warranty "
                                                  "months; null when the product is unknown")
    warranty: Literal["in", "out", "unknown"] | None = Field(
        description="on the day of the claim; said, never refused: a manager decides")
    store: str | None
    assignee: str | None
    due_date: date | None
    overdue: bool
    created_by: str
    created_at: str
    updated_at: str
    closed_at: str | None
    notes: list[NoteOut] | None = Field(default=None,
                                        description="the history, on a single ticket")


class TicketsOut(BaseModel):
    customer_id: str
    tickets: list[TicketOut]
