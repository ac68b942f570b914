"""The loyalty rules engine (server.loyalty.programme): document, earning, visits, tiers,
expiry and rewards, by examples and by properties (hypothesis)."""

from __future__ import annotations

import copy
import inspect
import json
import textwrap
import tomllib
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.loyalty import programme as engine
from server.loyalty.programme import (
    LineEarning,
    LineIn,
    Programme,
    ProgrammeError,
    RewardNotAllowedError,
    UnknownCodeError,
    default_programme,
    earn,
    expiry_date,
    load_programme,
    needs_step_up,
    reward_allowed,
    tier_change,
    tier_for,
    visit_points,
    window_start,
)

PARIS = ZoneInfo("Europe/Paris")
DEFAULT_FILE = Path(engine.__file__).with_name("default_programme.toml")
D = Decimal


def docstring_example() -> str:
    """The TOML example of the module docstring (the indented block after ``::``)."""
    lines = engine.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("::")) + 1
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def default_dict() -> dict:
    return tomllib.loads(DEFAULT_FILE.read_text("utf-8"), parse_float=Decimal)


def small(**sections) -> Programme:
    """A minimal programme (EUR, Paris, 1 point per euro, one tier) with sections replaced."""
    doc = {
        "currency": "EUR",
        "timezone": "Europe/Paris",
        "earning": {"points_per_unit": 1},
        "tiers": [{"code": "member", "threshold": 0, "multiplier": 1}],
        "tier_rules": {"window_months": 12, "review_months": 12},
        "redemption": {"step_up_above": 1000},
        "expiry": {"months": 24},
    }
    doc.update(sections)
    return load_programme(doc)


def line(n: int = 1, *, sku: str = "SKU-1", category: str | None = "misc", qty: str = "1",
         price: str = "10.00", discount: str = "0", reward: bool = False) -> LineIn:
    return LineIn(line_no=n, sku=sku, category=category, quantity=D(qty), unit_price=D(price),
                  discount=D(discount), paid_with_reward=reward)


def paris(*args) -> datetime:
    return datetime(*args, tzinfo=PARIS)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# a moment when the default programme's promotion is not running (a Tuesday in March)
QUIET = utc(2026, 3, 3, 12, 0)


def points(programme, lines, *, store="LYON-01", paid_at=QUIET, tier="member") -> list[int]:
    return [e.points for e in earn(programme, lines, store=store, paid_at=paid_at, tier=tier)]


@pytest.fixture(scope="module")
def prog() -> Programme:
    return default_programme()


# -- the document ----------------------------------------------------------------------------

def test_default_file_is_the_docstring_example():
    assert load_programme(docstring_example()) == load_programme(DEFAULT_FILE.read_text())
    assert docstring_example() == DEFAULT_FILE.read_text()


def test_default_programme_contents(prog):
    assert prog.currency == "EUR" and prog.timezone == "Europe/Paris"
    assert prog.earning.points_per_unit == 1
    assert (prog.visit.points, prog.visit.min_gap_hours, prog.visit.stores) == (5, 20, ())
    assert prog.multipliers[0].factor == 2 and prog.multipliers[0].categories == ("shoes",)
    promo = prog.promotions[0]
    assert (promo.factor, promo.starts, promo.ends) == (3, date(2026, 12, 1), date(2026, 12, 31))
    assert (promo.weekdays, promo.hours, promo.stores) == ((5, 6), (10, 18), ("PARIS-01",))
    assert prog.exclusions[0].categories == ("gift-cards", "tobacco")
    assert [(t.code, t.threshold, t.multiplier) for t in prog.tiers] == [
        ("member", 0, 1), ("silver", 500, D("1.25")), ("gold", 2000, D("1.5"))]
    assert isinstance(prog.tiers[1].multiplier, Decimal)
    assert prog.reward("VOUCHER-5").value == 5 and prog.reward("COFFEE").sku == "COFFEE-01"
    assert prog.reward("GOLD-10").tiers == ("gold",)
    assert prog.redemption.step_up_above == 1000 and prog.expiry.months == 24
    assert default_programme() is prog  # parsed once


def test_round_trip_through_json(prog):
    stored = prog.model_dump(mode="json")
    assert load_programme(stored) == prog
    assert load_programme(json.dumps(stored), fmt="json") == prog


def test_floats_are_read_as_decimals():
    text = DEFAULT_FILE.read_text().replace("multiplier = 1.25", "multiplier = 1.1")
    assert load_programme(text).tier("silver").multiplier == D("1.1")
    as_json = json.dumps(default_programme().model_dump(mode="json")).replace('"1.25"', "1.1")
    assert load_programme(as_json, "json").tier("silver").multiplier == D("1.1")


def test_programme_is_immutable(prog):
    with pytest.raises(ValueError):
        prog.currency = "USD"


def test_lookups(prog):
    assert prog.tier("silver").threshold == 500
    assert prog.reward("COFFEE").cost == 150
    with pytest.raises(ProgrammeError, match="platinum"):
        prog.tier("platinum")
    with pytest.raises(ProgrammeError, match="NOPE"):
        prog.reward("NOPE")


