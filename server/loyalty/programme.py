"""The loyalty programme's rules engine: pure functions, no database, no Flask.

A manager writes the programme in TOML (or sends the same structure as a JSON object);
``load_programme`` parses it into frozen pydantic models, with every problem reported with its
path (``promotions[1].hours: ...``). The functions below apply it: what each line of a purchase
earns (``earn``), what a tap earns (``visit_points``), which tier a customer holds
(``tier_for``, ``tier_change``, ``window_start``), when points expire (``expiry_date``) and
which rewards a customer may take (``reward_allowed``, ``needs_step_up``).

Example, the programme a fresh install starts with (``default_programme.toml``)::

    currency = "EUR"
    timezone = "Europe/Paris"      # local time for promotions' weekdays and hours

    [earning]
    points_per_unit = 1            # points per 1.00 of currency, on the net amount of a line

    [visit]
    points = 5                     # per counted visit (a tap)
    min_gap_hours = 20             # taps closer than this to the last counted visit count nothing
    stores = []                    # empty = every store

    [enrolment]
    welcome_points = 50            # given once, when the customer joins; 0 = none

    [[multipliers]]                # per product, category or sku; several may apply: they multiply
    name = "Shoes count double"
    categories = ["shoes"]
    factor = 2

    [[promotions]]
    name = "Weekend x3 in Paris"
    factor = 3
    starts = 2026-12-01            # dates inclusive, local
    ends = 2026-12-31
    weekdays = [5, 6]              # 0 = Monday
    hours = [10, 18]               # from 10:00 to 18:00 local, end exclusive
    stores = ["PARIS-01"]
    categories = []                # empty = every line not excluded
    skus = []

    [[exclusions]]                 # these lines never earn
    name = "Gift cards and tobacco"
    categories = ["gift-cards", "tobacco"]
    skus = []

    [[tiers]]                      # on points EARNED over a rolling window, never on the balance;
                                   # names: what people read, per language (else the code)
    code = "member"
    threshold = 0
    multiplier = 1
    names = { fr = "Membre", lt = "Narys", en = "Member" }
    [[tiers]]
    code = "silver"
    threshold = 500
    multiplier = 1.25
    names = { fr = "Argent", lt = "Sidabrinis", en = "Silver" }
    [[tiers]]
    code = "gold"
    threshold = 2000
    multiplier = 1.5
    names = { fr = "Or", lt = "Auksinis", en = "Gold" }

    [tier_rules]
    window_months = 12             # qualifying points are those earned in the last 12 months
    review_months = 12             # downgrades happen only at the review date

    [[rewards]]
    code = "VOUCHER-5"
    name = "5 € off"
    kind = "amount"                # amount | percent | product
    value = 5                      # currency for amount, percent for percent
    cost = 500                     # points
    [[rewards]]
    code = "COFFEE"
    name = "Free coffee"
    kind = "product"
    sku = "COFFEE-01"
    cost = 150
    [[rewards]]
    code = "GOLD-10"
    name = "10 % off, gold members"
    kind = "percent"
    value = 10
    cost = 800
    tiers = ["gold"]               # empty = every tier
    stores = []                    # empty = every store

    [redemption]
    step_up_above = 1000           # redeeming more than this in one go needs a PIN or staff check

    [expiry]
    months = 24                    # points expire this long after they were earned; 0 = never

    [value]                        # the customer value score (back office: Value, segments)
    window_months = 12             # purchases, spending and tickets of the last 12 months count
    premium_percent = 5            # the best 5 % of active customers are "premium"
    high_from = 60                 # score bands: high from 60, medium from 30, low below
    medium_from = 30
    [value.weights]                # each component is scored 0-100 among active customers
    recency = 25                   # days since the last purchase
    frequency = 25                 # purchases in the window
    monetary = 35                  # net spending in the window (returns deducted)
    punctuality = 10               # account customers paying on time; ignored for others
    support = 5                    # tickets per purchase (fewer is better)

Rules worth knowing (each is where shop systems go wrong):

- A line earns on its net amount (quantity x unit price - discount), but a line with any
  discount, a line paid with a reward, and an excluded line (by sku or category) earn nothing.
- Factors multiply: the matching multipliers (limited to their ``stores`` if given), the
  promotions active at the payment time *in the programme's timezone* (dates inclusive,
  weekdays with 0 = Monday, hours ``[from, to)``), in their ``stores`` only (a promotion must
  say ``stores``: ``[]`` means every store, on purpose), and the customer's tier multiplier.
  Points are floored per line, so a return can reverse exactly what each line earned.
- Tiers are decided on points *earned* over a rolling window (``window_start``), never on the
  balance: the API takes qualifying points only. A tier goes up at once; it goes down only at
  the review date (``tier_change``).
- Every datetime given to these functions must be timezone-aware; calendar-month arithmetic
  (windows, reviews, expiry) is done on the programme's local calendar and the result carries
  the tzinfo of the datetime given.
"""

