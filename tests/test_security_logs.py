"""No secret and no personal data in the logs, with every logger at DEBUG.

A whole flow runs through the service in this process (every logger, SQLAlchemy's included,
at DEBUG, every record captured): an enrolment with a distinctive name, email, phone and
address, a card, a tap, a purchase, staff logins (one with a wrong password), the back office
reading and searching personal data, the API reading and correcting it, a kiosk's staff PIN,
a campaign sent, a device revoked. Then no log line may hold any of those personal values,
a device key, a password or PIN, the session cookie, a CSRF token, the card token or any key
file's secret. The kiosk, till agent and service as separate processes at DEBUG are checked
the same way by tests/test_make_run.py (a customer through the kiosk, a tap at the agent).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.test_backoffice import BO, Office, office

FIRST, LAST = "Zéphyrine", "Quistlethwaite"
EMAIL = "zephyrine.quist.7731@example.org"
NEW_EMAIL = "zq.rectified.5519@example.net"
PHONE, PHONE_DIGITS = "+33 6 12 34 98 76", "612349876"
STREET = "17 rue des Mirabelliers"
WRONG_PASSWORD = "not-the-Right-pw-8812"
PIN = "739154"


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")


@pytest.fixture
def all_logs():
    """Every logger at DEBUG, every record kept (loggers made later inherit the root's)."""
    handler = Everything()
    root = logging.getLogger()
    saved = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
             if isinstance(logger, logging.Logger)}
    old_root = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_root)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def secrets_of_files(instance: Path) -> list[str]:
    """Every secret-looking value of the instance's key files (JSON values, or the text)."""
    found: list[str] = []

    def collect(value):
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, str) and len(value) >= 16:
            found.append(value)

    for path in instance.iterdir():
        if path.suffix not in (".key", ".json") or not path.is_file():
            continue
        text = path.read_text(errors="replace").strip()
        try:
            collect(json.loads(text))
        except ValueError:
            if len(text) >= 16:
                found.append(text)
    return found


def test_a_whole_flow_at_debug_logs_no_secret_and_no_personal_data(app, api, creds, admin,
                                                                   all_logs):
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from server.campaigns import service as campaigns
    from server.customers.models import Customer
    from tests.test_campaigns import EMAIL_TEMPLATES

    # a customer at the kiosk, a card, a tap and a purchase at the till
    r = api.enrol(first_name=FIRST, last_name=LAST, email=EMAIL, phone=PHONE,
                  address=f"{STREET}, 75011 Paris",
                  consents={"terms": True, "marketing_email": True})
    assert r.status_code == 201, r.get_json()
    customer_id = r.get_json()["customer_id"]
    card = api.issue_card(customer_id).get_json()
    assert api.tap(url=card["url"]).status_code == 200
    assert api.purchase([api.line("SKU-9", 1, "9.90")], card=card["url"]).status_code == 201

    # staff: a wrong password, then the back office reading and searching personal data
    stranger = Office(app)
    assert stranger.login("desk1", WRONG_PASSWORD).status_code == 200
    desk = office(app, creds, admin)
    assert FIRST in desk.page(f"{BO}/customers/{customer_id}")
    for query in (EMAIL, PHONE, LAST):
        desk.post(BO + "/search", {"query": query, "country": "FR"})
    cookie = desk.client.get_cookie("loyalty_backoffice", path=BO).value

    # the API: read, correct and export with a staff member's password
    client = app.test_client()
    staff = creds.staff_auth("desk1")
    assert client.get(f"/api/v1/customers/{customer_id}/personal-data",
                      headers=staff).status_code == 200
    r = client.patch(f"/api/v1/customers/{customer_id}/personal-data", headers=staff,
                     json={"email": NEW_EMAIL, "reason": "customer asked"})
    assert r.status_code in (200, 422), r.get_json()
    assert client.get(f"/api/v1/customers/{customer_id}/export", headers=staff).status_code == 200
    client.post("/api/v1/customers/search", headers=staff, json={"email": EMAIL})

    # a kiosk's staff mode by name and PIN, right and wrong
    runner = app.test_cli_runner()
    result = runner.invoke(args=["staff", "pin", "desk1", "--pin", PIN])
    assert result.exit_code == 0, result.output
    for pin in (PIN, "000000"):
        client.post("/api/v1/staff/kiosk-sessions", headers=creds.h("kiosk"),
                    json={"username": "desk1", "pin": pin})

    # a campaign to the customer, sent (to the file outbox)
    with Session(app.extensions["loyalty.db"].main) as main:
        campaign = campaigns.create(main, "test", name="Spring", channel="email",
                                    templates=EMAIL_TEMPLATES)
        assert campaigns.queue(main, campaign, select(Customer.id)) == 1
        main.commit()
    result = runner.invoke(args=["campaigns", "send"])
    assert result.exit_code == 0, result.output

    # a device revoked, then its key tried
    result = runner.invoke(args=["devices", "revoke", str(creds.device_ids["till"])])
    assert result.exit_code == 0, result.output
    assert api.tap(url=card["url"]).status_code == 401

    logs = "\n".join(all_logs.lines)
    assert any(" DEBUG " in line for line in all_logs.lines), "nothing at DEBUG: proves nothing"
    assert len(all_logs.lines) > 50, all_logs.lines
    token = card["url"].rsplit("/", 1)[1]
    needles = {
        "first name": FIRST, "first name (ascii)": "Zephyrine", "last name": LAST,
        "email": EMAIL, "email (local part)": EMAIL.split("@")[0], "new email": NEW_EMAIL,
        "phone": PHONE, "phone digits": PHONE_DIGITS, "street": STREET,
        "kiosk key": creds.kiosk, "till key": creds.till, "kiosk2 key": creds.kiosk2,
        "desk password": creds.passwords["desk1"], "admin password": creds.passwords[admin],
        "wrong password": WRONG_PASSWORD, "PIN": PIN, "session cookie": cookie,
        "CSRF token": desk.token, "card token": token, "card URL": card["url"],
    }
    for n, secret in enumerate(secrets_of_files(Path(app.config["INSTANCE_PATH"]))):
        needles[f"key file secret {n}"] = secret
    leaked = {what: value for what, value in needles.items()
              if value and value.lower() in logs.lower()}
    assert not leaked, {what: [line[:300] for line in all_logs.lines
                               if value.lower() in line.lower()][:3]
                        for what, value in leaked.items()}