def test_tier_names_per_language_fall_back_to_english_then_the_code(prog):
    silver = prog.tier("silver")
    assert [silver.name(lang) for lang in ("fr", "lt", "en", None)] == [
        "Argent", "Sidabrinis", "Silver", "Silver"]
    text = DEFAULT_FILE.read_text().replace(
        'names = { fr = "Or", lt = "Auksinis", en = "Gold" }', 'names = { lt = "Auksinis" }')
    gold = load_programme(text).tier("gold")
    assert (gold.name("lt"), gold.name("fr"), gold.name("en")) == ("Auksinis", "gold", "gold")
    with pytest.raises(ProgrammeError, match="de"):
        load_programme(DEFAULT_FILE.read_text().replace('en = "Gold"', 'de = "Gold"'))


def test_optional_sections_default_to_nothing():
    p = small()
    assert p.visit.points == 0 and p.multipliers == () and p.promotions == ()
    assert p.exclusions == () and p.rewards == ()


# -- validation: every error, with its path ---------------------------------------------------

def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _second_promotion(**fields):
    def mutate(doc):
        promo = copy.deepcopy(doc["promotions"][0])
        promo.update(fields)
        doc["promotions"].append(promo)
    return mutate


INVALID = [
    # tiers
    ("tiers", _set(("tiers",), []), "at least 1"),
    ("tiers[0].threshold", _set(("tiers", 0, "threshold"), 10), "must start at 0"),
    ("tiers[2].threshold", _set(("tiers", 2, "threshold"), 500), "strictly increase"),
    ("tiers[2].threshold", _set(("tiers", 2, "threshold"), 400), "strictly increase"),
    ("tiers[2].code", _set(("tiers", 2, "code"), "silver"), "already the code"),
    ("tiers[1].threshold", _set(("tiers", 1, "threshold"), -1), "greater than or equal to 0"),
    ("tiers[1].multiplier", _set(("tiers", 1, "multiplier"), 0), "greater than 0"),
    ("tiers[1].code", _set(("tiers", 1, "code"), ""), "non-empty"),
    ("tier_rules.window_months", _set(("tier_rules", "window_months"), 0), "greater than"),
    ("tier_rules.review_months", _set(("tier_rules", "review_months"), "12"), "integer"),
    # rewards
    ("rewards[1].code", _set(("rewards", 1, "code"), "VOUCHER-5"), "already the code"),
    ("rewards[1].sku", _delete(("rewards", 1, "sku")), 'required for kind "product"'),
    ("rewards[1].value", _set(("rewards", 1, "value"), 2), "has no value"),
    ("rewards[0].value", _delete(("rewards", 0, "value")), 'required for kind "amount"'),
    ("rewards[0].value", _set(("rewards", 0, "value"), 0), "greater than 0"),
    ("rewards[0].value", _set(("rewards", 0, "value"), D("5.001")), "at most 2 decimals"),
    ("rewards[0].sku", _set(("rewards", 0, "sku"), "X"), "has no sku"),
    ("rewards[2].value", _delete(("rewards", 2, "value")), 'required for kind "percent"'),
    ("rewards[2].value", _set(("rewards", 2, "value"), 0), "greater than 0 and at most 100"),
    ("rewards[2].value", _set(("rewards", 2, "value"), 101), "greater than 0 and at most 100"),
    ("rewards[2].tiers", _set(("rewards", 2, "tiers"), ["platinum"]), "unknown tier"),
    ("rewards[0].kind", _set(("rewards", 0, "kind"), "coupon"), "'amount', 'percent'"),
    ("rewards[0].cost", _set(("rewards", 0, "cost"), 0), "greater than 0"),
    ("rewards[2].stores", _set(("rewards", 2, "stores"), ["A", "A"]), "listed twice"),
    # factors
    ("multipliers[0].factor", _set(("multipliers", 0, "factor"), 0), "greater than 0"),
    ("multipliers[0].factor", _set(("multipliers", 0, "factor"), True), "Decimal"),
    ("promotions[0].factor", _set(("promotions", 0, "factor"), -3), "greater than 0"),
    ("earning.points_per_unit", _set(("earning", "points_per_unit"), -1), "greater than or equal"),
    # promotions' calendar
    ("promotions[1].hours", _second_promotion(hours=[18, 10]), "must be before to"),
    ("promotions[0].hours", _set(("promotions", 0, "hours"), [10, 10]), "must be before to"),
    ("promotions[0].hours[1]", _set(("promotions", 0, "hours"), [10, 25]), "less than or equal"),
    ("promotions[0].hours[0]", _set(("promotions", 0, "hours"), [-1, 8]), "greater than"),
    ("promotions[0].hours[1]", _set(("promotions", 0, "hours"), [10]), "required"),
    ("promotions[0].weekdays[1]", _set(("promotions", 0, "weekdays"), [5, 7]), "less than"),
    ("promotions[0].weekdays[0]", _set(("promotions", 0, "weekdays"), [-1]), "greater than"),
    ("promotions[0].weekdays", _set(("promotions", 0, "weekdays"), [5, 5]), "listed twice"),
    ("promotions[0].ends", _set(("promotions", 0, "ends"), date(2026, 11, 30)), "before starts"),
    ("promotions[0].starts", _set(("promotions", 0, "starts"), 20261201), "a date"),
    ("promotions[0].stores", _delete(("promotions", 0, "stores")), "[] for every store"),
    ("promotions[0].name", _set(("promotions", 0, "name"), " "), "non-empty"),
    # rules naming nothing
    ("multipliers[0]", _set(("multipliers", 0, "categories"), []), "categories or skus"),
    ("exclusions[0]", _set(("exclusions", 0, "categories"), []), "categories or skus"),
    # top level
    ("timezone", _set(("timezone",), "Europe/Atlantis"), "not a known timezone"),
    ("timezone", _set(("timezone",), "../etc/passwd"), "not a known timezone"),
    ("currency", _set(("currency",), "eur"), "3 upper-case letters"),
    ("currency", _set(("currency",), "EURO"), "3 upper-case letters"),
    ("currency", _set(("currency",), "€UR"), "3 upper-case letters"),
    ("earning", _delete(("earning",)), "required"),
    ("expiry", _delete(("expiry",)), "required"),
    ("expiry.months", _set(("expiry", "months"), -1), "greater than or equal to 0"),
    ("redemption.step_up_above", _set(("redemption", "step_up_above"), -5), "greater than"),
    ("visit.points", _set(("visit", "points"), "5"), "integer"),
    ("visit.min_gap_hours", _set(("visit", "min_gap_hours"), -1), "greater than or equal"),
    # unknown keys everywhere
    ("colour", _set(("colour",), "red"), "unknown key"),
    ("promotions[0].store", _set(("promotions", 0, "store"), "PARIS-01"), "unknown key"),
    ("tiers[1].name", _set(("tiers", 1, "name"), "Silver"), "unknown key"),
    ("earning.points_per_euro", _set(("earning", "points_per_euro"), 1), "unknown key"),
]


