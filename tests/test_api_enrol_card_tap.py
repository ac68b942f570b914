"""Enrol, issue a card, tap it: the core of the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.cards import token
from server.cards.keys import load_keyring
from server.cards.models import Card
from server.customers.models import Customer
from server.db import Base, VaultBase
from server.loyalty.programme import default_programme
from server.taps.models import Visit
from server.vault.crypto import VaultError, VaultKeys, decrypt_record
from server.vault.models import VaultRecord
from tests.support.fixtures_server import assert_problem, row_counts

UID = "04A1B2C3D4E5F6"
# the default programme gives this many points on joining (they are in every balance)
WELCOME = default_programme().enrolment.welcome_points


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _vault(app) -> Session:
    return Session(app.extensions["loyalty.db"].vault)


def _visits(app, **where) -> list:
    with _main(app) as s:
        query = select(Visit)
        for name, value in where.items():
            query = query.where(getattr(Visit, name) == value)
        return list(s.scalars(query))


# --------------------------------------------------------------------------- happy path


def test_enrol_issue_tap(app, api, creds):
    enrolled = api.enrol()
    assert enrolled.status_code == 201, enrolled.get_json()
    assert enrolled.mimetype == "application/json"
    assert "Idempotent-Replayed" not in enrolled.headers
    person = enrolled.get_json()
    customer_id = person["customer_id"]
    assert re.fullmatch(r"C-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", customer_id)
    assert person["display_name"] == "Élodie D."
    assert person["language"] == "fr"
    assert (person["points"], person["welcome_points"]) == (WELCOME, WELCOME)
    assert person["consents"] == {"terms": True, "marketing_email": False,
                                  "marketing_sms": False, "profiling": False}

    issued = api.issue_card(customer_id, "qr")
    assert issued.status_code == 201, issued.get_json()
    card = issued.get_json()
    tok = card["token"]
    assert re.fullmatch(r"[A-Z2-7]{32}", tok)
    assert card["url"] == f"https://shop.example/c/{tok}"
    assert card["url"].endswith(f"/c/{tok}")
    assert card["qr_text"] == card["url"].upper()
    assert card["customer_id"] == customer_id
    assert (card["kind"], card["status"], card["generation"], card["replaced"]) == \
        ("qr", "active", 0, [])
    # the token is signed with the key file's current key and names this card
    ring = load_keyring(app.config["CARD_KEYS_FILE"])
    key_id, card_id, generation = token.decode(tok, ring.keys)
    assert (key_id, card_id.hex(), generation) == (ring.current, card["card_id"], 0)

    tapped = api.tap(url=card["url"], reader="ACS ACR122U 00 00")
    assert tapped.status_code == 200, tapped.get_json()
    record = tapped.get_json()
    assert record["customer_id"] == customer_id
    assert record["display_name"] == "Élodie D."
    assert record["tier"] == "member"
    # the default programme names its tiers: the record says it in the customer's language
    assert (record["tier_name"], record["tier_progress"]["next_tier_name"]) == ("Membre", "Argent")
    # the first tap is a counted visit: the default programme's visit points, on top of the
    # welcome bonus
    assert record["points"] == WELCOME + default_programme().visit.points
    assert default_programme().visit.points > 0
    assert {k: record["card"][k] for k in ("card_id", "kind", "status")} == \
        {"card_id": card["card_id"], "kind": "qr", "status": "active"}
    assert record["recent_purchases"] == []
    assert record["open_tickets"] == []
    assert record["flags"] == []
    assert record["replayed"] is False

    visits = _visits(app)
    assert len(visits) == 1
    visit = visits[0]
    assert (visit.id, visit.customer_id, visit.card_id, visit.device_id, visit.method,
            visit.weak, visit.reader) == (record["visit_id"], customer_id, card["card_id"],
                                          creds.device_ids["till"], "url", False,
                                          "ACS ACR122U 00 00")


def test_tap_with_bare_token_and_qr_text(app, api):
    customer_id, card = api.customer_with_card("qr")
    seen = []
    for body in ({"url": card["token"]}, {"url": card["token"].lower()},
                 {"qr": card["qr_text"]}, {"qr": card["token"]}):
        tapped = api.tap(**body)
        assert tapped.status_code == 200, (body, tapped.get_json())
        assert tapped.get_json()["customer_id"] == customer_id
        assert tapped.get_json()["card"]["card_id"] == card["card_id"]
        seen.append(tapped.get_json()["visit_id"])
    assert len(set(seen)) == 4
    assert sorted(v.method for v in _visits(app)) == ["qr", "qr", "url", "url"]


# --------------------------------------------------------------------------- the vault


def _all_values(engine, metadata) -> list:
    values = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(table.select()):
                values.extend(row)
    return values


def _contains(values: list, needle: str) -> bool:
    raw = needle.encode()
    for value in values:
        if isinstance(value, (bytes, bytearray, memoryview)) and raw in bytes(value):
            return True
        if isinstance(value, str) and needle.lower() in value.lower():
            return True
        if isinstance(value, (dict, list)) and needle.lower() in repr(value).lower():
            return True
    return False


def _file_bytes(instance: Path, stem: str) -> bytes:
    files = sorted(instance.glob(stem + "*"))  # the file, its -wal and -shm
    assert files, f"no {stem} in {instance}"
    return b"".join(p.read_bytes() for p in files)


def test_personal_data_only_in_vault(app, api, db_backend):
    email = f"elodie.{secrets.token_hex(4)}@durand-example.org"
    last_name = "Durand-Quésnoy" + secrets.token_hex(3)
    phone = "+33 6 12 34 56 78"
    address = "12 rue des Lilas Bleus, Lyon"
    enrolled = api.enrol(email=email, last_name=last_name, phone=phone, address=address,
                         birth_date="1990-04-01", gender="female",
                         consents={"terms": True, "profiling": True})
    assert enrolled.status_code == 201, enrolled.get_json()
    customer_id = enrolled.get_json()["customer_id"]
    assert enrolled.get_json()["display_name"] == "Élodie D."
    issued = api.issue_card(customer_id)
    assert api.tap(url=issued.get_json()["url"]).status_code == 200

    dbs = app.extensions["loyalty.db"]
    secrets_ = (email, last_name, address, "12 34 56 78", "1990-04-01")
    main_values = _all_values(dbs.main, Base.metadata)
    vault_values = _all_values(dbs.vault, VaultBase.metadata)
    assert customer_id in main_values
    assert customer_id in vault_values
    for secret in secrets_:
        assert not _contains(main_values, secret), secret
        assert not _contains(vault_values, secret), secret
    with _main(app) as s:
        customer = s.get(Customer, customer_id)
        # only the coarse profile, with the profiling consent
        assert customer.sex == "female"
        assert re.fullmatch(r"\d\d-\d\d|65\+", customer.age_band or "")

    if db_backend == "sqlite":
        instance = Path(app.config["INSTANCE_PATH"])
        main_raw = _file_bytes(instance, "loyalty.db")
        vault_raw = _file_bytes(instance, "vault.db")
        assert customer_id.encode() in main_raw  # the check can see what is there
        for secret in secrets_:
            for raw in (main_raw, vault_raw):
                assert secret.encode() not in raw, secret
                assert secret.encode("utf-16-le") not in raw, secret
        assert "Élodie".encode() not in vault_raw
        assert "Élodie".encode() not in main_raw


def test_vault_row_decrypts_only_with_vault_key(app, api):
    email = f"only.vault.{secrets.token_hex(4)}@example.org"
    enrolled = api.enrol(email=email, phone="+370 612 34567")
    customer_id = enrolled.get_json()["customer_id"]
    with _vault(app) as s:
        row = s.get(VaultRecord, customer_id)
    assert row is not None
    assert email.encode() not in row.ciphertext
    assert row.email_index and row.phone_index and email not in row.email_index

    keys = VaultKeys.load(app.config["VAULT_KEY_FILE"])
    data = decrypt_record(keys, customer_id, row.master_key_id, row.wrapped_key, row.ciphertext)
    assert data["email"] == email
    assert (data["first_name"], data["last_name"]) == ("Élodie", "Durand")
    assert data["phone"] == "+37061234567"  # stored in E.164

    other = VaultKeys(current=keys.current, master={keys.current: secrets.token_bytes(32)},
                      index_key=keys.index_key)
    with pytest.raises(VaultError):
        decrypt_record(other, customer_id, row.master_key_id, row.wrapped_key, row.ciphertext)
    with pytest.raises(VaultError):  # bound to its customer: a copied row does not open
        decrypt_record(keys, "C-0000-0000", row.master_key_id, row.wrapped_key, row.ciphertext)
    with pytest.raises(VaultError):
        decrypt_record(keys, customer_id, row.master_key_id + 1, row.wrapped_key,
                       row.ciphertext)


# --------------------------------------------------------------------------- idempotency


def test_enrolment_replay_returns_the_same_customer(app, api):
    event_id = str(uuid.uuid4())
    first = api.enrol(event_id=event_id)
    assert first.status_code == 201
    before = row_counts(app)
    again = api.enrol(event_id=event_id)
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert row_counts(app) == before
    assert before["customers"] == 1 and before["vault_records"] == 1


def test_enrolment_event_id_from_another_kiosk_conflicts(app, api, creds):
    event_id = str(uuid.uuid4())
    assert api.enrol(event_id=event_id).status_code == 201
    before = row_counts(app)
    other = api.enrol(event_id=event_id, headers=creds.h("kiosk2"))
    assert_problem(other, 409, "event-id-conflict")
    assert row_counts(app) == before


def test_tap_replay_writes_one_visit(app, api):
    _, card = api.customer_with_card()
    event_id = str(uuid.uuid4())
    first = api.tap(event_id=event_id, url=card["url"])
    again = api.tap(event_id=event_id, url=card["url"])
    assert first.status_code == again.status_code == 200
    assert first.get_json()["replayed"] is False
    assert again.get_json()["replayed"] is True
    assert again.get_json()["visit_id"] == first.get_json()["visit_id"]
    assert again.get_json()["customer_id"] == first.get_json()["customer_id"]
    assert len(_visits(app, event_id=event_id)) == 1
    assert len(_visits(app)) == 1


def test_a_tap_whose_record_fails_keeps_its_visit_and_the_retry_is_a_replay(app, api):
    """The visit and its points are committed before the record is read (commit_writes): a
    vault that cannot answer fails the answer, not the visit, and the till's retry of the same
    event id gets the record as a replay, with the visit's points counted once."""
    customer_id, card = api.customer_with_card()
    vault = app.extensions["loyalty.db"].vault
    with vault.begin() as conn:  # the vault's table gone for a moment: its read fails
        conn.exec_driver_sql("ALTER TABLE vault_records RENAME TO vault_records_away")
    event_id = str(uuid.uuid4())
    try:
        failed = api.tap(event_id=event_id, url=card["url"])
    finally:
        with vault.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE vault_records_away RENAME TO vault_records")
    assert failed.status_code >= 500
    assert len(_visits(app, event_id=event_id)) == 1
    retry = api.tap(event_id=event_id, url=card["url"])
    assert retry.status_code == 200, retry.get_json()
    body = retry.get_json()
    assert body["replayed"] is True and body["display_name"] == "Élodie D."
    assert body["visit_id"] == _visits(app, event_id=event_id)[0].id
    with Session(app.extensions["loyalty.db"].main) as s:
        balance = s.scalar(select(Customer.points).where(Customer.id == customer_id))
    assert body["points"] == balance
    assert len(_visits(app)) == 1


