"""Segments on a hand-built data set, SQLite and PostgreSQL: every filter, the consent rules
(the coarse profile only with profiling), the pages, the CSV export and its audit, and a
manager saving a segment and downloading its CSV in Chromium."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.privacy import consent
from server.privacy.models import AuditEntry
from server.segments import service
from server.segments.models import Segment
from server.segments.schemas import Definition
from server.stores.models import Store
from tests.support.fixtures_devices import serve
from tests.test_backoffice import BO, office
from tests.test_value import NOW, Data, refresh

VERSION = "2026-11"


def _consents(session, cid: str, **decisions: bool) -> None:
    consent.append(session, None, cid, {"terms": True, **decisions}, version=VERSION,
                   language="fr", channel="desk")
    session.flush()


@pytest.fixture
def people(app, creds):
    """P1..P5 (numbers by hand in the tests); stores TEST in Île-de-France, UIDOK in Vilnius."""
    data = Data(app, creds)
    s = data.session
    s.execute(update(Store).where(Store.code == "TEST").values(region="Île-de-France"))
    s.execute(update(Store).where(Store.code == "UIDOK").values(region="Vilnius"))
    p1 = data.customer("P1", sex="female", age_band="25-34", tier="gold")
    p2 = data.customer("P2", sex="female", age_band="25-34")
    p3 = data.customer("P3", "UIDOK", sex="male", age_band="35-44")
    p4 = data.customer("P4", "UIDOK", tier="silver")
    p5 = data.customer("P5", sex="female", age_band="25-34", erased_at=NOW)
    _consents(s, p1, profiling=True, marketing_email=True)
    _consents(s, p2, profiling=True, marketing_email=True)
    _consents(s, p2, profiling=False)  # withdrawn: the latest row decides
    _consents(s, p3, profiling=True, marketing_sms=True)
    _consents(s, p4)
    _consents(s, p5, profiling=True, marketing_email=True)
    # Saturday 23:30 UTC is Sunday 01:30 in Paris (the programme's time zone): July, summer
    data.purchase(p1, "50.00", datetime(2026, 7, 4, 23, 30, tzinfo=UTC),
                  lines=[("SHOE-1", "shoes")])
    # a Thursday in January: winter
    data.purchase(p3, "20.00", datetime(2026, 1, 15, 10, 0, tzinfo=UTC),
                  lines=[("BOOK-1", "books")])
    # 31 March 22:30 UTC is 1 April 00:30 in Paris (summer time): April, spring
    data.purchase(p4, "80.00", datetime(2026, 3, 31, 22, 30, tzinfo=UTC), store="UIDOK",
                  lines=[("SHOE-2", "shoes"), ("SOCKS", "textile")])
    data.purchase(p5, "900.00", datetime(2026, 7, 1, 12, 0, tzinfo=UTC),
                  lines=[("SHOE-3", "shoes")])
    data.commit()
    data.close()
    refresh(app, NOW)  # the value filters read the snapshot, computed at NOW
    return {"P1": p1, "P2": p2, "P3": p3, "P4": p4, "P5": p5}


def _members(app, people, **definition) -> set[str]:
    names = {v: k for k, v in people.items()}
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        found = s.scalars(service.members(s, Definition(**definition), NOW)).all()
        assert service.count(s, Definition(**definition), NOW) == len(found)
    return {names[c] for c in found}


CASES = [
    # the coarse profile needs profiling: P2 withdrew it, P5 is erased
    ({"sexes": ["female"]}, {"P1"}),
    ({"age_bands": ["25-34"]}, {"P1"}),
    ({"sexes": ["female", "male"]}, {"P1", "P3"}),
    ({"sexes": ["female"], "consents": ["marketing_email"]}, {"P1"}),
    ({}, {"P1", "P2", "P3", "P4"}),
    ({"consents": ["marketing_email"]}, {"P1", "P2"}),
    ({"consents": ["marketing_sms"]}, {"P3"}),
    ({"consents": ["profiling"]}, {"P1", "P3"}),
    ({"home_stores": ["TEST"]}, {"P1", "P2"}),
    ({"regions": ["Vilnius"]}, {"P3", "P4"}),
    ({"regions": ["Île-de-France", "Vilnius"]}, {"P1", "P2", "P3", "P4"}),
    ({"tiers": ["silver", "gold"]}, {"P1", "P4"}),
    # purchases, in the programme's local time
    ({"months": [4]}, {"P4"}),
    ({"months": [3]}, set()),
    ({"months": [7]}, {"P1"}),
    ({"seasons": ["summer"]}, {"P1"}),
    ({"seasons": ["winter", "spring"]}, {"P3", "P4"}),
    ({"weekdays": [6]}, {"P1"}),
    ({"weekdays": [5]}, set()),
    ({"weekdays": [3]}, {"P3"}),  # Thursday 15 January
    ({"weekdays": [2]}, {"P4"}),  # Wednesday 1 April in Paris (Tuesday 31 March in UTC)
    ({"categories": ["shoes"]}, {"P1", "P4"}),
    ({"categories": ["shoes"], "seasons": ["spring"]}, {"P4"}),
    ({"categories": ["books"], "regions": ["Île-de-France"]}, set()),
    ({"within_months": 6}, {"P1"}),
    # value: P4 90 (premium), P1 86 (high), P3 55 (medium), P2 inactive
    ({"bands": ["premium"]}, {"P4"}),
    ({"bands": ["high", "medium"]}, {"P1", "P3"}),
    ({"bands": ["inactive"]}, {"P2"}),
    ({"bands": ["inactive", "premium"]}, {"P2", "P4"}),
    ({"score_min": 56}, {"P1", "P4"}),
    ({"score_min": 50, "score_max": 86}, {"P1", "P3"}),
    ({"score_max": 54}, set()),
    ({"bands": ["high"], "sexes": ["female"], "regions": ["Île-de-France"]}, {"P1"}),
]


@pytest.mark.parametrize("definition, expected", CASES,
                         ids=[str(i) for i in range(len(CASES))])
def test_members_by_hand(app, people, definition, expected):
    assert _members(app, people, **definition) == expected


def test_purchases_at_the_ends_of_a_recent_range(app, creds, people, monkeypatch):
    """``within_months`` starts and ends at instants: on PostgreSQL the whole days between
    come from the daily aggregates, the parts of the first and last day from the purchases;
    the same members either way, and as SQLite finds them."""
    from server.reports import aggregates

    # NOW is Friday 20 November 2026 12:00 UTC, 13:00 in Paris; six months before, 20 May
    # 13:00 in Paris (summer time), 11:00 UTC
    data = Data(app, creds)
    for code, at in (("P2", datetime(2026, 5, 20, 10, 59, tzinfo=UTC)),  # just before
                     ("P3", datetime(2026, 5, 20, 11, 30, tzinfo=UTC)),  # first, part day
                     ("P2", datetime(2026, 11, 20, 12, 30, tzinfo=UTC)),  # after NOW
                     ("P4", datetime(2026, 11, 20, 11, 0, tzinfo=UTC)),  # today, before
                     ("P3", datetime(2026, 8, 11, 9, 0, tzinfo=UTC))):  # a Tuesday between
        data.purchase(people[code], "10.00", at, lines=[("EDGE-1", "edge")])
    data.commit()
    data.close()
    cases = [({"within_months": 6}, {"P1", "P3", "P4"}),
             ({"within_months": 6, "categories": ["edge"]}, {"P3", "P4"}),
             ({"within_months": 6, "categories": ["edge"], "weekdays": [4]}, {"P4"}),
             ({"within_months": 6, "weekdays": [1], "seasons": ["summer"]}, {"P3"}),
             ({"categories": ["edge"], "months": [5]}, {"P2", "P3"}),
             ({"within_months": 1, "categories": ["edge"]}, {"P4"})]
    found = [_members(app, people, **d) for d, _ in cases]
    assert found == [expected for _, expected in cases]
    monkeypatch.setattr(aggregates, "kept_in", lambda *_a: False)
    monkeypatch.setattr(service, "kept_in", lambda *_a: False)
    assert [_members(app, people, **d) for d, _ in cases] == found


def test_the_value_scores_the_cases_rely_on(app, people):
    from server.loyalty.programme import default_programme
    from server.value.service import scores

    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        rows = {r.customer_id: r for r in s.execute(scores(default_programme(), NOW))}
    got = {k: (rows[v].recency, rows[v].monetary, rows[v].score, rows[v].band)
           for k, v in people.items() if v in rows}
    # recency: P1 July, P4 March, P3 January; money: P4 80, P1 50, P3 20 (of 3: 100/66/33)
    # P1 (2500 + 2500 + 35x66 + 500) / 90 = 7810 / 90 -> 86; P3 4980 / 90 -> 55;
    # P4 8150 / 90 -> 90
    assert got == {"P1": (100, 66, 86, "high"), "P3": (33, 33, 55, "medium"),
                   "P4": (66, 100, 90, "premium")}


def test_a_profile_segment_follows_a_withdrawal_at_once(app, people):
    assert _members(app, people, sexes=["female"]) == {"P1"}
    with Session(app.extensions["loyalty.db"].main) as s:
        _consents(s, people["P1"], profiling=False)
        s.commit()
    assert _members(app, people, sexes=["female"]) == set()
    assert _members(app, people, age_bands=["25-34"]) == set()


@pytest.mark.parametrize("bad", [
    {"sexes": ["unknown"]}, {"months": [13]}, {"weekdays": [7]}, {"score_min": 90,
                                                                 "score_max": 10},
    {"consents": ["terms"]}, {"bands": ["gold"]}, {"colour": ["red"]}, {"within_months": 0},
])
def test_a_definition_is_validated(bad):
    with pytest.raises(ValidationError):
        Definition(**bad)


def test_the_definition_says_what_it_requires():
    assert Definition(sexes=["male"]).required_consents == ("profiling",)
    assert Definition(age_bands=["65+"], consents=["marketing_sms"]).required_consents == \
        ("marketing_sms", "profiling")
    assert Definition(regions=["Vilnius"]).required_consents == ()


def test_members_composes_into_other_queries(app, people):
    """Campaigns and reports join on it: one SELECT, usable as a subquery."""
    from server.customers.models import Customer

    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        found = service.members(s, Definition(regions=["Vilnius"]), NOW).subquery()
        tiers = dict(s.execute(select(Customer.id, Customer.tier)
                               .join(found, found.c.customer_id == Customer.id)).all())
    assert tiers == {people["P3"]: "member", people["P4"]: "silver"}


# --------------------------------------------------------------------------- pages, CSV


def _enrol(api, **consents) -> tuple[str, str]:
    email = f"{'-'.join(sorted(consents)) or 'none'}.{len(consents)}@example.org"
    r = api.enrol(email=email, consents={"terms": True, **consents})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["customer_id"], email


def _csv(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_a_manager_saves_counts_exports_and_deletes(app, api, creds, manager):
    x, x_mail = _enrol(api, marketing_email=True)
    y, _y_mail = _enrol(api, marketing_sms=True)
    z, z_mail = _enrol(api, marketing_email=True, profiling=True)
    o = office(app, creds, manager)
    assert "No segment saved yet." in o.page(f"{BO}/segments")
    o.get(f"{BO}/segments/new")

    # a count before saving, without a name
    r = o.post(f"{BO}/segments/new", {"home_stores": "TEST", "action": "count"})
    assert r.status_code == 200
    assert 'data-count="3"' in r.get_data(as_text=True)
    r = o.post(f"{BO}/segments/new", {"name": "", "home_stores": "TEST", "action": "save"})
    assert r.status_code == 422 and "This is required." in r.get_data(as_text=True)
    r = o.post(f"{BO}/segments/new", {"score_min": "90", "score_max": "10", "name": "Bad",
                                      "action": "save"})
    assert r.status_code == 422 and "score_min must not be above score_max" in \
        r.get_data(as_text=True)

    r = o.post(f"{BO}/segments/new", {"name": "Test shop customers", "home_stores": "TEST",
                                      "action": "save"})
    assert r.status_code == 303
    page_url = r.headers["Location"]
    segment_id = int(page_url.rsplit("/", 1)[1])
    page = o.page(page_url)
    assert 'data-count="3"' in page and "Nothing personal." in page
    # the same name twice is refused
    o.get(f"{BO}/segments/new")
    r = o.post(f"{BO}/segments/new", {"name": "Test shop customers", "action": "save"})
    assert r.status_code == 303
    assert "Another segment already has this name." in o.page(r.headers["Location"])
    listing = o.page(f"{BO}/segments")
    assert "Test shop customers" in listing and "Home store: TEST" in listing

    # analysis: everyone, nothing personal
    o.get(page_url)
    rows = _csv(o.post(f"{BO}/segments/{segment_id}/export.csv", {"purpose": ""}))
    assert [r["customer_id"] for r in rows] == sorted([x, y, z])
    assert list(rows[0]) == ["customer_id", "tier", "points", "value_score", "band",
                             "home_store"]
    assert {r["band"] for r in rows} == {"inactive"} and rows[0]["home_store"] == "TEST"
    # for an email campaign: only those who allowed email; without contacts, still nothing
    rows = _csv(o.post(f"{BO}/segments/{segment_id}/export.csv",
                       {"purpose": "marketing_email"}))
    assert [r["customer_id"] for r in rows] == sorted([x, z]) and "email" not in rows[0]
    before = _audit_count(app)
    rows = _csv(o.post(f"{BO}/segments/{segment_id}/export.csv",
                       {"purpose": "marketing_email", "contacts": "y"}))
    assert {r["customer_id"]: r["email"] for r in rows} == {x: x_mail, z: z_mail}
    assert rows[0]["first_name"] == "Élodie" and rows[0]["language"] == "fr"
    assert "phone" not in rows[0]
    with Session(app.extensions["loyalty.db"].main) as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()[before:]
    [entry] = [e for e in entries if e.action == "personal-data.export-list"]
    assert entry.view == "backoffice:segments" and entry.actor.startswith("staff:")
    assert entry.detail["customers"] == sorted([x, z])
    assert entry.detail["purpose"] == "marketing_email" and x_mail not in str(entry.detail)

    # editing, then deleting
    o.get(page_url)
    r = o.post(page_url, {"name": "Test shop, email", "home_stores": "TEST",
                          "consents": "marketing_email", "action": "save"})
    assert r.status_code == 303
    assert 'data-count="2"' in o.page(page_url)
    r = o.post(f"{BO}/segments/{segment_id}/delete")
    assert r.status_code == 303
    with Session(app.extensions["loyalty.db"].main) as s:
        assert s.scalars(select(Segment)).all() == []
    assert o.get(page_url).status_code == 303  # gone: back with a message


def _audit_count(app) -> int:
    with Session(app.extensions["loyalty.db"].main) as s:
        return len(s.scalars(select(AuditEntry.id)).all())


def test_desk_may_not_open_segments_nor_export(app, api, creds, manager):
    _enrol(api, marketing_email=True)
    o = office(app, creds, manager)
    o.get(f"{BO}/segments/new")
    r = o.post(f"{BO}/segments/new", {"name": "All", "action": "save"})
    segment_id = int(r.headers["Location"].rsplit("/", 1)[1])
    desk = office(app, creds, "desk1")
    assert desk.get(f"{BO}/segments").status_code == 403
    assert desk.get(f"{BO}/segments/{segment_id}").status_code == 403
    before = _audit_count(app)
    r = desk.post(f"{BO}/segments/{segment_id}/export.csv",
                  {"purpose": "marketing_email", "contacts": "y"})
    assert r.status_code == 403 and "@example.org" not in r.get_data(as_text=True)
    assert _audit_count(app) == before
    # and the privacy service refuses a desk's contact list whoever calls it
    from server.api.problems import Problem
    from server.devices.auth import Principal
    from server.privacy.service import contacts

    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        who = Principal(kind="staff", role="desk", id=1, store_id=None)
        with pytest.raises(Problem) as refused:
            contacts(s, None, who, ["C-0000-0000"], "marketing_email", view="test")
    assert refused.value.slug == "forbidden-role"


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_a_manager_saves_a_segment_and_downloads_its_csv_in_chromium(app, api, creds, browser,
                                                                     manager):
    from tests.support.kiosk_screens import save

    with Session(app.extensions["loyalty.db"].main) as s:
        s.execute(update(Store).where(Store.code == "TEST").values(region="Île-de-France"))
        s.execute(update(Store).where(Store.code == "UIDOK").values(region="Vilnius"))
        s.commit()
    bought = []
    for i, (consents, euros) in enumerate(((("marketing_email",), "120.00"),
                                           ((), "35.00"),
                                           (("marketing_email", "profiling"), "260.00"),
                                           (("marketing_sms",), "18.50"))):
        r = api.enrol(email=f"shopper{i}@example.org",
                      consents={"terms": True, **{c: True for c in consents}})
        cid = r.get_json()["customer_id"]
        card = api.issue_card(cid).get_json()
        for _n in range(i % 3 + 1):
            assert api.purchase([api.line("SHOE-1", 1, euros, category="shoes")],
                                card=card["url"]).status_code == 201
        bought.append(cid)
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB",
                                      accept_downloads=True)
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(f"{url}/backoffice/login")
            page.get_by_label("User name").fill(manager)
            page.get_by_label("Password").fill(creds.passwords[manager])
            with page.expect_navigation():
                page.get_by_role("button", name="Log in").click()

            with page.expect_navigation():
                page.get_by_role("link", name="Value", exact=True).click()
            assert page.locator("tr[data-customer]").count() == 0  # not computed yet
            with page.expect_navigation():
                page.get_by_role("button", name="Compute the scores now").click()
            assert page.locator("tr[data-customer]").count() == 4
            assert page.locator("tr[data-customer]").first.get_attribute("data-band") == \
                "premium"
            save(page, "backoffice-value")

            with page.expect_navigation():
                page.get_by_role("link", name="Segments", exact=True).click()
            with page.expect_navigation():
                page.get_by_role("link", name="New segment").click()
            page.get_by_label("Name").fill("Shoe buyers for the email offer")
            page.get_by_label("Île-de-France").check()
            page.get_by_label("Bought in the categories").fill("shoes")
            page.get_by_label("Offers by email").check()
            with page.expect_navigation():
                page.get_by_role("button", name="Count the customers").click()
            assert page.get_by_role("status").last.inner_text() == \
                "2 customers match this definition today."
            save(page, "backoffice-segments")
            with page.expect_navigation():
                page.get_by_role("button", name="Save the segment").click()
            assert "Segment saved: Shoe buyers for the email offer." in page.content()

            page.get_by_label("What the list is for").select_option("marketing_email")
            page.get_by_label("Include the name and contact detail").check()
            with page.expect_download() as download:
                page.get_by_role("button", name="Download the CSV").click()
            text = Path(download.value.path()).read_text(encoding="utf-8")
        finally:
            context.close()
    assert not errors, f"the page logged errors: {errors}"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["customer_id"] for r in rows) == sorted([bought[0], bought[2]])
    assert {r["email"] for r in rows} == {"shopper0@example.org", "shopper2@example.org"}
    assert re.fullmatch(r"\d+", rows[0]["value_score"])


def test_an_admin_sets_a_store_region_that_segments_use(app, api, creds, admin):
    cid, _mail = _enrol(api)
    with Session(app.extensions["loyalty.db"].main) as s:
        store_id = s.scalar(select(Store.id).where(Store.code == "TEST"))
    o = office(app, creds, admin)
    url = f"{BO}/admin/stores/{store_id}"
    o.get(url)
    r = o.post(url, {"name": "Test shop", "country": "FR", "region": "x" * 81})
    assert r.status_code == 422 and "A region has at most 80 characters." in \
        r.get_data(as_text=True)
    r = o.post(url, {"name": "Test shop", "country": "FR", "region": "  Île-de-France "})
    assert r.status_code == 303
    with Session(app.extensions["loyalty.db"].main) as s:
        assert s.get(Store, store_id).region == "Île-de-France"
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "store.edit")).one()
        assert entry.detail == {"store": "TEST", "fields": ["region"]}
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as s:
        found = s.scalars(service.members(s, Definition(regions=["Île-de-France"]),
                                          NOW)).all()
    assert found == [cid]
    assert "Île-de-France" in o.page(f"{BO}/segments/new")


def test_consenting_is_decided_by_the_latest_row_per_customer_and_purpose(app, creds):
    """The ledger query the segments, campaigns and exports share: the newest row of each
    (customer, purpose) decides, whatever the older ones or the other purposes say; the
    erased are out whatever the ledger says."""
    from server.customers.models import Customer
    from server.privacy.models import Consent

    data = Data(app, creds)
    s = data.session
    ids = {name: data.customer(code) for name, code in
           [("yes", "1"), ("withdrawn", "2"), ("again", "3"), ("never", "4"), ("other", "5"),
            ("erased", "6"), ("no_row", "7")]}

    def row(name: str, purpose: str, granted: bool) -> None:
        s.add(Consent(customer_id=ids[name], purpose=purpose, granted=granted,
                      text_version=VERSION, language="fr", channel="desk"))
        s.flush()

    row("yes", "marketing_email", True)
    row("withdrawn", "marketing_email", True)
    row("withdrawn", "marketing_email", False)
    row("again", "marketing_email", False)
    row("again", "marketing_email", True)
    row("again", "marketing_sms", False)  # a newer row of another purpose changes nothing
    row("never", "marketing_email", False)
    row("other", "marketing_sms", True)
    row("erased", "marketing_email", True)
    s.execute(update(Customer).where(Customer.id == ids["erased"]).values(erased_at=NOW))
    s.commit()
    try:
        assert set(s.scalars(consent.consenting("marketing_email"))) == \
            {ids["yes"], ids["again"]}
        assert set(s.scalars(consent.consenting("marketing_sms"))) == {ids["other"]}
        # narrowed by the caller (as the contact export does, by chunks of ids)
        chunk = [ids["again"], ids["withdrawn"]]
        assert set(s.scalars(consent.consenting("marketing_email")
                             .where(Consent.customer_id.in_(chunk)))) == {ids["again"]}
        # as a segment uses it: customers whose id is in it
        assert set(s.scalars(select(Customer.id).where(
            Customer.id.in_(consent.consenting("marketing_email"))))) == \
            {ids["yes"], ids["again"]}
    finally:
        s.close()