from __future__ import annotations

import calendar
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, localcontext
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_PROGRAMME_FILE", "Earning", "Exclusion", "Expiry", "LineEarning", "LineIn",
    "Multiplier", "Programme", "ProgrammeError", "Promotion", "Redemption", "Reward",
    "RewardNotAllowedError", "Tier", "TierRules", "UnknownCodeError", "ValueRules",
    "ValueWeights", "Visit",
    "default_programme", "earn", "expiry_date", "load_programme", "needs_step_up",
    "reward_allowed", "tier_change", "tier_for", "visit_points", "window_start",
]

DEFAULT_PROGRAMME_FILE = "default_programme.toml"
"""The programme a fresh install starts with, shipped next to this module."""

# Decimal arithmetic for points: wide enough that no product of amounts and factors is rounded
# before the floor (a rounding up to the next integer would give a point that was not earned).
_PRECISION = 120


# -- errors ----------------------------------------------------------------------------------

class ProgrammeError(ValueError):
    """An invalid programme document, an unknown code, or a rule that refuses a request.

    Attributes:
        problems: ``(path, message)`` pairs, one per problem found in a document, e.g.
            ``("promotions[1].hours", "from must be before to ...")``; empty for a single
            refusal, whose message is the exception's text.
    """

    def __init__(self, message: str, problems: Iterable[tuple[str, str]] = ()) -> None:
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        if self.problems:
            listed = "\n".join(f"  {path}: {text}" if path else f"  {text}"
                               for path, text in self.problems)
            message = f"{message}:\n{listed}"
        super().__init__(message)


class UnknownCodeError(ProgrammeError):
    """No tier or reward with this code in the programme."""


class RewardNotAllowedError(ProgrammeError):
    """The reward exists but not for this customer's tier or in this store.

    Attributes:
        reason: ``"tier"`` or ``"store"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


# -- field types -----------------------------------------------------------------------------

def _text(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("must be a non-empty text without leading or trailing spaces")
    return value


def _plain_date(value: Any) -> Any:
    if isinstance(value, bool | int | float | Decimal):
        raise ValueError("must be a date such as 2026-12-01")
    return value


def _no_duplicates(values: tuple, what: str) -> tuple:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


StrictInt = Annotated[int, Strict()]
Text = Annotated[str, Field(max_length=200), AfterValidator(_text)]
Code = Annotated[str, Field(max_length=64), AfterValidator(_text)]
Codes = Annotated[tuple[Code, ...], AfterValidator(lambda v: _no_duplicates(v, "code"))]
Factor = Annotated[Decimal, Field(gt=0)]
LocalDate = Annotated[date, BeforeValidator(_plain_date)]
Weekday = Annotated[StrictInt, Field(ge=0, le=6)]
Hour = Annotated[StrictInt, Field(ge=0, le=24)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _matches(categories: tuple[str, ...], skus: tuple[str, ...], line: LineIn) -> bool:
    return line.sku in skus or (line.category is not None and line.category in categories)


class _Targeted(_Model):
    """A rule that names lines by category or sku (at least one of them)."""

    @model_validator(mode="after")
    def _names_lines(self):
        if not self.categories and not self.skus:
            raise ValueError("give categories or skus (or both): the lines this rule is for")
        return self

    def matches(self, line: LineIn) -> bool:
        """Whether the line's sku or category is named by this rule."""
        return _matches(self.categories, self.skus, line)


# -- the document ----------------------------------------------------------------------------

class Earning(_Model):
    """``points_per_unit``: points per 1.00 of currency of a line's net amount (>= 0)."""

    points_per_unit: Annotated[Decimal, Field(ge=0)]


