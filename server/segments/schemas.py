"""A segment's definition, validated: every filter optional; a filter's values are OR-ed,
the filters AND-ed. An empty definition is every customer (not erased)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SEXES = ("female", "male", "other")
AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
SEASONS = {"winter": (12, 1, 2), "spring": (3, 4, 5), "summer": (6, 7, 8),
           "autumn": (9, 10, 11)}
# the purposes a segment may require (terms is every member's: not a filter)
CONSENT_PURPOSES = ("marketing_email", "marketing_sms", "profiling")

Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class Definition(BaseModel):
    """Who is in a segment.

    ``sexes`` and ``age_bands`` (the coarse profile) may only be used with the customer's
    ``profiling`` consent: a definition that filters on them requires it implicitly.
    Purchase filters (``months``, ``seasons``, ``weekdays`` in the programme's local time,
    ``categories``, ``within_months``) select customers with at least one purchase line
    matching all of them. ``bands`` and ``score_min``/``score_max`` are the value score.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sexes: tuple[Literal["female", "male", "other"], ...] = ()
    age_bands: tuple[Literal["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
                     ...] = ()
    home_stores: tuple[Word, ...] = ()  # store codes
    regions: tuple[Word, ...] = ()  # the home store's region
    months: tuple[Annotated[int, Field(ge=1, le=12)], ...] = ()
    seasons: tuple[Literal["winter", "spring", "summer", "autumn"], ...] = ()
    weekdays: tuple[Annotated[int, Field(ge=0, le=6)], ...] = ()  # 0 = Monday
    categories: tuple[Word, ...] = ()
    within_months: Annotated[int, Field(ge=1, le=120)] | None = None  # purchases: how recent
    tiers: tuple[Word, ...] = ()
    bands: tuple[Literal["premium", "high", "medium", "low", "inactive"], ...] = ()
    score_min: Annotated[int, Field(ge=0, le=100)] | None = None
    score_max: Annotated[int, Field(ge=0, le=100)] | None = None
    consents: tuple[Literal["marketing_email", "marketing_sms", "profiling"], ...] = ()

    @model_validator(mode="after")
    def _score_range(self):
        if (self.score_min is not None and self.score_max is not None
                and self.score_min > self.score_max):
            raise ValueError("score_min must not be above score_max")
        return self

    @property
    def uses_profile(self) -> bool:
        """Whether it filters on the coarse profile (so needs the profiling consent)."""
        return bool(self.sexes or self.age_bands)

    @property
    def required_consents(self) -> tuple[str, ...]:
        """The purposes a member must have granted, the implicit ``profiling`` included."""
        needed = set(self.consents) | ({"profiling"} if self.uses_profile else set())
        return tuple(p for p in CONSENT_PURPOSES if p in needed)

    @property
    def uses_purchases(self) -> bool:
        return bool(self.months or self.seasons or self.weekdays or self.categories
                    or self.within_months)

    @property
    def uses_value(self) -> bool:
        return bool(self.bands) or self.score_min is not None or self.score_max is not None
