"""Accounts: opening one, charging purchases to it, payments, the balance and punctuality.

The balance due is derived, never stored: purchases paid on account, less the refunds of
those purchases, less the payments; each a sum in SQL over indexed rows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.orm import Session

from server.accounts.models import Account, AccountPayment, Statement
from server.accounts.schemas import PaymentIn
from server.api.problems import Problem
from server.customers.models import Customer
from server.db import flush_or_replay, utcnow
from server.devices.auth import Principal
from server.loyalty.models import Purchase, Refund
from server.loyalty.schemas import cents
from server.value.service import register_punctuality

log = logging.getLogger(__name__)

ON_ACCOUNT = "account"
PAYMENT_ROLES = ("till", "manager", "admin")
MANAGE_ROLES = ("manager", "admin")
READ_ROLES = ("desk", "manager", "admin")


def money(amount_cents: int) -> str:
    return f"{Decimal(amount_cents) / 100:.2f}"


def get(main: Session, customer_id: str, *, lock: bool = False) -> Account | None:
    return main.get(Account, customer_id, with_for_update=lock)


def open_account(main: Session, actor: str, customer_id: str, *, credit_limit_cents: int,
                 terms_days: int) -> Account:
    """Open an account, or change the limit and terms of one (reopening a closed one).

    Raises:
        Problem: ``customer-not-found``, ``customer-erased``.
    """
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    if customer.erased_at is not None:
        raise Problem("customer-erased")
    account = get(main, customer_id, lock=True)
    if account is None:
        account = Account(customer_id=customer_id, opened_by=actor, opened_at=utcnow(),
                          credit_limit_cents=credit_limit_cents, terms_days=terms_days)
        main.add(account)
    else:
        account.credit_limit_cents, account.terms_days = credit_limit_cents, terms_days
        account.closed_at = None
    main.flush()
    log.info("account %s opened or changed by %s", customer_id, actor)
    return account


def close_account(main: Session, customer_id: str) -> Account:
    """No more purchases on account; payments and statements go on while a balance is due.

    Raises:
        Problem: ``no-account``.
    """
    account = get(main, customer_id, lock=True)
    if account is None:
        raise Problem("no-account")
    if account.closed_at is None:
        account.closed_at = utcnow()
        main.flush()
    return account


# --------------------------------------------------------------------------- the balance


def charged(customer_id, until):
    """Purchases on account paid before ``until``, less their refunds recorded before it."""
    bought = (select(func.coalesce(func.sum(Purchase.total_cents), 0))
              .where(Purchase.customer_id == customer_id, Purchase.payment == ON_ACCOUNT,
                     Purchase.paid_at < until).scalar_subquery())
    returned = (select(func.coalesce(func.sum(Refund.amount_cents), 0))
                .join(Purchase, Purchase.id == Refund.purchase_id)
                .where(Purchase.customer_id == customer_id, Purchase.payment == ON_ACCOUNT,
                       Refund.recorded_at < until).scalar_subquery())
    return bought - returned


def paid(customer_id, until):
    """Payments made before ``until``."""
    return (select(func.coalesce(func.sum(AccountPayment.amount_cents), 0))
            .where(AccountPayment.customer_id == customer_id, AccountPayment.paid_at < until)
            .scalar_subquery())


def balance(main: Session, customer_id: str, until: datetime | None = None) -> int:
    """What the customer owes (cents) for everything before ``until`` (now by default)."""
    until = until or datetime.now(UTC)
    return int(main.scalar(select(charged(customer_id, until) - paid(customer_id, until))))


def check_charge(main: Session, customer_id: str, amount_cents: int) -> None:
    """A purchase of ``amount_cents`` may go on this customer's account.

    The account row is locked (PostgreSQL) so two tills cannot both spend the last credit.

    Raises:
        Problem: ``no-account`` (none, or closed), ``credit-limit-exceeded``.
    """
    # written to itself first: a row lock on PostgreSQL, the file's write lock on SQLite
    # (where FOR UPDATE means nothing); a second till waits here, then sees the first charge
    main.execute(update(Account).where(Account.customer_id == customer_id)
                 .values(credit_limit_cents=Account.credit_limit_cents))
    account = get(main, customer_id, lock=True)
    if account is None or account.closed_at is not None:
        raise Problem("no-account")
    owed = balance(main, customer_id)
    if owed + amount_cents > account.credit_limit_cents:
        raise Problem("credit-limit-exceeded",
                      f"{money(owed)} is owed and the limit is "
                      f"{money(account.credit_limit_cents)}",
                      balance=money(owed), credit_limit=money(account.credit_limit_cents))


# --------------------------------------------------------------------------- payments


def _payment_result(main: Session, payment: AccountPayment) -> dict:
    return {"payment_id": payment.id, "customer_id": payment.customer_id,
            "amount": money(payment.amount_cents), "paid_at": payment.paid_at.isoformat(),
            "balance": money(balance(main, payment.customer_id))}


def _replay(main: Session, customer_id: str, event_id: str) -> dict | None:
    row = main.scalar(select(AccountPayment).where(AccountPayment.event_id == event_id))
    if row is None:
        return None
    if row.customer_id != customer_id:
        raise Problem("event-id-conflict")
    return _payment_result(main, row)


def record_payment(main: Session, principal: Principal, customer_id: str, req: PaymentIn
                   ) -> tuple[dict, bool]:
    """Record a payment towards the account; idempotent on ``event_id``.

    A closed account still takes payments: what it owes is still owed.

    Raises:
        Problem: ``no-account``, ``event-id-conflict``, ``validation-error`` (in the future).
    """
    event_id = str(req.event_id)
    previous = _replay(main, customer_id, event_id)
    if previous is not None:
        return previous, False
    if get(main, customer_id) is None:
        raise Problem("no-account")
    now = datetime.now(UTC)
    paid_at = req.paid_at or now
    if paid_at > now:
        raise Problem("validation-error", "paid_at is in the future",
                      errors=[{"field": "paid_at", "message": "in the future"}])
    payment = AccountPayment(
        event_id=event_id, customer_id=customer_id, amount_cents=cents(req.amount),
        method=req.method, reference=req.reference, paid_at=paid_at,
        device_id=principal.id if principal.kind == "device" else None,
        staff_id=principal.staff.id if principal.staff else None, recorded_by=principal.actor)
    main.add(payment)
    previous = flush_or_replay(main, lambda: _replay(main, customer_id, event_id))
    if previous is not None:
        return previous, False
    return _payment_result(main, payment), True


def payments(main: Session, customer_id: str, limit: int = 50) -> list:
    return main.scalars(select(AccountPayment).where(AccountPayment.customer_id == customer_id)
                        .order_by(AccountPayment.paid_at.desc()).limit(limit)).all()


# --------------------------------------------------------------------------- punctuality


def _on_time():
    """1 for a statement whose closing balance was paid by its due date, else 0.

    Paid in time means: the payments made before the due date cover everything charged up to
    the statement's end (payments settle the oldest charges first).
    """
    owed = charged(Statement.customer_id, Statement.period_end) - \
        paid(Statement.customer_id, Statement.due_by)
    return case((owed <= 0, literal(1.0)), else_=literal(0.0))


def _due_statements(now: datetime):
    return (Statement.closing_cents > 0) & (Statement.due_by <= now)


def punctuality(main: Session, customer_id: str, now: datetime | None = None) -> float | None:
    """The share (0..1) of this customer's statements whose balance was paid by the due date.

    Only statements that asked for money and whose due date has passed count; ``None`` when
    there is none (no account, nothing owed yet, or no statement built).
    """
    now = now or datetime.now(UTC)
    share = main.scalar(select(func.avg(_on_time())).where(
        Statement.customer_id == customer_id, _due_statements(now)))
    return None if share is None else float(share)


def punctuality_by_customer(now: datetime | None = None):
    """The same for every customer at once, as a subquery ``(customer_id, punctuality)``."""
    now = now or datetime.now(UTC)
    return (select(Statement.customer_id, func.avg(_on_time()).label("punctuality"))
            .where(_due_statements(now)).group_by(Statement.customer_id).subquery())


def punctuality_source(since: datetime, now: datetime):
    """For the value score: ``(customer_id, on_time)``, the per-mille of the statements due
    within ``since``..``now`` that were paid by their due date (integers, so both databases
    rank alike)."""
    on_time = case((_on_time() > 0, 1), else_=0)
    return (select(Statement.customer_id,
                   (func.sum(on_time) * 1000 / func.count()).label("on_time"))
            .where(_due_statements(now), Statement.due_by >= since)
            .group_by(Statement.customer_id))


register_punctuality(punctuality_source)


def statement_on_time(main: Session, statement_id: int, now: datetime | None = None
                      ) -> bool | None:
    """Whether this statement was paid by its due date; ``None`` if nothing due or not due yet."""
    now = now or datetime.now(UTC)
    value = main.scalar(select(_on_time()).where(Statement.id == statement_id,
                                                 _due_statements(now)))
    return None if value is None else bool(value)
