"""Account customers and their monthly statements, against a real SMTP server (aiosmtpd).

The figures are worked out by hand below; the PDF is parsed back (pypdf) to check that what
the customer reads is right, in their language, Lithuanian letters included.
"""

from __future__ import annotations

import email
import io
import json
import re
import socket
import uuid
from datetime import UTC, date, datetime, timedelta
from email.policy import default as default_policy

import pytest
from pypdf import PdfReader
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.accounts import service, statements
from server.accounts.models import AccountPayment, Statement
from server.loyalty.models import Refund
from server.privacy.models import AuditEntry
from tests.support.fixtures_server import assert_problem
from tests.test_backoffice import office

MONTH = "2026-10"
LT_LETTERS = "ąčęėįšųūž"
PILLOW = "Žąsų pagalvė čiužiniui, įvairių spalvų, tęsinys"


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))
        return "250 OK"

    def to(self, address: str) -> list:
        return [m for m in self.messages if m["To"] == address]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    try:
        yield inbox
    finally:
        controller.stop()


# --------------------------------------------------------------------------- helpers


def _at(day: str, hour: int = 10) -> str:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").isoformat()


def _enrol(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _open(app, customer_id: str, limit: str = "1000", terms: int = 30) -> None:
    result = app.test_cli_runner().invoke(args=[
        "accounts", "open", customer_id, "--credit-limit", limit, "--terms-days", str(terms)])
    assert result.exit_code == 0, result.output


def _buy(api, customer_id: str, lines: list[dict], day: str, on_account: bool = True) -> dict:
    r = api.purchase(lines, customer_id=customer_id, paid_at=_at(day), on_account=on_account)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def _pay(api, creds, customer_id: str, amount: str, day: str | None = None, **kw):
    body = {"event_id": str(uuid.uuid4()), "amount": amount, **kw}
    if day:
        body["paid_at"] = _at(day)
    return api.client.post(f"/api/v1/accounts/{customer_id}/payments", json=body,
                           headers=creds.h("till"))


def _refund_on(app, api, purchase_id: int, line_no: int, quantity: str, day: str) -> None:
    """A return at the till, dated ``day`` (the API dates a return when it is recorded)."""
    r = api.refund(purchase_id=purchase_id, lines=[{"line_no": line_no, "quantity": quantity}])
    assert r.status_code == 201, r.get_data(as_text=True)
    with Session(app.extensions["loyalty.db"].main) as s:
        s.execute(update(Refund).where(Refund.id == r.get_json()["refund_id"])
                  .values(recorded_at=datetime.fromisoformat(_at(day))))
        s.commit()


def _run(app, url: str, month: str | None = MONTH) -> statements.StatementsReport:
    with app.app_context():
        return statements.run(app.extensions["loyalty.db"], {**app.config, "MAIL_URL": url},
                              month=month)


def _statements(app) -> dict[str, Statement]:
    with Session(app.extensions["loyalty.db"].main) as s:
        return {st.customer_id: st for st in s.scalars(select(Statement))}


def _pdf_text(data: bytes) -> str:
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    return re.sub(r"[\s\u00a0\u202f]+", " ", text)


def _pdf_of(message) -> bytes:
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    return part.get_content()


def _shop(app, api, creds) -> dict:
    """Three account customers and one without an account; the month is October 2026.

    Jūratė (Lithuanian, limit 1,000.00, 30 days):
      15 Sep  purchase on account            100.00   -> opening balance on 1 Oct: 100.00
       5 Oct  purchase on account 2 x 12.50 + 1 x 40.00 = 65.00
       6 Oct  purchase paid at the till       30.00   (not on the account)
      10 Oct  payment                        100.00
      12 Oct  return of one of the two 12.50  12.50
      closing: 100.00 + 65.00 - 12.50 - 100.00 = 52.50, due 31 Oct + 30 days = 30 Nov 2026
      points (1 per 1.00): earned in October 25 + 40 + 30 = 95; at the end of October
      100 + 95 = 195 (the welcome points and the return are dated today, in November)
    Élodie (French, 15 days): 20 Oct purchase on account 20.00 -> closing 20.00, due 15 Nov.
    Pierre: an account with nothing in October and nothing owed: no statement.
    """
    jurate = _enrol(api, first_name="Jūratė", last_name="Žemaitytė-Šimkūnė", language="lt",
                    email="jurate@example.lt")
    elodie = _enrol(api, first_name="Élodie", last_name="Durand", language="fr",
                    email="elodie@example.fr")
    pierre = _enrol(api, first_name="Pierre", language="fr", email="pierre@example.fr")
    for cid, terms in ((jurate, 30), (elodie, 15), (pierre, 30)):
        _open(app, cid, terms=terms)
    _buy(api, jurate, [api.line("OAK-1", 1, "100.00", name="Ąžuolinė lentyna")], "2026-09-15")
    october = _buy(api, jurate, [
        api.line("LIGHT-2", 2, "12.50", name="Šilta šviesų girlianda ūkiui"),
        api.line("PILLOW-3", 1, "40.00", name=PILLOW)], "2026-10-05")
    _buy(api, jurate, [api.line("CASH-4", 1, "30.00", name="Čiužinio užvalkalas")],
         "2026-10-06", on_account=False)
    assert _pay(api, creds, jurate, "100.00", "2026-10-10", method="cash").status_code == 201
    _refund_on(app, api, october["purchase_id"], 1, "1", "2026-10-12")
    _buy(api, elodie, [api.line("VASE-5", 1, "20.00", name="Vase en grès")], "2026-10-20")
    return {"jurate": jurate, "elodie": elodie, "pierre": pierre}


# --------------------------------------------------------------------------- statements


def test_statements_hold_the_hand_computed_figures_and_are_sent_once(app, api, creds, smtp):
    who = _shop(app, api, creds)
    report = _run(app, smtp.url)
    assert sorted(report.built) == sorted([who["jurate"], who["elodie"]])
    assert len(report.sent) == 2 and not report.failed

    rows = _statements(app)
    assert who["pierre"] not in rows
    j = rows[who["jurate"]]
    assert (j.opening_cents, j.purchases_cents, j.refunds_cents, j.payments_cents,
            j.closing_cents) == (10000, 6500, 1250, 10000, 5250)
    assert j.due_date == date(2026, 11, 30)
    assert (j.points_earned, j.points_spent, j.points_balance, j.tier) == (95, 0, 195, "member")
    assert [len(p["lines"]) for p in j.document["purchases"]] == [2]
    e = rows[who["elodie"]]
    assert (e.opening_cents, e.purchases_cents, e.closing_cents) == (0, 2000, 2000)
    assert e.due_date == date(2026, 11, 15)
    assert j.sent_at is not None and e.sent_at is not None

    # the Lithuanian customer's mail and PDF: her language, her letters, the right totals
    [mail] = smtp.to("jurate@example.lt")
    assert mail["Content-Language"] == "lt"
    html_part = mail.get_body(("html",)).get_content()
    assert "52,50\u00a0€" in html_part and "Jūratė" in html_part
    text = _pdf_text(_pdf_of(mail))
    for expected in ("Jūratė Žemaitytė-Šimkūnė", "Šilta šviesų girlianda ūkiui",
                     PILLOW, "52,50 €", "100,00 €", "65,00 €", "12,50 €",
                     "2026 m. lapkričio 30 d.", "spalis 2026", who["jurate"]):
        assert expected in text, (expected, text)
    assert set(LT_LETTERS) <= set(text)  # each of ą č ę ė į š ų ū ž came back
    assert "Čiužinio" not in text  # paid at the till: not on the statement
    with app.app_context(), app.test_request_context():
        from flask_babel import force_locale
        from flask_babel import gettext as _

        with force_locale("lt"):
            label = _("Balance due")
    assert label in text  # the catalogue's Lithuanian (English until translated)

    [mail_fr] = smtp.to("elodie@example.fr")
    assert mail_fr["Content-Language"] == "fr"
    assert "20,00 €" in _pdf_text(_pdf_of(mail_fr))

    # the address was read through the audited vault access, by the job
    with Session(app.extensions["loyalty.db"].main) as s:
        reads = s.scalars(select(AuditEntry).where(AuditEntry.actor == statements.ACTOR)).all()
    assert {(r.customer_id, r.action, r.view) for r in reads} == {
        (who["jurate"], "personal-data.read", "statements"),
        (who["elodie"], "personal-data.read", "statements")}

    again = _run(app, smtp.url)
    assert again.built == [] and again.sent == []
    assert len(smtp.messages) == 2

    # the right of access shows the account, its payments and the statements
    export = api.client.get(f"/api/v1/customers/{who['jurate']}/export",
                            headers=creds.staff_auth("desk1")).get_json()
    assert [st["closing_cents"] for st in export["statements"]] == [5250]
    assert [p["amount_cents"] for p in export["account_payments"]] == [10000]
    assert export["account"][0]["terms_days"] == 30


def test_a_crash_between_two_customers_resumes_without_sending_twice(app, api, creds, smtp,
                                                                     monkeypatch):
    who = _shop(app, api, creds)
    real_build, real_pdf = statements.build_statement, statements.render_pdf
    calls = {"build": 0, "pdf": 0}

    def build_then_crash(*args, **kw):
        calls["build"] += 1
        if calls["build"] == 2:
            raise RuntimeError("power cut")
        return real_build(*args, **kw)

    monkeypatch.setattr(statements, "build_statement", build_then_crash)
    with pytest.raises(RuntimeError):
        _run(app, smtp.url)
    assert list(_statements(app)) == [sorted([who["jurate"], who["elodie"]])[0]]
    assert smtp.messages == []

    def pdf_then_crash(*args, **kw):
        calls["pdf"] += 1
        if calls["pdf"] == 2:
            raise RuntimeError("killed")
        return real_pdf(*args, **kw)

    monkeypatch.setattr(statements, "build_statement", real_build)
    monkeypatch.setattr(statements, "render_pdf", pdf_then_crash)
    with pytest.raises(RuntimeError):
        _run(app, smtp.url)
    assert len(_statements(app)) == 2 and len(smtp.messages) == 1

    monkeypatch.setattr(statements, "render_pdf", real_pdf)
    report = _run(app, smtp.url)
    assert report.built == [] and len(report.sent) == 1
    assert sorted(m["To"] for m in smtp.messages) == ["elodie@example.fr", "jurate@example.lt"]
    assert all(st.sent_at for st in _statements(app).values())


def test_a_failed_send_is_retried_by_the_next_run_and_erased_customers_get_nothing(
        app, api, creds, smtp):
    who = _shop(app, api, creds)
    nobody = f"smtp://127.0.0.1:{_free_port()}"  # nothing listens: the send fails
    report = _run(app, nobody)
    assert len(report.built) == 2 and len(report.failed) == 2 and report.sent == []
    rows = _statements(app)
    assert all(st.sent_at is None and st.send_attempts == 1 for st in rows.values())

    from server.privacy import erasure

    dbs = app.extensions["loyalty.db"]
    with app.app_context(), Session(dbs.main) as main, Session(dbs.vault) as vault:
        erasure.erase(main, vault, "test", who["elodie"], "customer-request")
        vault.commit()
        main.commit()

    report = _run(app, smtp.url, month=None)  # the next run (default: last month) retries
    assert report.sent == [f"{who['jurate']} {MONTH}"]
    assert report.skipped == [f"{who['elodie']} {MONTH}"]
    assert [m["To"] for m in smtp.messages] == ["jurate@example.lt"]


def _claimed_ago(app, customer_id: str, minutes: int) -> None:
    with Session(app.extensions["loyalty.db"].main) as s:
        s.execute(update(Statement).where(Statement.customer_id == customer_id).values(
            claimed_at=datetime.now(UTC) - timedelta(minutes=minutes)))
        s.commit()


def test_a_crash_after_the_hand_over_never_sends_again_until_released(app, api, creds, smtp,
                                                                      monkeypatch):
    who = _shop(app, api, creds)
    real_send = statements.send
    killed = []

    def send_then_die(url, msg):
        real_send(url, msg)
        if msg["To"] == "jurate@example.lt" and not killed:
            killed.append(msg["Message-ID"])
            raise KeyboardInterrupt("killed after the mail server took it")

    monkeypatch.setattr(statements, "send", send_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(app, smtp.url)
    monkeypatch.setattr(statements, "send", real_send)
    rows = _statements(app)
    assert rows[who["jurate"]].sent_at is None and rows[who["jurate"]].claimed_at is not None

    # the claim holds: later runs send the others, never this one by themselves
    report = _run(app, smtp.url)
    assert f"{who['jurate']} {MONTH}" not in report.sent
    assert len(smtp.to("elodie@example.fr")) == 1  # before the crash or now, once
    assert len(smtp.to("jurate@example.lt")) == 1
    assert _run(app, smtp.url).sent == []

    runner = app.test_cli_runner()
    fresh = runner.invoke(args=["statements", "stuck"])  # claimed a moment ago: a run at work
    assert fresh.exit_code == 0 and "no statement claimed" in fresh.stdout
    _claimed_ago(app, who["jurate"], 90)
    listed = runner.invoke(args=["statements", "stuck", "--older-than", "60"])
    assert listed.exit_code == 0, listed.output
    assert f"{who['jurate']}\t{MONTH}\t" in listed.stdout
    assert "may have been delivered" in listed.stderr
    released = runner.invoke(args=["statements", "stuck", "--older-than", "60",
                                   "--release", "pending"])
    assert "1 statement(s) released to pending" in released.stdout

    # sent again, with the same Message-ID: the customer's mail program shows one
    assert _run(app, smtp.url).sent == [f"{who['jurate']} {MONTH}"]
    first, second = smtp.to("jurate@example.lt")
    assert first["Message-ID"] == second["Message-ID"] == killed[0]
    assert first["Message-ID"].startswith(f"<statement.{MONTH}.{who['jurate']}.")
    assert smtp.to("elodie@example.fr")[0]["Message-ID"] != killed[0]
    with Session(app.extensions["loyalty.db"].main) as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.action == "statement.release"))
    assert (entry.actor, entry.detail["to"]) == ("cli", "pending")