class Visit(_Model):
    """Points for a counted visit (a tap); taps within ``min_gap_hours`` count nothing."""

    points: Annotated[StrictInt, Field(ge=0)]
    min_gap_hours: Annotated[Decimal, Field(ge=0)]
    stores: Codes = ()


class Enrolment(_Model):
    """Points given once, when a customer joins (shown on the kiosk's last screen)."""

    welcome_points: Annotated[StrictInt, Field(ge=0, le=100_000)] = 0


class Multiplier(_Targeted):
    """A factor on the lines of some categories or skus, in ``stores`` only if given."""

    name: Text
    factor: Factor
    categories: Codes = ()
    skus: Codes = ()
    stores: Codes = ()


class Promotion(_Model):
    """A factor active between two local dates (inclusive), on some weekdays and hours.

    ``stores`` is required: ``[]`` says on purpose that every store runs it. Empty
    ``categories`` and ``skus`` mean every line that is not excluded; empty ``weekdays`` every
    day; no ``hours`` all day; no ``starts``/``ends`` no limit on that side.
    """

    name: Text
    factor: Factor
    starts: LocalDate | None = None
    ends: LocalDate | None = None
    weekdays: tuple[Weekday, ...] = ()
    hours: tuple[Hour, Hour] | None = None
    stores: Codes
    categories: Codes = ()
    skus: Codes = ()

    @field_validator("ends")
    @classmethod
    def _ends_after_starts(cls, ends: date | None, info: ValidationInfo) -> date | None:
        starts = info.data.get("starts")
        if ends is not None and starts is not None and ends < starts:
            raise ValueError(f"{ends} is before starts ({starts})")
        return ends

    @field_validator("weekdays")
    @classmethod
    def _unique_days(cls, weekdays: tuple[int, ...]) -> tuple[int, ...]:
        return _no_duplicates(weekdays, "weekday")

    @field_validator("hours")
    @classmethod
    def _hours_order(cls, hours: tuple[int, int] | None) -> tuple[int, int] | None:
        if hours is not None and hours[0] >= hours[1]:
            raise ValueError(f"from ({hours[0]}) must be before to ({hours[1]}): "
                             "[from, to] in local hours 0..24, to exclusive")
        return hours

    def active(self, store: str, local: datetime) -> bool:
        """Whether the promotion runs in this store at this local (programme timezone) time."""
        if self.stores and store not in self.stores:
            return False
        day = local.date()
        if (self.starts is not None and day < self.starts) or (
                self.ends is not None and day > self.ends):
            return False
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        # whole hours: [from:00, to:00) is exactly from <= hour < to
        return self.hours is None or self.hours[0] <= local.hour < self.hours[1]

    def applies_to(self, line: LineIn) -> bool:
        """Whether the line is one the promotion is for (every line if none named)."""
        if not self.categories and not self.skus:
            return True
        return _matches(self.categories, self.skus, line)


class Exclusion(_Targeted):
    """Lines (by category or sku) that never earn."""

    name: Text
    categories: Codes = ()
    skus: Codes = ()


class Tier(_Model):
    """A tier, held from ``threshold`` qualifying points; ``multiplier`` applies to earning.

    ``names`` are what people read, per language (``fr``, ``lt``, ``en``); the code stands in
    for a language left out.
    """

    code: Code
    threshold: Annotated[StrictInt, Field(ge=0)]
    multiplier: Factor = Decimal(1)
    names: dict[Literal["fr", "lt", "en"], Text] = {}

    def name(self, language: str | None) -> str:
        """The tier's name in ``language``, else in English, else its code."""
        return self.names.get(language) or self.names.get("en") or self.code


class TierRules(_Model):
    """Qualifying window and review period, in calendar months."""

    window_months: Annotated[StrictInt, Field(ge=1, le=120)]
    review_months: Annotated[StrictInt, Field(ge=1, le=120)]