@pytest.mark.parametrize(("path", "mutate", "fragment"), INVALID,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(INVALID)])
def test_validation_error_names_its_path(path, mutate, fragment):
    doc = default_dict()
    mutate(doc)
    with pytest.raises(ProgrammeError) as caught:
        load_programme(doc)
    problems = dict(caught.value.problems)
    assert path in problems, caught.value.problems
    assert fragment in problems[path]
    assert f"  {path}: {problems[path]}" in str(caught.value)


def test_every_problem_is_listed_at_once():
    doc = default_dict()
    doc["currency"] = "eur"
    doc["promotions"][0]["hours"] = [18, 10]
    doc["rewards"][1].pop("sku")
    doc["tiers"][2]["threshold"] = 100
    with pytest.raises(ProgrammeError) as caught:
        load_programme(doc)
    paths = [path for path, _ in caught.value.problems]
    assert paths == ["currency", "promotions[0].hours", "tiers[2].threshold", "rewards[1].sku"]
    assert str(caught.value).startswith("invalid loyalty programme (4 problems):\n")
    assert isinstance(caught.value, ValueError)


def test_syntax_errors_and_format():
    with pytest.raises(ProgrammeError, match="not valid TOML"):
        load_programme('currency = "EUR"\n[earning\n')
    with pytest.raises(ProgrammeError, match="not valid JSON"):
        load_programme("{", fmt="json")
    with pytest.raises(ProgrammeError):
        load_programme("[1, 2]", fmt="json")
    with pytest.raises(ValueError, match="fmt"):
        load_programme(DEFAULT_FILE.read_text(), fmt="yaml")


def test_toml_error_path_from_text():
    text = DEFAULT_FILE.read_text().replace("hours = [10, 18]", "hours = [18, 10]")
    with pytest.raises(ProgrammeError, match=r"promotions\[0\]\.hours: from \(18\)"):
        load_programme(text)


# -- earning: lines ---------------------------------------------------------------------------

def test_line_net_and_types():
    assert line(qty="3", price="2.50", discount="1.25").net == D("6.25")
    assert LineIn(1, "A", None, 2, 5).net == 10  # ints become Decimals
    assert isinstance(LineIn(1, "A", None, 2, 5).discount, Decimal)
    with pytest.raises(TypeError, match="Decimal"):
        LineIn(1, "A", None, D(1), 9.99)
    with pytest.raises(ValueError, match="negative"):
        line(discount="-1")
    with pytest.raises(ValueError, match="finite"):
        LineIn(1, "A", None, D(1), D("NaN"))


def test_plain_line_earns_floor_of_net(prog):
    [e] = earn(prog, [line(price="12.99")], store="LYON-01", paid_at=QUIET, tier="member")
    assert e == LineEarning(line_no=1, points=12, factor=D(1), reasons=())


