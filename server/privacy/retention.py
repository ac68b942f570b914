"""Retention: customers who have not come back for a long time are told, then erased.

A customer is *inactive* when their last visit, purchase or enrolment is older than
``RETENTION_INACTIVE_DAYS``. The job (``flask --app server privacy retention``):

1. forgets the notice of anyone who came back after it;
2. tells each inactive customer not yet told, by email where their ``marketing_email``
   consent allows (other customers are marked told, without a message: the notice period
   still applies), and dates the notice;
3. erases those told more than ``RETENTION_NOTICE_DAYS`` ago who are still inactive.

Each customer is one transaction, and every step looks at the state it leaves behind, so the
job can be stopped at any point and run again (or twice) without telling or erasing anyone
twice. A mail that fails leaves the customer untold, for the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from server.customers.models import Customer
from server.db import UTCDateTime, shred_wal, utcnow
from server.loyalty.models import Purchase
from server.mail.sender import MailError, build, send
from server.privacy import audit, consent, erasure
from server.taps.models import Visit
from server.vault.service import read_personal_data

log = logging.getLogger(__name__)
ACTOR = "job:retention"

NOTICE = {
    "en": ("Your loyalty account will close",
           "Hello {first_name},\n\nWe have not seen you for a while. To protect your data, your "
           "loyalty account and the personal details it holds will be deleted on {date} unless "
           "you visit one of our shops or use your card before then.\n\nThank you for your "
           "loyalty.\n"),
    "fr": ("Votre compte fidélité va être clôturé",
           "Bonjour {first_name},\n\nNous ne vous avons pas vu depuis longtemps. Pour protéger "
           "vos données, votre compte fidélité et les informations personnelles qu'il contient "
           "seront supprimés le {date}, sauf si vous passez dans l'un de nos magasins ou "
           "utilisez votre carte d'ici là.\n\nMerci de votre fidélité.\n"),
    "lt": ("Jūsų lojalumo paskyra bus uždaryta",
           "Sveiki, {first_name},\n\nSeniai jūsų nematėme. Siekdami apsaugoti jūsų duomenis, "
           "jūsų lojalumo paskyrą ir joje saugomus asmens duomenis ištrinsime {date}, nebent "
           "iki tol apsilankysite vienoje iš mūsų parduotuvių arba pasinaudosite kortele.\n\n"
           "Dėkojame, kad esate su mumis.\n"),
}


class greatest(FunctionElement):  # noqa: N801 - an SQL function's name
    """GREATEST(a, b, ...) on PostgreSQL; SQLite spells it as the many-argument MAX."""

    inherit_cache = True
    name = "greatest"
    type = UTCDateTime()


@compiles(greatest)
def _greatest_default(element, compiler, **kw):
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element, compiler, **kw):
    return f"MAX({compiler.process(element.clauses, **kw)})"


def last_activity():
    """A column: the latest of enrolment, visit and purchase, per customer."""
    last_visit = (select(func.max(Visit.recorded_at)).where(Visit.customer_id == Customer.id)
                  .scalar_subquery())
    last_purchase = (select(func.max(Purchase.paid_at))
                     .where(Purchase.customer_id == Customer.id).scalar_subquery())
    return greatest(func.coalesce(last_visit, Customer.created_at),
                    func.coalesce(last_purchase, Customer.created_at),
                    Customer.created_at)


def due(main: Session, now: datetime, inactive_days: int, limit: int | None = None) -> list[dict]:
    """Inactive customers, oldest activity first: ``{customer_id, last_activity, notice_at}``."""
    activity = last_activity().label("last_activity")
    cutoff = now - timedelta(days=inactive_days)
    inner = (select(Customer.id, Customer.retention_notice_at, activity)
             .where(Customer.erased_at.is_(None)).subquery())
    query = (select(inner).where(inner.c.last_activity < cutoff)
             .order_by(inner.c.last_activity, inner.c.id))
    if limit:
        query = query.limit(limit)
    return [{"customer_id": r.id, "last_activity": r.last_activity,
             "notice_at": r.retention_notice_at} for r in main.execute(query)]


@dataclass
class RetentionReport:
    came_back: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)  # told by email
    marked: list[str] = field(default_factory=list)  # no channel allowed: notice dated only
    erased: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # mail failed: next run tries again
    waiting: int = 0  # told, notice period not over

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("came_back", "notified", "marked", "erased",
                                              "failed", "waiting")}


def run(dbs, config: dict, now: datetime | None = None, dry_run: bool = False
        ) -> RetentionReport:
    """One pass of the retention job over both databases (``dbs``: the app's Databases)."""
    now = now or utcnow()
    inactive = int(config["RETENTION_INACTIVE_DAYS"])
    notice = timedelta(days=int(config["RETENTION_NOTICE_DAYS"]))
    report = RetentionReport()

    with Session(dbs.main) as main:
        # 1. came back after the notice: forget it
        activity = last_activity()
        back = list(main.scalars(select(Customer.id).where(
            Customer.erased_at.is_(None), Customer.retention_notice_at.is_not(None),
            activity > Customer.retention_notice_at)))
        if back and not dry_run:
            main.execute(update(Customer).where(Customer.id.in_(back))
                         .values(retention_notice_at=None))
            main.commit()
        report.came_back = back
        candidates = due(main, now, inactive)

    for row in candidates:
        customer_id = row["customer_id"]
        if customer_id in back:
            continue
        if row["notice_at"] is None:
            if not dry_run:
                _notify(dbs, config, customer_id, now, now + notice, report)
            else:
                report.notified.append(customer_id)
        elif row["notice_at"] + notice <= now:
            if not dry_run:
                with Session(dbs.main) as main, Session(dbs.vault) as vault:
                    erasure.erase(main, vault, ACTOR, customer_id, "retention")
                    vault.commit()
                    main.commit()
            report.erased.append(customer_id)
        else:
            report.waiting += 1
    if report.erased:
        shred_wal(dbs.vault, dbs.main)
    return report


def _notify(dbs, config: dict, customer_id: str, now: datetime, erase_on: datetime,
            report: RetentionReport) -> None:
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        customer = main.get(Customer, customer_id, with_for_update=True)
        if customer is None or customer.erased_at or customer.retention_notice_at:
            return  # another run got here first
        allowed = consent.flags(main, customer_id)["marketing_email"]
        personal = read_personal_data(vault, customer_id) if allowed else None
        channel = None
        if personal and personal.get("email"):
            subject, body = NOTICE.get(customer.language, NOTICE["en"])
            msg = build(config["MAIL_FROM"], personal["email"], subject,
                        body.format(first_name=personal.get("first_name", ""),
                                    date=erase_on.date().isoformat()),
                        customer.language)
            try:
                send(config["MAIL_URL"], msg)
            except MailError:
                report.failed.append(customer_id)
                return
            channel = "email"
        customer.retention_notice_at = now
        audit.record(main, ACTOR, "retention.notice", customer_id, view="retention",
                     detail={"channel": channel, "erase_on": erase_on.date().isoformat()})
        main.commit()
    (report.notified if channel else report.marked).append(customer_id)