def test_a_manager_marks_an_interrupted_statement_failed(app, api, creds, smtp, manager):
    who = _shop(app, api, creds)
    _run(app, smtp.url)
    with Session(app.extensions["loyalty.db"].main) as s:  # as if killed while sending
        s.execute(update(Statement).where(Statement.customer_id == who["elodie"])
                  .values(sent_at=None))
        s.commit()
    _claimed_ago(app, who["elodie"], 45)
    statement_id = _statements(app)[who["elodie"]].id

    assert office(app, creds, "desk1").get("/backoffice/statements/stuck").status_code == 403
    bo = office(app, creds, manager)
    page = bo.page("/backoffice/statements/stuck")
    assert who["elodie"] in page and "may have been delivered" in page
    assert bo.post("/backoffice/statements/stuck", {"to": "failed", "minutes": "30",
                                                    "statement": str(statement_id)},
                   csrf=False).status_code == 400
    bo.page("/backoffice/statements/stuck")
    done = bo.post("/backoffice/statements/stuck", {"to": "failed", "minutes": "30",
                                                    "statement": str(statement_id)})
    assert done.status_code == 303
    assert "1 statement marked failed." in bo.page(done.headers["Location"])
    row = _statements(app)[who["elodie"]]
    assert (row.claimed_at, row.retry, row.sent_at) == (None, False, None)
    assert _run(app, smtp.url).sent == []  # never again by the job
    assert "released as failed" in bo.page(f"/backoffice/customers/{who['elodie']}")
    with Session(app.extensions["loyalty.db"].main) as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.action == "statement.release"))
    assert entry.view == "backoffice:statements" and entry.detail["statements"] == [statement_id]