def test_points_per_unit():
    p = small(earning={"points_per_unit": D("2.5")})
    assert points(p, [line(price="10.00"), line(2, price="0.39")]) == [25, 0]
    assert points(small(earning={"points_per_unit": 0}), [line(price="500")]) == [0]


def test_discounted_line_earns_nothing(prog):
    [e, plain] = earn(prog, [line(price="100", discount="0.01"), line(2, price="100")],
                      store="LYON-01", paid_at=QUIET, tier="gold")
    assert (e.points, e.factor, e.reasons) == (0, 0, ("discounted line earns nothing",))
    assert plain.points == 150


def test_line_paid_with_reward_earns_nothing(prog):
    [e] = earn(prog, [line(price="3.50", reward=True)], store="LYON-01", paid_at=QUIET,
               tier="member")
    assert (e.points, e.reasons) == (0, ("paid with a reward earns nothing",))


def test_exclusion_by_category(prog):
    lines = [line(1, category="tobacco", price="11"), line(2, category="gift-cards", price="50"),
             line(3, category="food", price="20")]
    earned = earn(prog, lines, store="LYON-01", paid_at=QUIET, tier="silver")
    assert [e.points for e in earned] == [0, 0, 25]
    assert earned[0].reasons == ("excluded: Gift cards and tobacco",)


def test_exclusion_by_sku():
    p = small(exclusions=[{"name": "Lottery", "skus": ["LOTO-1"]}])
    earned = earn(p, [line(1, sku="LOTO-1", category=None, price="20"), line(2, sku="LOTO-2")],
                  store="X", paid_at=QUIET, tier="member")
    assert [e.points for e in earned] == [0, 10]
    assert earned[0].reasons == ("excluded: Lottery",)


def test_every_reason_for_nothing_is_given(prog):
    [e] = earn(prog, [line(category="tobacco", discount="1", reward=True)], store="LYON-01",
               paid_at=QUIET, tier="member")
    assert e.points == 0
    assert set(e.reasons) == {"discounted line earns nothing", "paid with a reward earns nothing",
                              "excluded: Gift cards and tobacco"}


def test_zero_quantity_and_negative_net_earn_nothing(prog):
    assert points(prog, [line(1, qty="0"), line(2, qty="-1"), line(3, price="-5"),
                         line(4, price="0")]) == [0, 0, 0, 0]


def test_multipliers_multiply():
    p = small(multipliers=[
        {"name": "Shoes count double", "categories": ["shoes"], "factor": 2},
        {"name": "Our brand", "skus": ["SHOE-OWN"], "factor": D("1.5")},
        {"name": "Lyon shoes", "categories": ["shoes"], "factor": 4, "stores": ["LYON-01"]},
    ])
    earned = earn(p, [line(1, sku="SHOE-OWN", category="shoes"), line(2, category="shoes"),
                      line(3, sku="SHOE-OWN", category=None), line(4)],
                  store="PARIS-01", paid_at=QUIET, tier="member")
    assert [e.points for e in earned] == [30, 20, 15, 10]
    assert earned[0].factor == 3
    assert earned[0].reasons == ("Shoes count double ×2", "Our brand ×1.5")
    # the store-limited multiplier applies in its store only
    assert points(p, [line(1, category="shoes")], store="LYON-01") == [80]


def test_tier_multiplier_and_reasons(prog):
    [e] = earn(prog, [line(category="shoes", price="19.99")], store="LYON-01", paid_at=QUIET,
               tier="silver")
    assert (e.points, e.factor) == (49, D("2.5"))  # floor(19.99 x 2 x 1.25) = floor(49.975)
    assert e.reasons == ("Shoes count double ×2", "tier silver ×1.25")
    with pytest.raises(UnknownCodeError):
        earn(prog, [line()], store="LYON-01", paid_at=QUIET, tier="platinum")


def test_floor_per_line(prog):
    assert points(prog, [line(1, price="0.99"), line(2, price="0.99")]) == [0, 0]
    earned = points(prog, [line(n, price="3.33") for n in (1, 2, 3)], tier="gold")
    assert earned == [4, 4, 4]  # floor(4.995) per line, not floor(14.985) = 14 for the lot


def test_no_rounding_before_the_floor():
    p = small(tiers=[{"code": "member", "threshold": 0, "multiplier": D("0.3")}],
              multipliers=[{"name": "m", "categories": ["misc"], "factor": D("3.3333333333")}])
    # 1e6 x 0.3 x 3.3333333333 = 999999.99999 exactly: the floor is 999999, not 1000000
    assert points(p, [line(price="1000000")]) == [999999]


def test_duplicate_line_numbers_are_refused(prog):
    with pytest.raises(ValueError, match="unique"):
        earn(prog, [line(1), line(1)], store="X", paid_at=QUIET, tier="member")


# -- earning: promotions ---------------------------------------------------------------------

SATURDAY_1030_PARIS = utc(2026, 12, 5, 9, 30)  # winter: UTC+1


