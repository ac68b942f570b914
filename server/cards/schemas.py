"""What a card issue carries and returns."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
