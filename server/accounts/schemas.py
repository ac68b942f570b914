"""What a payment on account carries, and what opening an account takes."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from server.loyalty.schemas import Money

METHODS = ("cash", "card", "transfer", "cheque")


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    amount: Annotated[Money, Field(gt=0)]
    paid_at: AwareDatetime | None = Field(default=None, description="Now if omitted")
    method: Literal[METHODS] | None = None
    reference: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None \
        = Field(default=None, description="A cheque number or a transfer's reference")


class PaymentOut(BaseModel):
    payment_id: int
    customer_id: str
    amount: str
    paid_at: str
    balance: str = Field(description="What the customer owes now, after this payment")


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credit_limit: Money
    terms_days: int = Field(ge=0, le=365)
