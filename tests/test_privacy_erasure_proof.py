"""Erasure, proved on the bytes: after it, the customer's name, email and phone are nowhere in
the raw SQLite files, in a PostgreSQL dump, in the instance folder, or in the logs.

Before the erasure the same search *does* find the name in the main database (a free-text
survey answer and a staff note name the customer), so the search is shown to work and the
"after" assertions can fail.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.vault.models import VaultRecord
from tests.support.fixtures_server import _pg_bindir

FIRST, LAST = "Zéphyrine", "Quaglio-Marchetti"
EMAIL, PHONE = "Zephyrine.Quaglio@Example.org", "06 98 76 54 32"
# every spelling the data could take on its way through the system
# ("phyrine" also catches JSON's "Z\u00e9phyrine")
NEEDLES = [FIRST, "Zephyrine", "phyrine", LAST, "Quaglio", EMAIL.lower(), "zephyrine.quaglio",
           "+33698765432", "0698765432", "698765432", PHONE, "06.98.76.54.32"]


def _hits(blob: bytes, needles) -> list[str]:
    low = blob.lower()
    found = []
    for needle in needles:
        text = needle.lower() if isinstance(needle, str) else None
        forms = [needle] if isinstance(needle, bytes) else [
            text.encode(), text.encode("utf-16-le"), text.encode("latin-1", "ignore")]
        if any(form and form in (low if text else blob) for form in forms):
            found.append(needle if isinstance(needle, str) else needle.hex()[:16] + "...")
    return found


def _sqlite_files(app) -> dict[str, bytes]:
    files = {}
    for key in ("DATABASE_URL", "VAULT_URL"):
        base = Path(app.config[key].split("///", 1)[1])
        for path in (base, Path(f"{base}-wal"), Path(f"{base}-shm"), Path(f"{base}-journal")):
            if path.exists():
                files[path.name] = path.read_bytes()
    return files


def _pg_dumps(app) -> dict[str, bytes]:
    bindir = _pg_bindir()
    dumps = {}
    for key in ("DATABASE_URL", "VAULT_URL"):
        url = app.config[key].replace("postgresql+psycopg://", "postgresql://")
        dumps[key] = subprocess.run([str(bindir / "pg_dump"), "--no-owner", "--dbname", url],
                                    check=True, capture_output=True, timeout=120).stdout
    return dumps


def _raw(app) -> dict[str, bytes]:
    if app.config["DATABASE_URL"].startswith("sqlite"):
        return _sqlite_files(app)
    return _pg_dumps(app)


def _instance_files(app) -> dict[str, bytes]:
    root = Path(app.config["INSTANCE_PATH"])
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.endswith((".db", ".db-wal", ".db-shm"))}


def test_after_erasure_the_person_is_nowhere(app, api, creds, manager, caplog):
    caplog.set_level(logging.DEBUG)  # everything any logger says
    # SQLAlchemy keeps its loggers at WARNING unless told: every statement, with what it
    # says of its parameters
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    r = api.enrol(first_name=FIRST, last_name=LAST, email=EMAIL, phone=PHONE, pin="4821",
                  birth_date="1988-02-29", gender="female", address="12 rue des Lilas, Lyon",
                  consents={"terms": True, "marketing_email": True, "profiling": True},
                  survey={"heard_from": "friend", "comment": f"{FIRST} prefers mornings"})
    assert r.status_code == 201, r.get_data(as_text=True)
    cid = r.get_json()["customer_id"]
    card = api.issue_card(cid).get_json()
    assert api.tap(url=card["url"]).get_json()["display_name"] == "Zéphyrine Q."
    assert api.purchase([api.line("SKU-7", 1, "30.00")], card=card["url"]).status_code == 201
    mgr, desk = creds.staff_auth(manager), creds.staff_auth("desk1")
    assert api.adjust(cid, 50, mgr, reason=f"goodwill for {FIRST} {LAST}").status_code == 201
    assert api.client.get(f"/api/v1/customers/{cid}/export", headers=desk).status_code == 200
    assert api.client.patch(f"/api/v1/customers/{cid}/personal-data", headers=desk, json={
        "phone": "+33 6 98 76 54 32", "reason": "confirmed by phone"}).status_code == 200
    assert api.client.post("/api/v1/customers/search", headers=desk,
                           json={"email": EMAIL}).get_json()["customers"]

    with Session(app.extensions["loyalty.db"].vault) as vault:
        row = vault.get(VaultRecord, cid)
        secrets_of_row = [row.wrapped_key, row.ciphertext, row.email_index.encode(),
                          row.phone_index.encode()]
    # pg_dump writes bytea as hex text
    secrets_of_row += [s.hex().encode() for s in secrets_of_row[:2]]

    before = _raw(app)
    assert any(_hits(blob, NEEDLES) for blob in before.values()), \
        "the search must find the name before the erasure, or it proves nothing"
    assert any(_hits(blob, secrets_of_row) for blob in before.values())

    r = api.client.post(f"/api/v1/customers/{cid}/erasure", headers=mgr,
                        json={"reason": "customer-request", "confirm": cid})
    assert r.status_code == 200, r.get_data(as_text=True)

    after = _raw(app)
    for name, blob in after.items():
        assert not _hits(blob, NEEDLES), f"{name} still holds {_hits(blob, NEEDLES)}"
        assert not _hits(blob, secrets_of_row), f"{name} still holds the vault row"
    for name, blob in _instance_files(app).items():
        assert not _hits(blob, NEEDLES), f"instance/{name} holds {_hits(blob, NEEDLES)}"
    # the logs of the whole run, erasure included
    assert any(r.name.startswith("sqlalchemy.engine") and "vault_records" in r.getMessage()
               for r in caplog.records), "the SQL was not logged: the search proves nothing"
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)
    assert not _hits(logged.encode(), NEEDLES), _hits(logged.encode(), NEEDLES)

    # and the shop still has its statistics
    with Session(app.extensions["loyalty.db"].main) as main:
        from server.loyalty.models import Purchase

        assert main.scalar(select(Purchase.total_cents).where(Purchase.customer_id == cid)) \
            == 3000


@pytest.mark.parametrize("first_name", ["Ąžuolė"])
def test_no_personal_data_in_logs_of_failures_either(app, api, creds, caplog, first_name):
    """Rejected input is not echoed into logs or problem documents."""
    caplog.set_level(logging.DEBUG)
    bad = api.enrol(first_name=first_name, last_name="Žemaitytė", email="not-an-email@",
                    phone="+370 600 00000")
    assert bad.status_code == 422
    assert "Žemaitytė" not in bad.get_data(as_text=True)
    r = api.client.patch("/api/v1/customers/C-0000-0000/personal-data",
                         headers=creds.staff_auth("desk1"),
                         json={"last_name": "Žemaitytė", "reason": "x"})
    assert r.status_code == 404
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    for needle in (first_name, "Žemaitytė", "not-an-email", "600 00000"):
        assert needle not in logged
