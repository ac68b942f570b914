"""What a tap carries and what the till gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator


class TapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)] | None = None
    qr: Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)] | None = None
    uid: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,20}$")
    reader: Annotated[str, StringConstraints(max_length=120)] | None = None
    tapped_at: datetime | None = None

    @model_validator(mode="after")
    def _something(self) -> TapIn:
        if not (self.url or self.qr or self.uid):
            raise ValueError("a tap carries a url, a qr text or a uid")
        return self


class CardSummary(BaseModel):
    card_id: str
    kind: str
    status: str
    generation: int


class CustomerRecord(BaseModel):
    """What the cashier sees after a tap."""

    customer_id: str
    display_name: str = Field(description="First name and initial of the last name")
    language: str
    tier: str
    tier_name: str = Field(description="the tier's name in the customer's language")
    points: int
    card: CardSummary
    tier_progress: dict = Field(
        description="qualifying_points, next_tier, next_tier_name, points_to_next_tier")
    points_expiring: dict = Field(description="points expiring within 30 days, and by when")
    points_owed: int = Field(description="points a return took back after they were spent")
    rewards_available: list[dict] = Field(description="rewards the balance and tier allow here")
    recent_purchases: list[dict]
    visits_by_store: list[dict]
    open_tickets: list[dict]
    flags: list[str] = Field(description="e.g. weak (UID-only card), uid-mismatch")
    visit_id: int
    replayed: bool


# the most taps in one POST /taps/batch (a lower tap rate limit lowers it: server/taps/batch.py)
BATCH_MAX = 200


class TapBatchIn(BaseModel):
    """Taps from a till's offline queue, oldest first."""

    model_config = ConfigDict(extra="forbid")

    taps: list[TapIn] = Field(min_length=1, max_length=BATCH_MAX)


class TapOutcome(BaseModel):
    """What became of one tap of a batch."""

    event_id: str
    status: Literal["recorded", "replayed", "problem"] = Field(
        description="recorded now; replayed: recorded by an earlier request (nothing written); "
                    "problem: refused as POST /taps would refuse it")
    visit_id: int | None = None
    card_id: str | None = None
    flags: list[str] = Field(default_factory=list)
    problem: dict | None = Field(default=None, description="the problem document POST /taps "
                                 "would answer (type, title, status, detail)")


class TapBatchOut(BaseModel):
    results: list[TapOutcome] = Field(description="one per tap, in the order sent")
    recorded: int
    replayed: int
    problems: int
