"""What the privacy endpoints take."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from server.enrolment.schemas import Name, Phone

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)]


class ConsentChangeIn(BaseModel):
    """Decisions a customer makes at the desk (or in writing), with the text they were shown."""

    model_config = ConfigDict(extra="forbid")

    consents: dict[Literal["terms", "marketing_email", "marketing_sms", "profiling"], bool] = \
        Field(min_length=1)
    consent_version: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    language: Literal["fr", "lt", "en"] | None = None
    channel: Literal["desk", "backoffice", "phone", "letter", "email"] = "desk"


class SearchIn(BaseModel):
    """Exact lookup by email or phone (a POST, so the address never appears in a URL)."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)] | None = None
    phone: Phone | None = None
    country: Literal["FR", "LT"] | None = Field(
        default=None, description="How a phone number without +33/+370 is read; default: the "
                                  "caller's store country")

    @model_validator(mode="after")
    def _one(self) -> SearchIn:
        if not self.email and not self.phone:
            raise ValueError("give an email address or a phone number")
        return self


class RectifyIn(BaseModel):
    """Corrections to personal data; a field sent as null is cleared (except the names)."""

    model_config = ConfigDict(extra="forbid")

    first_name: Name | None = None
    last_name: Name | None = None
    email: EmailStr | None = Field(default=None, max_length=254)
    phone: Phone | None = None
    birth_date: date | None = None
    gender: Literal["female", "male", "other"] | None = None
    address: Text | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                             max_length=120)] = Field(
        description="Why (kept in the audit log: never put personal data here)")

    @model_validator(mode="after")
    def _names(self) -> RectifyIn:
        for name in ("first_name", "last_name"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be cleared")
        if len(self.model_fields_set - {"reason"}) == 0:
            raise ValueError("nothing to correct")
        return self


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["customer-request", "retention", "duplicate", "other"] = "customer-request"
    confirm: str = Field(description="The customer id again, so that a slip cannot erase "
                                     "the wrong customer")
