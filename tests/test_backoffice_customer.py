"""The back office's search (code, card, email, phone, name), the customer file on one page,
and card actions (block, unblock, reissue with a printed QR card), on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.cards.models import Card
from server.db import utcnow
from server.loyalty.models import Purchase
from server.privacy.models import AuditEntry
from server.vault.models import VaultRecord
from tests.support.backoffice_browser import log_in
from tests.support.fixtures_devices import serve
from tests.support.fixtures_server import assert_problem
from tests.test_backoffice import BO, _audit, _flashes, office
from tests.test_value import refresh

CARD_PAGE = re.compile(r'href="(/backoffice/customers/(C-[0-9A-Z-]+)/cards/([0-9a-f]{16})/print)"')


def _enrol(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _card(api, cid: str) -> dict:
    r = api.issue_card(cid)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def _searches(app) -> list[AuditEntry]:
    return [e for e in _audit(app) if e.action == "personal-data.search"]


def _goes_to(response, cid: str) -> bool:
    return response.status_code == 303 and response.headers["Location"].endswith(
        f"/customers/{cid}")


# --------------------------------------------------------------------------- search


def test_search_by_code_card_email_and_phone(app, api, creds):
    cid = _enrol(api, email="Anna.Petit@Example.org", phone="06 12 34 56 78")
    card = _card(api, cid)
    other = _enrol(api)
    o = office(app, creds, "desk1")
    for typed in (cid, cid.lower(), cid.replace("-", ""), cid.lower().replace("-", "")[1:],
                  f"  {cid[:6]} {cid[6:]} "):
        assert _goes_to(o.post(BO + "/search", {"query": typed}), cid), typed

    # a card: its URL pasted, typed by a keyboard-wedge reader (upper case, as in the QR
    # code), or the token alone
    for typed in (card["url"], card["url"].upper(), card["token"], card["url"] + "\n"):
        assert _goes_to(o.post(BO + "/search", {"query": typed}), cid), typed
    found = _searches(app)
    assert found[-1].detail == {"by": ["card"], "found": [cid]}
    assert card["token"] not in json.dumps([e.detail for e in _audit(app)])
    # a revoked card still leads to its customer (the desk is where it gets sorted out)
    new = api.issue_card(cid, headers=creds.h("kiosk", "desk1"), replace=True,
                         reason="lost").get_json()
    assert _goes_to(o.post(BO + "/search", {"query": card["url"]}), cid)
    assert _goes_to(o.post(BO + "/search", {"query": new["url"]}), cid)
    # an NFC card's UID, from a reader that types the UID
    nfc = api.issue_card(cid, "nfc", headers=creds.h("kiosk", "desk1"),
                         uid="04A1B2C3D4E5F6").get_json()
    assert nfc["status"] == "active"
    assert _goes_to(o.post(BO + "/search", {"query": "04a1b2c3d4e5f6"}), cid)
    assert _searches(app)[-1].detail == {"by": ["card"], "found": [cid]}
    # a forged or unknown card is said on the page
    forged = card["url"][:-3] + ("AAA" if not card["url"].endswith("AAA") else "BBB")
    r = o.post(BO + "/search", {"query": forged})
    assert r.status_code == 422
    assert "This card is not one of the programme's cards" in html.unescape(
        r.get_data(as_text=True))

    # exact email and phone, through the blind indexes
    for typed, by in (("anna.petit@example.ORG", "email"), ("+33 6 12 34 56 78", "phone"),
                      ("0612345678", "phone")):
        r = o.post(BO + "/search", {"query": typed})
        body = html.unescape(r.get_data(as_text=True))
        assert r.status_code == 200 and f'href="/backoffice/customers/{cid}"' in body, typed
        assert other not in body
        assert _searches(app)[-1].detail == {"by": [by], "found": [cid]}
    assert "anna.petit" not in json.dumps([e.detail for e in _audit(app)]).lower()


def test_search_by_name_folds_accents_and_is_audited_without_the_value(app, api, creds,
                                                                         manager):
    jurate = _enrol(api, first_name="Jūratė", last_name="Kazlauskaitė", language="lt")
    namesake = _enrol(api, first_name="Rūta", last_name="KAZLAUSKAITĖ")
    _enrol(api, first_name="Jūratė", last_name="Petrauskienė")
    # a name that also reads as a customer code (8 letters of the code's alphabet)
    schwartz = _enrol(api, first_name="Hans", last_name="Schwartz")
    o = office(app, creds, "desk1")

    def found(typed: str, who=o) -> list[str]:
        r = who.post(BO + "/search", {"query": typed})
        assert r.status_code == 200, (typed, r.status_code, r.get_data(as_text=True)[:300])
        return re.findall(r'href="/backoffice/customers/(C-[0-9A-Z-]+)"', r.get_data(as_text=True))

    assert sorted(found("Kazlauskaite")) == sorted([jurate, namesake])
    assert found("jurate   kazlauskaite") == [jurate]
    assert found("JŪRATĖ Kazlauskaitė") == [jurate]
    assert found("Schwartz") == [schwartz]
    assert found("Kazlausk") == []  # exact only: no partial match on a name
    assert found("Jurate") == []  # a first name alone is not an index
    assert found("Kazlauskaite", office(app, creds, manager)) != []

    searches = [e for e in _searches(app) if e.detail["by"] == ["name"]]
    assert len(searches) == 7
    assert searches[1].detail == {"by": ["name"], "found": [jurate]}
    assert searches[0].view == "backoffice:search"
    dumped = json.dumps([e.detail for e in _audit(app)]).lower()
    assert "kazlausk" not in dumped and "jurate" not in dumped

    # the vault holds no readable name, only keyed hashes
    with Session(app.extensions["loyalty.db"].vault) as v:
        row = v.get(VaultRecord, jurate)
        assert len(row.last_name_index) == 64 and len(row.full_name_index) == 64
        assert b"Kazlausk" not in row.ciphertext

    # a cashier has no search at all, and the service refuses them a name search
    assert office(app, creds, "cashier1").post(BO + "/search",
                                               {"query": "Kazlauskaite"}).status_code == 403
    from server.api.problems import Problem
    from server.devices.auth import Principal, StaffMember
    from server.privacy import service

    cashier = Principal("staff", "cashier", 9, None, StaffMember(9, "c", "cashier"))
    with app.test_request_context(), \
            Session(app.extensions["loyalty.db"].main) as main, \
            Session(app.extensions["loyalty.db"].vault) as vault:
        with pytest.raises(Problem) as refused:
            service.search(main, vault, cashier, email=None, phone=None, country=None,
                           name="Kazlauskaite", view="test")
        assert refused.value.slug == "forbidden-role"

    # a correction moves the name index with the name
    r = o.post(f"{BO}/customers/{namesake}/personal-data", {
        "first_name": "Rūta", "last_name": "Jonaitienė", "email": "", "phone": "",
        "birth_date": "", "gender": "", "address": "", "reason": "married"})
    assert r.status_code == 303
    assert found("Kazlauskaite") == [jurate]
    assert found("jonaitiene") == [namesake]


def test_reindex_fills_the_name_index_of_customers_enrolled_before(app, api):
    cid = _enrol(api, first_name="Élodie", last_name="Le Gall")
    with Session(app.extensions["loyalty.db"].vault) as v:  # as the migration left them
        v.execute(update(VaultRecord).values(last_name_index=None, full_name_index=None))
        v.commit()
    result = app.test_cli_runner().invoke(args=["privacy", "reindex"])
    assert result.exit_code == 0, (result.output, result.exc_info)
    assert "re-indexed" in result.output and " 0 re-indexed" not in result.output
    from server.vault.service import find_customers

    with app.app_context(), Session(app.extensions["loyalty.db"].vault) as v:
        assert find_customers(v, name="le gall") == [cid]
        assert find_customers(v, name="elodie LE  GALL") == [cid]
    again = app.test_cli_runner().invoke(args=["privacy", "reindex"])
    assert again.output.strip().endswith(" 0 re-indexed")


# --------------------------------------------------------------------------- the file


def _at(session, moment):
    # SQLite keeps naive UTC datetimes
    return moment.replace(tzinfo=None) if session.bind.dialect.name == "sqlite" else moment


def test_the_file_shows_ledger_purchases_visits_survey_cards_and_value(app, api, creds,
                                                                        monkeypatch):
    from server.backoffice import queries

    cid = _enrol(api, first_name="Anna", last_name="Petit",
                 survey={"_survey": "welcome-2026", "q_hobby": "cycling", "q_kids": 2})
    card = _card(api, cid)
    big = _enrol(api)
    big_card = _card(api, big)
    old = _enrol(api)
    old_card = _card(api, old)

    assert api.tap(url=card["url"]).status_code == 200
    assert api.tap(url=card["url"]).status_code == 200
    assert api.tap(url=card["url"], headers=creds.h("till_uid")).status_code == 200
    first = api.purchase([api.line("BIKE-01", 1, "30.00", name="City bike bell")],
                         card=card["url"], seller="ana")
    assert first.status_code == 201, first.get_json()
    second = api.purchase([api.line("LAMP-02", 2, "5.25", name="Front lamp"),
                           api.line("TUBE-03", 1, "10.00", name="Inner tube")],
                          card=card["url"], seller="ben", receipt="R-0042")
    assert second.status_code == 201, second.get_json()
    r = api.refund(purchase_id=second.get_json()["purchase_id"],
                   lines=[{"line_no": 2, "quantity": "1"}])
    assert r.status_code == 201, r.get_json()
    # 30.00 + 20.50 - 10.00 returned = 40.50 this year; another customer spent 100.00, a
    # third 500.00 more than a year ago (not counted)
    assert api.purchase([api.line("BIKE-99", 1, "100.00")], card=big_card["url"]) \
        .status_code == 201
    assert api.purchase([api.line("BIKE-98", 1, "500.00")], card=old_card["url"]) \
        .status_code == 201
    with Session(app.extensions["loyalty.db"].main) as s:
        s.execute(update(Purchase).where(Purchase.customer_id == old)
                  .values(paid_at=_at(s, utcnow() - timedelta(days=400))))
        s.commit()
    refresh(app, utcnow())  # the nightly value snapshot the file's value part reads

    o = office(app, creds, "desk1")
    body = o.page(f"{BO}/customers/{cid}")
    # purchases with their lines: store, seller, total, each line's product, quantity, net
    assert "City bike bell" in body and "Front lamp" in body and "Inner tube" in body
    assert "seller ana" in body and "seller ben" in body and "receipt R-0042" in body
    assert "30.00 EUR" in body and "20.50 EUR" in body and "10.50 EUR" in body
    assert "1 returned" in body
    assert "<dd>Member</dd>" in body  # the tier's name, in the page's language
    assert body.index("Front lamp") < body.index("City bike bell")  # newest first
    # the ledger, newest first, with reasons
    ledger = body[body.index('id="ledger"'):body.index('id="purchases"')]
    kinds = re.findall(r"<td>(purchase|return|welcome bonus|visit)</td>", ledger)
    assert kinds[0] == "return" and "purchase" in kinds
    # visits by store: counts and last visit per store
    visits = body[body.index('id="visits"'):body.index('id="survey"')]
    assert re.search(r"TEST Test shop</td><td class=\"num\">2</td>", visits), visits
    assert re.search(r"UIDOK Legacy UID shop</td><td class=\"num\">1</td>", visits), visits
    # the survey as stored
    survey = body[body.index('id="survey"'):]
    assert "Survey welcome-2026" in survey and "q_hobby" in survey and "cycling" in survey
    assert "q_kids" in survey
    # the value score (server.value) among the 2 active customers: recency 50 (the other
    # bought last), frequency 100, spending 50, support 100: 6000 / 90 -> 66, "high"
    value = body[body.index('id="value"'):body.index('id="cards"')]
    assert 'data-score="66"' in value and "high" in value, value
    assert "2 of 2 active customers" in value
    assert "40.50 EUR spent, returns deducted" in value
    assert card["card_id"] in body

    # the ledger and purchases are paged
    monkeypatch.setattr(queries, "PURCHASE_PAGE", 1)
    monkeypatch.setattr(queries, "LEDGER_PAGE", 2)
    body = o.page(f"{BO}/customers/{cid}")
    assert "Front lamp" in body and "City bike bell" not in body
    older = re.search(r'href="([^"]*purchases=\d+[^"]*)#purchases">Older purchases', body)
    body = o.page(html.unescape(older[1]))
    assert "City bike bell" in body and "Front lamp" not in body
    assert "Older purchases" not in body and "Newest purchases" in body
    older = re.search(r'href="([^"]*ledger=\d+[^"]*)#ledger">Older entries', body)
    assert older and "Older entries" in body


def test_the_file_with_many_lines_takes_a_fixed_number_of_queries(app, api, creds):
    from sqlalchemy import event

    cid, card = api.customer_with_card()
    o = office(app, creds, "desk1")

    def count_queries() -> int:
        seen = []
        engine = app.extensions["loyalty.db"].main

        def on(*_args):
            seen.append(1)

        event.listen(engine, "before_cursor_execute", on)
        try:
            o.page(f"{BO}/customers/{cid}")
        finally:
            event.remove(engine, "before_cursor_execute", on)
        return len(seen)

    api.purchase([api.line("A", 1, "1.00")], card=card["url"])
    few = count_queries()
    for _ in range(3):
        api.purchase([api.line(f"S{i}", 1, "1.00") for i in range(6)], card=card["url"])
    assert count_queries() == few


def test_each_purchase_line_links_to_a_claim_once_tickets_exist(app, api, creds):
    from flask import url_for

    from server.loyalty.models import PurchaseLine

    cid, card = api.customer_with_card()
    api.purchase([api.line("A", 1, "1.00")], card=card["url"])
    o = office(app, creds, "desk1")
    if "backoffice.new_ticket" not in app.view_functions:  # before the tickets feature
        assert "Open a claim" not in o.page(f"{BO}/customers/{cid}")
        app.view_functions["backoffice.new_ticket"] = lambda customer_id: ""
        app.url_map.add(app.url_rule_class(BO + "/customers/<customer_id>/tickets/new",
                                           endpoint="backoffice.new_ticket"))
    with Session(app.extensions["loyalty.db"].main) as s:
        line_id = s.scalar(select(PurchaseLine.id).join(Purchase)
                           .where(Purchase.customer_id == cid))
    with app.test_request_context():
        link = url_for("backoffice.new_ticket", customer_id=cid, line=line_id)
    assert f'href="{html.escape(link)}"' in o.client.get(f"{BO}/customers/{cid}").get_data(
        as_text=True)


# --------------------------------------------------------------------------- cards


def test_block_then_unblock_at_the_till_and_in_the_api(app, api, creds, manager):
    cid, card = api.customer_with_card()
    o = office(app, creds, "desk1")
    body = o.page(f"{BO}/customers/{cid}")
    assert "Block this card" in body
    r = o.post(f"{BO}/customers/{cid}/cards/block",
               {"card_id": card["card_id"], "reason": "stolen", "note": "bag taken on the bus"})
    assert r.status_code == 303
    body = o.page(r.headers["Location"])
    assert any("is blocked" in f for f in _flashes(body))
    assert re.search(r"blocked \(stolen\)", body) and "bag taken on the bus" in body
    tap = assert_problem(api.tap(url=card["url"]), 410, "card-revoked")
    assert tap["reason"] == "stolen" and tap["replaced"] is False
    block = [e for e in _audit(app, cid) if e.action == "card.block"]
    assert block[0].detail == {"card": card["card_id"], "reason": "stolen",
                               "note": "bag taken on the bus"}

    r = o.post(f"{BO}/customers/{cid}/cards/unblock",
               {"card_id": card["card_id"], "reason": "found"})
    assert r.status_code == 303
    assert any("works again" in f for f in _flashes(o.page(r.headers["Location"])))
    assert api.tap(url=card["url"]).status_code == 200
    unblock = [e for e in _audit(app, cid) if e.action == "card.unblock"]
    assert unblock[0].detail["was"] == "stolen" and unblock[0].detail["reason"] == "found"

    # the API: desk, manager, admin; a till or a kiosk may not
    url = f"/api/v1/cards/{card['card_id']}"
    assert_problem(api.client.post(url + "/block", json={"reason": "lost"},
                                   headers=creds.h("till")), 403, "forbidden-role")
    assert_problem(api.client.post(url + "/block", json={"reason": "mislaid"},
                                   headers=creds.staff_auth("desk1")), 422, "validation-error")
    r = api.client.post(url + "/block", json={"reason": "lost"},
                        headers=creds.staff_auth(manager))
    assert r.status_code == 200 and r.get_json()["status"] == "revoked"
    assert r.get_json()["reason"] == "lost"
    again = api.client.post(url + "/block", json={"reason": "lost"},
                            headers=creds.staff_auth(manager))
    assert again.status_code == 200  # already blocked: nothing changes
    assert len([e for e in _audit(app, cid) if e.action == "card.block"]) == 2
    assert assert_problem(api.tap(url=card["url"]), 410, "card-revoked")["reason"] == "lost"
    r = api.client.post(url + "/unblock", json={"reason": "mistake", "note": "wrong card"},
                        headers=creds.staff_auth("desk1"))
    assert r.status_code == 200 and r.get_json()["status"] == "active"
    assert api.tap(url=card["url"]).status_code == 200
    assert_problem(api.client.post("/api/v1/cards/00000000000000ff/block",
                                   json={"reason": "lost"}, headers=creds.staff_auth("desk1")),
                   404, "card-not-found")
    # another customer's card from this page is refused, and nothing is written
    other, other_card = api.customer_with_card()
    r = o.post(f"{BO}/customers/{cid}/cards/block",
               {"card_id": other_card["card_id"], "reason": "lost"})
    assert "This card is not one of this customer's cards." in _flashes(
        o.page(r.headers["Location"]))
    assert api.tap(url=other_card["url"]).status_code == 200


def test_a_replaced_or_voided_card_cannot_be_unblocked(app, api, creds):
    cid, card = api.customer_with_card()
    new = api.issue_card(cid, headers=creds.h("kiosk", "desk1"), replace=True,
                         reason="damaged").get_json()
    url = f"/api/v1/cards/{card['card_id']}/unblock"
    body = assert_problem(api.client.post(url, json={"reason": "found"},
                                          headers=creds.staff_auth("desk1")),
                          409, "card-not-blocked")
    assert body["replaced"] is True
    assert_problem(api.tap(url=card["url"]), 410, "card-revoked")
    # a blocked card whose kind the customer has active again stays blocked
    r = api.client.post(f"/api/v1/cards/{new['card_id']}/block", json={"reason": "lost"},
                        headers=creds.staff_auth("desk1"))
    assert r.status_code == 200
    third = api.issue_card(cid, headers=creds.h("kiosk", "desk1")).get_json()
    assert_problem(api.client.post(f"/api/v1/cards/{new['card_id']}/unblock",
                                   json={"reason": "found"}, headers=creds.staff_auth("desk1")),
                   409, "card-exists")
    assert api.tap(url=third["url"]).status_code == 200
    # a pending NFC card that was given up
    pending = api.issue_card(cid, "nfc", headers=creds.h("kiosk", "desk1")).get_json()
    api.client.post(f"/api/v1/cards/{pending['card_id']}/void", json={},
                    headers=creds.h("kiosk", "desk1"))
    assert_problem(api.client.post(f"/api/v1/cards/{pending['card_id']}/unblock",
                                   json={"reason": "found"}, headers=creds.staff_auth("desk1")),
                   409, "card-not-blocked")
    assert_problem(api.client.post(f"/api/v1/cards/{pending['card_id']}/block",
                                   json={"reason": "lost"}, headers=creds.staff_auth("desk1")),
                   409, "card-not-active")
    # in the back office, said on the page
    o = office(app, creds, "desk1")
    r = o.post(f"{BO}/customers/{cid}/cards/unblock", {"card_id": card["card_id"],
                                                       "reason": "found"})
    assert "This card cannot be unblocked: it was replaced or cancelled." in _flashes(
        o.page(r.headers["Location"]))[0]


def _svg_to_image(svg: str):
    """Draw qrcode's SVG path (one square per dark module) on a white image."""
    from PIL import Image, ImageDraw

    scale = 12
    size = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg)[1])
    image = Image.new("L", (int(size * scale) + 1, int(size * scale) + 1), 255)
    draw = ImageDraw.Draw(image)
    path = re.search(r' d="([^"]+)"', svg)[1]
    for x, y, x2, y2, _x in re.findall(
            r"M([\d.]+),([\d.]+)H([\d.]+)V([\d.]+)H([\d.]+)z", path):
        draw.rectangle([float(x) * scale, float(y) * scale,
                        float(x2) * scale - 1, float(y2) * scale - 1], fill=0)
    return image


