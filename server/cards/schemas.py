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

    @model_validator(mode="after")
    def _reason(self) -> CardIn:
        if self.replace and self.reason is None:
            raise ValueError("a replacement needs a reason: lost, stolen, damaged or other")
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
