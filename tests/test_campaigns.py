"""Campaigns against real servers: aiosmtpd receives the mail, a local http.server stands in
for the SMS gateway. Consent per channel, the customer's language, the unsubscribe link and
the STOP keyword, throttling, retries, at-most-once sending, and the daily triggers."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.campaigns import service, templating
from server.campaigns.models import BirthdayDay, CampaignMessage
from server.customers.models import Customer
from server.db import utcnow
from server.loyalty import ledger
from server.privacy import consent, erasure
from server.privacy.models import AuditEntry, Consent
from tests.support.backoffice_browser import log_in
from tests.test_privacy_retention import Inbox, smtp  # noqa: F401 - the fixture

EMAIL_TEMPLATES = {
    "fr": {"subject": "Offre pour {{ first_name }}",
           "text": "Bonjour {{ first_name }}, vous avez {{ points }} points.\n"
                   "Désinscription : {{ unsubscribe_url }}",
           "html": "<p>Bonjour {{ first_name }}</p><a href=\"{{ unsubscribe_url }}\">x</a>"},
    "lt": {"subject": "Pasiūlymas {{ first_name }}", "text": "Sveiki, {{ first_name }}!",
           "html": ""},
    "en": {"subject": "An offer for {{ first_name }}", "text": "Hello {{ first_name }}",
           "html": ""},
}
SMS_TEMPLATES = {"fr": {"text": "Bonjour {{ first_name }} : -10% ce week-end. STOP au 36000"},
                 "en": {"text": "Hello {{ first_name }}: 10% off. Reply STOP"}}


def _enrol(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _dbs(app):
    return app.extensions["loyalty.db"]


def _create(app, channel: str, templates: dict, target=None, **kw) -> int:
    """A campaign, queued to ``target`` unless it is triggered; returns its id."""
    with Session(_dbs(app).main) as main:
        campaign = service.create(main, "test", name=f"{channel} test", channel=channel,
                                  templates=templates, **kw)
        if campaign.trigger:
            campaign.status = "active"
        else:
            service.queue(main, campaign, target)
        main.commit()
        return campaign.id


def _log(app, campaign_id: int) -> list[CampaignMessage]:
    with Session(_dbs(app).main) as main:
        return list(main.scalars(select(CampaignMessage)
                                 .where(CampaignMessage.campaign_id == campaign_id)
                                 .order_by(CampaignMessage.id)))


def _flags(app, customer_id: str) -> dict:
    with Session(_dbs(app).main) as main:
        return consent.flags(main, customer_id)


def _withdraw(app, customer_id: str) -> None:
    with app.app_context(), Session(_dbs(app).main) as main:
        service.withdraw(main, main.get(Customer, customer_id), "email", "desk", "test",
                         "test")
        main.commit()


def _erase(app, customer_id: str) -> None:
    with app.app_context(), Session(_dbs(app).main) as main, \
            Session(_dbs(app).vault) as vault:
        erasure.erase(main, vault, "test", customer_id, "asked")
        vault.commit()
        main.commit()


def test_email_campaign_consent_language_headers_and_unsubscribe(app, api, client, smtp):  # noqa: F811
    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    yes = {"terms": True, "marketing_email": True}
    french = _enrol(api, first_name="Élodie", language="fr", consents=yes,
                    email="elodie@example.org")
    lithuanian = _enrol(api, first_name="Rūta", language="lt", consents=yes,
                        email="ruta@example.lt")
    _enrol(api, first_name="Noel", language="en", consents={"terms": True})  # no consent
    sms_only = _enrol(api, first_name="Sam", language="en",
                      consents={"terms": True, "marketing_sms": True}, phone="+33612345678")
    erased = _enrol(api, first_name="Gone", language="fr", consents=yes)
    _erase(app, erased)

    first = _create(app, "email", EMAIL_TEMPLATES)
    assert sorted(m.customer_id for m in _log(app, first)) == sorted([french, lithuanian])
    assert sms_only not in [m.customer_id for m in _log(app, first)]

    report = service.process(app)
    assert report.as_dict() == {"sent": 2, "failed": 0, "skipped": 0}
    by_to = {m["To"]: m for m in smtp.messages}
    fr, lt = by_to["elodie@example.org"], by_to["ruta@example.lt"]
    assert fr["Subject"] == "Offre pour Élodie" and fr["Content-Language"] == "fr"
    assert lt["Subject"] == "Pasiūlymas Rūta" and lt["Content-Language"] == "lt"
    assert fr["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = fr["List-Unsubscribe"].strip("<>")
    assert link.startswith("https://shop.example/unsubscribe/")
    text = fr.get_body(("plain",)).get_content()
    with Session(_dbs(app).main) as main:
        points = main.get(Customer, french).points  # the programme's welcome points
    assert f"vous avez {points} points" in text and link in text
    assert "<p>Bonjour Élodie</p>" in fr.get_body(("html",)).get_content()
    # a template without the link gets it added under the text, in the customer's language
    lt_link = lt["List-Unsubscribe"].strip("<>")
    assert lt.get_body(("plain",)).get_content().replace("\r\n", "\n").endswith(
        f"-- \nJei nebenorite gauti mūsų pasiūlymų el. paštu: {lt_link}\n")
    assert text.count(link) == 1
    assert all(m.status == "sent" and m.attempts == 1 for m in _log(app, first))
    # each address read from the vault is in the audit log, by the job, naming the campaign
    with Session(_dbs(app).main) as main:
        reads = main.scalars(select(AuditEntry.customer_id).where(
            AuditEntry.actor == service.ACTOR, AuditEntry.view == f"campaign:{first}")).all()
    assert sorted(reads) == sorted([french, lithuanian])

    # run again: nothing is sent twice
    assert service.process(app).as_dict() == {"sent": 0, "failed": 0, "skipped": 0}
    assert len(smtp.messages) == 2

    # the link: a page in the customer's language, no login, and a POST that withdraws
    path = urlsplit(link).path
    page = client.get(path)
    assert page.status_code == 200
    assert '<html lang="fr">' in page.get_data(as_text=True)
    assert _flags(app, french)["marketing_email"] is True  # looking changes nothing
    assert client.get(path[:-3] + "xyz").status_code == 404  # a forged link
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert _flags(app, french)["marketing_email"] is False
    with Session(_dbs(app).main) as main:
        row = main.scalars(select(Consent).where(Consent.customer_id == french)
                           .order_by(Consent.id.desc())).first()
    assert (row.purpose, row.granted, row.channel) == ("marketing_email", False,
                                                       "unsubscribe link")
    assert client.post(path).status_code == 200  # twice: still fine, nothing more written

    second = _create(app, "email", EMAIL_TEMPLATES)
    assert [m.customer_id for m in _log(app, second)] == [lithuanian]
    service.process(app)
    assert [m["To"] for m in smtp.messages[2:]] == ["ruta@example.lt"]


def test_a_consent_withdrawn_after_queuing_is_skipped(app, api, smtp):  # noqa: F811
    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    customer = _enrol(api, consents={"terms": True, "marketing_email": True})
    campaign = _create(app, "email", EMAIL_TEMPLATES)
    _withdraw(app, customer)
    assert service.process(app).as_dict() == {"sent": 0, "failed": 0, "skipped": 1}
    [row] = _log(app, campaign)
    assert (row.status, row.reason) == ("skipped", "no consent (withdrawn since queued)")
    assert smtp.messages == []


def test_the_target_is_a_select_of_customer_ids(app, api):
    yes = {"terms": True, "marketing_email": True}
    one, _two = _enrol(api, consents=yes), _enrol(api, consents=yes)
    campaign = _create(app, "email", EMAIL_TEMPLATES,
                       target=select(Customer.id).where(Customer.id == one))
    assert [m.customer_id for m in _log(app, campaign)] == [one]
    with Session(_dbs(app).main) as main:
        assert service.count_recipients(main, "email") == 2
        # a segment's id and its definition as it was are kept with the campaign
        campaign = service.create(main, "test", name="seg", channel="email",
                                  templates=EMAIL_TEMPLATES)
        assert service.queue(main, campaign, select(Customer.id), segment_id=7,
                             definition={"tier": ["gold"]}) == 2
        assert service.queue(main, campaign, select(Customer.id)) == 0  # nobody twice
        main.commit()
        assert (campaign.segment_id, campaign.segment_definition) == (7, {"tier": ["gold"]})


def test_a_message_interrupted_while_sending_is_never_sent_again(app, api, smtp):  # noqa: F811
    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    _enrol(api, consents={"terms": True, "marketing_email": True})
    campaign = _create(app, "email", EMAIL_TEMPLATES)
    with Session(_dbs(app).main) as main:  # as a crash after the claim leaves it
        main.execute(update(CampaignMessage).values(status="sending", attempts=1))
        main.commit()
    assert service.process(app).as_dict() == {"sent": 0, "failed": 0, "skipped": 0}
    assert smtp.messages == [] and _log(app, campaign)[0].status == "sending"


class Gateway:
    """A local SMS gateway: records each request; answers 503 to the numbers in ``fail``
    the first time, 200 with an id otherwise."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail: set[str] = set()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gateway.requests.append({"at": time.monotonic(), "body": body,
                                         "auth": self.headers.get("Authorization")})
                if body["to"] in gateway.fail:
                    gateway.fail.discard(body["to"])
                    self.send_response(503)
                    self.end_headers()
                    return
                answer = json.dumps({"id": f"gw-{len(gateway.requests)}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway():
    gw = Gateway()
    try:
        yield gw
    finally:
        gw.close()


def test_sms_gateway_throttling_retry_and_stop(app, api, client, gateway):
    app.config.update(SMS_URL=gateway.url, SMS_TOKEN="gw-token",
                      CAMPAIGN_SMS_PER_MINUTE=120, SMS_INBOUND_SECRET="inbound-secret")
    sms_yes = {"terms": True, "marketing_sms": True}
    phones = ["+33611111111", "+33622222222", "+37061234567"]
    ids = [_enrol(api, first_name=f"P{i}", language="fr", consents=sms_yes, phone=p)
           for i, p in enumerate(phones)]
    _enrol(api, consents={"terms": True}, phone="+33633333333")  # no SMS consent
    gateway.fail.add(phones[1])

    campaign = _create(app, "sms", SMS_TEMPLATES)
    assert service.process(app).as_dict() == {"sent": 2, "failed": 1, "skipped": 0}
    assert sorted(r["body"]["to"] for r in gateway.requests) == sorted(phones)
    assert {r["auth"] for r in gateway.requests} == {"Bearer gw-token"}
    texts = {r["body"]["to"]: r["body"]["text"] for r in gateway.requests}
    assert texts[phones[0]] == "Bonjour P0 : -10% ce week-end. STOP au 36000"
    # 120 a minute: one every 0.5 s (measured where the gateway receives them: a loaded
    # machine adds some jitter either side)
    gaps = [b["at"] - a["at"] for a, b in zip(gateway.requests, gateway.requests[1:])]
    assert min(gaps) >= 0.4 and sum(gaps) >= 0.9, gaps
    rows = {m.customer_id: m for m in _log(app, campaign)}
    failed = rows[ids[1]]
    assert (failed.status, failed.retry, failed.attempts) == ("failed", True, 1)
    assert failed.reason == "gateway answered 503"
    assert rows[ids[0]].provider_id.startswith("gw-")

    # the next run retries the 5xx only
    assert service.process(app).as_dict() == {"sent": 1, "failed": 0, "skipped": 0}
    assert len(gateway.requests) == 4
    again = {m.customer_id: m for m in _log(app, campaign)}[ids[1]]
    assert (again.status, again.attempts, again.provider_id) == ("sent", 2, "gw-4")
    assert gateway.requests[3]["body"]["to"] == phones[1]
    assert service.process(app).as_dict() == {"sent": 0, "failed": 0, "skipped": 0}

    # the gateway passes on "Stop" from the second number
    inbound = "/api/v1/sms/inbound"
    body = {"from": phones[1], "text": "Stop"}
    assert client.post(inbound, json=body).status_code == 401
    assert client.post(inbound, json=body,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    hello = client.post(inbound, json={"from": phones[0], "text": "Merci !"},
                        headers={"Authorization": "Bearer inbound-secret"})
    assert hello.get_json() == {"stop": False, "withdrawn": 0}
    stop = client.post(inbound, json=body, headers={"Authorization": "Bearer inbound-secret"})
    assert stop.status_code == 200 and stop.get_json() == {"stop": True, "withdrawn": 1}
    assert _flags(app, ids[1])["marketing_sms"] is False
    lithuanian = client.post(inbound, json={"from": phones[2], "text": "atsisakyti"},
                             headers={"Authorization": "Bearer inbound-secret"})
    assert lithuanian.get_json() == {"stop": True, "withdrawn": 1}

    second = _create(app, "sms", SMS_TEMPLATES)
    assert [m.customer_id for m in _log(app, second)] == [ids[0]]


def test_sms_file_sink_is_the_default(app, api, tmp_path):
    customer = _enrol(api, language="en", consents={"terms": True, "marketing_sms": True},
                      phone="+33644444444", first_name="Ann")
    _create(app, "sms", SMS_TEMPLATES)
    assert service.process(app).sent == 1
    [written] = (tmp_path / "instance" / "sms-outbox").glob("*.json")
    assert json.loads(written.read_text()) == {"to": "+33644444444",
                                               "text": "Hello Ann: 10% off. Reply STOP"}
    assert customer


def test_templates_are_limited_to_the_safe_placeholders(app):
    with Session(_dbs(app).main) as main:
        for bad in ("{{ email }}", "{{ customer.__class__ }}", "{% for x in %}"):
            with pytest.raises(Problem):
                service.create(main, "test", name="x", channel="sms",
                               templates={"en": {"text": bad}})
    # the sandbox refuses what a placeholder could reach
    with pytest.raises(Exception, match="unsafe|undefined"):
        templating.render({"en": {"text": "{{ tier.__class__.__mro__ }}"}}, "en",
                          {"tier": "gold"})


def test_sms_length_and_parts():
    assert templating.sms_parts("Hello") == {"length": 5, "encoding": "GSM-7", "parts": 1}
    assert templating.sms_parts("x" * 160)["parts"] == 1
    assert templating.sms_parts("x" * 161)["parts"] == 2  # 153 a part once split
    assert templating.sms_parts("€" * 80) == {"length": 160, "encoding": "GSM-7", "parts": 1}
    assert templating.sms_parts("ąčę" * 24) == {"length": 72, "encoding": "UCS-2", "parts": 2}
    assert templating.sms_parts("ą" * 70)["parts"] == 1


def test_triggers_welcome_birthday_expiring_no_visit_and_twice(app, api, smtp):  # noqa: F811
    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    now = utcnow()
    yes = {"terms": True, "marketing_email": True}
    newcomer = _enrol(api, first_name="New", language="en", consents=yes)
    birthday = _enrol(api, first_name="Bday", language="en", consents=yes,
                      birth_date=now.date().replace(year=1990).isoformat())
    quiet_birthday = _enrol(api, first_name="Quiet", language="en", consents={"terms": True},
                            birth_date=now.date().replace(year=1985).isoformat())
    expiring = _enrol(api, first_name="Exp", language="en", consents=yes)
    away = _enrol(api, first_name="Away", language="en", consents=yes)
    with Session(_dbs(app).main) as main:
        ledger.post(main, expiring, 50, "adjust", reason="test",
                    expires_at=now + timedelta(days=10))
        old = now - timedelta(days=100)
        main.execute(update(Customer).where(Customer.id.in_([birthday, expiring, away]))
                     .values(created_at=old))
        main.execute(update(Customer).where(Customer.id == away)
                     .values(created_at=now - timedelta(days=70)))
        main.commit()

    welcome = _create(app, "email", EMAIL_TEMPLATES, trigger="welcome", trigger_days=2)
    bday = _create(app, "email", EMAIL_TEMPLATES, trigger="birthday")
    exp = _create(app, "email", EMAIL_TEMPLATES, trigger="points_expiring", trigger_days=30)
    gone = _create(app, "email", EMAIL_TEMPLATES, trigger="no_visit", trigger_days=60)

    first = service.run_triggers(app, now)
    # welcome: everyone enrolled in the last 2 days with consent (newcomer; quiet has none)
    assert [m.customer_id for m in _log(app, welcome)] == [newcomer]
    assert [(m.customer_id, m.trigger_key) for m in _log(app, bday)] == \
        [(birthday, f"birthday:{now.year}")]
    assert [(m.customer_id, m.trigger_key) for m in _log(app, exp)] == \
        [(expiring, f"expiring:{(now + timedelta(days=10)).date().isoformat()}")]
    assert [m.customer_id for m in _log(app, gone)] == [away]
    assert first["sent"] == 4 and len(smtp.messages) == 4
    # the month-day of consenting customers only, read from the vault once
    with Session(_dbs(app).main) as main:
        days = dict(main.execute(select(BirthdayDay.customer_id, BirthdayDay.month_day)).all())
    assert quiet_birthday not in days
    assert days[birthday] == now.strftime("%m-%d") and days[newcomer] is None
    assert first["birthdays_read"] == 4

    second = service.run_triggers(app, now)
    assert second == {"birthdays_read": 0, "queued": {welcome: 0, bday: 0, exp: 0, gone: 0},
                      "sent": 0, "failed": 0, "skipped": 0}
    assert len(smtp.messages) == 4

    # withdrawing the consent forgets the birthday at the next run
    _withdraw(app, birthday)
    service.run_triggers(app, now)
    with Session(_dbs(app).main) as main:
        assert main.scalar(select(func.count()).select_from(BirthdayDay)
                           .where(BirthdayDay.customer_id == birthday)) == 0

    # the right of access shows the messages; erasure takes the month-day at once
    with app.app_context(), Session(_dbs(app).main) as main, \
            Session(_dbs(app).vault) as vault:
        from server.privacy import access

        document = access.export(main, vault, newcomer)
    assert [m["trigger_key"] for m in document["campaign_messages"]] == ["welcome"]
    assert document["campaign_birthday"][0]["month_day"] is None
    _erase(app, away)
    with Session(_dbs(app).main) as main:
        assert main.get(BirthdayDay, away) is None


# --------------------------------------------------------------------------- back office

TEMPLATE_FORM = {"name": "Winter sale", "channel": "email", "trigger": "",
                 "fr_subject": "Soldes, {{ first_name }}", "fr_text": "Bonjour {{ first_name }}",
                 "en_subject": "Sale, {{ first_name }}", "en_text": "Hello {{ first_name }}"}


def test_back_office_new_preview_send_and_log(app, api, creds, manager, smtp):  # noqa: F811
    from tests.test_backoffice import office

    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    yes = {"terms": True, "marketing_email": True}
    _enrol(api, language="fr", consents=yes, first_name="Léa")
    _enrol(api, language="en", consents=yes, first_name="Tom")
    _enrol(api, language="en", consents={"terms": True})

    desk = office(app, creds, "desk1")
    assert desk.get("/backoffice/campaigns").status_code == 403
    bo = office(app, creds, manager)
    assert "Campaigns" in bo.page("/backoffice/campaigns")
    bo.get("/backoffice/campaigns/new")
    bad = bo.post("/backoffice/campaigns/new", {**TEMPLATE_FORM, "fr_text": "{{ email }}",
                                                "action": "save"})
    assert bad.status_code == 422 and "unknown placeholder(s): email" in bad.get_data(
        as_text=True)
    preview = bo.post("/backoffice/campaigns/new", {**TEMPLATE_FORM, "action": "preview"})
    assert preview.status_code == 200 and "Soldes, Élodie" in preview.get_data(as_text=True)
    saved = bo.post("/backoffice/campaigns/new", {**TEMPLATE_FORM, "action": "save"})
    assert saved.status_code == 303
    page_url = saved.headers["Location"]
    confirm = bo.page(page_url + "/send")
    assert "2 customers consent to this channel" in confirm
    sent = bo.post(page_url + "/send")
    assert sent.status_code == 303
    shown = bo.page(page_url)
    assert "2 messages queued." in shown, re.findall(r"flash[^<]*<", shown)
    # a second click queues nothing more
    bo.post(page_url + "/send")
    service.process(app)
    assert sorted(m["Subject"] for m in smtp.messages) == ["Sale, Tom", "Soldes, Léa"]
    log_page = bo.page(page_url + "/log")
    assert "Sent: 2" in log_page and "Failed: 0" in log_page


def test_back_office_sends_to_a_saved_segment(app, api, creds, manager, smtp):  # noqa: F811
    from server.campaigns.models import Campaign
    from server.segments import service as segments
    from server.segments.schemas import Definition
    from tests.test_backoffice import office

    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    yes = {"terms": True, "marketing_email": True}
    _enrol(api, language="fr", consents=yes, first_name="Léa")
    tom = _enrol(api, language="en", consents=yes, first_name="Tom")
    assert api.purchase([api.line("SKU-1", 1, "9.90")], customer_id=tom).status_code == 201
    with Session(_dbs(app).main) as main:
        segment_id = segments.save(main, "Bought this month", Definition(within_months=1),
                                   "test").id
        main.commit()

    bo = office(app, creds, manager)
    saved = bo.post("/backoffice/campaigns/new", {**TEMPLATE_FORM, "action": "save"})
    page_url = saved.headers["Location"]
    assert "2 customers consent to this channel" in bo.page(page_url + "/send")
    confirm = bo.page(f"{page_url}/send?segment={segment_id}")
    assert "1 customer consents to this channel" in confirm
    assert f'name="segment" value="{segment_id}"' in confirm  # what the send button sends
    # a segment deleted meanwhile: sent back with a message, nothing queued
    assert bo.get(f"{page_url}/send?segment=999999").status_code == 303
    assert bo.post(page_url + "/send", {"segment": str(segment_id)}).status_code == 303
    service.process(app)
    assert [m["Subject"] for m in smtp.messages] == ["Sale, Tom"]
    with Session(_dbs(app).main) as main:
        campaign = main.scalars(select(Campaign).order_by(Campaign.id.desc())).first()
        assert campaign.segment_id == segment_id
        assert campaign.segment_definition == {"within_months": 1}


def test_back_office_sms_campaign_in_chromium(app, api, creds, manager, browser, screenshots):
    from tests.support.fixtures_devices import serve

    for i in range(3):
        _enrol(api, language="lt", consents={"terms": True, "marketing_sms": True},
               phone=f"+3706000000{i}")
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(f"{url}/backoffice/")
            log_in(page, manager, creds.passwords[manager])
            with page.expect_navigation():
                page.get_by_role("link", name="Campaigns").click()
            with page.expect_navigation():
                page.get_by_role("link", name="New campaign").click()
            page.get_by_label("Name").fill("Savaitgalio akcija")
            page.get_by_label("Channel").select_option("sms")
            page.locator("#lt_text").fill("Sveiki, {{ first_name }}! Savaitgalį -10 %.")
            with page.expect_navigation():
                page.get_by_role("button", name="Preview").click()
            assert "(UCS-2): 1 SMS" in page.locator(".sms-parts").inner_text()
            page.screenshot(path=screenshots / "backoffice-campaign-new-en.png", full_page=True)
            with page.expect_navigation():
                page.get_by_role("button", name="Save").click()
            with page.expect_navigation():
                page.get_by_role("link", name="Send…").click()
            assert "3 customers consent" in page.locator(".recipients").inner_text()
            page.screenshot(path=screenshots / "backoffice-campaign-send-en.png")
            with page.expect_navigation():
                page.get_by_role("button", name="Send to 3 customers").click()
            assert page.get_by_role("status").first.inner_text() == "3 messages queued."
        finally:
            context.close()
    assert not errors, errors
    assert service.process(app).sent == 3


def test_flask_campaigns_send_twice_sends_once(app, api, tmp_path):
    _enrol(api, consents={"terms": True, "marketing_sms": True}, phone="+33655555555")
    campaign = _create(app, "sms", SMS_TEMPLATES)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["campaigns", "send", str(campaign)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {"sent": 1, "failed": 0, "skipped": 0}
    again = runner.invoke(args=["campaigns", "send"])
    assert json.loads(again.output) == {"sent": 0, "failed": 0, "skipped": 0}
    assert len(list((tmp_path / "instance" / "sms-outbox").glob("*.json"))) == 1
    triggers = runner.invoke(args=["campaigns", "triggers"])
    assert triggers.exit_code == 0 and json.loads(triggers.output)["sent"] == 0


# --------------------------------------------------------------------------- many senders

SENDER = """
import json, sys, time
from pathlib import Path

from server import create_app
from server.campaigns import service

app = create_app(json.loads(sys.argv[1]))
Path(sys.argv[2]).touch()  # ready
while not Path(sys.argv[3]).exists():  # all start together
    time.sleep(0.01)
print(json.dumps(service.process(app).as_dict()))
"""


def _subprocess_config(app, **overrides) -> dict:
    """What a separate process needs to be the same service: the same databases and the
    same instance folder (its key files)."""
    return {"INSTANCE_PATH": app.config["INSTANCE_PATH"],
            "DATABASE_URL": app.config["DATABASE_URL"], "VAULT_URL": app.config["VAULT_URL"],
            "CARD_BASE_URL": app.config["CARD_BASE_URL"], **overrides}


def _run_together(script: str, config: dict, tmp_path, count: int = 2,
                  args: list[str] = ()) -> list[str]:
    """``count`` real Python processes running ``script`` (argv: the config as JSON, the
    file it touches when ready, the file it waits for, then ``args``), released at the same
    moment; their standard outputs."""
    import subprocess
    import sys

    go = tmp_path / "go"
    procs, ready = [], []
    for i in range(count):
        ready.append(tmp_path / f"ready-{i}")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(config), str(ready[i]), str(go), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline, "the senders did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    return [out for out, _err in outputs]


def test_two_sender_processes_share_the_rate_and_send_each_message_once(app, api, gateway,
                                                                           tmp_path):
    # 120 a minute between them: one every 0.5 s at the gateway, whichever process sends
    phones = [f"+3361000000{i}" for i in range(8)]
    for phone in phones:
        _enrol(api, language="en", consents={"terms": True, "marketing_sms": True},
               phone=phone)
    campaign = _create(app, "sms", SMS_TEMPLATES)
    config = _subprocess_config(app, SMS_URL=gateway.url, SMS_TOKEN="gw-token",
                                CAMPAIGN_SMS_PER_MINUTE=120)
    reports = [json.loads(out) for out in _run_together(SENDER, config, tmp_path)]

    assert sum(r["sent"] for r in reports) == 8
    assert all(r["sent"] > 0 for r in reports), reports  # both did send
    assert sorted(r["body"]["to"] for r in gateway.requests) == sorted(phones)  # once each
    gaps = [b["at"] - a["at"] for a, b in zip(gateway.requests, gateway.requests[1:])]
    # a per-process throttle would let two messages arrive together (a gap near 0)
    assert min(gaps) >= 0.4 and sum(gaps) >= 3.3, gaps
    assert all(m.status == "sent" and m.attempts == 1 for m in _log(app, campaign))


def test_the_pace_is_one_slot_per_interval_whoever_asks(app):
    # two Pace objects stand for two processes: every slot taken is one interval after the
    # previous one, even when both ask at the same moment
    now = [1000.0]
    engine = _dbs(app).main
    one = service.Pace(engine, "sms", 60, clock=lambda: now[0])
    two = service.Pace(engine, "sms", 60, clock=lambda: now[0])
    slots = [one.take(), two.take(), one.take(), two.take()]
    assert slots == [1000.0, 1001.0, 1002.0, 1003.0]
    now[0] = 2000.0  # idle for a while: the next slot is now, not in the past
    assert two.take() == 2000.0
    assert service.Pace(engine, "email", 60, clock=lambda: now[0]).take() == 2000.0


# --------------------------------------------------------------------------- interrupted sends


def _stick(app, campaign_id: int, customer_ids: list[str], minutes_ago: float) -> None:
    """As a sender killed between its claim and the outcome leaves them."""
    with Session(_dbs(app).main) as main:
        main.execute(update(CampaignMessage).where(
            CampaignMessage.campaign_id == campaign_id,
            CampaignMessage.customer_id.in_(customer_ids))
            .values(status="sending", attempts=1,
                    updated_at=utcnow() - timedelta(minutes=minutes_ago)))
        main.commit()


def test_the_cli_lists_and_releases_stuck_messages(app, api, smtp):  # noqa: F811
    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    yes = {"terms": True, "marketing_email": True}
    again, given_up, at_work = (_enrol(api, consents=yes, email=f"{n}@example.org")
                                for n in ("again", "given-up", "at-work"))
    campaign = _create(app, "email", EMAIL_TEMPLATES)
    _stick(app, campaign, [again, given_up], minutes_ago=120)
    _stick(app, campaign, [at_work], minutes_ago=1)  # a sender may still be on it
    runner = app.test_cli_runner()

    listed = runner.invoke(args=["campaigns", "stuck", "--older-than", "30"])
    assert listed.exit_code == 0, listed.output
    assert sorted(line.split("\t")[3] for line in listed.stdout.splitlines()) == \
        sorted([again, given_up])
    assert "may have been delivered" in listed.stderr and "nothing released" in listed.stderr
    assert _log(app, campaign)[0].status == "sending"  # listing changes nothing

    ids = {m.customer_id: m.id for m in _log(app, campaign)}
    with app.app_context(), Session(_dbs(app).main) as main:  # one failed for good
        assert service.release(main, "test", "test", [ids[given_up]], "failed",
                               timedelta(minutes=30)) == [ids[given_up]]
        main.commit()
    released = runner.invoke(args=["campaigns", "stuck", "--release", "pending"])
    assert released.exit_code == 0 and "1 message(s) released to pending" in released.stdout
    rows = {m.customer_id: m for m in _log(app, campaign)}
    assert (rows[again].status, rows[given_up].status, rows[at_work].status) == \
        ("queued", "failed", "sending")
    assert not rows[given_up].retry and "may have been delivered" in rows[given_up].reason

    assert service.process(app).as_dict() == {"sent": 1, "failed": 0, "skipped": 0}
    assert [m["To"] for m in smtp.messages] == ["again@example.org"]
    assert service.process(app).sent == 0
    with Session(_dbs(app).main) as main:
        entries = main.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.release")
                               .order_by(AuditEntry.id)).all()
    assert [(e.actor, e.detail["to"], e.detail["messages"]) for e in entries] == \
        [("test", "failed", [ids[given_up]]), ("cli", "pending", [ids[again]])]


def test_a_manager_releases_stuck_messages_in_the_back_office(app, api, creds, manager, smtp):  # noqa: F811
    from tests.test_backoffice import _flashes, office

    app.config.update(MAIL_URL=smtp.url, CAMPAIGN_EMAIL_PER_MINUTE=6000)
    yes = {"terms": True, "marketing_email": True}
    one, two = _enrol(api, consents=yes), _enrol(api, consents=yes)
    campaign = _create(app, "email", EMAIL_TEMPLATES)
    _stick(app, campaign, [one, two], minutes_ago=45)
    ids = {m.customer_id: m.id for m in _log(app, campaign)}

    assert office(app, creds, "desk1").get("/backoffice/campaigns/stuck").status_code == 403
    bo = office(app, creds, manager)
    assert "Interrupted sends" in bo.page("/backoffice/campaigns")
    page = bo.page("/backoffice/campaigns/stuck")
    assert one in page and two in page and "may have been delivered" in page
    assert one not in bo.page("/backoffice/campaigns/stuck?minutes=60")
    # without the CSRF token: refused, nothing changes
    refused = bo.post("/backoffice/campaigns/stuck", {"to": "pending", "message": ids[one],
                                                      "minutes": "30"}, csrf=False)
    assert refused.status_code == 400
    bo.page("/backoffice/campaigns/stuck")
    done = bo.post("/backoffice/campaigns/stuck", {"to": "pending", "message": [ids[one]],
                                                   "minutes": "30"})
    assert done.status_code == 303
    assert "1 message put back in the queue." in _flashes(bo.page(done.headers["Location"]))
    rows = {m.customer_id: m.status for m in _log(app, campaign)}
    assert rows == {one: "queued", two: "sending"}
    with Session(_dbs(app).main) as main:
        [entry] = main.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.release"))
    assert entry.view == "backoffice:campaigns" and entry.actor.startswith("staff:")
    assert entry.detail == {"messages": [ids[one]], "to": "pending", "older_than_minutes": 30}
    assert service.process(app).sent == 1
