"""The retention job against a real SMTP server (aiosmtpd): tell, wait, erase; run it twice."""

from __future__ import annotations

import email
import socket
from datetime import timedelta
from email.policy import default as default_policy

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.db import utcnow
from server.privacy import retention
from server.vault.models import VaultRecord


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))
        return "250 OK"


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    try:
        yield inbox
    finally:
        controller.stop()


def _enrol(api, **kw) -> str:
    r = api.enrol(**kw)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["customer_id"]


def _age(app, customer_id: str, days: int) -> None:
    """Make a customer's enrolment (and any visit) ``days`` old."""
    when = utcnow() - timedelta(days=days)
    with Session(app.extensions["loyalty.db"].main) as s:
        s.execute(update(Customer).where(Customer.id == customer_id).values(created_at=when))
        s.execute(text("UPDATE visits SET recorded_at = :w WHERE customer_id = :c"),
                  {"w": when.replace(tzinfo=None) if s.bind.dialect.name == "sqlite" else when,
                   "c": customer_id})
        s.commit()


def _customer(app, customer_id: str) -> Customer:
    with Session(app.extensions["loyalty.db"].main) as s:
        return s.get(Customer, customer_id)


def _vault_has(app, customer_id: str) -> bool:
    with Session(app.extensions["loyalty.db"].vault) as s:
        return s.get(VaultRecord, customer_id) is not None


def _config(app, smtp_url: str) -> dict:
    return {**app.config, "MAIL_URL": smtp_url, "RETENTION_INACTIVE_DAYS": 1095,
            "RETENTION_NOTICE_DAYS": 30}


def test_inactive_customers_are_told_where_allowed_then_erased_once(app, api, smtp):
    told = _enrol(api, language="lt", email="ruta@example.lt",
                  consents={"terms": True, "marketing_email": True})
    silent = _enrol(api, email="no.mail@example.org")  # no marketing consent: no message
    active = _enrol(api, email="active@example.org",
                    consents={"terms": True, "marketing_email": True})
    for cid in (told, silent, active):
        _age(app, cid, 4 * 365)
    r = api.issue_card(active, headers=api.creds.staff_auth("desk1"))  # a visit today
    assert r.status_code == 201, r.get_data(as_text=True)
    assert api.tap(url=r.get_json()["url"]).status_code == 200

    dbs, config = app.extensions["loyalty.db"], _config(app, smtp.url)
    with app.app_context():
        report = retention.run(dbs, config)
    assert report.notified == [told] and report.marked == [silent] and not report.erased
    assert [m["To"] for m in smtp.messages] == ["ruta@example.lt"]
    msg = smtp.messages[0]
    assert msg["Subject"] == "Jūsų lojalumo paskyra bus uždaryta"
    assert "Élodie" in msg.get_content() and msg["Content-Language"] == "lt"
    assert _customer(app, active).retention_notice_at is None

    # run again at once: nobody is told twice, nobody is erased before the notice period
    with app.app_context():
        again = retention.run(dbs, config)
    assert (again.notified, again.marked, again.erased, again.waiting) == ([], [], [], 2)
    assert len(smtp.messages) == 1

    # 31 days later: both erased, once
    later = utcnow() + timedelta(days=31)
    with app.app_context():
        report = retention.run(dbs, config, now=later)
        twice = retention.run(dbs, config, now=later)
    assert sorted(report.erased) == sorted([told, silent])
    assert twice.erased == [] and twice.notified == []
    assert not _vault_has(app, told) and not _vault_has(app, silent)
    assert _vault_has(app, active)
    assert _customer(app, told).erased_at is not None
    assert len(smtp.messages) == 1


def test_a_customer_who_comes_back_after_the_notice_is_kept(app, api, smtp):
    cid = _enrol(api, email="back@example.org", consents={"terms": True,
                                                          "marketing_email": True})
    _age(app, cid, 4 * 365)
    dbs, config = app.extensions["loyalty.db"], _config(app, smtp.url)
    with app.app_context():
        assert retention.run(dbs, config).notified == [cid]
    # the notice worked: they come to the shop
    r = api.issue_card(cid, headers=api.creds.staff_auth("desk1"))
    assert r.status_code == 201, r.get_data(as_text=True)
    assert api.tap(url=r.get_json()["url"]).status_code == 200
    with app.app_context():
        report = retention.run(dbs, config, now=utcnow() + timedelta(days=31))
    assert report.came_back == [cid] and report.erased == []
    assert _vault_has(app, cid) and _customer(app, cid).retention_notice_at is None


def test_a_mail_server_that_is_down_leaves_the_customer_untold_for_next_time(app, api, smtp):
    cid = _enrol(api, email="later@example.org", consents={"terms": True,
                                                           "marketing_email": True})
    _age(app, cid, 4 * 365)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"smtp://127.0.0.1:{s.getsockname()[1]}"
    dbs = app.extensions["loyalty.db"]
    with app.app_context():
        report = retention.run(dbs, _config(app, dead))
    assert report.failed == [cid] and report.notified == []
    assert _customer(app, cid).retention_notice_at is None
    with app.app_context():
        assert retention.run(dbs, _config(app, smtp.url)).notified == [cid]
    assert [m["To"] for m in smtp.messages] == ["later@example.org"]


def test_retention_cli_dry_run_changes_nothing_and_the_list_endpoint(app, api, creds, manager):
    cid = _enrol(api)
    _age(app, cid, 4 * 365)
    result = app.test_cli_runner().invoke(args=["privacy", "retention", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert cid in result.output and '"dry_run": true' in result.output
    assert _customer(app, cid).retention_notice_at is None
    r = api.client.get("/api/v1/privacy/retention", headers=creds.staff_auth(manager))
    assert r.status_code == 200
    assert [c["customer_id"] for c in r.get_json()["customers"]] == [cid]
    assert api.client.get("/api/v1/privacy/retention",
                          headers=creds.staff_auth("desk1")).status_code == 403