class Reward(_Model):
    """A reward of the catalogue.

    ``kind`` ``amount`` (``value`` in currency, > 0, at most 2 decimals), ``percent``
    (0 < ``value`` <= 100) or ``product`` (``sku`` of the product given); ``cost`` in points;
    ``tiers`` and ``stores`` restrict it (empty = every tier, every store).
    """

    code: Code
    name: Text
    kind: Literal["amount", "percent", "product"]
    value: Decimal | None = Field(default=None, validate_default=True)
    sku: Code | None = Field(default=None, validate_default=True)
    cost: Annotated[StrictInt, Field(gt=0)]
    tiers: Codes = ()
    stores: Codes = ()

    @field_validator("value")
    @classmethod
    def _value_for_kind(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("kind")
        if kind == "product":
            if value is not None:
                raise ValueError('a "product" reward has no value (it gives its sku)')
        elif kind == "amount":
            if value is None:
                raise ValueError('required for kind "amount" (the amount off, in currency)')
            if value <= 0 or value.as_tuple().exponent < -2:
                raise ValueError("must be an amount greater than 0 with at most 2 decimals")
        elif kind == "percent":
            if value is None:
                raise ValueError('required for kind "percent" (the percentage off)')
            if not 0 < value <= 100:
                raise ValueError("must be a percentage greater than 0 and at most 100")
        return value

    @field_validator("sku")
    @classmethod
    def _sku_for_kind(cls, sku: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "product" and sku is None:
            raise ValueError('required for kind "product" (the product given)')
        if kind in ("amount", "percent") and sku is not None:
            raise ValueError(f'a "{kind}" reward has no sku')
        return sku


class Redemption(_Model):
    """Redeeming more than ``step_up_above`` points in one go needs a PIN or a staff check."""

    step_up_above: Annotated[StrictInt, Field(ge=0)]


class Expiry(_Model):
    """Points expire ``months`` calendar months after they were earned; 0 = never."""

    months: Annotated[StrictInt, Field(ge=0, le=1200)]


class ValueWeights(_Model):
    """How much each component counts in the customer value score (0 = ignored)."""

    recency: Annotated[StrictInt, Field(ge=0, le=100)] = 25
    frequency: Annotated[StrictInt, Field(ge=0, le=100)] = 25
    monetary: Annotated[StrictInt, Field(ge=0, le=100)] = 35
    punctuality: Annotated[StrictInt, Field(ge=0, le=100)] = 10
    support: Annotated[StrictInt, Field(ge=0, le=100)] = 5

    @model_validator(mode="after")
    def _something_counts(self):
        if self.recency + self.frequency + self.monetary + self.support == 0:
            raise ValueError("give a weight above 0 to recency, frequency, monetary or "
                             "support: punctuality alone is unknown for most customers")
        return self


class ValueRules(_Model):
    """The customer value score (``server.value``): its window, weights and bands.

    ``premium_percent``: the best this share of active customers are "premium";
    ``high_from`` and ``medium_from``: score thresholds of the "high" and "medium" bands.
    """

    window_months: Annotated[StrictInt, Field(ge=1, le=60)] = 12
    weights: ValueWeights = ValueWeights()
    premium_percent: Annotated[Decimal, Field(gt=0, le=50)] = Decimal(5)
    high_from: Annotated[StrictInt, Field(ge=1, le=100)] = 60
    medium_from: Annotated[StrictInt, Field(ge=0, le=100)] = 30

    @field_validator("medium_from")
    @classmethod
    def _bands_order(cls, medium: int, info: ValidationInfo) -> int:
        high = info.data.get("high_from")
        if high is not None and medium >= high:
            raise ValueError(f"{medium} must be below high_from ({high})")
        return medium


def _currency(value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha() or not value.isupper():
        raise ValueError("must be an ISO 4217 code of 3 upper-case letters, e.g. EUR")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{value!r} is not a known timezone, e.g. Europe/Paris") from None
    return value


class Programme(_Model):
    """A whole loyalty programme, validated. Immutable: safe to share between threads."""

    currency: Annotated[str, AfterValidator(_currency)]
    timezone: Annotated[str, AfterValidator(_timezone)]
    earning: Earning
    visit: Visit = Visit(points=0, min_gap_hours=Decimal(0))
    enrolment: Enrolment = Enrolment()
    multipliers: tuple[Multiplier, ...] = ()
    promotions: tuple[Promotion, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    tiers: tuple[Tier, ...] = Field(min_length=1)
    tier_rules: TierRules
    rewards: tuple[Reward, ...] = ()
    redemption: Redemption
    expiry: Expiry
    value: ValueRules = ValueRules()

    @field_validator("tiers")
    @classmethod
    def _tier_ladder(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        problems = []
        if tiers[0].threshold != 0:
            problems.append(("tiers[0].threshold",
                             f"the first tier must start at 0, not {tiers[0].threshold}"))
        for i in range(1, len(tiers)):
            if tiers[i].threshold <= tiers[i - 1].threshold:
                problems.append((f"tiers[{i}].threshold",
                                 f"{tiers[i].threshold} must be greater than the threshold of "
                                 f"tiers[{i - 1}] ({tiers[i - 1].threshold}): thresholds "
                                 "strictly increase"))
        problems += _duplicate_codes("tiers", tiers)
        if problems:
            raise ProgrammeError("invalid tiers", problems)
        return tiers

    @field_validator("rewards")
    @classmethod
    def _catalogue(cls, rewards: tuple[Reward, ...],
                   info: ValidationInfo) -> tuple[Reward, ...]:
        problems = _duplicate_codes("rewards", rewards)
        tiers = info.data.get("tiers")
        if tiers is not None:  # else the tiers have their own errors
            known = {tier.code for tier in tiers}
            for i, reward in enumerate(rewards):
                unknown = [code for code in reward.tiers if code not in known]
                if unknown:
                    problems.append((f"rewards[{i}].tiers",
                                     f"unknown tier(s) {', '.join(unknown)}; the tiers are "
                                     f"{', '.join(t.code for t in tiers)}"))
        if problems:
            raise ProgrammeError("invalid rewards", problems)
        return rewards

    @property
    def zone(self) -> ZoneInfo:
        """The programme's timezone, for local dates, weekdays and hours."""
        return ZoneInfo(self.timezone)

    def tier_name(self, code: str | None, language: str | None) -> str | None:
        """The name of tier ``code`` in ``language``; a code the programme lost stands as is."""
        if code is None:
            return None
        found = next((t for t in self.tiers if t.code == code), None)
        return found.name(language) if found else code

    def tier(self, code: str) -> Tier:
        """The tier with this code.

        Raises:
            UnknownCodeError: (a ``ProgrammeError``) no such tier.
        """
        for tier in self.tiers:
            if tier.code == code:
                return tier
        raise UnknownCodeError(f"unknown tier {code!r}; the tiers are "
                               f"{', '.join(t.code for t in self.tiers)}")

    def tier_rank(self, code: str) -> int:
        """0 for the lowest tier, 1 for the next, ...

        Raises:
            UnknownCodeError: (a ``ProgrammeError``) no such tier.
        """
        return self.tiers.index(self.tier(code))

    def reward(self, code: str) -> Reward:
        """The reward with this code.

        Raises:
            UnknownCodeError: (a ``ProgrammeError``) no such reward in the catalogue.
        """
        for reward in self.rewards:
            if reward.code == code:
                return reward
        raise UnknownCodeError(f"unknown reward {code!r}")


def _duplicate_codes(where: str, items: Sequence[Tier | Reward]) -> list[tuple[str, str]]:
    first: dict[str, int] = {}
    problems = []
    for i, item in enumerate(items):
        if item.code in first:
            problems.append((f"{where}[{i}].code",
                             f"{item.code!r} is already the code of {where}[{first[item.code]}]"))
        else:
            first[item.code] = i
    return problems


def _path(loc: Sequence[str | int]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for item in error.errors():
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, ProgrammeError) and cause.problems:
            problems.extend(cause.problems)
            continue
        message = item["msg"]
        if item["type"] == "missing":
            message = "required"
            if item["loc"][:1] == ("promotions",) and item["loc"][-1] == "stores":
                message += ": list the stores that run it, or [] for every store"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (not part of the programme: a typo?)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        problems.append((_path(item["loc"]), message))
    return problems


def load_programme(text: str | Mapping[str, Any], fmt: str = "toml") -> Programme:
    """Parse and validate a programme document.

    Args:
        text: the document, TOML or JSON text, or an already parsed mapping (e.g. the JSON
            column a programme version is stored in, ``Programme.model_dump(mode="json")``).
        fmt: ``"toml"`` or ``"json"``, for text only; numbers with a fraction are read as
            ``Decimal``, never through ``float``.

    Returns:
        The validated, immutable ``Programme``.

    Raises:
        ProgrammeError: its message lists every problem found, one a line, each with its path
            (``promotions[1].hours: from (18) must be before to (10) ...``); ``problems``
            holds the same as ``(path, message)`` pairs.
        ValueError: ``fmt`` is neither ``"toml"`` nor ``"json"``.
    """
    if isinstance(text, Mapping):
        data: Any = dict(text)
    elif fmt == "toml":
        try:
            data = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise ProgrammeError("invalid loyalty programme",
                                 [("", f"not valid TOML: {exc}")]) from None
    elif fmt == "json":
        try:
            data = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ProgrammeError("invalid loyalty programme",
                                 [("", f"not valid JSON: {exc}")]) from None
    else:
        raise ValueError(f"fmt must be 'toml' or 'json', not {fmt!r}")
    try:
        return Programme.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        raise ProgrammeError(f"invalid loyalty programme ({len(problems)} "
                             f"problem{'s' if len(problems) != 1 else ''})", problems) from None


@lru_cache(maxsize=1)
def default_programme() -> Programme:
    """The programme a fresh install starts with (``default_programme.toml``, parsed once)."""
    text = resources.files(__package__).joinpath(DEFAULT_PROGRAMME_FILE).read_text("utf-8")
    return load_programme(text, "toml")


# -- earning ---------------------------------------------------------------------------------

def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise TypeError(f"{name} must be a Decimal (or an int), not {type(value).__name__}")
    value = Decimal(value)
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value}")
    return value


@dataclass(frozen=True)
class LineIn:
    """One sale line of a purchase, as the till sent it.

    Money and quantities are ``Decimal`` (an ``int`` is converted; a ``float`` is refused with
    ``TypeError``). ``discount`` is the line's total discount, never negative (``ValueError``).
    Returns are not lines: the refund endpoint reverses what each line earned.
    """

    line_no: int
    sku: str
    category: str | None
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal = field(default=Decimal(0))
    paid_with_reward: bool = False

    def __post_init__(self) -> None:
        for name in ("quantity", "unit_price", "discount"):
            object.__setattr__(self, name, _decimal(getattr(self, name), name))
        if self.discount < 0:
            raise ValueError(f"discount must not be negative, not {self.discount}")

    @property
    def net(self) -> Decimal:
        """quantity x unit_price - discount, exact."""
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            return self.quantity * self.unit_price - self.discount


@dataclass(frozen=True)
class LineEarning:
    """What one line earned, and why.

    ``factor`` is the product of every factor applied (multipliers, promotions, tier), or 0
    when a rule makes the line earn nothing; ``points`` = floor(net x points_per_unit x factor).
    ``reasons`` explain it in words, e.g. ``("Shoes count double ×2", "tier silver ×1.25")`` or
    ``("discounted line earns nothing",)``.
    """

    line_no: int
    points: int
    factor: Decimal
    reasons: tuple[str, ...]


def _fmt(factor: Decimal) -> str:
    return format(factor.normalize(), "f")


def _require_aware(moment: datetime, name: str) -> None:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. UTC), not a naive datetime")


def earn(programme: Programme, lines: Sequence[LineIn], *, store: str, paid_at: datetime,
         tier: str) -> list[LineEarning]:
    """The points each line of a purchase earns, with the reasons.

    Each line is computed on its own (the result of a list is the list of each line's result):

    1. A line earns nothing (0 points, factor 0) if its quantity is 0 or less or its net amount
       is 0 or less, if it has any discount, if it was paid with a reward, or if an exclusion
       names its sku or category. Every such reason is listed.
    2. Otherwise its factor is the product of the multipliers naming it (those with ``stores``
       only in those stores), of the promotions active at ``paid_at`` in ``store`` that cover it,
       and of the customer's tier multiplier; points = floor(net x points_per_unit x factor),
       computed exactly in ``Decimal`` and floored per line, never negative.

    Promotions are judged on the local date, weekday and hour of ``paid_at`` in the
    programme's timezone.

    Args:
        programme: the programme in force.
        lines: the purchase's sale lines; line numbers must be unique.
        store: the store code where the purchase was paid.
        paid_at: when it was paid, timezone-aware.
        tier: the customer's tier code at payment time.

    Returns:
        One ``LineEarning`` per line, in the order of ``lines``.

    Raises:
        ValueError: ``paid_at`` is naive, or two lines share a line number.
        UnknownCodeError: (a ``ProgrammeError``) ``tier`` is not a tier of the programme.
    """
    _require_aware(paid_at, "paid_at")
    customer_tier = programme.tier(tier)
    local = paid_at.astimezone(programme.zone)
    multipliers = [m for m in programme.multipliers if not m.stores or store in m.stores]
    promotions = [p for p in programme.promotions if p.active(store, local)]
    numbers = [line.line_no for line in lines]
    if len(set(numbers)) != len(numbers):
        raise ValueError("line numbers must be unique within a purchase")
    return [_earn_line(programme, line, multipliers, promotions, customer_tier)
            for line in lines]


def _earn_line(programme: Programme, line: LineIn, multipliers: Sequence[Multiplier],
               promotions: Sequence[Promotion], tier: Tier) -> LineEarning:
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        net = line.net
        reasons: list[str] = []
        if line.quantity <= 0:
            reasons.append("zero or negative quantity earns nothing")
        elif net <= 0:
            reasons.append("zero or negative net amount earns nothing")
        if line.discount > 0:
            reasons.append("discounted line earns nothing")
        if line.paid_with_reward:
            reasons.append("paid with a reward earns nothing")
        reasons += [f"excluded: {ex.name}" for ex in programme.exclusions if ex.matches(line)]
        if reasons:
            return LineEarning(line.line_no, 0, Decimal(0), tuple(reasons))

        factor = Decimal(1)
        for multiplier in multipliers:
            if multiplier.matches(line):
                factor *= multiplier.factor
                reasons.append(f"{multiplier.name} ×{_fmt(multiplier.factor)}")
        for promotion in promotions:
            if promotion.applies_to(line):
                factor *= promotion.factor
                reasons.append(f"{promotion.name} ×{_fmt(promotion.factor)}")
        factor *= tier.multiplier
        if tier.multiplier != 1:
            reasons.append(f"tier {tier.code} ×{_fmt(tier.multiplier)}")
        raw = net * programme.earning.points_per_unit * factor
        points = max(0, int(raw.to_integral_value(rounding=ROUND_FLOOR)))
    return LineEarning(line.line_no, points, factor, tuple(reasons))


# -- visits ----------------------------------------------------------------------------------

def visit_points(programme: Programme, *, store: str, at: datetime,
                 last_counted_visit: datetime | None) -> int:
    """The points a tap earns as a visit.

    The visit rule's points if the rule covers ``store`` (no ``stores`` = every store) and
    there was no counted visit before, or at least ``min_gap_hours`` have passed since the last
    counted one; else 0. A tap *earlier* than the last counted visit (an offline queue replayed
    late) counts nothing. Both datetimes must be timezone-aware.

    Raises:
        ValueError: a naive datetime.
    """
    _require_aware(at, "at")
    rule = programme.visit
    if last_counted_visit is not None:
        _require_aware(last_counted_visit, "last_counted_visit")
    if rule.points == 0 or (rule.stores and store not in rule.stores):
        return 0
    if last_counted_visit is None:
        return rule.points
    gap = timedelta(seconds=float(rule.min_gap_hours * 3600))
    return rule.points if at - last_counted_visit >= gap else 0


# -- tiers -----------------------------------------------------------------------------------

def _add_months(moment: datetime, months: int, zone: ZoneInfo) -> datetime:
    """``moment`` moved by calendar months on the local calendar of ``zone``.

    The day of month is clamped (31 January + 1 month = 28/29 February); the local wall time is
    kept; the result carries ``moment``'s tzinfo.
    """
    local = moment.astimezone(zone)
    years, month0 = divmod(local.month - 1 + months, 12)
    year, month = local.year + years, month0 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day, fold=0).astimezone(moment.tzinfo)


def tier_for(programme: Programme, qualifying_points: int) -> Tier:
    """The highest tier whose threshold is at most ``qualifying_points``.

    ``qualifying_points`` are the points *earned* since ``window_start(programme, now)`` (net
    of what returns reversed), never the balance: spending points does not cost a tier. Below
    0 (returns of purchases made before the window) counts as 0.
    """
    best = programme.tiers[0]
    for tier in programme.tiers:
        if tier.threshold <= qualifying_points:
            best = tier
    return best


def tier_change(programme: Programme, *, current: str, qualifying_points: int, at: datetime,
                review_at: datetime | None) -> tuple[str, datetime | None]:
    """The tier a customer should hold at ``at``, and the next review date.

    With ``target = tier_for(programme, qualifying_points)``:

    - ``target`` above ``current``: upgrade at once, next review ``at + review_months``.
    - Otherwise, before ``review_at``: no change, ``(current, review_at)``; a lower target
      never downgrades before the review date.
    - At or after ``review_at``: the tier becomes ``target`` (the same, or lower: a downgrade,
      possibly by several tiers), and the review date moves on by ``review_months`` (as many
      times as needed to be after ``at``, keeping the review's day of month).
    - No ``review_at`` (never reviewed): no downgrade; a customer above the lowest tier gets a
      review date ``at + review_months``, one in the lowest tier keeps ``None``.
    - ``current`` no longer in the programme (a new version removed it): the customer gets
      ``target`` at once, next review ``at + review_months``.

    Args:
        programme: the programme in force.
        current: the tier code the customer holds.
        qualifying_points: points earned over the window (see ``window_start``).
        at: now, timezone-aware.
        review_at: the customer's next review date, timezone-aware, or None.

    Returns:
        ``(tier code, next review date or None)``; store both.

    Raises:
        ValueError: a naive datetime.
    """
    _require_aware(at, "at")
    if review_at is not None:
        _require_aware(review_at, "review_at")
    zone, months = programme.zone, programme.tier_rules.review_months
    target = tier_for(programme, qualifying_points)
    target_rank = programme.tiers.index(target)
    try:
        current_rank = programme.tier_rank(current)
    except UnknownCodeError:
        return target.code, _add_months(at, months, zone)
    if target_rank > current_rank:
        return target.code, _add_months(at, months, zone)
    if review_at is None:
        return current, (None if current_rank == 0 else _add_months(at, months, zone))
    if at < review_at:
        return current, review_at
    local_at, local_review = at.astimezone(zone), review_at.astimezone(zone)
    elapsed = (local_at.year - local_review.year) * 12 + local_at.month - local_review.month
    steps = max(1, elapsed // months)
    while (following := _add_months(review_at, steps * months, zone)) <= at:
        steps += 1
    return target.code, following


def window_start(programme: Programme, at: datetime) -> datetime:
    """Start of the qualifying window: ``at`` minus ``window_months`` calendar months.

    On the programme's local calendar, day of month clamped (31 March - 1 month = 28/29
    February); the result carries ``at``'s tzinfo. Points earned at or after it qualify.

    Raises:
        ValueError: ``at`` is naive.
    """
    _require_aware(at, "at")
    return _add_months(at, -programme.tier_rules.window_months, programme.zone)


def expiry_date(programme: Programme, earned_at: datetime) -> datetime | None:
    """When points earned at ``earned_at`` expire (``expiry.months`` later), None if never.

    Calendar months on the programme's local calendar, day clamped; points are expired at and
    after the returned instant. The result carries ``earned_at``'s tzinfo.

    Raises:
        ValueError: ``earned_at`` is naive.
    """
    _require_aware(earned_at, "earned_at")
    if programme.expiry.months == 0:
        return None
    return _add_months(earned_at, programme.expiry.months, programme.zone)


# -- rewards ---------------------------------------------------------------------------------

def reward_allowed(programme: Programme, reward_code: str, *, tier: str, store: str) -> Reward:
    """The reward, if a customer of ``tier`` may take it in ``store``.

    Raises:
        UnknownCodeError: (a ``ProgrammeError``) no such reward, or no such tier.
        RewardNotAllowedError: (a ``ProgrammeError``) the reward is for other tiers
            (``reason == "tier"``) or other stores (``reason == "store"``); the message says
            which.
    """
    reward = programme.reward(reward_code)
    programme.tier(tier)
    if reward.tiers and tier not in reward.tiers:
        raise RewardNotAllowedError(
            f"reward {reward.code} is for tier {' or '.join(reward.tiers)} only; the customer "
            f"is {tier}", reason="tier")
    if reward.stores and store not in reward.stores:
        raise RewardNotAllowedError(
            f"reward {reward.code} is available in store {' or '.join(reward.stores)} only, "
            f"not in {store}", reason="store")
    return reward


def needs_step_up(programme: Programme, points: int) -> bool:
    """Whether redeeming ``points`` in one go needs a PIN or staff check (more than
    ``redemption.step_up_above``)."""
    return points > programme.redemption.step_up_above
