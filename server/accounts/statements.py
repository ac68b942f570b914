"""Monthly statements of account customers: built once, stored, then sent by email with a PDF.

``flask --app server statements run [--month 2026-10]`` (default: last month in the
programme's time zone):

1. builds, for each account customer with activity in the month or a balance, the month's
   statement (opening balance, purchases on account with their lines, refunds, payments,
   closing balance due, due date, points summary) and stores it: one transaction per
   customer, unique on (customer, month), so a second run, or a run after a crash, builds
   only what is missing;
2. sends every statement not sent yet (this month's and earlier failures): the address is
   read from the vault through ``server.privacy`` (audited, actor ``job:statements``), the
   HTML body and the PDF in the customer's language. A failed send is counted and tried
   again by the next run.

A statement is a contractual message to the account holder, not marketing: no marketing
consent is asked; erased customers get nothing.

Sending is at most once, like the campaigns': each statement is claimed (``claimed_at``,
one conditional UPDATE, committed) before the mail leaves, so two runs at once, on any
nodes, never both send it; the claim is cleared when the outcome is known. A crash between
the hand-over and the outcome leaves the claim: such a statement is not sent again by itself.
``flask statements stuck`` (or a manager's page) lists the claims older than N minutes and
releases them, back to pending (the next run sends it again) or failed (never again),
knowing that it may have been delivered. Each statement's mail has the same ``Message-ID``
on every attempt, so a mail client that got it already drops the second copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from flask import current_app, g, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.models import Account, AccountPayment, Statement
from server.accounts.service import ON_ACCOUNT, balance, charged
from server.accounts.service import paid as paid_before
from server.customers.models import Customer
from server.loyalty import programmes
from server.loyalty.models import PointsEntry, Purchase, PurchaseLine, Refund
from server.mail.sender import MailError, build, send
from server.privacy.service import read_as_system
from server.stores.models import Store

log = logging.getLogger(__name__)
# fpdf2's font subsetting logs every table it prunes at INFO: not the service's business
logging.getLogger("fontTools").setLevel(logging.WARNING)
ACTOR = "job:statements"
VIEW = "statements"
FONT_DIR = "/usr/share/fonts/truetype/dejavu"


# --------------------------------------------------------------------------- periods


def previous_month(now: datetime, zone) -> str:
    """The month before ``now``'s, in the programme's time zone: ``YYYY-MM``."""
    first = now.astimezone(zone).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def bounds(month: str, zone) -> tuple[datetime, datetime, date]:
    """The month's start and end (UTC) and its last local day.

    Raises:
        ValueError: not ``YYYY-MM``.
    """
    try:
        first = datetime.strptime(month, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"{month!r}: give the month as YYYY-MM") from None
    following = (first + timedelta(days=32)).replace(day=1)
    start = datetime.combine(first, time(), zone).astimezone(UTC)
    end = datetime.combine(following, time(), zone).astimezone(UTC)
    return start, end, following - timedelta(days=1)


# --------------------------------------------------------------------------- building


def candidates(main: Session, start: datetime, end: datetime) -> list[str]:
    """Account customers (not erased) with activity in [start, end) or a balance at start."""
    cid = Account.customer_id
    bought = exists().where(Purchase.customer_id == cid, Purchase.payment == ON_ACCOUNT,
                            Purchase.paid_at >= start, Purchase.paid_at < end)
    returned = (exists().where(Refund.purchase_id == Purchase.id, Purchase.customer_id == cid,
                               Purchase.payment == ON_ACCOUNT, Refund.recorded_at >= start,
                               Refund.recorded_at < end))
    paid = exists().where(AccountPayment.customer_id == cid, AccountPayment.paid_at >= start,
                          AccountPayment.paid_at < end)
    owing = (charged(cid, start) - paid_before(cid, start)) != 0
    query = (select(cid).join(Customer, Customer.id == cid)
             .where(Customer.erased_at.is_(None),
                    bought | returned | paid | owing)
             .order_by(cid))
    return list(main.scalars(query))


def _local(moment: datetime, zone) -> str:
    return moment.astimezone(zone).isoformat(timespec="minutes")


def build_statement(main: Session, customer_id: str, month: str, zone, currency: str
                    ) -> Statement:
    """The statement of one customer for one month (not added to the session)."""
    start, end, last_day = bounds(month, zone)
    account = main.get(Account, customer_id)
    customer = main.get(Customer, customer_id)
    purchases = main.execute(
        select(Purchase.id, Purchase.paid_at, Purchase.receipt, Purchase.total_cents,
               Store.name.label("store"))
        .join(Store, Store.id == Purchase.store_id)
        .where(Purchase.customer_id == customer_id, Purchase.payment == ON_ACCOUNT,
               Purchase.paid_at >= start, Purchase.paid_at < end)
        .order_by(Purchase.paid_at, Purchase.id)).all()
    lines: dict[int, list[dict]] = {}
    if purchases:
        for line in main.execute(
                select(PurchaseLine.purchase_id, PurchaseLine.name, PurchaseLine.quantity_milli,
                       PurchaseLine.unit_price_cents, PurchaseLine.discount_cents,
                       PurchaseLine.net_cents)
                .where(PurchaseLine.purchase_id.in_([p.id for p in purchases]))
                .order_by(PurchaseLine.purchase_id, PurchaseLine.line_no)):
            lines.setdefault(line.purchase_id, []).append({
                "name": line.name, "quantity_milli": line.quantity_milli,
                "unit_price_cents": line.unit_price_cents,
                "discount_cents": line.discount_cents, "net_cents": line.net_cents})
    refunds = main.execute(
        select(Refund.id, Refund.recorded_at, Refund.amount_cents, Purchase.receipt,
               Purchase.id.label("purchase_id"))
        .join(Purchase, Purchase.id == Refund.purchase_id)
        .where(Purchase.customer_id == customer_id, Purchase.payment == ON_ACCOUNT,
               Refund.recorded_at >= start, Refund.recorded_at < end)
        .order_by(Refund.recorded_at, Refund.id)).all()
    payments = main.execute(
        select(AccountPayment.id, AccountPayment.paid_at, AccountPayment.amount_cents,
               AccountPayment.method, AccountPayment.reference)
        .where(AccountPayment.customer_id == customer_id, AccountPayment.paid_at >= start,
               AccountPayment.paid_at < end)
        .order_by(AccountPayment.paid_at, AccountPayment.id)).all()
    opening = balance(main, customer_id, start)
    bought = sum(p.total_cents for p in purchases)
    returned = sum(r.amount_cents for r in refunds)
    received = sum(p.amount_cents for p in payments)
    in_month = (PointsEntry.customer_id == customer_id) & (PointsEntry.at >= start) & \
        (PointsEntry.at < end)
    earned, spent = main.execute(select(
        func.coalesce(func.sum(PointsEntry.delta).filter(PointsEntry.delta > 0), 0),
        func.coalesce(-func.sum(PointsEntry.delta).filter(PointsEntry.kind == "redeem"), 0))
        .where(in_month)).one()
    points_then = main.scalar(select(func.coalesce(func.sum(PointsEntry.delta), 0)).where(
        PointsEntry.customer_id == customer_id, PointsEntry.at < end))
    due_date = last_day + timedelta(days=account.terms_days)
    document = {
        "purchases": [{"id": p.id, "at": _local(p.paid_at, zone), "receipt": p.receipt,
                       "store": p.store, "total_cents": p.total_cents,
                       "lines": lines.get(p.id, [])} for p in purchases],
        "refunds": [{"id": r.id, "at": _local(r.recorded_at, zone), "receipt": r.receipt,
                     "purchase_id": r.purchase_id, "amount_cents": r.amount_cents}
                    for r in refunds],
        "payments": [{"id": p.id, "at": _local(p.paid_at, zone), "method": p.method,
                      "reference": p.reference, "amount_cents": p.amount_cents}
                     for p in payments],
        "terms_days": account.terms_days,
        "credit_limit_cents": account.credit_limit_cents,
    }
    return Statement(
        customer_id=customer_id, month=month, currency=currency, period_start=start,
        period_end=end,
        due_by=datetime.combine(due_date + timedelta(days=1), time(), zone).astimezone(UTC),
        opening_cents=opening, purchases_cents=bought, refunds_cents=returned,
        payments_cents=received, closing_cents=opening + bought - returned - received,
        due_date=due_date, points_earned=int(earned), points_spent=int(spent),
        points_balance=int(points_then), tier=customer.tier, language=customer.language,
        document=document)


# --------------------------------------------------------------------------- the job


@dataclass
class StatementsReport:
    month: str
    built: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # "C-XXXX-XXXX 2026-10"
    failed: list[str] = field(default_factory=list)  # tried again by the next run
    skipped: list[str] = field(default_factory=list)  # erased, or no email address

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("month", "built", "sent", "failed", "skipped")}


def run(dbs, config: dict, month: str | None = None, now: datetime | None = None
        ) -> StatementsReport:
    """Build the month's missing statements, then send every unsent one (needs an app context).

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``, or is not over yet.
    """
    now = now or datetime.now(UTC)
    with Session(dbs.main) as main:
        _, programme = programmes.current(main)
    zone = programme.zone
    month = month or previous_month(now, zone)
    start, end, _last = bounds(month, zone)
    if end > now:
        raise ValueError(f"{month} is not over yet")
    report = StatementsReport(month)
    with Session(dbs.main) as main:
        done = set(main.scalars(select(Statement.customer_id).where(Statement.month == month)))
        todo = [c for c in candidates(main, start, end) if c not in done]
    for customer_id in todo:
        with Session(dbs.main) as main:
            main.add(build_statement(main, customer_id, month, zone, programme.currency))
            try:
                main.commit()
            except IntegrityError:  # another run built it meanwhile
                main.rollback()
                continue
        report.built.append(customer_id)
    with Session(dbs.main) as main:
        pending = list(main.scalars(select(Statement.id).where(_due())
                                    .order_by(Statement.month, Statement.customer_id)))
    for statement_id in pending:
        send_statement(dbs, config, statement_id, report)
    return report


def _due():
    """Not sent, not claimed by a run, not given up."""
    return Statement.sent_at.is_(None) & Statement.claimed_at.is_(None) & \
        Statement.retry.is_(True)


def send_statement(dbs, config: dict, statement_id: int, report: StatementsReport) -> None:
    """Claim one statement, send it to its account holder in their language, and mark it
    sent; a statement another run claimed is left to it."""
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        claimed = main.execute(update(Statement).where(Statement.id == statement_id, _due())
                               .values(claimed_at=datetime.now(UTC),
                                       send_attempts=Statement.send_attempts + 1))
        if claimed.rowcount != 1:
            main.rollback()
            return  # sent, or being sent, by another run
        main.commit()  # the claim holds before anything can leave
        statement = main.get(Statement, statement_id)
        label = f"{statement.customer_id} {statement.month}"

        def unclaim(error: str | None = None) -> None:
            statement.claimed_at = None
            if error is not None:
                statement.last_error = error[:64]
            main.commit()

        try:
            customer = main.get(Customer, statement.customer_id)
            if customer.erased_at is not None:
                unclaim()
                report.skipped.append(label)
                return
            with Session(dbs.main) as audit:
                # its own transaction: the read is logged whatever happens to the mail, and
                # the audit chain's head is not held while the mail server answers
                personal = read_as_system(audit, vault, ACTOR, statement.customer_id, VIEW)
                audit.commit()
            if not personal.get("email"):
                unclaim()
                report.skipped.append(label)
                return
            msg = compose(config, statement, personal)
        except Exception:
            # nothing has left yet: an error here is not an interrupted send
            main.rollback()
            unclaim()
            raise
        try:
            send(config["MAIL_URL"], msg)
        except MailError as exc:
            unclaim(str(exc))  # not handed over: the next run tries again
            report.failed.append(label)
            return
        statement.sent_at = datetime.now(UTC)
        statement.claimed_at = None
        statement.last_error = None
        main.commit()
        report.sent.append(label)


# --------------------------------------------------------------------------- interrupted sends

RELEASE_TO = ("pending", "failed")


def stuck(main: Session, older_than: timedelta, now: datetime | None = None,
          limit: int = 500) -> list[Statement]:
    """Statements claimed more than ``older_than`` ago and not marked sent: a run that
    crashed or was killed while sending them. Oldest claim first."""
    cutoff = (now or datetime.now(UTC)) - older_than
    return list(main.scalars(select(Statement).where(
        Statement.sent_at.is_(None), Statement.claimed_at < cutoff)
        .order_by(Statement.claimed_at, Statement.id).limit(limit)))


def release(main: Session, actor: str, view: str, statement_ids: list[int], to: str,
            older_than: timedelta, now: datetime | None = None) -> list[int]:
    """Clear the claims of stuck statements: ``pending`` (the next run sends it, with the same
    Message-ID) or ``failed`` (never sent again by a run; the PDF stays downloadable). Only
    claims still older than ``older_than`` are touched; audited. Returns the ids released."""
    if to not in RELEASE_TO:
        raise ValueError(f"release to one of {RELEASE_TO}")
    now = now or datetime.now(UTC)
    ids = sorted({int(i) for i in statement_ids})
    if not ids:
        return []
    error = "interrupted; released" if to == "pending" else "interrupted; released as failed"
    released = sorted(main.scalars(
        update(Statement).where(Statement.id.in_(ids), Statement.sent_at.is_(None),
                                Statement.claimed_at < now - older_than)
        .values(claimed_at=None, retry=to == "pending", last_error=error)
        .returning(Statement.id)))
    if released:
        from server.privacy import audit

        audit.record(main, actor, "statement.release", None, view=view,
                     detail={"statements": released, "to": to,
                             "older_than_minutes": int(older_than.total_seconds() // 60)})
        log.warning("statements: %d stuck statement(s) released to %s by %s", len(released),
                    to, actor)
    return released


# --------------------------------------------------------------------------- rendering


def holder_name(personal: dict) -> str:
    return " ".join(p for p in (personal.get("first_name"), personal.get("last_name")) if p)


class Figures:
    """What the templates and the PDF show, formatted for the statement's language."""

    def __init__(self, statement: Statement) -> None:
        self.s = statement
        self.lang = statement.language

    def money(self, amount_cents: int) -> str:
        return format_currency(Decimal(amount_cents) / 100, self.s.currency, locale=self.lang)

    def quantity(self, milli: int) -> str:
        return format_decimal(Decimal(milli) / 1000, locale=self.lang)

    def day(self, value) -> str:
        if isinstance(value, str):
            value = datetime.fromisoformat(value).date()
        return format_date(value, "long", locale=self.lang)

    def month(self) -> str:
        return format_date(datetime.strptime(self.s.month, "%Y-%m").date(), "LLLL yyyy",
                           locale=self.lang)


