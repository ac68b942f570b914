"""Batch jobs run by the CLI (cron or a systemd timer): each is safe to run twice."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.enrolment.service import new_customer_id
from server.loyalty import ledger, programmes
from server.loyalty.ledger import InsufficientPoints, lot_reversal
from server.loyalty.models import ImportedCustomer, PointsEntry
from server.loyalty.programme import expiry_date
from server.loyalty.service import update_tier
from server.privacy import audit
from server.privacy.models import PURPOSES, Consent
from server.stores.models import Store
from server.vault.crypto import encrypt_record
from server.vault.models import VaultRecord
from server.vault.service import index_columns, normalised, vault_keys

log = logging.getLogger(__name__)
entries = PointsEntry.__table__


def expire_points(main: Session, now: datetime | None = None, batch: int = 500) -> tuple[int, int]:
    """Expire the points whose time has come, oldest first; returns (customers, points).

    Which customers have points to expire is computed in one pass over the ledger in SQL;
    a customer's second run finds nothing left, because earlier expiries count as debits.
    """
    now = now or datetime.now(UTC)
    # the same sums as ledger.expirable, for every customer at once
    reversal = lot_reversal(entries)
    due = func.sum(case((
        entries.c.expires_at.is_not(None) & (entries.c.expires_at <= now)
        & ((entries.c.delta > 0) | reversal), entries.c.delta), else_=0))
    debits = -func.sum(case(((entries.c.delta < 0) & ~reversal, entries.c.delta), else_=0))
    rows = main.execute(select(entries.c.customer_id, (due - debits).label("amount"))
                        .group_by(entries.c.customer_id).having(due > debits)).all()
    touched = expired = 0
    for i, row in enumerate(rows, 1):
        amount = row.amount
        try:
            ledger.post(main, row.customer_id, -amount, "expire", at=now,
                        reason="points older than the programme's expiry")
        except InsufficientPoints:  # spent meanwhile at a till: expire what is still due
            amount = ledger.expirable(main, row.customer_id, now)
            if amount:
                ledger.post(main, row.customer_id, -amount, "expire", at=now,
                            reason="points older than the programme's expiry")
        touched, expired = touched + (amount > 0), expired + amount
        if i % batch == 0:
            main.commit()
    main.commit()
    return touched, expired


def review_tiers(main: Session, now: datetime | None = None, batch: int = 500) -> tuple[int, int]:
    """Apply the review of every customer whose review date has come; (reviewed, changed)."""
    now = now or datetime.now(UTC)
    due = main.scalars(select(Customer).where(Customer.tier_review_at.is_not(None),
                                              Customer.tier_review_at <= now)).all()
    changed = 0
    for i, customer in enumerate(due, 1):
        changed += update_tier(main, customer, now)
        if i % batch == 0:
            main.commit()
    main.commit()
    return len(due), changed


@dataclass
class ImportReport:
    imported: int = 0
    already: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)


REQUIRED = ("source_id", "first_name", "last_name", "points")
TRUE = {"1", "true", "yes", "y", "oui", "taip"}


def import_balances(main: Session, vault: Session, lines: Iterable[str], *, store_code: str,
                    source: str) -> ImportReport:
    """Bring customers and their opening balances over from another system (CSV).

    Columns: source_id, first_name, last_name, email, phone, language, points, and optional
    marketing_email, marketing_sms (yes/no). No purchase is invented: the balance is one
    ``import`` entry. A row already imported (same source_id) is left alone; a bad row is
    reported with its line number and the import goes on.
    """
    report = ImportReport()
    store = main.scalar(select(Store).where(Store.code == store_code))
    if store is None:
        raise ValueError(f"no store {store_code}")
    _, programme = programmes.current(main)
    keys = vault_keys()
    reader = csv.DictReader(lines)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"the CSV has no column {', '.join(missing)}")
    now = datetime.now(UTC)
    for row in reader:
        number = reader.line_num
        try:
            data = _import_row(row)
        except ValueError as exc:
            report.bad.append((number, str(exc)))
            continue
        if main.get(ImportedCustomer, data["source_id"]) is not None:
            report.already += 1
            continue
        customer_id = new_customer_id()
        personal = normalised(
            {k: data.get(k) for k in ("first_name", "last_name", "email", "phone")},
            store.country)
        kid, wrapped, ciphertext = encrypt_record(keys, customer_id, personal)
        vault.add(VaultRecord(customer_id=customer_id, master_key_id=kid, wrapped_key=wrapped,
                              ciphertext=ciphertext,
                              **index_columns(keys, personal, store.country)))
        vault.commit()
        try:
            main.add(Customer(id=customer_id, language=data["language"],
                              home_store_id=store.id, tier="member", points=0))
            main.add(ImportedCustomer(source_id=data["source_id"], customer_id=customer_id))
            for purpose in PURPOSES:
                granted = purpose == "terms" or data.get(purpose, False)
                main.add(Consent(customer_id=customer_id, purpose=purpose, granted=granted,
                                 text_version=f"import:{source}"[:32]))
            main.flush()
            audit.record(main, "cli:import", "personal-data.create", customer_id,
                         view="import", detail={"via": "import"})
            if data["points"]:
                ledger.post(main, customer_id, data["points"], "import",
                            event_id=f"import:{data['source_id']}"[:64],
                            reason=f"opening balance from {source}"[:300],
                            expires_at=expiry_date(programme, now), store_id=store.id)
            main.commit()
        except Exception as exc:
            main.rollback()
            vault.execute(delete(VaultRecord).where(VaultRecord.customer_id == customer_id))
            vault.commit()
            report.bad.append((number, f"not imported: {exc.__class__.__name__}"))
            log.warning("import line %d failed: %s", number, exc.__class__.__name__)
            continue
        report.imported += 1
    return report


def _import_row(row: dict) -> dict:
    def text(name: str, limit: int = 80) -> str | None:
        value = (row.get(name) or "").strip()
        if len(value) > limit or any(ord(c) < 32 for c in value):
            raise ValueError(f"{name} is not valid")
        return value or None

    source_id = text("source_id", 64)
    first, last = text("first_name"), text("last_name")
    if not (source_id and first and last):
        raise ValueError("source_id, first_name and last_name are required")
    email, phone = text("email", 254), text("phone", 24)
    if email and ("@" not in email or " " in email):
        raise ValueError("email is not valid")
    if not (email or phone):
        raise ValueError("an email or a phone is required")
    try:
        points = int((row.get("points") or "0").strip())
    except ValueError:
        raise ValueError("points is not a whole number") from None
    if points < 0:
        raise ValueError("points cannot be negative")
    language = (text("language", 2) or "fr").lower()
    if language not in ("fr", "lt", "en"):
        raise ValueError("language must be fr, lt or en")
    return {"source_id": source_id, "first_name": first, "last_name": last, "email": email,
            "phone": phone, "points": points, "language": language,
            "marketing_email": (row.get("marketing_email") or "").strip().lower() in TRUE,
            "marketing_sms": (row.get("marketing_sms") or "").strip().lower() in TRUE}
