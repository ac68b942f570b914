"""Back-office administration: stores, devices, staff and the loyalty programme, on both
databases; the roles that may open each page; what the audit log keeps (never a secret)."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db import utcnow
from server.devices.models import Device
from server.loyalty.models import ProgrammeVersion
from server.privacy.models import AuditEntry
from server.staff.models import Staff
from server.stores.models import Store
from tests.support.backoffice_browser import log_in
from tests.support.fixtures_devices import serve
from tests.support.kiosk_screens import save
from tests.test_backoffice import BO, Office, _flashes, office

ADMIN_PAGES = ("/admin/stores", "/admin/devices", "/admin/staff")
PROGRAMME = "/admin/programme"
SMALL_PROGRAMME = """
currency = "EUR"
timezone = "Europe/Vilnius"
[earning]
points_per_unit = 2
[visit]
points = 3
min_gap_hours = 12
stores = []
[enrolment]
welcome_points = 25
[[tiers]]
code = "base"
threshold = 0
[[tiers]]
code = "plus"
threshold = 300
multiplier = 1.5
[tier_rules]
window_months = 12
review_months = 6
[[rewards]]
code = "TEA"
name = "Free tea"
kind = "product"
sku = "TEA-01"
cost = 90
[redemption]
step_up_above = 500
[expiry]
months = 18
"""


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _audit(app, action_prefix: str = "") -> list[AuditEntry]:
    with _main(app) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action.startswith(action_prefix))
                         .order_by(AuditEntry.id))
        return list(rows)


def _staff(app, username: str) -> Staff:
    with _main(app) as s:
        return s.scalar(select(Staff).where(Staff.username == username))


def _form_url(body: str, path_end: str) -> str:
    found = re.search(r'action="([^"]*' + re.escape(path_end) + r')"', body)
    assert found, path_end
    return html.unescape(found[1])


def _store_id(app, code: str) -> int:
    with _main(app) as s:
        return s.scalar(select(Store.id).where(Store.code == code))


def _heartbeat(client, key: str, **body):
    return client.post("/api/v1/devices/heartbeat", json=body,
                       headers={"Authorization": f"Bearer {key}"})


# --------------------------------------------------------------------------- roles


def test_each_role_opens_only_its_administration_pages(app, creds, manager, admin):
    for username in ("desk1", "cashier1", manager):
        o = office(app, creds, username)
        for page in ADMIN_PAGES:
            assert o.get(BO + page).status_code == 403, (username, page)
        # nor can they post to them
        assert o.post(BO + "/admin/stores", {"code": "X1", "name": "X",
                                             "country": "FR"}).status_code == 403
        assert o.post(BO + "/admin/devices", {"store": "1", "role": "till",
                                              "name": "x"}).status_code == 403
        assert o.post(f"{BO}/admin/staff/{_staff(app, 'desk1').id}/disable").status_code == 403
    for username in ("desk1", "cashier1"):
        o = office(app, creds, username)
        assert o.get(BO + PROGRAMME).status_code == 403
        assert o.post(BO + PROGRAMME, {"source": SMALL_PROGRAMME}).status_code == 403
    with _main(app) as s:
        assert s.scalar(select(Store.id).where(Store.code == "X1")) is None
        assert s.scalar(select(ProgrammeVersion.id)) is None
    assert _staff(app, "desk1").disabled_at is None

    mgr = office(app, creds, manager)
    body = mgr.page(BO + PROGRAMME)
    assert 'href="/backoffice/admin/programme"' in body
    assert 'href="/backoffice/admin/staff"' not in body  # not in a manager's header
    adm = office(app, creds, admin)
    body = adm.page(BO + "/admin/stores")
    for page in (*ADMIN_PAGES, PROGRAMME):
        assert f'href="/backoffice{page}"' in body
    anonymous = Office(app)
    r = anonymous.get(BO + "/admin/devices")
    assert r.status_code == 302 and "/backoffice/login" in r.headers["Location"]


def _header_sections(body: str) -> list[str]:
    header = re.search(r'<nav aria-label="[^"]*">(.*?)</nav>', body, re.S)[1]
    return [html.unescape(label).strip() for label in re.findall(r">([^<]+)</a>", header)]


def test_the_header_lists_each_roles_sections_in_a_fixed_order(app, creds, manager, admin):
    expected = {
        "desk1": ["Find a customer", "Tickets"],
        manager: ["Find a customer", "Tickets", "Retention", "Value", "Segments", "Reports",
                  "Campaigns", "Programme"],
        admin: ["Find a customer", "Tickets", "Retention", "Audit log", "Value", "Segments",
                "Reports", "Campaigns", "Programme", "Stores", "Devices", "Staff"],
    }
    for username, sections in expected.items():
        assert _header_sections(office(app, creds, username).page(BO + "/")) == sections, username


def test_ids_beyond_the_integer_keys_are_no_page_not_a_500(app, creds, admin):
    """Every ``<int:...>`` of a URL is bounded to the row ids (PostgreSQL's integer: 2**31):
    a larger one reached the database and failed there (the fuzzing found it in the API)."""
    o = office(app, creds, admin)
    for path in ("/admin/stores/{}", "/admin/staff/{}", "/tickets/{}", "/campaigns/{}",
                 "/segments/{}", "/admin/programme/versions/{}"):
        for big in (2**31, 10**20):
            assert o.get(BO + path.format(big)).status_code == 404, path
    # the largest id is a route like any other: no such store, back to the list
    assert o.get(BO + "/admin/stores/2147483647").status_code == 303


def test_forms_without_csrf_are_refused(app, creds, admin):
    adm = office(app, creds, admin)
    r = adm.post(BO + "/admin/stores", {"code": "NOCSRF", "name": "x", "country": "FR"},
                 csrf=False)
    assert r.status_code == 400
    r = adm.post(f"{BO}/admin/devices/{creds.device_ids['till']}/revoke", csrf=False)
    assert r.status_code == 400
    with _main(app) as s:
        assert s.get(Device, creds.device_ids["till"]).revoked_at is None
        assert s.scalar(select(Store.id).where(Store.code == "NOCSRF")) is None


# --------------------------------------------------------------------------- stores


def test_admin_adds_and_edits_stores(app, creds, admin):
    adm = office(app, creds, admin)
    body = adm.page(BO + "/admin/stores")
    assert "TEST" in body and "UIDOK" in body
    r = adm.post(BO + "/admin/stores", {"code": "VILNIUS-01", "name": "Vilnius Akropolis",
                                        "country": "LT", "region": "  Vilniaus   apskritis "})
    assert r.status_code == 303
    body = adm.page(r.headers["Location"])
    assert "Store VILNIUS-01 added." in _flashes(body)
    assert "Vilnius Akropolis" in body
    # the list shows each store's region (the segments filter on it), spaces tidied
    assert "<td>LT</td><td>Vilniaus apskritis</td>" in body
    r = adm.post(BO + "/admin/stores", {"code": "LONG", "name": "x", "country": "LT",
                                        "region": "x" * 81})
    assert r.status_code == 422 and "A region has at most 80 characters." in r.get_data(
        as_text=True)

    # refusals are shown on the form and nothing is written
    r = adm.post(BO + "/admin/stores", {"code": "VILNIUS-01", "name": "again", "country": "LT"})
    assert r.status_code == 422
    assert "There is already a store VILNIUS-01." in html.unescape(r.get_data(as_text=True))
    r = adm.post(BO + "/admin/stores", {"code": "bad code!", "name": "x", "country": "FR"})
    assert r.status_code == 422 and "A store code has" in r.get_data(as_text=True)
    r = adm.post(BO + "/admin/stores", {"code": "OK-2", "name": "  ", "country": "FR"})
    assert r.status_code == 422

    store_id = _store_id(app, "VILNIUS-01")
    body = adm.page(f"{BO}/admin/stores/{store_id}")
    assert 'value="Vilnius Akropolis"' in body
    r = adm.post(f"{BO}/admin/stores/{store_id}", {"name": "Vilnius Ozas", "country": "LT",
                                                   "region": "Vilniaus apskritis",
                                                   "allow_uid_only": "y"})
    assert r.status_code == 303
    with _main(app) as s:
        store = s.get(Store, store_id)
        assert (store.name, store.country, store.allow_uid_only) == ("Vilnius Ozas", "LT", True)
        assert s.scalar(select(Store.id).where(Store.code == "OK-2")) is None
    entries = _audit(app, "store.")
    assert [e.action for e in entries] == ["store.add", "store.edit"]
    assert entries[0].view == "backoffice:admin"
    assert entries[0].actor == f"staff:{_staff(app, admin).id}"
    assert entries[1].detail == {"store": "VILNIUS-01",
                                 "fields": ["name", "allow_uid_only"]}


# --------------------------------------------------------------------------- devices


def test_a_registered_device_key_is_shown_once_and_works_at_once(app, api, creds, admin):
    adm = office(app, creds, admin)
    body = adm.page(BO + "/admin/devices")
    assert "test kiosk" in body and "never" in body
    assert f"{admin} · administrator" in body  # the header's role, not a device role
    r = adm.post(BO + "/admin/devices", {"store": str(_store_id(app, "TEST")),
                                         "role": "kiosk", "name": "Welcome desk 2"})
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    page = html.unescape(r.get_data(as_text=True))
    key = re.search(r'id="device-key"[^>]*value="([^"]+)"', page)[1]
    assert key.startswith("lk_") and "shown now and never again" in page

    # the key works for an API call straight away
    enrolled = api.enrol(headers={"Authorization": f"Bearer {key}"})
    assert enrolled.status_code == 201, enrolled.get_json()
    # and it is nowhere to be read again: not on the list, not in the database, not audited
    assert key not in adm.page(BO + "/admin/devices")
    with app.extensions["loyalty.db"].main.connect() as conn:
        for table in ("devices", "audit_log"):
            for row in conn.exec_driver_sql(f"SELECT * FROM {table}"):
                assert all(key not in str(v) for v in row), table
    entry = _audit(app, "device.register")[-1]
    assert entry.detail["name"] == "Welcome desk 2" and entry.detail["role"] == "kiosk"
    assert key not in json.dumps(entry.detail)

    # a bad name or role is refused on the form, no device made
    with _main(app) as s:
        before = s.scalar(select(Device.id).order_by(Device.id.desc()).limit(1))
    r = adm.post(BO + "/admin/devices", {"store": str(_store_id(app, "TEST")),
                                         "role": "printer", "name": "x"})
    assert r.status_code == 422
    r = adm.post(BO + "/admin/devices", {"store": str(_store_id(app, "TEST")),
                                         "role": "till", "name": ""})
    assert r.status_code == 422
    with _main(app) as s:
        assert s.scalar(select(Device.id).order_by(Device.id.desc()).limit(1)) == before


def test_a_revoked_device_is_refused_at_once(app, api, creds, admin):
    adm = office(app, creds, admin)
    kiosk_id = creds.device_ids["kiosk"]
    assert api.enrol().status_code == 201
    body = adm.page(f"{BO}/admin/devices/{kiosk_id}/revoke")
    assert "Revoke test kiosk?" in body
    # the confirmation page only asks
    assert api.enrol().status_code == 201
    r = adm.post(f"{BO}/admin/devices/{kiosk_id}/revoke")
    assert r.status_code == 303
    assert "Device test kiosk revoked: its key is refused from now on." in _flashes(
        adm.page(r.headers["Location"]))
    refused = api.enrol()
    assert refused.status_code == 401
    assert api.enrol(headers=creds.h("kiosk2")).status_code == 201  # others go on
    # a second revocation is refused, and so is an unknown device
    r = adm.post(f"{BO}/admin/devices/{kiosk_id}/revoke")
    assert r.status_code == 303
    assert "This device is revoked already." in _flashes(adm.page(r.headers["Location"]))
    assert adm.get(f"{BO}/admin/devices/99999/revoke").status_code == 303
    entries = _audit(app, "device.revoke")
    assert len(entries) == 1 and entries[0].detail["device"] == kiosk_id


def test_last_seen_and_the_heartbeat_report_are_shown(app, client, creds, admin):
    adm = office(app, creds, admin)
    till = creds.device_ids["till"]
    r = _heartbeat(client, creds.till, readers=[
        {"uri": "pcsc:ACR122", "status": "ready", "taps": 3},
        {"uri": "hid:/dev/input/event3", "status": "failed", "error": "unplugged"}],
        queue={"depth": 4, "failed": 1})
    assert r.status_code == 200
    r = _heartbeat(client, creds.kiosk, readers=[], printer={
        "uri": "escpos:net:192.0.2.10:9100", "status": "paper-out"})
    assert r.status_code == 200
    body = adm.page(BO + "/admin/devices")
    row = re.search(rf'<tr id="device-{till}".*?</tr>', body, re.S)[0]
    assert re.search(r"\d+ seconds? ago|just now|0 seconds", row), row
    assert "pcsc:ACR122" in row and "unplugged" in row and "4 waiting" in row
    assert "1 refused" in row and "silent" not in row
    kiosk_row = re.search(rf'<tr id="device-{creds.device_ids["kiosk"]}".*?</tr>', body, re.S)[0]
    assert "paper-out" in kiosk_row
    never = re.search(rf'<tr id="device-{creds.device_ids["kiosk2"]}".*?</tr>', body, re.S)[0]
    assert "never" in never

    # a device not heard from for a while is marked
    with _main(app) as s:
        s.execute(update(Device).where(Device.id == till)
                  .values(last_seen_at=utcnow() - timedelta(minutes=42)))
        s.commit()
    body = adm.page(BO + "/admin/devices")
    row = re.search(rf'<tr id="device-{till}" class="stale".*?</tr>', body, re.S)[0]
    assert "42 minutes ago" in row and "silent" in row
    # in French too
    adm.post(BO + "/language", {"lang": "fr", "next": BO + "/admin/devices"})
    body = adm.page(BO + "/admin/devices")
    assert "il y a 42 minutes" in body


# --------------------------------------------------------------------------- staff


def test_staff_lifecycle(app, api, creds, admin):
    adm = office(app, creds, admin)
    password = "a long first password"
    r = adm.post(BO + "/admin/staff", {"username": "ona", "role": "desk",
                                       "store": str(_store_id(app, "TEST")),
                                       "password": password})
    assert r.status_code == 303, r.get_data(as_text=True)
    member = _staff(app, "ona")
    assert member.password_hash.startswith("$argon2id$") and member.role == "desk"
    assert "Staff member ona added." in _flashes(adm.page(r.headers["Location"]))

    # the new account logs in
    ona = Office(app)
    assert ona.login("ona", password).status_code == 303
    assert ona.get(BO + "/").status_code == 200

    # refusals: a short password, a name taken (in any case), a name with a space
    for data, message in (
            ({"username": "ona2", "password": "short"}, "at least 10 characters"),
            ({"username": "ONA", "password": password}, "There is already a staff member"),
            ({"username": "o na", "password": password}, "no spaces")):
        r = adm.post(BO + "/admin/staff", {"role": "desk", "store": "", **data})
        assert r.status_code == 422 and message in html.unescape(r.get_data(as_text=True))

    base = f"{BO}/admin/staff/{member.id}"
    body = adm.page(base)
    assert "ona" in body and _form_url(body, "/disable")
    # role and store
    r = adm.post(base + "/change", {"role": "manager", "store": ""})
    assert r.status_code == 303
    member = _staff(app, "ona")
    assert member.role == "manager" and member.store_id is None

    # disabled: out at once, and the login is refused
    r = adm.post(base + "/disable")
    assert r.status_code == 303
    assert "ona is disabled: logged out everywhere at once." in _flashes(
        adm.page(r.headers["Location"]))
    assert ona.get(BO + "/").status_code == 302
    assert Office(app).login("ona", password).status_code == 200  # the login page again
    r = api.client.get("/api/v1/programme", headers=creds.staff_auth("ona", password))
    assert r.status_code == 401
    r = adm.post(base + "/enable")
    assert r.status_code == 303
    ona = Office(app)
    assert ona.login("ona", password).status_code == 303

    # a new password: the old one stops working, the new one works, and the session opened
    # with the old one (someone who learnt it, say) ends at its next request
    r = adm.post(base + "/password", {"password": "short"})
    assert r.status_code == 422 and "at least 10 characters" in r.get_data(as_text=True)
    assert ona.get(BO + "/").status_code == 200  # a refused change ends nothing
    new_password = "a brand new password"
    r = adm.post(base + "/password", {"password": new_password})
    assert r.status_code == 303
    r = ona.get(BO + "/")
    assert r.status_code == 302 and "/backoffice/login" in r.headers["Location"]
    assert _flashes(ona.page(r.headers["Location"])) == [
        "Your password was changed. Please log in again."]
    assert Office(app).login("ona", password).status_code == 200
    ona_again = Office(app)
    assert ona_again.login("ona", new_password).status_code == 303
    assert ona_again.get(BO + "/").status_code == 200
    assert adm.get(BO + "/").status_code == 200  # the admin's own session goes on

    actions = [e.action for e in _audit(app, "staff.")]
    assert actions == ["staff.add", "staff.change", "staff.disable", "staff.enable",
                       "staff.password-reset"]
    change = _audit(app, "staff.change")[0]
    assert change.detail["role"] == ["desk", "manager"] and change.detail["store"] == [
        "TEST", None]
    dumped = json.dumps([e.detail for e in _audit(app)])
    for secret in (password, new_password, "short"):
        assert secret not in dumped


def test_a_pin_and_a_staff_card_set_here_open_staff_mode_on_a_kiosk(app, api, creds, admin):
    adm = office(app, creds, admin)
    desk = _staff(app, "desk1")
    base = f"{BO}/admin/staff/{desk.id}"
    sessions = "/api/v1/staff/kiosk-sessions"

    r = adm.post(base + "/pin", {"pin": "12a4"})
    assert r.status_code == 422 and "4 to 8 digits" in r.get_data(as_text=True)
    assert adm.post(base + "/pin", {"pin": "482916"}).status_code == 303
    r = api.client.post(sessions, json={"username": "desk1", "pin": "482916"},
                        headers=creds.h("kiosk"))
    assert r.status_code == 201, r.get_json()
    token = r.get_json()["token"]
    # the session works for a staff action on that kiosk
    cid, _card = api.customer_with_card()
    replaced = api.issue_card(cid, replace=True, reason="lost", headers={
        **creds.h("kiosk"), "X-Staff-Authorization": f"Session {token}"})
    assert replaced.status_code == 201, replaced.get_json()

    uid = "04A1B2C3D4E5F6"
    assert adm.post(base + "/card", {"uid": "04:a1:b2:c3:d4:e5:f6"}).status_code == 303
    r = api.client.post(sessions, json={"uid": uid}, headers=creds.h("kiosk"))
    assert r.status_code == 201 and r.get_json()["staff"]["username"] == "desk1"
    # the same card for someone else is refused
    cashier = _staff(app, "cashier1")
    r = adm.post(f"{BO}/admin/staff/{cashier.id}/card", {"uid": uid})
    assert r.status_code == 422
    assert "This card belongs to another staff member." in html.unescape(
        r.get_data(as_text=True))

    body = adm.page(base)
    assert "Remove the PIN" in body and "Forget the card" in body
    assert adm.post(base + "/pin-clear").status_code == 303
    assert adm.post(base + "/card-clear").status_code == 303
    assert api.client.post(sessions, json={"username": "desk1", "pin": "482916"},
                           headers=creds.h("kiosk")).status_code == 401
    assert api.client.post(sessions, json={"uid": uid},
                           headers=creds.h("kiosk")).status_code == 401

    actions = [e.action for e in _audit(app, "staff.")]
    assert actions == ["staff.pin-set", "staff.card-set", "staff.pin-clear", "staff.card-clear"]
    dumped = json.dumps([e.detail for e in _audit(app)])
    assert "482916" not in dumped and uid not in dumped and uid.lower() not in dumped


def test_nobody_disables_themselves_and_the_last_admin_stays(app, creds, admin):
    adm = office(app, creds, admin)
    me = _staff(app, admin)
    base = f"{BO}/admin/staff/{me.id}"
    body = adm.page(base)
    assert "/disable" not in body and "You cannot change your own role" in body
    for action, data in (("disable", {}), ("change", {"role": "desk", "store": ""})):
        r = adm.post(f"{base}/{action}", data)
        assert r.status_code == 303
        assert "You cannot change your own role, store or account here: ask another " \
               "administrator." in _flashes(adm.page(r.headers["Location"]))
    assert _staff(app, admin).disabled_at is None and _staff(app, admin).role == "admin"

    # a second admin may not remove the first while it is the only other one... and once
    # there are two, one can go
    r = adm.post(BO + "/admin/staff", {"username": "root2", "role": "admin", "store": "",
                                       "password": "root2 password here"})
    assert r.status_code == 303
    other = Office(app)
    assert other.login("root2", "root2 password here").status_code == 303
    assert other.post(f"{base}/disable").status_code == 303
    assert _staff(app, admin).disabled_at is not None
    # now root2 is the last enabled admin: the service refuses to lose it (from the CLI too)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["staff", "disable", "root2"])
    assert result.exit_code != 0 and "last administrator" in result.output
    result = runner.invoke(args=["staff", "change", "root2", "--role", "desk"])
    assert result.exit_code != 0 and "last administrator" in result.output
    assert _staff(app, "root2").role == "admin" and _staff(app, "root2").disabled_at is None


# --------------------------------------------------------------------------- programme


def test_programme_page_shows_the_rules_and_loads_a_new_version(app, creds, manager):
    mgr = office(app, creds, manager)
    body = mgr.page(BO + PROGRAMME)
    # the built-in programme, readable
    assert "The built-in programme is in force" in body
    for text in ("Shoes count double", "Weekend x3 in Paris", "Gift cards and tobacco",
                 "silver", "VOUCHER-5", "Free coffee", "50 points", "24 months",
                 "more than 1000 points", "Saturday, Sunday", "10:00–18:00"):
        assert text in body, text
    assert "[[tiers]]" in body  # the TOML source

    bad = SMALL_PROGRAMME.replace("threshold = 300", "threshold = 0").replace(
        "months = 18", "months = 18\nunknown_key = 1")
    r = mgr.post(BO + PROGRAMME, {"source": bad})
    assert r.status_code == 422
    page = html.unescape(r.get_data(as_text=True))
    assert "Not loaded" in page
    assert "<code>tiers[1].threshold</code>" in page
    assert "expiry.unknown_key" in page
    assert "unknown_key = 1" in page  # the text stays in the form to be corrected
    with _main(app) as s:
        assert s.scalar(select(ProgrammeVersion.id)) is None
    assert _audit(app, "programme.") == []
    r = mgr.post(BO + PROGRAMME, {"source": "  "})
    assert r.status_code == 422 and "Paste the programme or choose a file." in r.get_data(
        as_text=True)

    # pasted
    r = mgr.post(BO + PROGRAMME, {"source": SMALL_PROGRAMME})
    assert r.status_code == 303
    body = mgr.page(r.headers["Location"])
    assert "Programme version 1 is in force (tiers: 2, rewards: 1)." in _flashes(body)
    assert "Free tea" in body and "Europe/Vilnius" in body and "VOUCHER-5" not in body
    # uploaded as a file
    uploaded = SMALL_PROGRAMME.replace("cost = 90", "cost = 80")
    r = mgr.post(BO + PROGRAMME, {"source": "", "file": (io.BytesIO(uploaded.encode()),
                                                         "programme.toml")},
                 content_type="multipart/form-data")
    assert r.status_code == 303, r.get_data(as_text=True)
    body = mgr.page(BO + PROGRAMME)
    assert "Version 2 is in force." in body and "80 points" in body
    # the history names who loaded each version, and each version's text is kept
    assert body.count(manager) >= 2
    first = mgr.page(f"{BO}/admin/programme/versions/1")
    assert "cost = 90" in first and manager in first
    # the API sees the new programme at once
    got = app.test_client().get("/api/v1/programme", headers=creds.h("till")).get_json()
    assert got["version"] == 2 and got["programme"]["rewards"][0]["cost"] == 80

    entries = _audit(app, "programme.load")
    assert [e.detail for e in entries] == [{"version": 1}, {"version": 2}]
    assert entries[0].view == "backoffice:admin"


# --------------------------------------------------------------------------- the CLI


def test_cli_uses_the_same_services_and_is_audited(app, creds):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["stores", "add", "--code", "KAUNAS", "--name", "Kaunas",
                               "--country", "LT", "--region", "Kauno apskritis"]).exit_code == 0
    result = runner.invoke(args=["stores", "edit", "KAUNAS", "--name", "Kaunas Mega"])
    assert result.exit_code == 0 and "name changed" in result.output
    listed = runner.invoke(args=["stores", "list"]).output
    assert "KAUNAS\tLT\tKauno apskritis\t0 devices\t0 staff\tKaunas Mega" in listed
    assert "TEST\tFR\t-\t" in listed  # no region
    too_long = runner.invoke(args=["stores", "edit", "KAUNAS", "--region", "x" * 81])
    assert too_long.exit_code != 0 and "at most 80 characters" in too_long.output
    result = runner.invoke(args=["stores", "edit", "KAUNAS", "--region", " Kaunas  "])
    assert result.exit_code == 0 and "region changed" in result.output
    with _main(app) as s:
        assert s.scalar(select(Store.region).where(Store.code == "KAUNAS")) == "Kaunas"
    assert runner.invoke(args=["stores", "edit", "KAUNAS", "--region", ""]).exit_code == 0
    with _main(app) as s:
        assert s.scalar(select(Store.region).where(Store.code == "KAUNAS")) is None
    result = runner.invoke(args=["staff", "add", "--username", "jonas", "--role", "cashier",
                                 "--store", "KAUNAS"],
                           env={"LOYALTY_STAFF_PASSWORD": "jonas password 1"})
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["staff", "disable", "jonas"]).exit_code == 0
    assert "jonas\tcashier\tKAUNAS\tdisabled" in runner.invoke(args=["staff", "list"]).output
    assert runner.invoke(args=["staff", "enable", "jonas"]).exit_code == 0
    result = runner.invoke(args=["staff", "password", "jonas"],
                           env={"LOYALTY_STAFF_PASSWORD": "jonas password 2"})
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["staff", "change", "jonas", "--store", "-"]).exit_code == 0
    assert _staff(app, "jonas").store_id is None
    unknown = runner.invoke(args=["staff", "disable", "nobody"])
    assert unknown.exit_code != 0 and "no staff member nobody" in unknown.output
    actions = [(e.actor, e.view, e.action) for e in _audit(app)]
    assert actions == [("cli", "cli", a) for a in (
        "store.add", "store.edit", "store.edit", "store.edit", "staff.add", "staff.disable",
        "staff.enable", "staff.password-reset", "staff.change")]
    assert "jonas password" not in json.dumps([e.detail for e in _audit(app)])
    stores_audit = [e.detail for e in _audit(app, "store.")]
    assert stores_audit[0]["region"] == "Kauno apskritis"
    assert stores_audit[2:] == [{"store": "KAUNAS", "fields": ["region"]}] * 2


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_admin_in_chromium_registers_a_device_and_loads_a_programme(app, api, creds, admin,
                                                                    browser):
    # a little life on the devices page: one till reporting, one silent
    _heartbeat(api.client, creds.till, readers=[{"uri": "pcsc:ACR122", "status": "ready"}],
               queue={"depth": 0, "failed": 0})
    _heartbeat(api.client, creds.kiosk, readers=[{"uri": "pcsc:ACR122", "status": "ready"}],
               printer={"uri": "escpos:net:192.0.2.10:9100", "status": "ready"})
    with _main(app) as s:
        s.execute(update(Device).where(Device.id == creds.device_ids["till_uid"])
                  .values(last_seen_at=utcnow() - timedelta(hours=3),
                          health={"readers": [{"uri": "hid:/dev/input/event3",
                                               "status": "failed", "error": "unplugged"}]}))
        s.commit()
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        page = context.new_page()
        errors = []
        # the refused programme answers 422 on purpose; any other failed response is an error
        # (the "response" handler checks them: Chromium's console repeats each one)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and
                not m.text.startswith("Failed to load resource") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/admin/programme") else None)
        try:
            page.goto(f"{url}/backoffice/login")
            log_in(page, admin, creds.passwords[admin])

            with page.expect_navigation():
                page.get_by_role("link", name="Devices", exact=True).click()
            assert page.locator("h1").inner_text() == "Devices"
            page.get_by_label("Name").fill("Till 3")
            page.get_by_label("Role").select_option("till")
            with page.expect_navigation():
                page.get_by_role("button", name="Register").click()
            key = page.get_by_label("Device key").input_value()
            assert key.startswith("lk_")
            assert page.get_by_role("alert").first.is_visible()
            r = api.client.post("/api/v1/devices/heartbeat", json={"readers": []},
                                headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
            with page.expect_navigation():
                page.get_by_role("link", name="back to the devices").click()
            assert key not in page.content()
            assert page.locator("tr.stale").count() == 1
            save(page, "backoffice-devices")

            with page.expect_navigation():
                page.get_by_role("link", name="Staff", exact=True).click()
            page.get_by_label("User name").fill("ruta")
            page.get_by_label("Role").select_option("desk")
            page.get_by_label("Password").fill("ruta's long password")
            with page.expect_navigation():
                page.get_by_role("button", name="Add the staff member").click()
            assert page.locator("h1").inner_text().startswith("ruta")
            page.get_by_role("textbox", name="Kiosk PIN").fill("7351")
            with page.expect_navigation():
                page.get_by_role("button", name="Set the PIN").click()
            assert page.get_by_role("status").first.inner_text() == "ruta has a new kiosk PIN."
            with page.expect_navigation():
                page.get_by_role("link", name="All staff").click()
            save(page, "backoffice-staff")

            with page.expect_navigation():
                page.get_by_role("link", name="Programme", exact=True).click()
            page.get_by_label("Programme (TOML)").fill(
                SMALL_PROGRAMME.replace("threshold = 300", "threshold = 0"))
            with page.expect_navigation():
                page.get_by_role("button", name="Check and load").click()
            assert "tiers[1].threshold" in page.locator("#programme-errors").inner_text()
            page.get_by_label("Programme (TOML)").fill(SMALL_PROGRAMME)
            with page.expect_navigation():
                page.get_by_role("button", name="Check and load").click()
            assert page.get_by_role("status").first.inner_text().startswith(
                "Programme version 1 is in force")
            assert page.get_by_role("cell", name="Free tea").is_visible()
            save(page, "backoffice-programme")
        finally:
            context.close()
    assert not errors, f"the page logged errors: {errors}"
    assert _staff(app, "ruta").pin_hash is not None