RUNNER = """
import json, sys, time
from pathlib import Path

from server import create_app
from server.accounts import statements

config = json.loads(sys.argv[1])
app = create_app(config)
Path(sys.argv[2]).touch()  # ready
while not Path(sys.argv[3]).exists():  # both start together
    time.sleep(0.01)
with app.app_context():
    report = statements.run(app.extensions["loyalty.db"], app.config, month=sys.argv[4])
print(json.dumps(report.as_dict()))
"""


def test_two_runs_at_once_never_both_send_a_statement(app, api, creds, smtp, tmp_path):
    from tests.test_campaigns import _run_together, _subprocess_config

    _shop(app, api, creds)
    for i in range(4):
        cid = _enrol(api, first_name=f"Client{i}", language="en", email=f"client{i}@example.org")
        _open(app, cid)
        _buy(api, cid, [api.line(f"SKU-{i}", 1, "10.00")], f"2026-10-1{i}")
    outputs = _run_together(RUNNER, _subprocess_config(app, MAIL_URL=smtp.url), tmp_path,
                            args=[MONTH])
    reports = [json.loads(out) for out in outputs]
    assert sum(len(r["built"]) for r in reports) == 6  # each built once, by one of them
    assert sum(len(r["sent"]) for r in reports) == 6 and not any(r["failed"] for r in reports)
    ids = [m["Message-ID"] for m in smtp.messages]
    assert len(ids) == 6 and len(set(ids)) == 6  # one mail per statement
    assert all(st.sent_at and st.claimed_at is None for st in _statements(app).values())
    assert _run(app, smtp.url).sent == []