def test_tap_retry_after_the_card_was_replaced_returns_the_first_result(app, api, creds):
    customer_id, card = api.customer_with_card()
    event_id = str(uuid.uuid4())
    first = api.tap(event_id=event_id, url=card["url"])
    assert first.status_code == 200
    replaced = api.issue_card(customer_id, replace=True, reason="lost",
                              headers=creds.h("kiosk", staff="desk1"))
    assert replaced.status_code == 201
    again = api.tap(event_id=event_id, url=card["url"])
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["replayed"] is True
    assert again.get_json()["visit_id"] == first.get_json()["visit_id"]


def test_tap_event_id_from_another_till_conflicts(app, api, creds):
    _, card = api.customer_with_card()
    event_id = str(uuid.uuid4())
    assert api.tap(event_id=event_id, url=card["url"]).status_code == 200
    other = api.tap(event_id=event_id, url=card["url"], headers=creds.h("till_uid"))
    assert_problem(other, 409, "event-id-conflict")
    visits = _visits(app)
    assert len(visits) == 1 and visits[0].device_id == creds.device_ids["till"]


def test_card_issue_replay_and_conflict(app, api):
    customer_id = api.enrol().get_json()["customer_id"]
    event_id = str(uuid.uuid4())
    first = api.issue_card(customer_id, event_id=event_id)
    again = api.issue_card(customer_id, event_id=event_id)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    other_customer = api.enrol().get_json()["customer_id"]
    assert_problem(api.issue_card(other_customer, event_id=event_id), 409, "event-id-conflict")
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(Card)) == 1


