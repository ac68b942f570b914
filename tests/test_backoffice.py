"""The staff back office: login, roles, CSRF, and the privacy screens over both databases."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from server.db import utcnow
from server.privacy.models import AuditEntry, Consent
from server.staff.models import Staff
from server.vault.models import VaultRecord
from tests.support.fixtures_devices import serve

BO = "/backoffice"
TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


class Office:
    """A staff member's browser: its own cookies, and the CSRF token of the last page."""

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.token: str | None = None

    def _keep_token(self, response):
        found = TOKEN.search(response.get_data(as_text=True))
        if found:
            self.token = found[1]
        return response

    def get(self, url: str, **kw):
        return self._keep_token(self.client.get(url, **kw))

    def post(self, url: str, data: dict | None = None, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf:
            if self.token is None:
                self.get(BO + "/login")
            data["csrf_token"] = self.token
        return self._keep_token(self.client.post(url, data=data, **kw))

    def login(self, username: str, password: str):
        self.get(BO + "/login")
        r = self.post(BO + "/login", {"username": username, "password": password})
        if r.status_code == 303:
            self.get(r.headers["Location"])  # a login starts a new session: a new token
        return r

    def page(self, url: str) -> str:
        r = self.get(url)
        assert r.status_code == 200, (r.status_code, r.get_data(as_text=True)[:500])
        return html.unescape(r.get_data(as_text=True))


def office(app, creds, username: str) -> Office:
    o = Office(app)
    r = o.login(username, creds.passwords[username])
    assert r.status_code == 303, r.get_data(as_text=True)
    return o


def _enrol(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _audit(app, customer_id: str | None = None) -> list[AuditEntry]:
    with Session(app.extensions["loyalty.db"].main) as s:
        q = select(AuditEntry).order_by(AuditEntry.id)
        if customer_id:
            q = q.where(AuditEntry.customer_id == customer_id)
        return list(s.scalars(q))


def _flashes(body: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<p class="flash [a-z]+"[^>]*>(.*?)</p>',
                                                 body, re.S)]


# --------------------------------------------------------------------------- login


def test_login_failure_is_generic_and_success_opens_the_search(app, creds):
    o = Office(app)
    r = o.get(BO + "/")
    assert r.status_code == 302 and "/backoffice/login?next=" in r.headers["Location"]
    login = o.get(BO + "/login")
    assert login.status_code == 200
    assert "default-src 'self'" in login.headers["Content-Security-Policy"]
    assert login.headers["Cache-Control"] == "no-store"

    wrong_password = o.post(BO + "/login", {"username": "desk1", "password": "nope"})
    unknown_user = o.post(BO + "/login", {"username": "nobody", "password": "nope"})
    for r in (wrong_password, unknown_user):
        assert r.status_code == 200
        assert "Unknown user name or wrong password." in html.unescape(r.get_data(as_text=True))
    assert o.get(BO + "/").status_code == 302  # still nobody

    r = o.post(BO + "/login", {"username": "desk1", "password": creds.passwords["desk1"]})
    assert r.status_code == 303 and r.headers["Location"].endswith("/backoffice/")
    cookie = r.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/backoffice"):
        assert flag in cookie, cookie
    assert "Secure" not in cookie  # SESSION_COOKIE_SECURE is off by default (plain HTTP)
    body = o.page(BO + "/")
    assert "Find a customer" in body and "desk1" in body

    # the language is kept in the session, and the login error is translated
    o.post(BO + "/logout")
    o.get(BO + "/login")  # a new session, a new token
    r = o.post(BO + "/language", {"lang": "fr", "next": BO + "/login"})
    assert r.status_code == 303 and r.headers["Location"] == BO + "/login"
    r = o.post(BO + "/login", {"username": "desk1", "password": "nope"})
    assert "Nom d'utilisateur inconnu ou mot de passe incorrect." in html.unescape(
        r.get_data(as_text=True))
    # ``next`` leads back into the back office only
    r = o.post(BO + "/login?next=https://evil.example/", {
        "username": "desk1", "password": creds.passwords["desk1"]})
    assert r.status_code == 303 and r.headers["Location"].endswith("/backoffice/")


def test_login_leads_back_to_the_page_asked_for(app, api, creds):
    cid = _enrol(api)
    o = Office(app)
    r = o.get(f"{BO}/customers/{cid}")
    assert r.status_code == 302
    assert r.headers["Location"] == f"{BO}/login?next=/backoffice/customers/{cid}"
    o.get(r.headers["Location"])
    r = o.post(r.headers["Location"], {"username": "desk1",
                                       "password": creds.passwords["desk1"]})
    assert r.status_code == 303 and r.headers["Location"] == f"{BO}/customers/{cid}"
    # a form sent after the session ended asks for a login, then shows the search
    anonymous = Office(app)
    r = anonymous.post(f"{BO}/customers/{cid}/consents", {"version": "x"})
    assert r.status_code == 302 and r.headers["Location"] == f"{BO}/login"


def test_secure_cookie_is_configurable(tmp_path):
    from server import create_app
    from tests.support.fixtures_server import app_config

    app = create_app(app_config(tmp_path / "instance", SESSION_COOKIE_SECURE="true"))
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        r = app.test_client().get(BO + "/login")
        assert "Secure" in r.headers["Set-Cookie"]
        # the key that signs the cookie was made on first use, private to the service
        key_file = tmp_path / "instance" / "server-secret.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
    finally:
        app.extensions["loyalty.db"].dispose()


def test_a_disabled_account_loses_its_session(app, creds):
    o = office(app, creds, "desk1")
    assert o.get(BO + "/").status_code == 200
    main = app.extensions["loyalty.db"].main
    with Session(main) as s:
        s.execute(update(Staff).where(Staff.username == "desk1").values(disabled_at=utcnow()))
        s.commit()
    assert o.get(BO + "/").status_code == 302
    with Session(main) as s:
        s.execute(update(Staff).where(Staff.username == "desk1").values(disabled_at=None))
        s.commit()
    # the session was emptied, not kept for the day the account comes back
    assert o.get(BO + "/").status_code == 302


def test_forms_without_a_csrf_token_are_refused(app, api, creds):
    cid = _enrol(api, last_name="Durand")
    o = office(app, creds, "desk1")
    r = o.post(f"{BO}/customers/{cid}/personal-data",
               {"first_name": "Élodie", "last_name": "Martin", "reason": "typo"}, csrf=False)
    assert r.status_code == 400
    assert "This form has expired" in html.unescape(r.get_data(as_text=True))
    r = o.post(f"{BO}/customers/{cid}/personal-data",
               {"first_name": "Élodie", "last_name": "Martin", "reason": "typo",
                "csrf_token": "forged"}, csrf=False)
    assert r.status_code == 400
    assert not [e for e in _audit(app, cid) if e.action == "personal-data.rectify"]
    assert "Durand" in o.page(f"{BO}/customers/{cid}")
    # a login form without its token is refused too
    assert Office(app).post(BO + "/login", {"username": "desk1", "password": "x"},
                            csrf=False).status_code == 400


def test_a_cashier_has_no_back_office_rights(app, api, creds):
    cid = _enrol(api)
    o = office(app, creds, "cashier1")
    r = o.get(BO + "/")
    assert r.status_code == 403
    body = html.unescape(r.get_data(as_text=True))
    assert "Your account has no back-office rights." in body
    assert "Find a customer" not in body  # no menu to pages they cannot open
    assert o.get(f"{BO}/customers/{cid}").status_code == 403
    assert o.post(BO + "/search", {"query": "x@example.org"}).status_code == 403
    assert o.get(BO + "/audit").status_code == 403
    assert not [e for e in _audit(app, cid) if e.action.startswith("personal-data.read")]
    # in French too
    o.post(BO + "/language", {"lang": "fr"})
    assert "Votre compte n'a aucun droit sur le back-office." in html.unescape(
        o.get(BO + "/").get_data(as_text=True))


# --------------------------------------------------------------------------- customers


def test_desk_finds_a_customer_by_phone_in_another_format_and_opens_the_page(app, api, creds):
    cid = _enrol(api, email=None, phone="06 12 34 56 78", first_name="Zoé",
                 last_name="Lefèvre")
    _enrol(api)  # someone else
    o = office(app, creds, "desk1")
    for typed in ("+33612345678", "0612345678", "+33 6 12 34 56 78"):
        r = o.post(BO + "/search", {"query": typed})
        body = html.unescape(r.get_data(as_text=True))
        assert r.status_code == 200
        assert f'href="/backoffice/customers/{cid}"' in body, typed
        assert "Zoé L." in body
    # the number is never in a URL: the search is a POST
    assert o.get(BO + "/search").status_code == 405

    body = o.page(f"{BO}/customers/{cid}")
    for shown in ("Zoé", "Lefèvre", "+33612345678", "Member", "Programme terms"):
        assert shown in body, shown

    entries = _audit(app)
    search = [e for e in entries if e.action == "personal-data.search"]
    assert search and search[0].view == "backoffice:search"
    assert search[0].detail == {"by": ["phone"], "found": [cid]}
    read = [e for e in entries if e.action == "personal-data.read" and e.customer_id == cid]
    assert [e.view for e in read] == ["backoffice:customer"]
    assert read[0].actor == f"staff:{_staff_id(app, 'desk1')}"
    assert "0612345678" not in json.dumps([e.detail for e in entries])

    # by customer number, typed any way, straight to the page
    r = o.post(BO + "/search", {"query": cid.lower().replace("-", "")})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/customers/{cid}")
    r = o.post(BO + "/search", {"query": "C-0000-0000"})
    r = o.get(r.headers["Location"], follow_redirects=True)
    assert "There is no customer with this number." in _flashes(r.get_data(as_text=True))
    # words are a name search now (tests/test_backoffice_customer.py); one letter is nothing
    r = o.post(BO + "/search", {"query": "x"})
    assert r.status_code == 422
    assert "Type a name, an email address, a phone number" in \
        html.unescape(r.get_data(as_text=True))


def _staff_id(app, username: str) -> int:
    with Session(app.extensions["loyalty.db"].main) as s:
        return s.scalar(select(Staff.id).where(Staff.username == username))


RECTIFY = {"first_name": "Élodie", "last_name": "Durand", "email": "", "phone": "",
           "birth_date": "", "gender": "", "address": "", "reason": ""}


def test_desk_rectifies_with_a_reason_and_the_audit_names_the_fields_only(app, api, creds):
    cid = _enrol(api, email="old.address@example.org", last_name="Durand")
    o = office(app, creds, "desk1")
    url = f"{BO}/customers/{cid}/personal-data"
    form = {**RECTIFY, "email": "old.address@example.org"}

    # no reason, or a name emptied: said on the page, nothing written
    r = o.post(url, {**form, "last_name": "Martin"})
    body = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 200 and "Say why the data is corrected" in body
    assert 'value="Martin"' in body  # what was typed is still there
    r = o.post(url, {**form, "first_name": "  ", "reason": "typo"})
    assert "A first name is required" in html.unescape(r.get_data(as_text=True))
    r = o.post(url, {**form, "email": "not-an-email", "reason": "typo"})
    assert "This email address does not look right." in html.unescape(r.get_data(as_text=True))
    assert not [e for e in _audit(app, cid) if e.action == "personal-data.rectify"]

    r = o.post(url, {**form, "last_name": "Martin", "email": "New.Address@Example.org",
                     "birth_date": "1990-04-02", "reason": "typo at enrolment"})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/customers/{cid}")
    body = o.page(f"{BO}/customers/{cid}")
    assert "Corrected: Last name, Email, Date of birth." in _flashes(body) or \
        any(f.startswith("Corrected:") for f in _flashes(body))
    assert "Martin" in body and "new.address@example.org" in body and "1990-04-02" in body

    entries = _audit(app, cid)
    rectify = [e for e in entries if e.action == "personal-data.rectify"]
    assert len(rectify) == 1
    assert rectify[0].detail == {"fields": ["birth_date", "email", "last_name"],
                                 "reason": "typo at enrolment"}
    assert rectify[0].view == "backoffice:customer"
    assert "Martin" not in json.dumps([e.detail for e in entries])
    # the new address finds the customer
    r = o.post(BO + "/search", {"query": "new.address@example.org"})
    assert cid in r.get_data(as_text=True)


def test_desk_records_consent_changes_with_the_current_text(app, api, creds):
    from server.privacy.consent import texts

    version = texts()["current"]
    cid = _enrol(api, consents={"terms": True})
    o = office(app, creds, "desk1")
    o.post(BO + "/language", {"lang": "fr"})
    body = o.page(f"{BO}/customers/{cid}")
    # each box comes with the published text, in the staff member's language
    assert texts()["versions"][version]["marketing_email"]["fr"] in body
    assert f'name="version" type="hidden" value="{version}"' in body

    url = f"{BO}/customers/{cid}/consents"
    r = o.post(url, {"version": version, "terms": "y", "marketing_email": "y"})
    assert r.status_code == 303
    assert _flashes(o.page(r.headers["Location"])) == [
        "Consentements enregistrés : Offres par e-mail (donné)."]
    with Session(app.extensions["loyalty.db"].main) as s:
        rows = list(s.scalars(select(Consent).where(Consent.customer_id == cid)
                              .order_by(Consent.id)))
    last = rows[-1]
    assert (last.purpose, last.granted, last.channel, last.language, last.text_version) == (
        "marketing_email", True, "desk", "fr", version)
    assert last.staff_id == _staff_id(app, "desk1")
    change = [e for e in _audit(app, cid) if e.action == "consent.change"]
    assert change[-1].detail["changed"] == {"marketing_email": True}

    # the terms cannot be withdrawn alone; a text that is not the current one is refused
    for data, said in (
            ({"version": version, "marketing_email": "y"},
             "Les conditions du programme ne peuvent pas être retirées seules"),
            ({"version": "2020-01", "terms": "y"},
             "Les textes de consentement ont changé depuis l'affichage de la page")):
        r = o.post(url, data)
        assert r.status_code == 303
        (flash,) = _flashes(o.page(r.headers["Location"]))
        assert flash.startswith(said), flash
    with Session(app.extensions["loyalty.db"].main) as s:
        assert len(list(s.scalars(select(Consent).where(Consent.customer_id == cid)))) == \
            len(rows)


def test_desk_exports_json_and_the_readable_document(app, api, creds):
    cid = _enrol(api, last_name="Durand", language="lt")
    o = office(app, creds, "desk1")
    o.page(f"{BO}/customers/{cid}")
    r = o.post(f"{BO}/customers/{cid}/export.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{cid}.json"'
    doc = json.loads(r.get_data(as_text=True))
    assert doc["customer_id"] == cid and doc["personal_data"]["last_name"] == "Durand"

    r = o.post(f"{BO}/customers/{cid}/export.html")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "Jūsų lojalumo duomenys" in page  # the customer's language
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "'sha256-" in csp and "unsafe-inline" not in csp
    views = [e.view for e in _audit(app, cid) if e.action == "personal-data.export"]
    assert views == ["backoffice:export.json", "backoffice:export.html"]
    # a GET never exports
    assert o.get(f"{BO}/customers/{cid}/export.json").status_code == 405


def test_desk_cannot_erase_and_a_manager_can(app, api, creds, manager):
    cid = _enrol(api, email="erase.me@example.org", last_name="Durand")
    card = api.issue_card(cid).get_json()
    desk = office(app, creds, "desk1")
    assert "Erase this customer" not in desk.page(f"{BO}/customers/{cid}")
    url = f"{BO}/customers/{cid}/erasure"
    assert desk.post(url, {"reason": "customer-request", "confirm": cid}).status_code == 403

    mgr = office(app, creds, manager)
    assert "Erase this customer" in mgr.page(f"{BO}/customers/{cid}")
    r = mgr.post(url, {"reason": "customer-request", "confirm": "C-0000-0000"})
    assert r.status_code == 303
    body = mgr.page(f"{BO}/customers/{cid}")
    assert "Type the customer number exactly as shown to confirm." in _flashes(body)
    assert "Durand" in body

    r = mgr.post(url, {"reason": "customer-request", "confirm": cid.lower()})
    assert r.status_code == 303
    body = mgr.page(f"{BO}/customers/{cid}")
    assert "The customer's personal data was erased and their cards were revoked." in \
        _flashes(body)
    assert "Durand" not in body and "erase.me" not in body
    assert "no name or contact details are held any more" in body
    assert re.search(rf"{card['card_id']}</td><td>QR</td>\s*<td>revoked \(customer erased\)",
                     body), body
    assert "Erase this customer" not in body and "Correct personal data" not in body
    with Session(app.extensions["loyalty.db"].vault) as v:
        assert v.get(VaultRecord, cid) is None
    r = mgr.post(BO + "/search", {"query": "erase.me@example.org"})
    assert "No customer found." in r.get_data(as_text=True)
    # a correction after the erasure is refused with a message, not an error page
    r = desk.post(f"{BO}/customers/{cid}/personal-data", {**RECTIFY, "reason": "x"})
    assert r.status_code == 303
    assert "This customer's personal data has been erased." in _flashes(
        desk.page(r.headers["Location"]))
    erase = [e for e in _audit(app, cid) if e.action == "personal-data.erase"]
    assert erase[0].actor == f"staff:{_staff_id(app, manager)}"


# --------------------------------------------------------------------------- audit, retention


def test_admin_reads_the_audit_log_and_sees_tampering(app, api, creds, admin, monkeypatch):
    from server.backoffice import queries

    cid = _enrol(api)
    other = _enrol(api)
    desk = office(app, creds, "desk1")
    for _ in range(3):
        desk.page(f"{BO}/customers/{cid}")
    desk.page(f"{BO}/customers/{other}")
    assert desk.get(BO + "/audit").status_code == 403

    adm = office(app, creds, admin)
    body = adm.page(BO + "/audit")
    assert 'data-ok="true"' in body and "The chain is intact" in body
    ours = [e for e in _audit(app) if e.customer_id == cid]
    body = adm.page(f"{BO}/audit?customer_id={cid.lower()}")
    assert body.count("personal-data.read") == 3 and other not in body
    assert "desk1" in body  # the staff member's name next to their id
    # newest first, by pages
    monkeypatch.setattr(queries, "AUDIT_PAGE", 2)
    body = adm.page(f"{BO}/audit?customer_id={cid}")
    ids = [int(i) for i in re.findall(r"<tr class=\"\"><td>(\d+)</td>", body)]
    assert ids == [ours[-1].id, ours[-2].id]
    older = re.search(r'href="([^"]*before=\d+[^"]*)"', body)[1]
    body = adm.page(html.unescape(older))
    ids = [int(i) for i in re.findall(r"<tr class=\"\"><td>(\d+)</td>", body)]
    assert ids == [ours[-3].id] + ([ours[-4].id] if len(ours) > 3 else [])

    engine = app.extensions["loyalty.db"].main
    target = ours[1]
    with engine.begin() as conn:
        # someone with write access to the database, who first removes the protection
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("UPDATE audit_log SET actor = 'staff:999' WHERE id = :i"),
                     {"i": target.id})
    body = adm.page(BO + "/audit")
    assert 'data-ok="false"' in body
    assert "The chain is broken" in body
    assert f"First entry that fails: {target.id}." in body
    assert re.search(rf'<tr class="broken"><td>{target.id}</td>', body)


def test_retention_lists_inactive_customers_for_managers(app, api, creds, manager):
    old = _enrol(api)
    _enrol(api)  # active
    with Session(app.extensions["loyalty.db"].main) as s:
        s.execute(text("UPDATE customers SET created_at = :t WHERE id = :i"),
                  {"t": (utcnow() - timedelta(days=4 * 365)).replace(tzinfo=None)
                   if s.bind.dialect.name == "sqlite" else utcnow() - timedelta(days=4 * 365),
                   "i": old})
        s.commit()
    body = office(app, creds, manager).page(BO + "/retention")
    assert f'href="/backoffice/customers/{old}"' in body
    assert body.count('href="/backoffice/customers/') == 1
    assert "not yet told" in body
    assert office(app, creds, "desk1").get(BO + "/retention").status_code == 403


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_desk_in_chromium_finds_corrects_and_reads_in_lithuanian(app, api, creds, browser,
                                                                 screenshots):
    cid = _enrol(api, email="jurate@example.lt", first_name="Jūratė",
                 last_name="Kazlauskaite", language="lt")
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(f"{url}/backoffice/")
            page.get_by_label("User name").fill("desk1")
            page.get_by_label("Password").fill(creds.passwords["desk1"])
            page.screenshot(path=screenshots / "backoffice-login-en.png")
            with page.expect_navigation():
                page.get_by_role("button", name="Log in").click()
            assert page.locator("h1").inner_text() == "Find a customer"

            page.get_by_label("Email, phone number or customer number").fill(
                "Jurate@Example.lt")
            with page.expect_navigation():
                page.get_by_role("button", name="Search").click()
            page.screenshot(path=screenshots / "backoffice-search-en.png", full_page=True)
            with page.expect_navigation():
                page.get_by_role("link", name=cid).click()
            assert page.locator("h1").inner_text().startswith(cid)

            page.get_by_label("Last name").fill("Kazlauskaitė")
            page.get_by_label("Reason for the correction").fill("accent missing")
            with page.expect_navigation():
                page.get_by_role("button", name="Save the corrections").click()
            assert page.get_by_role("status").first.inner_text() == "Corrected: Last name."
            page.screenshot(path=screenshots / "backoffice-customer-en.png", full_page=True)

            with page.expect_navigation():
                page.get_by_role("button", name="Lietuvių").click()
            assert page.locator("html").get_attribute("lang") == "lt"
            assert page.get_by_label("Pavardė").input_value() == "Kazlauskaitė"
            assert page.get_by_role("heading", name="Tapatybė ir kontaktai").is_visible()
            page.screenshot(path=screenshots / "backoffice-customer-lt.png", full_page=True)
        finally:
            context.close()
    assert not errors, f"the page logged errors: {errors}"
    rectify = [e for e in _audit(app, cid) if e.action == "personal-data.rectify"]
    assert rectify[0].detail == {"fields": ["last_name"], "reason": "accent missing"}


def test_card_alerts_show_on_the_customer_page(app, api, creds):
    from server.cli import add_device
    from server.stores.models import Store

    cid = _enrol(api)
    card = api.issue_card(cid).get_json()
    assert api.tap(url=card["url"]).status_code == 200
    with Session(app.extensions["loyalty.db"].main) as s:
        s.add(Store(code="FAR-01", name="Far away"))
        s.commit()
        key = add_device(s, "FAR-01", "till", "far till")
    assert api.tap(url=card["url"], headers={"Authorization": f"Bearer {key}"}).status_code == 200
    page = office(app, creds, "desk1").page(f"{BO}/customers/{cid}?lang=fr")
    assert "Alertes sur les cartes" in page
    assert "la même carte dans deux magasins" in page and "FAR-01" in page