def test_reissue_prints_a_qr_card_that_works_and_stops_the_old_one(app, api, creds):
    import zxingcpp

    cid, card = api.customer_with_card()
    o = office(app, creds, "desk1")
    body = o.page(f"{BO}/customers/{cid}")
    event_id = re.search(r'name="event_id" type="hidden" value="([0-9a-f-]+)"', body)[1]
    r = o.post(f"{BO}/customers/{cid}/cards/reissue", {"event_id": event_id,
                                                       "reason": "damaged"})
    assert r.status_code == 303 and "/print" in r.headers["Location"]
    page = o.page(r.headers["Location"])
    new_id = r.headers["Location"].rsplit("/", 2)[-2]
    assert "<script" not in page.split("<main>")[0]
    # the same form sent again (a double click) issues nothing more
    again = o.post(f"{BO}/customers/{cid}/cards/reissue", {"event_id": event_id,
                                                           "reason": "damaged"})
    assert again.headers["Location"] == r.headers["Location"]

    svg = re.search(r"<svg.*?</svg>", page, re.S)[0]
    (code,) = zxingcpp.read_barcodes(_svg_to_image(svg),
                                     formats=zxingcpp.BarcodeFormat.QRCode)
    url = code.text
    assert url.startswith(app.config["CARD_BASE_URL"].upper() + "/C/")
    assert url.lower().endswith(url.rsplit("/", 1)[-1].lower())
    assert url.rsplit("/", 1)[-1] in page.upper()
    with Session(app.extensions["loyalty.db"].main) as s:
        cards = {c.id: c for c in s.scalars(select(Card).where(Card.customer_id == cid))}
    assert cards[new_id].status == "active" and cards[new_id].kind == "qr"
    assert cards[new_id].issued_by_staff_id is not None
    assert cards[card["card_id"]].replaced_by == new_id
    tapped = api.tap(qr=url)
    assert tapped.status_code == 200, tapped.get_json()
    assert tapped.get_json()["customer_id"] == cid
    body = assert_problem(api.tap(url=card["url"]), 410, "card-revoked")
    assert body["replaced"] is True and body["reason"] == "damaged"
    replace = [e for e in _audit(app, cid) if e.action == "card.replace"]
    assert replace[0].detail == {"reason": "damaged", "new": new_id,
                                 "revoked": [card["card_id"]]}
    body = o.page(f"{BO}/customers/{cid}")
    assert re.search(r"<td>replaced</td>\s*<td class=\"mono\">" + card["card_id"], body)
    assert "Card history" in body
    # a manager too; a print page for a card of another customer is refused
    other, other_card = api.customer_with_card()
    r = o.get(f"{BO}/customers/{cid}/cards/{other_card['card_id']}/print")
    assert r.status_code == 303
    r = o.get(f"{BO}/customers/{cid}/cards/{card['card_id']}/print")
    assert "Only an active QR card can be printed." in _flashes(
        o.page(r.headers["Location"]))


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_desk_in_chromium_finds_by_name_opens_the_file_and_reissues(app, api, creds, browser):
    from tests.support.kiosk_screens import save

    cid = _enrol(api, email="jurate@example.lt", first_name="Jūratė",
                 last_name="Kazlauskaitė", language="lt",
                 survey={"_survey": "welcome-2026", "q_hobby": "cycling"})
    _enrol(api, first_name="Rūta", last_name="Kazlauskaitė")
    card = _card(api, cid)
    api.tap(url=card["url"])
    api.purchase([api.line("LAMP-02", 2, "5.25", name="Front lamp"),
                  api.line("TUBE-03", 1, "10.00", name="Inner tube")], card=card["url"],
                 seller="ana")
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(f"{url}/backoffice/")
            log_in(page, "desk1", creds.passwords["desk1"])
            field = page.get_by_label("Name, card, email, phone number or customer number")
            field.fill("kazlauskaite")
            with page.expect_navigation():
                field.press("Enter")
            assert page.locator("tbody tr").count() == 2
            assert page.get_by_text("2 customers found.").is_visible()
            save(page, "backoffice-search")

            with page.expect_navigation():
                page.get_by_role("link", name=cid).click()
            assert page.locator("h1").inner_text().startswith(cid)
            assert page.get_by_role("heading", name="Purchases").is_visible()
            assert page.get_by_text("Front lamp").is_visible()
            page.get_by_role("heading", name="Cards").scroll_into_view_if_needed()
            page.get_by_text("Block…").click()
            assert page.get_by_role("button", name="Block this card").is_visible()
            page.get_by_text("Block…").click()
            save(page, "backoffice-customer")

            page.get_by_label("Why").and_(page.locator("#reissue-reason")).select_option(
                "damaged")
            with page.expect_navigation():
                page.get_by_role("button", name="Issue a new printed card").click()
            assert page.get_by_role("heading", name="Print the card").is_visible()
            assert page.get_by_role("button", name="Print").is_visible()  # print.js ran
            assert page.locator(".printed-card svg").is_visible()
            box = page.locator(".printed-card").bounding_box()
            assert 300 <= box["width"] <= 340  # 85.6 mm at 96 dpi
            save(page, "backoffice-reissue")
            page.emulate_media(media="print")
            assert not page.locator("header.top").is_visible()
            assert page.locator(".printed-card").is_visible()
        finally:
            context.close()
    assert not errors, f"the page logged errors: {errors}"
    with Session(app.extensions["loyalty.db"].main) as s:
        statuses = sorted(s.scalars(select(Card.status).where(Card.customer_id == cid)))
    assert statuses == ["active", "revoked"]
    assert [e.detail["by"] for e in _searches(app)] == [["name"]]


def test_every_card_route_is_role_checked(app, api, creds):
    cid, card = api.customer_with_card()
    cashier = office(app, creds, "cashier1")
    for path in ("block", "unblock", "reissue"):
        assert cashier.post(f"{BO}/customers/{cid}/cards/{path}",
                            {"card_id": card["card_id"], "reason": "lost",
                             "event_id": str(uuid.uuid4())}).status_code == 403
    assert cashier.get(f"{BO}/customers/{cid}/cards/{card['card_id']}/print").status_code == 403
    assert api.tap(url=card["url"]).status_code == 200

