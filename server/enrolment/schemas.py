"""What an enrolment carries (DESIGN.md field names)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80),
                 AfterValidator(_no_control)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ().-]{6,24}$")]


class Consents(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terms: bool
    marketing_email: bool = False
    marketing_sms: bool = False
    profiling: bool = False


class EnrolmentIn(BaseModel):
    """A new customer, from the kiosk."""

    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    first_name: Name
    last_name: Name
    email: EmailStr | None = Field(default=None, max_length=254)
    phone: Phone | None = None
    language: Literal["fr", "lt", "en"]
    consents: Consents
    consent_version: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="The version of the consent texts the customer was shown "
                    "(GET /api/v1/consent-texts)")
    pin: Annotated[str, StringConstraints(pattern=r"^[0-9]{4,6}$")] | None = Field(
        default=None, description="Optional 4-6 digit PIN that confirms large redemptions")
    birth_date: date | None = None
    gender: Literal["female", "male", "other"] | None = None
    address: Annotated[str, StringConstraints(strip_whitespace=True, max_length=300),
                       AfterValidator(_no_control)] | None = None
    survey: dict[Annotated[str, StringConstraints(max_length=64)],
                 Annotated[str, StringConstraints(max_length=200)] | int | bool] | None = Field(
        default=None, max_length=30)

    @model_validator(mode="after")
    def _contact(self) -> EnrolmentIn:
        if not self.email and not self.phone:
            raise ValueError("give an email address or a phone number")
        if self.birth_date and not date(1900, 1, 1) <= self.birth_date <= date.today():
            raise ValueError("birth_date is not plausible")
        return self


class EnrolmentOut(BaseModel):
    customer_id: str
    display_name: str
    language: str
    tier: str
    points: int
    welcome_points: int = Field(default=0, description="Points the programme gave on joining "
                                                       "(included in points)")
    consents: dict[str, bool]
