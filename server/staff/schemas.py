"""What opening staff mode on a kiosk carries and returns."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from server.staff.kiosk import PIN_PATTERN


class KioskSessionIn(BaseModel):
    """A staff card's UID, or a staff name and PIN."""

    model_config = ConfigDict(extra="forbid")

    uid: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8,20}$")] | None = None
    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                               max_length=64)] | None = None
    pin: Annotated[str, StringConstraints(pattern=PIN_PATTERN)] | None = None

    @model_validator(mode="after")
    def _one(self) -> KioskSessionIn:
        if bool(self.uid) == bool(self.username and self.pin):
            raise ValueError("give either uid, or username and pin")
        return self


class StaffOut(BaseModel):
    username: str
    role: str


class KioskSessionOut(BaseModel):
    token: str
    ttl: int
    expires_at: str
    staff: StaffOut