@pytest.mark.parametrize(("paid_at", "store", "active"), [
    (SATURDAY_1030_PARIS, "PARIS-01", True),
    (utc(2026, 12, 6, 16, 59, 59), "PARIS-01", True),      # Sunday 17:59:59 Paris
    (utc(2026, 12, 5, 9, 0), "PARIS-01", True),            # Saturday 10:00 Paris, start
    (utc(2026, 12, 4, 23, 30), "PARIS-01", False),         # Saturday 00:30 Paris: hour 0
    (utc(2026, 12, 5, 8, 59, 59), "PARIS-01", False),      # Saturday 09:59:59 Paris
    (utc(2026, 12, 5, 17, 0), "PARIS-01", False),          # Saturday 18:00 Paris: end exclusive
    (utc(2026, 12, 2, 10, 0), "PARIS-01", False),          # Wednesday
    (SATURDAY_1030_PARIS, "VILNIUS-01", False),            # another store
    (SATURDAY_1030_PARIS, "PARIS-02", False),
    (utc(2026, 11, 28, 9, 30), "PARIS-01", False),         # a Saturday before the dates
    (utc(2027, 1, 2, 9, 30), "PARIS-01", False),           # a Saturday after them
], ids=["sat-10:30", "sun-17:59", "sat-10:00", "sat-00:30", "sat-09:59", "sat-18:00", "wed",
        "vilnius", "other-paris", "before", "after"])
def test_weekend_promotion_window(prog, paid_at, store, active):
    [e] = earn(prog, [line(price="10")], store=store, paid_at=paid_at, tier="member")
    assert e.points == (30 if active else 10)
    assert ("Weekend x3 in Paris ×3" in e.reasons) is active


def test_promotion_judged_in_local_time_whatever_the_tzinfo(prog):
    vilnius = SATURDAY_1030_PARIS.astimezone(ZoneInfo("Europe/Vilnius"))  # 11:30 there
    assert points(prog, [line()], store="PARIS-01", paid_at=vilnius) == [30]
    assert points(prog, [line()], store="PARIS-01",
                  paid_at=paris(2026, 12, 5, 0, 30)) == [10]


def test_promotion_in_summer_time():
    p = small(promotions=[{"name": "Summer", "factor": 2, "hours": [10, 18], "stores": []}])
    assert points(p, [line()], paid_at=utc(2026, 6, 13, 8, 30)) == [20]  # 10:30 CEST
    assert points(p, [line()], paid_at=utc(2026, 6, 13, 7, 30)) == [10]  # 09:30 CEST
    assert points(p, [line()], paid_at=utc(2026, 6, 13, 15, 59)) == [20]  # 17:59 CEST
    assert points(p, [line()], paid_at=utc(2026, 6, 13, 16, 0)) == [10]  # 18:00 CEST


def test_promotion_dates_are_inclusive_local_dates():
    p = small(promotions=[{"name": "December", "factor": 2, "starts": "2026-12-01",
                           "ends": "2026-12-31", "stores": []}])
    assert points(p, [line()], paid_at=utc(2026, 11, 30, 22, 59)) == [10]  # 30 Nov 23:59 Paris
    assert points(p, [line()], paid_at=utc(2026, 11, 30, 23, 0)) == [20]  # 1 Dec 00:00 Paris
    assert points(p, [line()], paid_at=utc(2026, 12, 31, 22, 59)) == [20]  # 31 Dec 23:59 Paris
    assert points(p, [line()], paid_at=utc(2026, 12, 31, 23, 0)) == [10]  # 1 Jan 00:00 Paris


def test_promotion_limited_to_its_lines_and_never_on_excluded_ones():
    p = small(promotions=[{"name": "Shoe week", "factor": 3, "categories": ["shoes"],
                           "skus": ["SOCK-1"], "stores": ["PARIS-01"]}],
              exclusions=[{"name": "Tobacco", "categories": ["tobacco"]}])
    earned = points(p, [line(1, category="shoes"), line(2, sku="SOCK-1", category="socks"),
                        line(3, category="food"), line(4, category="tobacco")],
                    store="PARIS-01")
    assert earned == [30, 30, 10, 0]


def test_promotions_and_multipliers_and_tier_multiply(prog):
    [e] = earn(prog, [line(category="shoes", price="19.99")], store="PARIS-01",
               paid_at=SATURDAY_1030_PARIS, tier="silver")
    assert e.factor == D("7.5") and e.points == 149  # floor(149.925)
    assert e.reasons == ("Shoes count double ×2", "Weekend x3 in Paris ×3", "tier silver ×1.25")


def test_naive_paid_at_is_refused(prog):
    with pytest.raises(ValueError, match="timezone-aware"):
        earn(prog, [line()], store="PARIS-01", paid_at=datetime(2026, 12, 5, 10, 30),
             tier="member")


# -- visits ----------------------------------------------------------------------------------

