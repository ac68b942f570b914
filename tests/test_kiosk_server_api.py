"""The service side of the kiosk: pending NFC cards, staff mode sessions, finding a customer."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.cards.models import Card
from server.devices.models import Device
from server.privacy.models import AuditEntry
from server.staff.models import Staff
from server.taps.models import Visit
from tests.support.fixtures_server import assert_problem

UID = "04A1B2C3D4E5F6"
STAFF_UID = "04DEADBEEF0102"


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _enrolled(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["customer_id"]


def _pending(api, customer_id: str, headers=None, **kw) -> dict:
    r = api.issue_card(customer_id, "nfc", headers=headers, **kw)
    assert r.status_code == 201, r.get_json()
    card = r.get_json()
    assert card["status"] == "pending"
    return card


def _post(api, path: str, body: dict, headers: dict):
    return api.client.post(f"/api/v1{path}", json=body, headers=headers)


def _pin(app, username: str, pin: str) -> None:
    result = app.test_cli_runner().invoke(args=["staff", "pin", username, "--pin", pin])
    assert result.exit_code == 0, result.output


def _session(api, creds, body: dict, device: str = "kiosk"):
    return _post(api, "/staff/kiosk-sessions", body, creds.h(device))


def _staff_headers(api, creds, username="desk1", pin="246810", device="kiosk") -> dict:
    _pin(api.client.application, username, pin)
    r = _session(api, creds, {"username": username, "pin": pin}, device)
    assert r.status_code == 201, r.get_json()
    return {**creds.h(device), "X-Staff-Authorization": f"Session {r.get_json()['token']}"}


def _visits(app) -> int:
    with _main(app) as s:
        return s.scalar(select(func.count()).select_from(Visit))


# --------------------------------------------------------------------------- pending NFC cards


def test_an_nfc_card_works_only_once_written_and_activated(app, api, creds):
    cid = _enrolled(api)
    card = _pending(api, cid)
    # the URL exists (the kiosk writes it) but no till accepts it yet
    body = assert_problem(api.tap(url=card["url"]), 409, "card-pending")
    assert body["card_id"] == card["card_id"]
    # another kiosk may not activate it
    other = _post(api, f"/cards/{card['card_id']}/activation", {"uid": UID}, creds.h("kiosk2"))
    assert_problem(other, 403, "staff-required")

    r = _post(api, f"/cards/{card['card_id']}/activation", {"uid": UID.lower()}, creds.h("kiosk"))
    assert r.status_code == 200, r.get_json()
    active = r.get_json()
    assert (active["status"], active["url"], active["card_id"]) == \
        ("active", card["url"], card["card_id"])
    tapped = api.tap(url=card["url"], uid=UID)
    assert tapped.status_code == 200, tapped.get_json()
    assert tapped.get_json()["card"]["card_id"] == card["card_id"]
    with _main(app) as s:
        assert s.get(Card, card["card_id"]).nfc_uid == UID

    # the kiosk retrying the activation gets the same answer; another UID is refused
    again = _post(api, f"/cards/{card['card_id']}/activation", {"uid": UID}, creds.h("kiosk"))
    assert again.status_code == 200 and again.get_json()["status"] == "active"
    body = assert_problem(_post(api, f"/cards/{card['card_id']}/activation",
                                {"uid": "04FFFFFFFFFFFF"}, creds.h("kiosk")), 409,
                          "card-not-pending")
    assert body["card_status"] == "active"
    # an active card cannot be voided
    assert_problem(_post(api, f"/cards/{card['card_id']}/void", {}, creds.h("kiosk")), 409,
                   "card-not-pending")


def test_a_write_given_up_leaves_a_void_card_every_till_refuses(app, api, creds):
    cid = _enrolled(api)
    card = _pending(api, cid)
    r = _post(api, f"/cards/{card['card_id']}/void", {"reason": "write-failed"}, creds.h("kiosk"))
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"card_id": card["card_id"], "status": "void", "reason": "write-failed"}
    again = _post(api, f"/cards/{card['card_id']}/void", {"reason": "abandoned"}, creds.h("kiosk"))
    assert again.get_json()["reason"] == "write-failed"  # idempotent: the first reason stays
    body = assert_problem(api.tap(url=card["url"]), 410, "card-revoked")
    assert body["reason"] == "void" and body["replaced"] is False
    assert_problem(_post(api, f"/cards/{card['card_id']}/activation", {"uid": UID},
                         creds.h("kiosk")), 409, "card-not-pending")
    assert_problem(_post(api, "/cards/0000000000000000/void", {}, creds.h("kiosk")), 404,
                   "card-not-found")
    assert_problem(_post(api, f"/cards/{card['card_id']}/void", {"reason": "bored"},
                         creds.h("kiosk")), 422, "validation-error")


def test_a_new_pending_card_voids_the_one_before_and_an_issue_replays(app, api, creds):
    cid = _enrolled(api)
    event_id = str(uuid.uuid4())
    first = api.issue_card(cid, "nfc", event_id=event_id)
    replay = api.issue_card(cid, "nfc", event_id=event_id)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.get_json()["card_id"] == first.get_json()["card_id"]
    second = _pending(api, cid)
    with _main(app) as s:
        old = s.get(Card, first.get_json()["card_id"])
        assert (old.status, old.status_reason) == ("void", "superseded")
    assert _post(api, f"/cards/{second['card_id']}/activation", {"uid": UID},
                 creds.h("kiosk")).status_code == 200
    # a QR card next to it is still allowed (both kinds), a second NFC one is not
    assert api.issue_card(cid, "qr").status_code == 201
    assert_problem(api.issue_card(cid, "nfc"), 409, "card-exists")


# --------------------------------------------------------------------------- staff sessions


def test_staff_mode_by_pin_reissues_a_lost_card_and_the_old_one_stops_at_once(app, api, creds):
    cid, old = api.customer_with_card("qr")
    assert api.tap(url=old["url"]).status_code == 200
    points = api.tap(url=old["url"]).get_json()["points"]
    staff = _staff_headers(api, creds)

    found = _post(api, "/cards/lookup", {"qr": old["qr_text"]}, staff)
    assert found.status_code == 200, found.get_json()
    who = found.get_json()
    assert (who["customer_id"], who["display_name"], who["points"]) == (cid, "Élodie D.", points)
    assert who["card"] == {**who["card"], "card_id": old["card_id"], "status": "active"}

    new = _pending(api, cid, headers=staff, replace=True, reason="lost")
    assert new["replaced"] == [old["card_id"]]
    # refused at once, before the new card is even written
    body = assert_problem(api.tap(url=old["url"]), 410, "card-revoked")
    assert (body["reason"], body["replaced"]) == ("lost", True)
    assert_problem(api.tap(url=new["url"]), 409, "card-pending")
    r = _post(api, f"/cards/{new['card_id']}/activation", {"uid": UID}, creds.h("kiosk"))
    assert r.status_code == 200, r.get_json()
    record = api.tap(url=new["url"]).get_json()
    assert record["customer_id"] == cid and record["points"] == points  # balance kept
    with _main(app) as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "card.replace"))
        desk_id = s.scalar(select(Staff.id).where(Staff.username == "desk1"))
        assert entry.actor == f"device:{creds.device_ids['kiosk']}+staff:{desk_id}"


def test_staff_card_tap_opens_staff_mode(app, api, creds):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["staff", "card", "desk1", "--uid", STAFF_UID]).exit_code == 0
    clash = runner.invoke(args=["staff", "card", "cashier1", "--uid", STAFF_UID.lower()])
    assert clash.exit_code != 0 and "another staff member" in clash.output
    with _main(app) as s:  # stored hashed, never as the UID
        stored = s.scalar(select(Staff.card_uid_hash).where(Staff.username == "desk1"))
        assert stored and STAFF_UID not in stored and STAFF_UID.lower() not in stored

    r = _session(api, creds, {"uid": STAFF_UID.lower()})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["staff"] == {"username": "desk1", "role": "desk"} and body["ttl"] == 300
    assert_problem(_session(api, creds, {"uid": "04000000000000"}), 401, "invalid-credentials")
    assert runner.invoke(args=["staff", "card", "desk1", "--clear"]).exit_code == 0
    assert_problem(_session(api, creds, {"uid": STAFF_UID}), 401, "invalid-credentials")


def test_wrong_pins_lock_the_name_then_the_right_one_waits(app, api, creds):
    _pin(app, "desk1", "1357")
    for _ in range(5):
        assert_problem(_session(api, creds, {"username": "desk1", "pin": "0000"}), 401,
                       "invalid-credentials")
    locked = _session(api, creds, {"username": "desk1", "pin": "1357"})
    body = assert_problem(locked, 429, "staff-locked-out")
    assert 0 < body["retry_after"] <= 900
    assert locked.headers["Retry-After"] == str(body["retry_after"])
    # another name on the same kiosk is not locked by these five
    _pin(app, "cashier1", "8642")
    assert _session(api, creds, {"username": "cashier1", "pin": "8642"}).status_code == 201
    # a name without a PIN, or unknown, is just wrong, at the same cost
    assert_problem(_session(api, creds, {"username": "nobody", "pin": "1234"}), 401,
                   "invalid-credentials")


def test_a_kiosk_is_locked_after_twenty_failures_whatever_the_names(app, api, creds):
    app.config["STAFF_LOCKOUT_DEVICE"] = 4
    for name in ("a", "b", "c", "d"):
        assert_problem(_session(api, creds, {"username": name, "pin": "1111"}), 401,
                       "invalid-credentials")
    _pin(app, "desk1", "1357")
    assert_problem(_session(api, creds, {"username": "desk1", "pin": "1357"}), 429,
                   "staff-locked-out")
    # the other kiosk is not
    assert _session(api, creds, {"username": "desk1", "pin": "1357"}, "kiosk2").status_code == 201


def test_a_session_token_is_worth_nothing_elsewhere_or_later(app, api, creds):
    staff = _staff_headers(api, creds)
    token = staff["X-Staff-Authorization"]
    cid, card = api.customer_with_card("qr")
    # on another kiosk
    elsewhere = {**creds.h("kiosk2"), "X-Staff-Authorization": token}
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"]}, elsewhere), 401,
                   "invalid-credentials")
    # at a till: Session is a kiosk's scheme only
    till = {**creds.h("till"), "X-Staff-Authorization": token}
    assert_problem(api.tap(url=card["url"], headers=till), 401, "invalid-credentials")
    # forged
    forged = {**creds.h("kiosk"), "X-Staff-Authorization": token[:-4] + "AAAA"}
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"]}, forged), 401,
                   "invalid-credentials")
    # a till cannot open staff sessions
    assert_problem(_session(api, creds, {"username": "desk1", "pin": "246810"}, "till"), 403,
                   "forbidden-role")
    # a disabled account stops at once
    with _main(app) as s:
        s.get(Staff, s.scalar(select(Staff.id).where(Staff.username == "desk1"))).disabled_at = \
            func.now()
        s.commit()
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"]}, staff), 401,
                   "invalid-credentials")


def test_a_session_expires(app, api, creds):
    app.config["KIOSK_STAFF_SESSION"] = 1
    staff = _staff_headers(api, creds)
    cid, card = api.customer_with_card("qr")
    time.sleep(2.2)
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"]}, staff), 401,
                   "staff-session-expired")


def test_a_cashier_may_sign_in_but_not_reissue_or_look_up(app, api, creds):
    cid, card = api.customer_with_card("qr")
    cashier = _staff_headers(api, creds, "cashier1", "97531")
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"]}, cashier), 403,
                   "forbidden-role")
    assert_problem(api.issue_card(cid, "qr", headers=cashier, replace=True, reason="lost"), 403,
                   "staff-required")
    # and a kiosk alone may do neither
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"]}, creds.h("kiosk")), 403,
                   "staff-required")
    assert_problem(api.issue_card(cid, "qr", replace=True, reason="lost"), 403, "staff-required")


# --------------------------------------------------------------------------- finding customers


def test_lookups_find_by_card_uid_code_email_and_phone_without_a_visit(app, api, creds):
    cid = _enrolled(api, email="Jurate.Kaz@Example.LT", phone="+37061234567", language="lt",
                    first_name="Jūratė", last_name="Kazlauskienė")
    card = _pending(api, cid)
    _post(api, f"/cards/{card['card_id']}/activation", {"uid": UID}, creds.h("kiosk"))
    staff = _staff_headers(api, creds)
    visits = _visits(app)

    by_url = _post(api, "/cards/lookup", {"url": card["url"]}, staff).get_json()
    by_uid = _post(api, "/cards/lookup", {"uid": UID.lower()}, staff).get_json()
    assert by_url["customer_id"] == by_uid["customer_id"] == cid
    assert by_url["display_name"] == "Jūratė K." and by_url["language"] == "lt"
    assert [c["card_id"] for c in by_url["cards"]] == [card["card_id"]]
    for typed in (cid, cid.lower(), cid.replace("-", ""), " " + cid.replace("-", " ").lower()):
        found = _post(api, "/customers/lookup", {"customer_id": typed}, staff).get_json()
        assert [c["customer_id"] for c in found["customers"]] == [cid], typed
    for body in ({"email": "jurate.kaz@example.lt"}, {"phone": "+370 612 34567"}):
        found = _post(api, "/customers/lookup", body, staff).get_json()
        assert [c["customer_id"] for c in found["customers"]] == [cid], body
        assert "card" not in found["customers"][0]
    nobody = _post(api, "/customers/lookup", {"customer_id": "C-0000-0000"}, staff).get_json()
    assert nobody == {"customers": []}
    assert _visits(app) == visits  # a lookup is not a visit

    assert_problem(_post(api, "/cards/lookup", {"url": "https://x/c/AAAA"}, staff), 422)
    assert_problem(_post(api, "/cards/lookup", {"uid": "04000000000001"}, staff), 404,
                   "card-not-found")
    assert_problem(_post(api, "/cards/lookup", {"url": card["url"], "uid": UID}, staff), 422,
                   "validation-error")
    assert_problem(_post(api, "/customers/lookup", {}, staff), 422, "validation-error")

    with _main(app) as s:
        actions = [(e.action, e.view) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.view.in_(("api:card-lookup", "api:lookup"))))]
    assert actions.count(("personal-data.read", "api:card-lookup")) == 2
    assert actions.count(("personal-data.search", "api:lookup")) == 7


def test_heartbeat_keeps_the_kiosks_printer_state(app, api, creds):
    r = _post(api, "/devices/heartbeat", {
        "readers": [{"uri": "pcsc:ACR122", "status": "ready"}],
        "printer": {"uri": "escpos:net:127.0.0.1:9100", "status": "paper-out",
                    "error": "out of paper"}}, creds.h("kiosk"))
    assert r.status_code == 200, r.get_json()
    with _main(app) as s:
        health = s.get(Device, creds.device_ids["kiosk"]).health
    assert health["printer"]["status"] == "paper-out"


@pytest.mark.parametrize("pin", ["123", "123456789", "12a4"])
def test_staff_pins_are_four_to_eight_digits(app, pin):
    result = app.test_cli_runner().invoke(args=["staff", "pin", "desk1", "--pin", pin])
    assert result.exit_code != 0 and "4 to 8 digits" in result.output
