"""What a card issue carries and returns."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator


class CardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    kind: Literal["qr", "nfc"]
    replace: bool = False
    reason: Literal["lost", "stolen", "damaged", "other"] | None = None
    uid: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,20}$",
                            description="NFC card UID in hex, when an NFC card was written")
    sun: bool = Field(default=False, description=(
        "An NTAG 424 DNA card provisioned for SUN (docs/CARDS-424.md): kind nfc with its "
        "7-byte uid; a till accepts it only through its SUN URL, never by token or UID"))

    @model_validator(mode="after")
    def _reason(self) -> CardIn:
        if self.replace and self.reason is None:
            raise ValueError("a replacement needs a reason: lost, stolen, damaged or other")
        if self.sun and (self.kind != "nfc" or self.uid is None or len(self.uid) != 14):
            raise ValueError("a SUN card is of kind nfc and needs its 7-byte uid (14 hex digits)")
        return self


class CardOut(BaseModel):
    card_id: str
    customer_id: str
    kind: str
    generation: int
    status: str
    token: str
    url: str
    qr_text: str = Field(description="The URL in upper case, for an alphanumeric-mode QR code")
    replaced: list[str]
    sun: bool = Field(default=False, description="An NTAG 424 DNA SUN card: its URL is the "
                                                  "SUN template written on it, not this one")


UidHex = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8,20}$")]


class ActivationIn(BaseModel):
    """The UID of the card a pending card's URL was written on and read back from."""

    model_config = ConfigDict(extra="forbid")

    uid: UidHex


class VoidIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["write-failed", "abandoned"] = "abandoned"


class VoidOut(BaseModel):
    card_id: str
    status: Literal["void"]
    reason: str | None


Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class BlockIn(BaseModel):
    """Why a card is blocked; the note is kept in the audit log (no personal data)."""

    model_config = ConfigDict(extra="forbid")

    reason: Literal["lost", "stolen", "damaged", "other"]
    note: Note | None = None


class UnblockIn(BaseModel):
    """Why a blocked card works again."""

    model_config = ConfigDict(extra="forbid")

    reason: Literal["found", "mistake", "other"]
    note: Note | None = None


class CardStateOut(BaseModel):
    card_id: str
    customer_id: str
    kind: str
    status: str = Field(description="active, or revoked while blocked")
    reason: str | None = Field(description="Why it is blocked (lost, stolen, damaged, other)")
    replaced_by: str | None


class CardLookupIn(BaseModel):
    """A card read at the desk: one of what a reader or scanner saw."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=400)] | None = None
    qr: Annotated[str, StringConstraints(strip_whitespace=True, max_length=400)] | None = None
    uid: UidHex | None = None

    @model_validator(mode="after")
    def _one(self) -> CardLookupIn:
        if sum(v is not None and v != "" for v in (self.url, self.qr, self.uid)) != 1:
            raise ValueError("give exactly one of url, qr or uid")
        return self


class CustomerLookupIn(BaseModel):
    """A customer code, or an exact email address or phone number."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None \
        = None
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)] | None = None
    phone: Annotated[str, StringConstraints(strip_whitespace=True,
                                            pattern=r"^\+?[0-9 ().-]{6,24}$")] | None = None

    @model_validator(mode="after")
    def _one(self) -> CustomerLookupIn:
        if sum(bool(v) for v in (self.customer_id, self.email, self.phone)) != 1:
            raise ValueError("give exactly one of customer_id, email or phone")
        return self


class CardSummary(BaseModel):
    card_id: str
    kind: str
    status: str
    reason: str | None
    issued_at: str | None = None


class CustomerFound(BaseModel):
    customer_id: str
    display_name: str
    tier: str
    points: int
    language: str
    cards: list[CardSummary]
    card: CardSummary | None = Field(default=None, description="The card that was read")


class CustomersFound(BaseModel):
    customers: list[CustomerFound]