def test_the_default_month_is_last_month_in_the_programme_time_zone():
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    # 31 Oct 23:30 UTC is already 1 November in Paris: last month is October
    assert statements.previous_month(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), paris) \
        == "2026-10"
    assert statements.previous_month(datetime(2026, 10, 31, 22, 30, tzinfo=UTC), paris) \
        == "2026-09"
    start, end, last = statements.bounds("2026-10", paris)
    assert start == datetime(2026, 9, 30, 22, tzinfo=UTC)  # CEST
    assert end == datetime(2026, 10, 31, 23, tzinfo=UTC)  # CET after the change
    assert last == date(2026, 10, 31)


def test_the_cli_runs_the_month(app, api, creds, smtp):
    who = _shop(app, api, creds)
    app.config["MAIL_URL"] = smtp.url
    result = app.test_cli_runner().invoke(args=["statements", "run", "--month", MONTH])
    assert result.exit_code == 0, result.output
    assert who["jurate"] in result.output
    bad = app.test_cli_runner().invoke(args=["statements", "run", "--month", "October"])
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output
    early = app.test_cli_runner().invoke(args=["statements", "run", "--month", "2099-01"])
    assert early.exit_code != 0 and "not over yet" in early.output


# --------------------------------------------------------------------------- the account


def test_purchases_on_account_need_an_open_account_within_its_limit(app, api, creds):
    cid = _enrol(api)
    r = api.purchase([api.line("A", 1, "10.00")], customer_id=cid, on_account=True)
    assert_problem(r, 409, "no-account")
    _open(app, cid, limit="50")
    _buy(api, cid, [api.line("A", 1, "30.00")], "2026-11-02")
    r = api.purchase([api.line("B", 1, "20.01")], customer_id=cid, on_account=True)
    body = assert_problem(r, 409, "credit-limit-exceeded")
    assert body["balance"] == "30.00" and body["credit_limit"] == "50.00"
    _buy(api, cid, [api.line("B", 1, "20.00")], "2026-11-03")  # exactly the limit

    # a payment frees credit; replayed with the same event id it counts once
    event = str(uuid.uuid4())
    body = {"event_id": event, "amount": "45.00", "method": "card"}
    url = f"/api/v1/accounts/{cid}/payments"
    first = api.client.post(url, json=body, headers=creds.h("till"))
    again = api.client.post(url, json=body, headers=creds.h("till"))
    assert first.status_code == 201 and first.get_json()["balance"] == "5.00"
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    other = _enrol(api)
    _open(app, other)
    assert_problem(api.client.post(f"/api/v1/accounts/{other}/payments", json=body,
                                   headers=creds.h("till")), 409, "event-id-conflict")
    with Session(app.extensions["loyalty.db"].main) as s:
        assert s.scalar(select(AccountPayment.amount_cents)
                        .where(AccountPayment.event_id == event)) == 4500
        assert service.balance(s, cid) == 500

    # closed: no more purchases on account, payments still taken
    assert app.test_cli_runner().invoke(args=["accounts", "close", cid]).exit_code == 0
    assert_problem(api.purchase([api.line("C", 1, "1.00")], customer_id=cid, on_account=True),
                   409, "no-account")
    assert _pay(api, creds, cid, "5.00").get_json()["balance"] == "0.00"
    assert_problem(_pay(api, creds, _enrol(api), "5.00"), 409, "no-account")

    account = api.client.get(f"/api/v1/accounts/{cid}", headers=creds.staff_auth("desk1"))
    assert account.status_code == 200
    assert account.get_json()["balance"] == "0.00" and account.get_json()["closed_at"]