# --------------------------------------------------------------------------- cards


def test_replace_needs_a_desk_member(app, api, creds):
    customer_id, old = api.customer_with_card()
    before = row_counts(app)
    no_staff = api.issue_card(customer_id, replace=True, reason="lost")
    assert_problem(no_staff, 403, "staff-required")
    cashier = api.issue_card(customer_id, replace=True, reason="lost",
                             headers=creds.h("kiosk", staff="cashier1"))
    assert_problem(cashier, 403)
    wrong_pw = api.issue_card(customer_id, replace=True, reason="lost",
                              headers=creds.h("kiosk") | creds.staff_h("desk1", "wrong-pass"))
    assert_problem(wrong_pw, 401, "invalid-credentials")
    assert row_counts(app) == before
    assert api.tap(url=old["url"]).status_code == 200  # still the active card

    replaced = api.issue_card(customer_id, replace=True, reason="lost",
                              headers=creds.h("kiosk", staff="desk1"))
    assert replaced.status_code == 201, replaced.get_json()
    new = replaced.get_json()
    assert new["generation"] == old["generation"] + 1
    assert new["replaced"] == [old["card_id"]]
    assert new["card_id"] != old["card_id"] and new["token"] != old["token"]

    revoked = api.tap(url=old["url"])
    body = assert_problem(revoked, 410, "card-revoked")
    assert body["type"] == "/api/v1/problems/card-revoked"
    assert body["reason"] == "lost"
    fresh = api.tap(url=new["url"])
    assert fresh.status_code == 200
    assert fresh.get_json()["card"]["card_id"] == new["card_id"]
    assert fresh.get_json()["card"]["generation"] == 1
    with _main(app) as s:
        old_row = s.get(Card, old["card_id"])
        assert (old_row.status, old_row.status_reason, old_row.replaced_by) == \
            ("revoked", "lost", new["card_id"])