def test_visit_gap(prog):
    first = utc(2026, 3, 3, 8, 0)
    assert visit_points(prog, store="PARIS-01", at=first, last_counted_visit=None) == 5
    for gap, expected in [(timedelta(hours=19, minutes=59), 0), (timedelta(hours=20), 5),
                          (timedelta(days=3), 5), (timedelta(0), 0), (timedelta(hours=-30), 0)]:
        assert visit_points(prog, store="PARIS-01", at=first + gap,
                            last_counted_visit=first) == expected, gap


def test_visit_stores_and_no_rule():
    p = small(visit={"points": 7, "min_gap_hours": D("0.5"), "stores": ["VILNIUS-01"]})
    at = utc(2026, 3, 3, 8, 0)
    assert visit_points(p, store="VILNIUS-01", at=at, last_counted_visit=None) == 7
    assert visit_points(p, store="PARIS-01", at=at, last_counted_visit=None) == 0
    assert visit_points(p, store="VILNIUS-01", at=at + timedelta(minutes=29),
                        last_counted_visit=at) == 0
    assert visit_points(p, store="VILNIUS-01", at=at + timedelta(minutes=30),
                        last_counted_visit=at) == 7
    assert visit_points(small(), store="X", at=at, last_counted_visit=None) == 0


def test_visit_needs_aware_datetimes(prog):
    with pytest.raises(ValueError, match="timezone-aware"):
        visit_points(prog, store="X", at=datetime(2026, 3, 3), last_counted_visit=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        visit_points(prog, store="X", at=utc(2026, 3, 3), last_counted_visit=datetime(2026, 3, 1))


# -- tiers -----------------------------------------------------------------------------------

def test_tier_for_thresholds(prog):
    expected = {-5: "member", 0: "member", 499: "member", 500: "silver", 1999: "silver",
                2000: "gold", 10**9: "gold"}
    assert {q: tier_for(prog, q).code for q in expected} == expected


def test_tiers_take_qualifying_points_only():
    # the API has no way to pass a balance: the tier depends on points earned in the window
    assert list(inspect.signature(tier_for).parameters) == ["programme", "qualifying_points"]
    assert "balance" not in inspect.signature(tier_change).parameters
    assert "qualifying_points" in inspect.signature(tier_change).parameters


def test_upgrade_happens_at_once(prog):
    at = paris(2026, 5, 10, 15, 0)
    assert tier_change(prog, current="member", qualifying_points=600, at=at,
                       review_at=None) == ("silver", paris(2027, 5, 10, 15, 0))
    # before the review date, an upgrade still happens at once and resets the review
    assert tier_change(prog, current="silver", qualifying_points=2500, at=at,
                       review_at=paris(2026, 9, 1)) == ("gold", paris(2027, 5, 10, 15, 0))
    assert tier_change(prog, current="member", qualifying_points=2000, at=at,
                       review_at=None)[0] == "gold"


def test_no_downgrade_before_the_review_date(prog):
    review = paris(2026, 9, 1)
    for at in (paris(2026, 5, 10), review - timedelta(microseconds=1)):
        assert tier_change(prog, current="gold", qualifying_points=0, at=at,
                           review_at=review) == ("gold", review)
    assert tier_change(prog, current="silver", qualifying_points=700, at=paris(2026, 5, 10),
                       review_at=review) == ("silver", review)


def test_downgrade_at_the_review_date(prog):
    review = paris(2026, 9, 1, 9, 0)
    assert tier_change(prog, current="gold", qualifying_points=600, at=review,
                       review_at=review) == ("silver", paris(2027, 9, 1, 9, 0))
    assert tier_change(prog, current="gold", qualifying_points=10,
                       at=review + timedelta(days=3),
                       review_at=review) == ("member", paris(2027, 9, 1, 9, 0))


def test_review_keeps_the_tier_and_moves_on(prog):
    review = paris(2026, 9, 1)
    assert tier_change(prog, current="gold", qualifying_points=2400, at=paris(2026, 9, 2),
                       review_at=review) == ("gold", paris(2027, 9, 1))
    # a review missed for years moves on past now, on the same day of the month
    assert tier_change(prog, current="gold", qualifying_points=2400, at=paris(2029, 10, 1),
                       review_at=review) == ("gold", paris(2030, 9, 1))
    assert tier_change(prog, current="gold", qualifying_points=2400, at=paris(2029, 9, 1),
                       review_at=review) == ("gold", paris(2030, 9, 1))


def test_never_reviewed_customer(prog):
    at = paris(2026, 5, 10)
    assert tier_change(prog, current="member", qualifying_points=100, at=at,
                       review_at=None) == ("member", None)
    # a silver customer with no review date keeps silver and gets a review date
    assert tier_change(prog, current="silver", qualifying_points=0, at=at,
                       review_at=None) == ("silver", paris(2027, 5, 10))


def test_tier_no_longer_in_the_programme(prog):
    at = paris(2026, 5, 10)
    assert tier_change(prog, current="platinum", qualifying_points=700, at=at,
                       review_at=paris(2030, 1, 1)) == ("silver", paris(2027, 5, 10))


def test_review_months_clamp_the_day():
    p = small(tiers=[{"code": "member", "threshold": 0}, {"code": "vip", "threshold": 10}],
              tier_rules={"window_months": 1, "review_months": 1})
    assert tier_change(p, current="member", qualifying_points=10, at=paris(2026, 1, 31, 12),
                       review_at=None) == ("vip", paris(2026, 2, 28, 12))
    assert tier_change(p, current="vip", qualifying_points=0, at=paris(2026, 3, 31),
                       review_at=paris(2026, 1, 31)) == ("member", paris(2026, 4, 30))


def test_tier_change_needs_aware_datetimes(prog):
    with pytest.raises(ValueError, match="timezone-aware"):
        tier_change(prog, current="member", qualifying_points=0, at=datetime(2026, 1, 1),
                    review_at=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        tier_change(prog, current="gold", qualifying_points=0, at=utc(2026, 1, 1),
                    review_at=datetime(2026, 2, 1))


def test_window_start(prog):
    assert window_start(prog, paris(2026, 5, 10, 15, 30)) == paris(2025, 5, 10, 15, 30)
    assert window_start(prog, paris(2024, 2, 29, 8)) == paris(2023, 2, 28, 8)
    one = small(tier_rules={"window_months": 1, "review_months": 12})
    assert window_start(one, paris(2026, 3, 31, 10)) == paris(2026, 2, 28, 10)
    # calendar months on the local calendar: 1 July 12:00 CEST - 6 months = 1 January 12:00 CET
    six = small(tier_rules={"window_months": 6, "review_months": 12})
    start = window_start(six, utc(2026, 7, 1, 10, 0))
    assert start == utc(2026, 1, 1, 11, 0) and start.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        window_start(prog, datetime(2026, 1, 1))


# -- expiry ----------------------------------------------------------------------------------

def test_expiry_date(prog):
    assert expiry_date(prog, utc(2026, 2, 15, 10, 0)) == utc(2028, 2, 15, 10, 0)
    assert expiry_date(prog, paris(2024, 2, 29, 18)) == paris(2026, 2, 28, 18)
    assert expiry_date(small(expiry={"months": 0}), utc(2026, 2, 15)) is None
    assert expiry_date(small(expiry={"months": 1}), paris(2026, 1, 31)) == paris(2026, 2, 28)
    with pytest.raises(ValueError, match="timezone-aware"):
        expiry_date(prog, datetime(2026, 1, 1))


# -- rewards ---------------------------------------------------------------------------------

def test_reward_tier_restriction(prog):
    assert reward_allowed(prog, "GOLD-10", tier="gold", store="PARIS-01").code == "GOLD-10"
    with pytest.raises(RewardNotAllowedError, match="gold") as caught:
        reward_allowed(prog, "GOLD-10", tier="silver", store="PARIS-01")
    assert caught.value.reason == "tier" and isinstance(caught.value, ProgrammeError)
    assert reward_allowed(prog, "COFFEE", tier="member", store="VILNIUS-01").sku == "COFFEE-01"


def test_reward_store_restriction():
    p = small(rewards=[{"code": "CEPELINAI", "name": "Cepelinai", "kind": "product",
                        "sku": "CEP-1", "cost": 300, "stores": ["VILNIUS-01"]}])
    assert reward_allowed(p, "CEPELINAI", tier="member", store="VILNIUS-01").cost == 300
    with pytest.raises(RewardNotAllowedError, match="VILNIUS-01") as caught:
        reward_allowed(p, "CEPELINAI", tier="member", store="PARIS-01")
    assert caught.value.reason == "store"


def test_reward_unknown_codes(prog):
    with pytest.raises(UnknownCodeError, match="NOPE"):
        reward_allowed(prog, "NOPE", tier="gold", store="PARIS-01")
    with pytest.raises(UnknownCodeError, match="platinum"):
        reward_allowed(prog, "COFFEE", tier="platinum", store="PARIS-01")


def test_step_up_threshold(prog):
    assert [needs_step_up(prog, n) for n in (0, 150, 1000, 1001, 5000)] == [
        False, False, False, True, True]
    assert needs_step_up(small(redemption={"step_up_above": 0}), 1)


# -- properties ------------------------------------------------------------------------------

SKUS = ["A-1", "A-2", "B-1", "B-2", "C-1"]
CATEGORIES = ["shoes", "food", "tobacco", "toys"]
STORES = ["PARIS-01", "LYON-01", "VILNIUS-01"]
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])