def test_punctuality_is_the_share_of_statements_paid_by_their_due_date(app, api, creds, smtp):
    who = _shop(app, api, creds)
    _run(app, smtp.url)
    before_due = datetime(2026, 11, 10, tzinfo=UTC)
    after_due = datetime(2026, 12, 5, tzinfo=UTC)
    with Session(app.extensions["loyalty.db"].main) as s:
        # nothing is due yet: no opinion
        assert service.punctuality(s, who["jurate"], before_due) is None
        assert service.punctuality(s, who["pierre"], after_due) is None
        # Jūratė owed 52.50 by 30 Nov and has paid nothing since; Élodie owed 20.00 by 15 Nov
        assert service.punctuality(s, who["jurate"], after_due) == 0.0
        assert service.punctuality(s, who["elodie"], after_due) == 0.0
    assert _pay(api, creds, who["jurate"], "52.50", "2026-11-20").status_code == 201
    with Session(app.extensions["loyalty.db"].main) as s:
        assert service.punctuality(s, who["jurate"], after_due) == 1.0
        everyone = dict(s.execute(select(service.punctuality_by_customer(after_due))).all())
    assert everyone == {who["jurate"]: 1.0, who["elodie"]: 0.0}
    # the value score's punctual payment component reads the same, in per-mille
    from server.value import service as value

    assert value._punctuality == [service.punctuality_source]
    with Session(app.extensions["loyalty.db"].main) as s:
        source = service.punctuality_source(datetime(2026, 1, 1, tzinfo=UTC), after_due)
        assert dict(s.execute(source).all()) == {who["jurate"]: 1000, who["elodie"]: 0}


