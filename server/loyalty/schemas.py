"""What purchases, refunds, redemptions and adjustments carry."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from server.api.body import RowId

Text64 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("10000000"), decimal_places=2)]
Quantity = Annotated[Decimal, Field(gt=0, le=Decimal("100000"), decimal_places=3)]


class CustomerRef(BaseModel):
    """The customer by card (token or card URL) or by customer id: exactly one."""

    card: Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)] | None = None
    customer_id: Annotated[str, StringConstraints(pattern=r"^C-[0-9A-Z]{4}-[0-9A-Z]{4}$")] | None \
        = None

    @model_validator(mode="after")
    def _one(self):
        if bool(self.card) == bool(self.customer_id):
            raise ValueError("give the customer's card or customer_id (one of them)")
        return self


class PurchaseLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int | None = Field(default=None, ge=1, le=10000)
    sku: Text64
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    category: Text64 | None = None
    quantity: Quantity
    unit_price: Money
    discount: Money = Decimal(0)
    redemption_id: RowId | None = Field(default=None,
                                        description="The reward that paid the line")

    @model_validator(mode="after")
    def _discount(self):
        if self.discount > self.quantity * self.unit_price:
            raise ValueError("the discount is larger than the line")
        return self


class PurchaseIn(CustomerRef):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    store: Text64 | None = Field(default=None, description="Store code; the till's by default")
    till: Text64 | None = None
    seller: Text64 | None = None
    receipt: Text64 | None = None
    paid_at: AwareDatetime
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    total: Money
    lines: list[PurchaseLineIn] = Field(min_length=1, max_length=500)
    on_account: bool = Field(default=False, description="Paid on the customer's account "
                             "(an open account with enough credit), to be paid later")

    @model_validator(mode="after")
    def _line_numbers(self):
        numbers = [line.line_no or i + 1 for i, line in enumerate(self.lines)]
        if len(set(numbers)) != len(numbers):
            raise ValueError("line numbers must be unique")
        for line, number in zip(self.lines, numbers, strict=True):
            line.line_no = number
        return self


class RefundLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1, le=10000)
    quantity: Quantity


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    purchase_id: RowId | None = None
    purchase_event_id: UUID | None = None
    lines: list[RefundLineIn] | None = Field(
        default=None, max_length=500, description="Omitted: everything not returned yet")

    @model_validator(mode="after")
    def _one(self):
        if (self.purchase_id is None) == (self.purchase_event_id is None):
            raise ValueError("give purchase_id or purchase_event_id (one of them)")
        return self


class RedemptionIn(CustomerRef):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    reward: Text64
    quantity: int = Field(default=1, ge=1, le=100)
    pin: Annotated[str, StringConstraints(pattern=r"^[0-9]{4,6}$")] | None = Field(
        default=None, description="The customer's PIN, for the step-up of a large redemption")


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    points: int = Field(ge=-1_000_000, le=1_000_000)
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=300)]

    @model_validator(mode="after")
    def _non_zero(self):
        if self.points == 0:
            raise ValueError("an adjustment moves points")
        return self


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def milli(quantity: Decimal) -> int:
    return int((quantity * 1000).to_integral_value())



class LinePoints(BaseModel):
    line_no: int
    points: int
    reasons: list[str] = Field(description="Why, in words: rules, promotions, exclusions")


class PurchaseOut(BaseModel):
    purchase_id: int
    customer_id: str
    points_earned: int
    lines: list[LinePoints]
    balance: int = Field(description="The balance now (on a replay too)")
    tier: str
    tier_name: str = Field(description="the tier's name in the customer's language")
    tier_changed: bool


class RefundOut(BaseModel):
    refund_id: int
    purchase_id: int
    customer_id: str
    amount: str
    points_reversed: int = Field(description="What the returned lines had earned")
    points_restored: int = Field(description="Rewards given back with the lines they paid")
    points_owed: int = Field(description="Reversed points already spent: paid from the next "
                                         "earnings; tell the customer")
    balance: int


class RedemptionOut(BaseModel):
    redemption_id: int
    customer_id: str
    reward: dict
    quantity: int
    points: int
    status: str
    balance: int


class AdjustmentOut(BaseModel):
    entry_id: int
    customer_id: str
    points: int
    reason: str
    balance: int