factors = st.decimals(min_value=D("0.1"), max_value=D(5), places=2)
subsets = lambda pool: st.lists(st.sampled_from(pool), unique=True, max_size=3)  # noqa: E731


@st.composite
def targeted(draw):
    categories, skus = draw(subsets(CATEGORIES)), draw(subsets(SKUS))
    if not categories and not skus:
        skus = [draw(st.sampled_from(SKUS))]
    return {"categories": categories, "skus": skus}


@st.composite
def programmes(draw):
    multipliers = [{"name": f"m{i}", "factor": draw(factors), "stores": draw(subsets(STORES)),
                    **draw(targeted())} for i in range(draw(st.integers(0, 3)))]
    promotions = []
    for i in range(draw(st.integers(0, 2))):
        start = draw(st.dates(date(2026, 11, 1), date(2027, 1, 31)))
        hour = draw(st.integers(0, 23))
        promotions.append({
            "name": f"p{i}", "factor": draw(factors), "stores": draw(subsets(STORES)),
            "starts": start.isoformat(),
            "ends": (start + timedelta(days=draw(st.integers(0, 40)))).isoformat(),
            "weekdays": draw(st.lists(st.integers(0, 6), unique=True, max_size=4)),
            "hours": [hour, draw(st.integers(hour + 1, 24))],
            "categories": draw(subsets(CATEGORIES)), "skus": draw(subsets(SKUS))})
    exclusions = [{"name": f"x{i}", **draw(targeted())} for i in range(draw(st.integers(0, 2)))]
    return small(
        earning={"points_per_unit": draw(st.decimals(0, 10, places=1))},
        multipliers=multipliers, promotions=promotions, exclusions=exclusions,
        tiers=[{"code": "member", "threshold": 0, "multiplier": draw(factors)},
               {"code": "vip", "threshold": 100, "multiplier": draw(factors)}])


