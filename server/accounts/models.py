"""Accounts, payments on account and monthly statements.

Money in minor units (cents), as everywhere. The balance is never stored: it is derived in SQL
from purchases paid on account, the refunds of those purchases and the payments.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Account(Base):
    """A customer's account: open while ``closed_at`` is null."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("credit_limit_cents >= 0", name="credit_limit"),
                      CheckConstraint("terms_days >= 0", name="terms_days"))

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    credit_limit_cents: Mapped[int] = mapped_column(Integer)
    terms_days: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    opened_by: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AccountPayment(Base):
    """Money the customer paid towards their account (a till or a manager records it)."""

    __tablename__ = "account_payments"
    __table_args__ = (Index("ix_account_payments_customer_paid", "customer_id", "paid_at"),
                      CheckConstraint("amount_cents > 0", name="amount_positive"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("accounts.customer_id"))
    amount_cents: Mapped[int] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(64))
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime())
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Statement(Base):
    """One month of one account: the figures and what it listed, built once, sent once.

    ``document`` holds the lines, payments and refunds as they were listed (pseudonymous:
    no name, no address), so the PDF is the same whenever it is made again.
    """

    __tablename__ = "statements"
    __table_args__ = (UniqueConstraint("customer_id", "month", name="uq_statements_customer_month"),
                      Index("ix_statements_sent_at", "sent_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    month: Mapped[str] = mapped_column(String(7))  # 2026-10
    # the month's bounds in the programme's time zone, and the end of the due date, in UTC
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    due_by: Mapped[datetime] = mapped_column(UTCDateTime())
    currency: Mapped[str] = mapped_column(String(3))
    opening_cents: Mapped[int] = mapped_column(Integer)
    purchases_cents: Mapped[int] = mapped_column(Integer)
    refunds_cents: Mapped[int] = mapped_column(Integer)
    payments_cents: Mapped[int] = mapped_column(Integer)
    closing_cents: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[date] = mapped_column(Date)
    points_earned: Mapped[int] = mapped_column(Integer)
    points_spent: Mapped[int] = mapped_column(Integer)
    points_balance: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(2))
    document: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(64))
    # set (committed) before the mail leaves: a run that finds it set does not send; a crash
    # after it leaves it set until someone releases it (``flask statements stuck``)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # False: not sent again by the runs (released as failed after an interrupted send)
    retry: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
