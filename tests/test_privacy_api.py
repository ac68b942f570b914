"""GDPR through the API: consent ledger, access, rectification, erasure, audit, blind index."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.privacy import audit
from server.privacy.models import AuditEntry, Consent
from server.vault.models import VaultRecord
from tests.support.fixtures_server import assert_problem

PD = "/api/v1/customers/{}/personal-data"


def _enrol(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _with_card(api, **enrol) -> tuple[str, dict]:
    cid = _enrol(api, **enrol)
    r = api.issue_card(cid)
    assert r.status_code == 201, r.get_data(as_text=True)
    return cid, r.get_json()


def _audit(app, customer_id: str | None = None) -> list[AuditEntry]:
    with Session(app.extensions["loyalty.db"].main) as s:
        q = select(AuditEntry).order_by(AuditEntry.id)
        if customer_id:
            q = q.where(AuditEntry.customer_id == customer_id)
        return list(s.scalars(q))


# --------------------------------------------------------------------------- consent ledger


def test_enrolment_records_every_decision_with_where_and_which_text(app, api, creds):
    cid = _enrol(api, consents={"terms": True, "marketing_email": True},
                 consent_version="2026-11", language="lt")
    with Session(app.extensions["loyalty.db"].main) as s:
        rows = s.scalars(select(Consent).where(Consent.customer_id == cid)
                         .order_by(Consent.purpose)).all()
    # four decisions, refusals included: not giving consent is a decision too
    assert [(r.purpose, r.granted) for r in rows] == [
        ("marketing_email", True), ("marketing_sms", False), ("profiling", False),
        ("terms", True)]
    assert {(r.text_version, r.language, r.channel, r.device_id) for r in rows} == {
        ("2026-11", "lt", "kiosk", creds.device_ids["kiosk"])}


def test_unknown_consent_text_version_is_refused_and_writes_nothing(api):
    r = api.enrol(consent_version="v999")
    body = assert_problem(r, 422, "consent-version-unknown")
    assert "2026-11" in body["known"]


def test_consent_texts_are_published_in_three_languages(client):
    body = client.get("/api/v1/consent-texts").get_json()
    texts = body["versions"][body["current"]]
    assert set(texts) == {"terms", "marketing_email", "marketing_sms", "profiling"}
    for purpose in texts.values():
        assert set(purpose) == {"fr", "lt", "en"} and all(purpose.values())


def test_withdrawal_is_a_new_row_and_the_state_follows_the_ledger(app, api, creds):
    cid = _enrol(api, consents={"terms": True, "marketing_sms": True, "profiling": True},
                 gender="female", birth_date="1990-05-01", phone="06 12 34 56 78")
    url = f"/api/v1/customers/{cid}/consents"
    desk = creds.staff_auth("desk1")
    r = api.client.post(url, headers=desk, json={
        "consents": {"marketing_sms": False, "profiling": False},
        "consent_version": "2026-11", "language": "fr", "channel": "desk"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["changed"] == {"marketing_sms": False, "profiling": False}
    entry = _audit(app, cid)[-1]
    assert (entry.action, entry.view) == ("consent.change", "api:consents")

    state = api.client.get(url, headers=desk).get_json()
    assert state["current"]["marketing_sms"]["granted"] is False
    assert state["current"]["marketing_sms"]["channel"] == "desk"
    assert state["current"]["terms"]["granted"] is True
    # nothing was overwritten: the history keeps the first yes and the later no
    sms = [h for h in state["history"] if h["purpose"] == "marketing_sms"]
    assert [(h["granted"], h["first"]) for h in sms] == [(True, True), (False, False)]
    assert sms[1]["staff_id"] is not None and sms[0]["device_id"] == creds.device_ids["kiosk"]

    from server.customers.models import Customer
    from server.privacy.consent import consenting

    with Session(app.extensions["loyalty.db"].main) as s:
        # profiling withdrawn: the coarse profile goes at once
        assert s.get(Customer, cid).age_band is None and s.get(Customer, cid).sex is None
        assert cid not in set(s.scalars(consenting("marketing_sms")))
        assert cid in set(s.scalars(consenting("terms")))

    # given again: the profile is derived again from the vault
    r = api.client.post(url, headers=desk, json={"consents": {"profiling": True},
                                                 "consent_version": "2026-11"})
    assert r.status_code == 200
    with Session(app.extensions["loyalty.db"].main) as s:
        customer = s.get(Customer, cid)
        assert (customer.sex, customer.age_band) == ("female", "35-44")


def test_terms_cannot_be_withdrawn_alone_and_cashiers_cannot_change_consent(api, creds):
    cid = _enrol(api)
    url = f"/api/v1/customers/{cid}/consents"
    body = {"consents": {"terms": False}, "consent_version": "2026-11"}
    assert_problem(api.client.post(url, headers=creds.staff_auth("desk1"), json=body), 409,
                   "consent-terms-withdrawal")
    assert_problem(api.client.post(url, headers=creds.staff_auth("cashier1"), json=body), 403,
                   "forbidden-role")
    assert_problem(api.client.post(url, headers=creds.h("till"), json=body), 403,
                   "forbidden-role")


def test_consent_ledger_is_append_only_in_the_database(app, api):
    cid = _enrol(api)
    with app.extensions["loyalty.db"].main.connect() as conn:
        for statement in ("UPDATE consents SET granted = true WHERE customer_id = :c",
                          "DELETE FROM consents WHERE customer_id = :c"):
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text(statement), {"c": cid})
            conn.rollback()


# --------------------------------------------------------------------------- blind index


@pytest.mark.parametrize(("stored", "typed"), [
    ("06 12 34 56 78", "+33612345678"),
    ("+33 6 12 34 56 78", "0612345678"),
    ("0033 6 12 34 56 78", "06.12.34.56.78"),
])
def test_phone_lookup_is_exact_after_normalisation(api, creds, stored, typed):
    cid = _enrol(api, phone=stored, email=None)
    r = api.client.post("/api/v1/customers/search", headers=creds.staff_auth("desk1"),
                        json={"phone": typed})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert [c["customer_id"] for c in r.get_json()["customers"]] == [cid]
    assert r.get_json()["customers"][0]["display_name"] == "Élodie D."


def test_lithuanian_numbers_and_email_case(api, creds):
    cid = _enrol(api, phone="+370 612 34567", email="Rasa.Kazlauskiene@Example.LT")
    desk = creds.staff_auth("desk1")

    def found(**query):
        r = api.client.post("/api/v1/customers/search", headers=desk, json=query)
        assert r.status_code == 200, r.get_data(as_text=True)
        return [c["customer_id"] for c in r.get_json()["customers"]]

    assert found(phone="8 612 34567", country="LT") == [cid]  # the old trunk prefix
    assert found(phone="0 612 34567", country="LT") == [cid]  # the new one
    assert found(phone="00370 61234567") == [cid]
    assert found(phone="8 612 34567", country="FR") == []  # a French 08 number, not hers
    assert found(email="  rasa.kazlauskiene@example.lt ") == [cid]
    assert found(email="rasa.kazlauskiene@example.com") == []


def test_search_is_a_post_audited_without_the_value_and_not_for_cashiers(app, api, creds):
    _enrol(api, email="lookup.me@example.org")
    assert api.client.get("/api/v1/customers/search?email=x").status_code == 405
    assert_problem(api.client.post("/api/v1/customers/search", headers=creds.staff_auth(
        "cashier1"), json={"email": "lookup.me@example.org"}), 403, "forbidden-role")
    api.client.post("/api/v1/customers/search", headers=creds.staff_auth("desk1"),
                    json={"email": "lookup.me@example.org"})
    entry = _audit(app)[-1]
    assert entry.action == "personal-data.search" and entry.detail["by"] == ["email"]
    assert "lookup.me" not in json.dumps(entry.detail)


# --------------------------------------------------------------------------- access


def test_export_holds_everything_from_both_databases_and_is_audited(app, api, creds):
    cid, card = _with_card(api, email="anna.export@example.org", phone="0611223344",
                                       survey={"heard_from": "friend"},
                                       consents={"terms": True, "marketing_email": True})
    r = api.tap(url=card["url"])
    assert r.status_code == 200
    r = api.purchase([api.line("SKU-1", 1, "19.90")], card=card["url"])
    assert r.status_code == 201, r.get_data(as_text=True)

    r = api.client.get(f"/api/v1/customers/{cid}/export", headers=creds.staff_auth("desk1"))
    assert r.status_code == 200
    assert "attachment" in r.headers["Content-Disposition"]
    doc = json.loads(r.get_data(as_text=True))
    assert doc["personal_data"]["email"] == "anna.export@example.org"
    assert doc["personal_data"]["phone"] == "+33611223344"
    assert doc["profile"]["id"] == cid and "pin_hash" not in doc["profile"]
    assert doc["consents"]["current"]["marketing_email"]["granted"] is True
    assert [c["id"] for c in doc["cards"]] == [card["card_id"]]
    assert len(doc["visits"]) == 1
    assert [ln["sku"] for ln in doc["purchases"][0]["lines"]] == ["SKU-1"]
    assert sum(e["delta"] for e in doc["points_ledger"]) == doc["profile"]["points"] > 0
    assert doc["survey_responses"][0]["answers"] == {"heard_from": "friend"}
    assert "tickets" in doc
    assert _audit(app, cid)[-1].action == "personal-data.export"
    assert _audit(app, cid)[-1].view == "api:export.json"


@pytest.mark.parametrize(("lang", "heading"), [("fr", "Vos données de fidélité"),
                                               ("lt", "Jūsų lojalumo duomenys"),
                                               ("en", "Your loyalty data")])
def test_export_document_is_readable_in_the_customers_language(api, creds, lang, heading):
    cid = _enrol(api, language=lang, email="doc.reader@example.org")
    r = api.client.get(f"/api/v1/customers/{cid}/export?format=html",
                       headers=creds.staff_auth("desk1"))
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert heading in page and "doc.reader@example.org" in page and cid in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_export_is_refused_to_cashiers_tills_and_strangers(api, creds):
    cid = _enrol(api)
    url = f"/api/v1/customers/{cid}/export"
    assert_problem(api.client.get(url), 401, "unauthenticated")
    assert_problem(api.client.get(url, headers=creds.h("till")), 403, "forbidden-role")
    assert_problem(api.client.get(url, headers=creds.staff_auth("cashier1")), 403,
                   "forbidden-role")
    assert_problem(api.client.get(url, headers=creds.staff_auth("desk1", "wrong")), 401,
                   "invalid-credentials")
    assert_problem(api.client.get("/api/v1/customers/C-0000-0000/export",
                                  headers=creds.staff_auth("desk1")), 404, "customer-not-found")


# --------------------------------------------------------------------------- rectification


def test_rectification_changes_the_vault_and_audits_field_names_only(app, api, creds):
    cid = _enrol(api, email="old.address@example.org", last_name="Durand")
    desk = creds.staff_auth("desk1")
    r = api.client.patch(PD.format(cid), headers=desk, json={
        "email": "New.Address@Example.org", "last_name": "Martin", "reason": "typo at enrolment"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert sorted(r.get_json()["changed"]) == ["email", "last_name"]
    data = api.client.get(PD.format(cid), headers=desk).get_json()
    assert (data["email"], data["last_name"]) == ("new.address@example.org", "Martin")

    # the new address finds the customer, the old one no longer does
    def found(email):
        return api.client.post("/api/v1/customers/search", headers=desk,
                               json={"email": email}).get_json()["customers"]
    assert [c["customer_id"] for c in found("new.address@example.org")] == [cid]
    assert found("old.address@example.org") == []

    entries = _audit(app, cid)
    rectify = next(e for e in entries if e.action == "personal-data.rectify")
    assert rectify.detail == {"fields": ["email", "last_name"], "reason": "typo at enrolment"}
    assert rectify.actor.startswith("staff:")
    assert "Martin" not in json.dumps([e.detail for e in entries])
    assert any(e.action == "personal-data.read" and e.view == "api:personal-data"
               for e in entries)


def test_the_same_phone_in_another_format_is_not_a_change(app, api, creds):
    cid = _enrol(api, phone="06 12 34 56 78")
    r = api.client.patch(PD.format(cid), headers=creds.staff_auth("desk1"),
                         json={"phone": "+33 6 12 34 56 78", "reason": "checked"})
    assert r.status_code == 200 and r.get_json()["changed"] == []


def test_rectification_refuses_bad_input_and_keeps_the_data(api, creds):
    cid = _enrol(api, email="keep.me@example.org")
    desk = creds.staff_auth("desk1")
    for body in ({"email": "not-an-email", "reason": "x"}, {"first_name": None, "reason": "x"},
                 {"reason": "x"}, {"email": "a@example.org"}):
        assert_problem(api.client.patch(PD.format(cid), headers=desk, json=body), 422,
                       "validation-error")
    assert api.client.get(PD.format(cid), headers=desk).get_json()["email"] == "keep.me@example.org"
    assert_problem(api.client.patch(PD.format(cid), headers=creds.staff_auth("cashier1"),
                                    json={"email": "x@example.org", "reason": "x"}), 403,
                   "forbidden-role")


# --------------------------------------------------------------------------- erasure


def test_erasure_shreds_the_vault_revokes_cards_and_keeps_the_history(app, api, creds, manager):
    cid, card = _with_card(api, email="erase.me@example.org", phone="0699887766",
                                       survey={"heard_from": "friend", "comment": "Call me Zoé"})
    assert api.purchase([api.line("SKU-9", 2, "5.00")], card=card["url"]).status_code == 201
    mgr = creds.staff_auth(manager)
    r = api.client.post(f"/api/v1/customers/{cid}/erasure", headers=mgr,
                        json={"reason": "customer-request", "confirm": cid})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["cards_revoked"] == [card["card_id"]]

    dbs = app.extensions["loyalty.db"]
    with Session(dbs.vault) as v:
        assert v.get(VaultRecord, cid) is None
    # the card stops at the till, with the reason
    body = assert_problem(api.tap(url=card["url"]), 410, "card-revoked")
    assert body["reason"] == "erased"
    # nor does the customer id alone earn or spend anything any more
    assert_problem(api.purchase([api.line("SKU-9", 1, "5.00")], customer_id=cid), 410,
                   "customer-erased")
    # the desk finds nobody any more
    desk = creds.staff_auth("desk1")
    assert api.client.post("/api/v1/customers/search", headers=desk,
                           json={"email": "erase.me@example.org"}).get_json()["customers"] == []
    assert_problem(api.client.get(PD.format(cid), headers=desk), 410, "customer-erased")
    # the pseudonymous history stays, free text goes
    doc = api.client.get(f"/api/v1/customers/{cid}/export", headers=desk).get_json()
    assert doc["personal_data"] is None
    assert len(doc["purchases"]) == 1 and doc["profile"]["points"] > 0
    assert doc["survey_responses"][0]["answers"] == {"heard_from": "friend"}
    assert all(not s["granted"] for s in doc["consents"]["current"].values())
    assert all(c["nfc_uid"] is None for c in doc["cards"])

    # a second erasure is harmless and says so
    r = api.client.post(f"/api/v1/customers/{cid}/erasure", headers=mgr,
                        json={"reason": "customer-request", "confirm": cid})
    assert r.status_code == 200 and r.get_json()["already_erased"] is True


def test_erasure_needs_a_manager_and_the_id_twice(api, creds, manager):
    cid = _enrol(api)
    url = f"/api/v1/customers/{cid}/erasure"
    assert_problem(api.client.post(url, headers=creds.staff_auth("desk1"),
                                   json={"confirm": cid}), 403, "forbidden-role")
    assert_problem(api.client.post(url, headers=creds.staff_auth(manager),
                                   json={"confirm": "C-0000-0000"}), 422, "validation-error")
    assert api.client.get(PD.format(cid), headers=creds.staff_auth("desk1")).status_code == 200


# --------------------------------------------------------------------------- audit chain


def test_audit_chain_verifies_and_detects_tampering(app, api, creds, admin):
    cid = _enrol(api)
    desk = creds.staff_auth("desk1")
    for _ in range(3):
        api.client.get(PD.format(cid), headers=desk)
    adm = creds.staff_auth(admin)
    assert api.client.get("/api/v1/audit/verify", headers=adm).get_json()["ok"] is True
    entries = api.client.get(f"/api/v1/audit?customer_id={cid}", headers=adm).get_json()
    assert [e["action"] for e in entries["entries"]][:3] == ["personal-data.read"] * 3
    assert_problem(api.client.get("/api/v1/audit", headers=desk), 403, "forbidden-role")

    engine = app.extensions["loyalty.db"].main
    pg = engine.dialect.name == "postgresql"
    target = _audit(app, cid)[1]
    with engine.begin() as conn:
        # someone with write access to the database, who first removes the protection
        if pg:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("UPDATE audit_log SET actor = 'staff:999' WHERE id = :i"),
                     {"i": target.id})
    report = api.client.get("/api/v1/audit/verify", headers=adm).get_json()
    assert report["ok"] is False and report["broken_at"] == target.id
    assert "altered" in report["reason"]


@pytest.mark.parametrize("how", ["delete-middle", "delete-last", "forge"])
def test_audit_chain_detects_removed_or_forged_entries(app, api, creds, how):
    cid = _enrol(api)
    for _ in range(3):
        api.client.get(PD.format(cid), headers=creds.staff_auth("desk1"))
    engine = app.extensions["loyalty.db"].main
    entries = _audit(app)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        if how == "delete-middle":
            conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": entries[1].id})
        elif how == "delete-last":
            conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": entries[-1].id})
        else:
            # a forged entry with a plausible hash: without the key it cannot be right
            last = entries[-1]
            conn.execute(text(
                "INSERT INTO audit_log (seq, at, actor, action, customer_id, prev_hash, hash) "
                "VALUES (:s, :at, 'staff:1', 'personal-data.read', :c, :p, :h)"),
                {"s": last.seq + 1, "at": last.at.replace(tzinfo=None), "c": cid,
                 "p": last.hash, "h": "f" * 64})
    with app.app_context(), Session(engine) as s:
        report = audit.verify(s)
    assert report.ok is False, report


def test_audit_log_refuses_update_and_delete(app, api):
    _enrol(api)
    with app.extensions["loyalty.db"].main.connect() as conn:
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text(statement))
            conn.rollback()