@st.composite
def lines_in(draw, line_no):
    has_discount = draw(st.booleans())
    return LineIn(
        line_no=line_no, sku=draw(st.sampled_from(SKUS)),
        category=draw(st.none() | st.sampled_from(CATEGORIES)),
        quantity=draw(st.decimals(D(-2), D(50), places=3)),
        unit_price=draw(st.decimals(D(-5), D(2000), places=2)),
        discount=draw(st.decimals(D("0.01"), D(50), places=2)) if has_discount else D(0),
        paid_with_reward=draw(st.booleans()))


@st.composite
def baskets(draw):
    count = draw(st.integers(1, 8))
    return [draw(lines_in(n)) for n in draw(st.permutations(range(1, count + 1)))]


contexts = st.fixed_dictionaries({
    "store": st.sampled_from(STORES),
    "paid_at": st.datetimes(datetime(2026, 10, 25), datetime(2027, 2, 28),
                            timezones=st.just(UTC)),
    "tier": st.sampled_from(["member", "vip"]),
})


@PROPERTY_SETTINGS
@given(programmes(), baskets(), contexts)
def test_points_never_negative_and_bounded(p, lines, ctx):
    earned = earn(p, lines, **ctx)
    assert [e.line_no for e in earned] == [ln.line_no for ln in lines]
    could_apply = D(1)
    for f in [m.factor for m in p.multipliers] + [pr.factor for pr in p.promotions]:
        could_apply *= max(D(1), f)
    could_apply *= max(D(1), *(t.multiplier for t in p.tiers))
    for ln, e in zip(lines, earned, strict=True):
        assert isinstance(e.points, int) and e.points >= 0
        bound = max(D(0), ln.net) * p.earning.points_per_unit * could_apply
        assert e.points <= int(bound.to_integral_value(rounding=ROUND_FLOOR))
        if ln.discount > 0 or ln.paid_with_reward or any(x.matches(ln) for x in p.exclusions):
            assert e.points == 0 and e.factor == 0


@PROPERTY_SETTINGS
@given(programmes(), baskets(), contexts, st.data())
def test_excluded_or_discounted_lines_change_nothing_else(p, lines, ctx, data):
    before = earn(p, lines, **ctx)
    extra_no = max(ln.line_no for ln in lines) + 1
    extras = [LineIn(extra_no, "Z-9", None, D(2), D(40), discount=D("0.50"))]
    if p.exclusions:
        rule = data.draw(st.sampled_from(p.exclusions))
        sku = rule.skus[0] if rule.skus else "Z-9"
        category = rule.categories[0] if rule.categories else None
        extras.append(LineIn(extra_no + 1, sku, category, D(3), D(99)))
    position = data.draw(st.integers(0, len(lines)))
    after = earn(p, lines[:position] + extras + lines[position:], **ctx)
    added = {e.line_no: e for e in after if e.line_no >= extra_no}
    assert all(e.points == 0 for e in added.values()) and len(added) == len(extras)
    assert [e for e in after if e.line_no < extra_no] == before


@PROPERTY_SETTINGS
@given(programmes(), baskets(), contexts)
def test_earn_is_deterministic_and_per_line(p, lines, ctx):
    earned = earn(p, lines, **ctx)
    assert earn(p, lines, **ctx) == earned
    assert [earn(p, [ln], **ctx)[0] for ln in lines] == earned
    assert earn(p, lines[::-1], **ctx) == earned[::-1]
    assert earn(p, lines, **{**ctx, "paid_at": ctx["paid_at"].astimezone(PARIS)}) == earned