# --------------------------------------------------------------------------- back office


def test_the_customer_page_lists_statements_and_desk_downloads_the_pdf(app, api, creds, smtp,
                                                                       manager):
    who = _shop(app, api, creds)
    _run(app, smtp.url)
    desk = office(app, creds, "desk1")
    page = desk.page(f"/backoffice/customers/{who['jurate']}")
    assert "Account and statements" in page and 'data-balance="52.50"' in page
    assert "Record the payment" not in page  # desk sees, managers record
    [link] = re.findall(r'href="([^"]+\.pdf)"', page)
    pdf = desk.client.get(link)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert "52,50 €" in _pdf_text(pdf.data)
    assert desk.client.get(link.replace(who["jurate"], who["elodie"])).status_code != 200

    boss = office(app, creds, manager)
    page = boss.page(f"/backoffice/customers/{who['jurate']}")
    event = re.search(r'name="event_id"[^>]*value="([^"]+)"', page)[1]
    r = boss.post(f"/backoffice/customers/{who['jurate']}/account/payments",
                  {"event_id": event, "amount": "52.50", "method": "transfer",
                   "reference": "VIR-1"})
    assert r.status_code == 303
    assert 'data-balance="0.00"' in boss.page(f"/backoffice/customers/{who['jurate']}")
    fresh = _enrol(api)
    r = boss.post(f"/backoffice/customers/{fresh}/account",
                  {"credit_limit": "250.00", "terms_days": "45"})
    assert r.status_code == 303
    with Session(app.extensions["loyalty.db"].main) as s:
        account = service.get(s, fresh)
        assert (account.credit_limit_cents, account.terms_days) == (25000, 45)


@pytest.mark.browser
@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_in_chromium_a_manager_records_a_payment_and_downloads_the_statement(
        app, api, creds, smtp, manager, browser, screenshots):
    from tests.support.fixtures_devices import serve

    who = _shop(app, api, creds)
    _run(app, smtp.url)
    with serve(app) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB",
                                      accept_downloads=True)
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{url}/backoffice/")
            page.get_by_label("User name").fill(manager)
            page.get_by_label("Password").fill(creds.passwords[manager])
            with page.expect_navigation():
                page.get_by_role("button", name="Log in").click()
            page.goto(f"{url}/backoffice/customers/{who['jurate']}")
            section = page.locator("section.trade-account")
            assert section.locator("[data-balance]").get_attribute("data-balance") == "52.50"
            page.get_by_label("Amount paid").fill("50.00")
            page.get_by_label("How").select_option("cash")
            with page.expect_navigation():
                page.get_by_role("button", name="Record the payment").click()
            assert "balance due 2.50" in page.get_by_role("status").first.inner_text()
            assert section.locator("[data-balance]").get_attribute("data-balance") == "2.50"
            section.screenshot(path=screenshots / "backoffice-account-statements-en.png")
            with page.expect_download() as download:
                page.get_by_role("link", name=f"Download statement {MONTH}").click()
            data = download.value.path().read_bytes()
        finally:
            context.close()
    assert not errors, errors
    assert "52,50 €" in _pdf_text(data)  # the statement as sent: October's balance


def test_two_tills_cannot_both_spend_the_last_credit(app, api, creds):
    """Eight purchases of 60.00 at once on an account with 100.00 of credit: one goes on it."""
    import threading

    import requests
    from werkzeug.serving import make_server

    cid = _enrol(api)
    _open(app, cid, limit="100")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/api/v1/purchases"
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def buy() -> None:
        body = api.purchase_body([api.line("BIG", 1, "60.00")], customer_id=cid,
                                 on_account=True)
        barrier.wait(timeout=30)
        statuses.append(requests.post(url, json=body, headers=creds.h("till"),
                                      timeout=30).status_code)

    try:
        threads = [threading.Thread(target=buy) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
    assert sorted(statuses) == [201] + [409] * 7, statuses
    with Session(app.extensions["loyalty.db"].main) as s:
        assert service.balance(s, cid) == 6000