def test_staff_client_replaces_without_a_device(app, api, creds):
    customer_id, old = api.customer_with_card()
    replaced = api.issue_card(customer_id, "nfc", replace=True, reason="stolen",
                              headers=creds.staff_auth("desk1"))
    assert replaced.status_code == 201, replaced.get_json()
    assert replaced.get_json()["replaced"] == [old["card_id"]]
    assert_problem(api.tap(qr=old["qr_text"]), 410, "card-revoked")
    cashier = api.issue_card(customer_id, "qr", headers=creds.staff_auth("cashier1"))
    assert_problem(cashier, 403, "forbidden-role")


def test_second_card_of_a_kind_needs_replace(app, api, creds):
    customer_id, first = api.customer_with_card("qr")
    before = row_counts(app)
    again = api.issue_card(customer_id, "qr")
    body = assert_problem(again, 409, "card-exists")
    assert body["card_id"] == first["card_id"]
    also_staff = api.issue_card(customer_id, "qr", headers=creds.h("kiosk", staff="desk1"))
    assert_problem(also_staff, 409, "card-exists")
    assert row_counts(app) == before
    assert api.tap(url=first["url"]).status_code == 200


def test_kiosk_cannot_issue_for_another_kiosks_customer(app, api, creds):
    customer_id = api.enrol().get_json()["customer_id"]
    before = row_counts(app)
    other = api.issue_card(customer_id, headers=creds.h("kiosk2"))
    assert_problem(other, 403)
    assert row_counts(app) == before
    with_staff = api.issue_card(customer_id, headers=creds.h("kiosk2", staff="desk1"))
    assert with_staff.status_code == 201


def test_kiosk_issue_window_closes(app, api):
    customer_id = api.enrol().get_json()["customer_id"]
    app.config["KIOSK_ISSUE_WINDOW"] = 0
    assert_problem(api.issue_card(customer_id), 403, "staff-required")


def test_superseded_generation(app, api):
    _, card = api.customer_with_card()
    ring = load_keyring(app.config["CARD_KEYS_FILE"])
    key_id, card_id, generation = token.decode(card["token"], ring.keys)
    newer = token.encode(key_id, ring.keys[key_id], card_id, generation + 1)
    body = assert_problem(api.tap(url=newer), 410, "card-superseded")
    assert body["card_id"] == card["card_id"]
    assert _visits(app) == []


# --------------------------------------------------------------------------- UID-only cards


def test_uid_only_refused_where_not_enabled(app, api):
    api.customer_with_card("nfc", uid=UID)
    body = assert_problem(api.tap(uid=UID), 403, "uid-only-disabled")
    assert body["type"] == "/api/v1/problems/uid-only-disabled"
    assert _visits(app) == []


def test_uid_only_accepted_and_weak_where_enabled(app, api, creds):
    customer_id, card = api.customer_with_card("nfc", uid=UID.lower())
    tapped = api.tap(uid=UID, headers=creds.h("till_uid"))
    assert tapped.status_code == 200, tapped.get_json()
    record = tapped.get_json()
    assert record["customer_id"] == customer_id
    assert record["card"]["card_id"] == card["card_id"]
    assert "weak" in record["flags"]
    visits = _visits(app)
    assert len(visits) == 1 and visits[0].weak is True and visits[0].method == "uid"
    unknown = api.tap(uid="04FFFFFFFFFFFF", headers=creds.h("till_uid"))
    assert_problem(unknown, 404, "card-not-found")


def test_url_with_other_uid_is_flagged(app, api):
    _, card = api.customer_with_card("nfc", uid=UID)
    mismatch = api.tap(url=card["url"], uid="04000000000001")
    assert mismatch.status_code == 200
    assert "uid-mismatch" in mismatch.get_json()["flags"]
    assert "weak" not in mismatch.get_json()["flags"]
    same = api.tap(url=card["url"], uid=UID.lower())
    assert same.status_code == 200
    assert same.get_json()["flags"] == []
