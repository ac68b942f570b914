"""Tickets: warranty claims from purchase lines, support issues and complaints; the products
catalogue; the history of changes; the tap record; erasure and access; the back office."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.loyalty.models import PurchaseLine
from server.tickets.models import Product, Ticket, TicketNote
from server.tickets.service import add_months
from tests.support.fixtures_devices import serve
from tests.support.fixtures_server import assert_problem
from tests.test_backoffice import BO, Office, office

PARIS = ZoneInfo("Europe/Paris")  # the default programme's time zone
CATALOGUE = ("sku,name,category,warranty_months\n"
             "TV-55,Television 55 inches,tv,24\n"
             "KETTLE,Kettle,kitchen,12\n"
             "CABLE,HDMI cable,accessories,0\n")


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _products(app, tmp_path, text: str, name: str = "products.csv"):
    """``flask products import``; its ``output`` has stdout and stderr as a terminal shows."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return app.test_cli_runner().invoke(args=["products", "import", str(path)])


def _customer(api) -> str:
    r = api.enrol()
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _buy(app, api, customer_id: str, *skus: str, paid_at: datetime | None = None) -> list[int]:
    """A purchase of one of each SKU; returns the ids of its lines, in order."""
    lines = [api.line(sku, 1, "100.00", name=f"{sku} as printed on the receipt")
             for sku in skus]
    kw = {"paid_at": paid_at.isoformat()} if paid_at else {}
    r = api.purchase(lines, customer_id=customer_id, **kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    with _main(app) as s:
        return list(s.scalars(select(PurchaseLine.id).where(
            PurchaseLine.purchase_id == r.get_json()["purchase_id"])
            .order_by(PurchaseLine.line_no)))


def _open(api, creds, customer_id: str, user: str = "desk1", **body):
    body = {"kind": "support", "subject": "Something to look at", **body}
    return api.client.post(f"/api/v1/customers/{customer_id}/tickets", json=body,
                           headers=creds.staff_auth(user))


def _patch(api, creds, ticket_id: int, user: str = "desk1", **body):
    return api.client.patch(f"/api/v1/tickets/{ticket_id}", json=body,
                            headers=creds.staff_auth(user))


@pytest.fixture
def catalogue(app, tmp_path):
    result = _products(app, tmp_path, CATALOGUE)
    assert result.exit_code == 0, result.output
    return result


# --------------------------------------------------------------------------- products


def test_products_import_is_an_upsert_safe_twice_with_bad_lines_reported(app, tmp_path):
    first = _products(app, tmp_path, CATALOGUE)
    assert first.exit_code == 0, first.output
    assert "3 added, 0 updated, 0 unchanged, 0 rejected" in first.output
    again = _products(app, tmp_path, CATALOGUE)
    assert "0 added, 0 updated, 3 unchanged, 0 rejected" in again.output

    bad = ("sku,name,category,warranty_months\n"
           "TV-55,Television 55 inches,tv,36\n"      # 2: changed months: updated
           ",No sku,x,12\n"                          # 3
           "IRON,,home,12\n"                         # 4
           "RADIO,Radio,audio,-1\n"                  # 5
           "LAMP,Lamp,home,twelve\n"                 # 6
           "KETTLE,Kettle,kitchen,12,extra\n"        # 7
           "DRYER,Hair dryer,,24\n"                  # 8: no category is fine
           "DRYER,Hair dryer again,,24\n")           # 9: twice in one file
    result = _products(app, tmp_path, bad, "bad.csv")
    assert result.exit_code == 0, result.output
    output = result.output
    assert "line 2" not in result.stderr
    assert "1 added, 1 updated, 0 unchanged, 6 rejected" in output
    for expected in ("line 3: sku is empty", "line 4: name is empty",
                     "line 5: warranty_months must be a whole number",
                     "line 6: warranty_months must be a whole number",
                     "line 7: too many columns", "line 9: sku DRYER is already on line 8"):
        assert expected in output, output
    with _main(app) as s:
        products = {p.sku: p for p in s.scalars(select(Product))}
    assert set(products) == {"TV-55", "KETTLE", "CABLE", "DRYER"}
    assert products["TV-55"].warranty_months == 36
    assert products["DRYER"].category is None

    missing = _products(app, tmp_path, "sku,name\nA,B\n", "header.csv")
    assert missing.exit_code != 0
    assert "warranty_months" in missing.output


def test_calendar_months_are_clamped_to_the_month_end():
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert add_months(date(2025, 4, 1), 24) == date(2027, 4, 1)
    assert add_months(date(2025, 11, 30), 3) == date(2026, 2, 28)
    assert add_months(date(2025, 6, 15), 0) == date(2025, 6, 15)


# --------------------------------------------------------------------------- warranty claims


def test_warranty_claim_takes_product_dates_and_warranty_from_the_line(app, api, creds,
                                                                      catalogue):
    cid = _customer(api)
    now = datetime.now(UTC)
    recent = _buy(app, api, cid, "KETTLE", "UNLISTED", paid_at=now - timedelta(days=40))
    old = _buy(app, api, cid, "KETTLE", paid_at=now - timedelta(days=800))
    # 22:30 UTC on 31 March 2025 is 1 April in Paris: the warranty runs from the local date
    midnight = _buy(app, api, cid, "TV-55", paid_at=datetime(2025, 3, 31, 22, 30, tzinfo=UTC))

    r = _open(api, creds, cid, kind="warranty", subject="Does not heat",
              purchase_line_id=recent[0], serial_number=" KT-0042 ", note="Bought last month")
    assert r.status_code == 201, r.get_data(as_text=True)
    claim = r.get_json()
    bought = (now - timedelta(days=40)).astimezone(PARIS).date()
    assert claim["kind"] == "warranty" and claim["status"] == "open"
    assert claim["sku"] == "KETTLE" and claim["product_name"] == "Kettle"  # the catalogue's name
    assert claim["serial_number"] == "KT-0042"
    assert claim["purchase_date"] == bought.isoformat()
    assert claim["warranty_end"] == add_months(bought, 12).isoformat()
    assert claim["warranty"] == "in"
    assert claim["store"] == "TEST" and claim["created_by"].startswith("staff:")
    assert [n["kind"] for n in claim["notes"]] == ["status"]
    assert claim["notes"][0]["text"] == "Bought last month"

    out = _open(api, creds, cid, kind="warranty", subject="Broken lid",
                purchase_line_id=old[0]).get_json()
    assert out["warranty"] == "out"  # said, and the claim is opened all the same
    assert out["status"] == "open"

    unknown = _open(api, creds, cid, kind="warranty", subject="Scratched",
                    purchase_line_id=recent[1]).get_json()
    assert unknown["warranty_end"] is None and unknown["warranty"] == "unknown"
    assert unknown["product_name"] == "UNLISTED as printed on the receipt"

    tv = _open(api, creds, cid, kind="warranty", subject="No picture",
               purchase_line_id=midnight[0]).get_json()
    assert tv["purchase_date"] == "2025-04-01"
    assert tv["warranty_end"] == "2027-04-01"

    # a complaint may name a line too; a support issue needs none
    complaint = _open(api, creds, cid, kind="complaint", subject="Rude delivery").get_json()
    assert complaint["purchase_line_id"] is None and complaint["warranty"] is None


def test_a_line_of_another_customer_is_refused(app, api, creds, catalogue):
    mine, theirs = _customer(api), _customer(api)
    their_line = _buy(app, api, theirs, "KETTLE")[0]
    r = _open(api, creds, mine, kind="warranty", subject="Not mine", purchase_line_id=their_line)
    assert_problem(r, 404, "purchase-line-not-found")
    assert_problem(_open(api, creds, mine, kind="warranty", subject="No line"), 422,
                   "validation-error")
    assert_problem(_open(api, creds, mine, kind="warranty", subject="x",
                         purchase_line_id=999999), 404, "purchase-line-not-found")
    assert_problem(_open(api, creds, "C-0000-0000"), 404, "customer-not-found")
    assert_problem(_open(api, creds, mine, kind="repair"), 422, "validation-error")
    assert_problem(_open(api, creds, mine, subject="x" * 121), 422, "validation-error")
    assert_problem(_open(api, creds, mine, assignee="nobody"), 422, "validation-error")
    assert_problem(_open(api, creds, mine, assignee="cashier1"), 422, "validation-error")
    with _main(app) as s:
        assert s.scalars(select(Ticket)).all() == []


# --------------------------------------------------------------------------- changes


def test_status_assignee_and_due_changes_are_kept_in_the_history(app, api, creds, manager):
    cid = _customer(api)
    ticket = _open(api, creds, cid, subject="App login fails").get_json()
    tid = ticket["id"]

    r = _patch(api, creds, tid, status="in-progress", note="Calling the customer back")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["status"] == "in-progress"
    r = _patch(api, creds, tid, assignee=manager, due_date="2030-01-15")
    assert r.get_json()["assignee"] == manager and r.get_json()["due_date"] == "2030-01-15"
    note = api.client.post(f"/api/v1/tickets/{tid}/notes", json={"text": "Customer says hi"},
                           headers=creds.staff_auth(manager))
    assert note.status_code == 201 and note.get_json()["kind"] == "note"
    assert _patch(api, creds, tid, status="in-progress").get_json()["status"] == "in-progress"
    r = _patch(api, creds, tid, user=manager, assignee=None, due_date=None, status="closed")
    body = r.get_json()
    assert body["status"] == "closed" and body["closed_at"] and body["assignee"] is None

    history = [(n["kind"], n["old_value"], n["new_value"], n["text"]) for n in body["notes"]]
    assert history == [
        ("status", None, "open", ""),
        ("status", "open", "in-progress", "Calling the customer back"),
        ("assignment", None, manager, ""),
        ("due", None, "2030-01-15", ""),
        ("note", None, None, "Customer says hi"),
        ("status", "in-progress", "closed", ""),
        ("assignment", manager, None, ""),
        ("due", "2030-01-15", None, ""),
    ]  # the repeated "in-progress" changed nothing and wrote nothing
    authors = {n["author"] for n in body["notes"]}
    assert len(authors) == 2  # desk1 and the manager, as actor strings

    # closed: no note, no change but reopening
    assert_problem(api.client.post(f"/api/v1/tickets/{tid}/notes", json={"text": "late"},
                                   headers=creds.staff_auth("desk1")), 409, "ticket-closed")
    assert_problem(_patch(api, creds, tid, due_date="2030-02-01"), 409, "ticket-closed")
    assert_problem(_patch(api, creds, tid, status="resolved"), 409, "ticket-closed")
    reopened = _patch(api, creds, tid, status="open", note="Came back").get_json()
    assert reopened["status"] == "open" and reopened["closed_at"] is None
    assert reopened["notes"][-1]["text"] == "Came back"

    assert_problem(_patch(api, creds, tid), 422, "validation-error")
    assert_problem(_patch(api, creds, tid, status=None), 422, "validation-error")
    assert_problem(_patch(api, creds, tid, status="lost"), 422, "validation-error")
    assert_problem(_patch(api, creds, 999999, status="open"), 404, "ticket-not-found")
    got = api.client.get(f"/api/v1/tickets/{tid}", headers=creds.staff_auth("desk1"))
    assert got.status_code == 200 and len(got.get_json()["notes"]) == 9
    listed = api.client.get(f"/api/v1/customers/{cid}/tickets",
                            headers=creds.staff_auth("desk1")).get_json()
    assert [t["id"] for t in listed["tickets"]] == [tid]


def test_cashiers_and_tills_may_not_see_or_open_tickets(app, api, creds):
    cid = _customer(api)
    tid = _open(api, creds, cid).get_json()["id"]
    for headers in (creds.staff_auth("cashier1"), creds.h("till"), creds.h("kiosk")):
        assert_problem(api.client.get(f"/api/v1/customers/{cid}/tickets", headers=headers),
                       403, "forbidden-role")
        assert_problem(api.client.post(f"/api/v1/customers/{cid}/tickets", headers=headers,
                                       json={"kind": "support", "subject": "x"}),
                       403, "forbidden-role")
        assert_problem(api.client.patch(f"/api/v1/tickets/{tid}", headers=headers,
                                        json={"status": "closed"}), 403, "forbidden-role")
    assert_problem(api.client.get(f"/api/v1/tickets/{tid}"), 401, "unauthenticated")
    cashier = office(app, creds, "cashier1")
    for url in (f"{BO}/tickets", f"{BO}/tickets/{tid}",
                f"{BO}/customers/{cid}/tickets/new"):
        assert cashier.get(url).status_code == 403, url
    r = cashier.post(f"{BO}/tickets/{tid}/status", {"status": "closed"})
    assert r.status_code == 403
    r = cashier.post(f"{BO}/customers/{cid}/tickets/new", {"kind": "support", "subject": "x"})
    assert r.status_code == 403
    with _main(app) as s:
        assert s.scalar(select(Ticket.status).where(Ticket.id == tid)) == "open"
        assert len(s.scalars(select(Ticket)).all()) == 1


# --------------------------------------------------------------------------- the till


def test_open_tickets_are_in_the_tap_record_newest_first(app, api, creds):
    cid, card = _customer(api), None
    card = api.issue_card(cid).get_json()
    assert api.tap(url=card["url"]).get_json()["open_tickets"] == []
    yesterday = (datetime.now(PARIS) - timedelta(days=1)).date().isoformat()
    late = _open(api, creds, cid, subject="Late one", due_date=yesterday).get_json()
    closed = _open(api, creds, cid, subject="Done").get_json()
    _patch(api, creds, closed["id"], status="closed")
    resolved = _open(api, creds, cid, subject="Fixed").get_json()
    _patch(api, creds, resolved["id"], status="resolved")
    waiting = _open(api, creds, cid, kind="complaint", subject="Waiting for the supplier",
                    due_date="2099-01-01").get_json()
    _patch(api, creds, waiting["id"], status="waiting")

    record = api.tap(url=card["url"]).get_json()
    assert record["open_tickets"] == [
        {"id": waiting["id"], "kind": "complaint", "status": "waiting",
         "subject": "Waiting for the supplier", "due_date": "2099-01-01", "overdue": False},
        {"id": late["id"], "kind": "support", "status": "open", "subject": "Late one",
         "due_date": yesterday, "overdue": True},
    ]
    for i in range(5):
        _open(api, creds, cid, subject=f"More {i}")
    shown = api.tap(url=card["url"]).get_json()["open_tickets"]
    assert [t["subject"] for t in shown] == ["More 4", "More 3", "More 2", "More 1", "More 0"]


# --------------------------------------------------------------------------- privacy


def test_erasure_blanks_notes_subjects_and_serials_and_export_has_the_tickets(
        app, api, creds, manager, catalogue):
    cid, other = _customer(api), _customer(api)
    line = _buy(app, api, cid, "TV-55")[0]
    tid = _open(api, creds, cid, kind="warranty", subject="Mme Durand's TV", serial_number="SN1",
                purchase_line_id=line, note="Call her on 06 12 34 56 78").get_json()["id"]
    api.client.post(f"/api/v1/tickets/{tid}/notes", json={"text": "Lives at 3 rue X"},
                    headers=creds.staff_auth("desk1"))
    _patch(api, creds, tid, status="waiting", note="Waiting for Mme Durand")
    kept = _open(api, creds, other, subject="Other customer", note="untouched").get_json()["id"]

    export = api.client.get(f"/api/v1/customers/{cid}/export",
                            headers=creds.staff_auth("desk1")).get_json()
    [ticket] = export["tickets"]
    assert ticket["id"] == tid and ticket["serial_number"] == "SN1"
    assert ticket["sku"] == "TV-55" and ticket["warranty_end"]
    assert [n["text"] for n in ticket["notes"]] == [
        "Call her on 06 12 34 56 78", "Lives at 3 rue X", "Waiting for Mme Durand"]

    r = api.client.post(f"/api/v1/customers/{cid}/erasure", headers=creds.staff_auth(manager),
                        json={"reason": "customer-request", "confirm": cid})
    assert r.status_code == 200, r.get_data(as_text=True)
    with _main(app) as s:
        erased = s.get(Ticket, tid)
        assert erased.serial_number is None and erased.subject == "(erased)"
        assert erased.status == "waiting" and erased.sku == "TV-55"  # the statistics stay
        texts = s.scalars(select(TicketNote.text).where(TicketNote.ticket_id == tid)).all()
        assert texts and set(texts) == {""}
        kinds = s.scalars(select(TicketNote.kind).where(TicketNote.ticket_id == tid)).all()
        assert kinds == ["status", "note", "status"]
        assert s.scalars(select(TicketNote.text).where(TicketNote.ticket_id == kept)).all() \
            == ["untouched"]
    assert_problem(_open(api, creds, cid), 410, "customer-erased")
    # a second erasure finds nothing more to do
    again = api.client.post(f"/api/v1/customers/{cid}/erasure", headers=creds.staff_auth(manager),
                            json={"reason": "customer-request", "confirm": cid})
    assert again.get_json()["already_erased"] is True


# --------------------------------------------------------------------------- back office


def _rows(body: str) -> list[str]:
    return re.findall(r"<tr class=\"([^\"]*)\">\s*<td><a href=\"/backoffice/tickets/(\d+)\"",
                      body)


def test_back_office_list_filters_open_first_and_marks_overdue(app, api, creds, manager):
    cid = _customer(api)
    yesterday = (datetime.now(PARIS) - timedelta(days=1)).date().isoformat()
    late = _open(api, creds, cid, subject="Late", due_date=yesterday).get_json()["id"]
    later = _open(api, creds, cid, kind="complaint", subject="Later", due_date="2099-01-01",
                  assignee=manager).get_json()["id"]
    done = _open(api, creds, cid, kind="complaint", subject="Done").get_json()["id"]
    _patch(api, creds, done, status="closed")

    o = office(app, creds, "desk1")
    body = o.page(f"{BO}/tickets")
    rows = _rows(body)
    assert [int(t) for _, t in rows] == [late, later]  # open ones, overdue first
    assert "overdue" in rows[0][0] and "overdue" not in rows[1][0]
    assert 'aria-current="page"' in body and ">Tickets</a>" in body
    assert body.index(">Find a customer</a>") < body.index(">Tickets</a>")  # the header's order

    every = [int(t) for _, t in _rows(o.page(f"{BO}/tickets?status=all"))]
    assert every == [late, later, done]  # the closed one last
    assert [int(t) for _, t in _rows(o.page(f"{BO}/tickets?status=all&kind=complaint"))] \
        == [later, done]
    assert [int(t) for _, t in _rows(o.page(f"{BO}/tickets?overdue=y"))] == [late]
    assert [int(t) for _, t in _rows(o.page(f"{BO}/tickets?assignee=none"))] == [late]
    with _main(app) as s:
        from server.staff.models import Staff

        manager_id = s.scalar(select(Staff.id).where(Staff.username == manager))
        store_id = s.scalar(select(Ticket.store_id).where(Ticket.id == late))
    assert [int(t) for _, t in _rows(o.page(f"{BO}/tickets?assignee={manager_id}"))] == [later]
    assert [int(t) for _, t in _rows(o.page(f"{BO}/tickets?store={store_id}&status=closed"))] \
        == [done]
    assert _rows(o.page(f"{BO}/tickets?assignee=me")) == []
    assert [int(t) for _, t in _rows(office(app, creds, manager).page(
        f"{BO}/tickets?assignee=me"))] == [later]
    # a value from an old link shows the default list rather than an error
    assert [int(t) for _, t in _rows(o.page(f"{BO}/tickets?status=bogus"))] == [late, later]

    customer_page = o.page(f"{BO}/customers/{cid}")
    assert 'id="tickets"' in customer_page and "Late" in customer_page
    assert f'href="/backoffice/customers/{cid}/tickets/new"' in customer_page


def test_back_office_warranty_claim_from_a_line_then_changes(app, api, creds, manager,
                                                             catalogue):
    cid, other = _customer(api), _customer(api)
    line = _buy(app, api, cid, "TV-55", paid_at=datetime.now(UTC) - timedelta(days=10))[0]
    their_line = _buy(app, api, other, "KETTLE")[0]
    o = office(app, creds, "desk1")

    chooser = o.page(f"{BO}/customers/{cid}/tickets/new")
    assert f"/backoffice/customers/{cid}/tickets/new?line={line}" in chooser
    page = o.page(f"{BO}/customers/{cid}/tickets/new?line={line}")
    assert "Television 55 inches" in page and "in warranty" in page
    assert '<option selected value="warranty">' in page or \
        'value="warranty" selected' in page

    r = o.get(f"{BO}/customers/{cid}/tickets/new?line={their_line}")
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/customers/{cid}")
    flashed = html.unescape(o.page(r.headers["Location"]))
    assert "This purchase line is not one of this customer's." in flashed

    # nothing typed: the form says what is missing; a warranty claim without a line neither
    r = o.post(f"{BO}/customers/{cid}/tickets/new", {"kind": "warranty", "subject": ""})
    body = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 422 and "This is required." in body
    assert "A warranty claim is opened from a purchase line" in body

    r = o.post(f"{BO}/customers/{cid}/tickets/new", {
        "kind": "warranty", "line": str(line), "subject": "No picture",
        "serial_number": "TV55-1234", "due_date": "2099-05-01", "note": "Dropped off today"})
    assert r.status_code == 303, r.get_data(as_text=True)[:500]
    url = r.headers["Location"]
    tid = int(url.rsplit("/", 1)[1])
    page = o.page(url)
    assert f"Ticket {tid} opened." in page and "TV55-1234" in page
    assert "in warranty" in page and "2099-05-01" in page and "Dropped off today" in page

    assert o.post(f"{url}/status", {"status": "waiting", "note": "Sent to the maker"}) \
        .status_code == 303
    with _main(app) as s:
        from server.staff.models import Staff

        manager_id = s.scalar(select(Staff.id).where(Staff.username == manager))
    assert o.post(f"{url}/assignee", {"assignee": str(manager_id)}).status_code == 303
    assert o.post(f"{url}/due", {"due_date": "2099-06-01"}).status_code == 303
    assert o.post(f"{url}/notes", {"text": "Maker confirms"}).status_code == 303
    bad = o.post(f"{url}/due", {"due_date": "next week"})
    assert bad.status_code == 422 and "Give a date as YYYY-MM-DD." in bad.get_data(as_text=True)
    assert o.post(f"{url}/notes", {"text": ""}).status_code == 422
    page = o.page(url)
    for expected in ("Status: open → waiting", "Sent to the maker", f"Assigned to {manager}",
                     "Due date: 2099-05-01 → 2099-06-01", "Maker confirms"):
        assert expected in page, expected

    assert o.post(f"{url}/status", {"status": "closed"}).status_code == 303
    r = o.post(f"{url}/notes", {"text": "after closing"})
    assert r.status_code == 303
    assert "This ticket is closed: reopen it first." in o.page(url)
    with _main(app) as s:
        ticket = s.get(Ticket, tid)
        assert ticket.status == "closed" and ticket.assignee_staff_id == manager_id
        texts = s.scalars(select(TicketNote.text).where(TicketNote.ticket_id == tid)).all()
        assert "after closing" not in texts
    assert o.get(f"{BO}/tickets/999999").status_code == 303  # to the search, with a message

    # in French, the same page
    fr = o.page(f"{url}?lang=fr")
    assert "<html lang=\"fr\"" in fr


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_desk_opens_a_warranty_claim_in_chromium(app, api, creds, browser, catalogue):
    from tests.support.kiosk_screens import save

    cid = _customer(api)
    _buy(app, api, cid, "KETTLE", paid_at=datetime.now(UTC) - timedelta(days=400))
    _buy(app, api, cid, "TV-55", "CABLE", paid_at=datetime.now(UTC) - timedelta(days=20))
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(f"{url}/backoffice/login")
            page.get_by_label("User name").fill("desk1")
            page.get_by_label("Password").fill(creds.passwords["desk1"])
            with page.expect_navigation():
                page.get_by_role("button", name="Log in").click()
            page.get_by_label("Email, phone number or customer number").fill(cid)
            with page.expect_navigation():
                page.get_by_role("button", name="Search").click()
            assert page.locator("h1").inner_text().startswith(cid)

            # the customer page's Tickets part, then the product bought 20 days ago
            with page.expect_navigation():
                page.get_by_role("link", name="Open a ticket").click()
            with page.expect_navigation():
                page.get_by_role("link", name=re.compile(r"Claim warranty: Television")).click()
            assert page.get_by_text("in warranty", exact=True).is_visible()
            assert page.get_by_label("Kind").input_value() == "warranty"
            page.get_by_label("Subject").fill("No picture after two weeks")
            page.get_by_label("Serial number").fill("TV55-000123")
            page.get_by_label("First note").fill("Customer brought the remote too.")
            save(page, "backoffice-ticket-new")
            with page.expect_navigation():
                page.get_by_role("button", name="Open the ticket").click()
            assert page.get_by_role("status").first.inner_text().startswith("Ticket ")

            page.get_by_label("New status").select_option("in-progress")
            page.get_by_label("Why (optional)").fill("Sent to the workshop")
            with page.expect_navigation():
                page.get_by_role("button", name="Change the status").click()
            assert page.get_by_role("status").first.inner_text() == \
                "Status changed to in progress."
            assert page.locator(".ticket-history").get_by_text("Sent to the workshop") \
                .is_visible()
            save(page, "backoffice-ticket")
        finally:
            context.close()
    assert not errors, f"the page logged errors: {errors}"
    with _main(app) as s:
        [ticket] = s.scalars(select(Ticket)).all()
    assert ticket.kind == "warranty" and ticket.status == "in-progress"
    assert ticket.product_name == "Television 55 inches" and ticket.serial_number == "TV55-000123"


def test_anonymous_pages_ask_for_a_login(app, api):
    o = Office(app)
    r = o.get(f"{BO}/tickets")
    assert r.status_code == 302 and "/backoffice/login" in r.headers["Location"]