def _force(language: str):
    g.setdefault("statements_locale", language)  # force_locale needs a non-empty ``g``
    return force_locale(language)


def compose(config: dict, statement: Statement, personal: dict):
    """The email: a plain and an HTML body, the PDF attached, in the customer's language."""
    figures = Figures(statement)
    with _force(statement.language):
        context = {"s": statement, "f": figures, "first_name": personal.get("first_name", ""),
                   "doc": statement.document}
        subject = _("Your statement for %(month)s", month=figures.month())
        text = render_template("server/accounts/statement_email.txt", **context)
        html = render_template("server/accounts/statement_email.html", **context)
        pdf = render_pdf(statement, holder_name(personal))
    msg = build(config["MAIL_FROM"], personal["email"], subject, text, statement.language)
    del msg["Message-ID"]
    msg["Message-ID"] = message_id(config, statement)
    msg.add_alternative(html, subtype="html")
    msg.add_attachment(pdf, maintype="application", subtype="pdf",
                       filename=f"statement-{statement.month}-{statement.customer_id}.pdf")
    # making it multipart moved every Content-* header onto the text part: say it again
    del msg["Content-Language"]
    msg["Content-Language"] = statement.language
    return msg


def message_id(config: dict, statement: Statement) -> str:
    """The same on every attempt to send this statement: a retry after an interrupted send
    is a duplicate that mail clients recognise and drop (RFC 5322 §3.6.4)."""
    domain = config["MAIL_FROM"].rpartition("@")[2].strip("> ") or "localhost"
    return f"<statement.{statement.month}.{statement.customer_id}.{statement.id}@{domain}>"


