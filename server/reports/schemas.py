"""What a till sends about its sales without a card."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.loyalty.schemas import Money, Text64


class AnonymousSalesIn(BaseModel):
    """A till's sales without a loyalty card on one day, for one seller (or none): totals so
    far that day, sent again as they grow; the last report of the day is the one kept."""

    model_config = ConfigDict(extra="forbid")

    day: dt.date = Field(description="The local date of the sales (the programme's time zone)")
    seller: Text64 | None = Field(default=None, description="As on purchases; none if unknown")
    baskets: int = Field(ge=0, le=1_000_000, description="Receipts without a card")
    total: Money = Field(description="Their amount, less that day's returns without a card")
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class AnonymousSalesOut(BaseModel):
    day: dt.date
    seller: str | None
    baskets: int
    total: str
    currency: str
    replaced: bool = Field(description="Whether an earlier report for this day was replaced")