def pdf_in_language(statement: Statement, holder: str) -> bytes:
    """The PDF in the statement's language (for a download from the back office)."""
    with _force(statement.language):
        return render_pdf(statement, holder)


def render_pdf(statement: Statement, holder: str) -> bytes:
    """The statement as a PDF (fpdf2, DejaVu fonts: every Lithuanian and French letter)."""
    from fpdf import FPDF

    f = Figures(statement)
    doc = statement.document
    fonts = Path(current_app.config.get("STATEMENT_FONT_DIR") or FONT_DIR)
    pdf = FPDF(format="A4")
    pdf.set_creation_date(statement.created_at)  # the same document whenever it is made
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_title(_("Statement of account"))
    pdf.set_lang(statement.language)
    pdf.add_page()
    width = pdf.epw

    def row(label: str, value: str, bold: bool = False, size: int = 10) -> None:
        pdf.set_font("DejaVu", "B" if bold else "", size)
        pdf.cell(width * 0.6, 6, label)
        pdf.cell(width * 0.4, 6, value, align="R", new_x="LMARGIN", new_y="NEXT")

    def fit(text: str, room: float) -> str:
        """The text, shortened with an ellipsis to what fits in ``room``."""
        if pdf.get_string_width(text) <= room:
            return text
        while text and pdf.get_string_width(text + "…") > room:
            text = text[:-1]
        return text.rstrip() + "…"

    def heading(text: str) -> None:
        pdf.ln(3)
        pdf.set_font("DejaVu", "B", 11)
        pdf.cell(width, 7, text, new_x="LMARGIN", new_y="NEXT")

    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(width, 10, _("Statement of account"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10)
    if holder:
        pdf.cell(width, 6, holder, new_x="LMARGIN", new_y="NEXT")
    row(_("Customer number"), statement.customer_id)
    row(_("Month"), f.month())

    heading(_("Summary"))
    row(_("Opening balance"), f.money(statement.opening_cents))
    row(_("Purchases on account"), f.money(statement.purchases_cents))
    row(_("Refunds"), "−" + f.money(statement.refunds_cents))
    row(_("Payments"), "−" + f.money(statement.payments_cents))
    row(_("Balance due"), f.money(statement.closing_cents), bold=True, size=12)
    row(_("Due date"), f.day(statement.due_date))

    heading(_("Purchases on account"))
    if not doc["purchases"]:
        pdf.set_font("DejaVu", "", 10)
        pdf.cell(width, 6, _("No purchase on account this month."), new_x="LMARGIN",
                 new_y="NEXT")
    for purchase in doc["purchases"]:
        pdf.set_font("DejaVu", "B", 10)
        title = f"{f.day(purchase['at'])} · {purchase['store']}"
        if purchase["receipt"]:
            title += f" · {_('Receipt')} {purchase['receipt']}"
        pdf.cell(width * 0.75, 6, fit(title, width * 0.75 - 2))
        pdf.cell(width * 0.25, 6, f.money(purchase["total_cents"]), align="R",
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 9)
        for line in purchase["lines"]:
            pdf.cell(width * 0.05, 5, "")
            pdf.cell(width * 0.5, 5, fit(line["name"], width * 0.5 - 2))
            pdf.cell(width * 0.2, 5, f"{f.quantity(line['quantity_milli'])} × "
                                     f"{f.money(line['unit_price_cents'])}", align="R")
            pdf.cell(width * 0.25, 5, f.money(line["net_cents"]), align="R",
                     new_x="LMARGIN", new_y="NEXT")

    if doc["refunds"]:
        heading(_("Refunds"))
        for refund in doc["refunds"]:
            row(f"{f.day(refund['at'])} · {_('Receipt')} "
                f"{refund['receipt'] or refund['purchase_id']}",
                "−" + f.money(refund["amount_cents"]))
    if doc["payments"]:
        heading(_("Payments"))
        for payment in doc["payments"]:
            row(f"{f.day(payment['at'])}" + (f" · {payment['reference']}"
                                             if payment["reference"] else ""),
                "−" + f.money(payment["amount_cents"]))

    heading(_("Loyalty points"))
    row(_("Points earned"), str(statement.points_earned))
    row(_("Points spent"), str(statement.points_spent))
    row(_("Points balance at the end of the month"), str(statement.points_balance))
    row(_("Tier"), statement.tier)
    return bytes(pdf.output())
