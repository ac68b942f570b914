"""Purchases, refunds, the points ledger, redemptions and the programme document.

Money is kept in minor units (cents) and quantities in thousandths, as integers: exact on
SQLite and PostgreSQL alike, and summable in SQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class ProgrammeVersion(Base):
    """One loaded version of the programme's rules; the highest version is in force."""

    __tablename__ = "programme_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(Text)
    loaded_by: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Purchase(Base):
    __tablename__ = "purchases"
    __table_args__ = (Index("ix_purchases_customer_paid", "customer_id", "paid_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    card_id: Mapped[str | None] = mapped_column(ForeignKey("cards.id"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    till: Mapped[str | None] = mapped_column(String(64))
    seller: Mapped[str | None] = mapped_column(String(64), index=True)
    receipt: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    total_cents: Mapped[int] = mapped_column(Integer)
    points_earned: Mapped[int] = mapped_column(Integer, default=0)
    # "account": paid on the customer's account (server.accounts), to be paid later; None:
    # paid at the till
    payment: Mapped[str | None] = mapped_column(String(16))
    # the reports read a range of dates across all customers (server/reports)
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PurchaseLine(Base):
    __tablename__ = "purchase_lines"
    # the sellers report counts the rewards used per purchase: the few lines that used one
    __table_args__ = (Index("ix_purchase_lines_redeemed", "purchase_id", "redemption_id",
                            postgresql_where=text("redemption_id IS NOT NULL"),
                            sqlite_where=text("redemption_id IS NOT NULL")),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    quantity_milli: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)
    discount_cents: Mapped[int] = mapped_column(Integer, default=0)
    net_cents: Mapped[int] = mapped_column(Integer)
    redemption_id: Mapped[int | None] = mapped_column(ForeignKey("redemptions.id"))
    points_earned: Mapped[int] = mapped_column(Integer, default=0)
    # why the line earned what it did, in words ("Shoes count double x2", "discounted ...")
    reasons: Mapped[list | None] = mapped_column(JSON)
    # what returns have taken back so far: a partial return never reverses twice
    refunded_milli: Mapped[int] = mapped_column(Integer, default=0)
    points_reversed: Mapped[int] = mapped_column(Integer, default=0)


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    amount_cents: Mapped[int] = mapped_column(Integer)
    points_reversed: Mapped[int] = mapped_column(Integer)
    points_restored: Mapped[int] = mapped_column(Integer, default=0)
    shortfall: Mapped[int] = mapped_column(Integer, default=0)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RefundLine(Base):
    __tablename__ = "refund_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    refund_id: Mapped[int] = mapped_column(ForeignKey("refunds.id"), index=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("purchase_lines.id"), index=True)
    quantity_milli: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(Integer)
    points_reversed: Mapped[int] = mapped_column(Integer)


class Redemption(Base):
    __tablename__ = "redemptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    reward_code: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    points: Mapped[int] = mapped_column(Integer)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    confirmed_by_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | restored
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PointsEntry(Base):
    """One line of the append-only ledger; the balance is the sum of ``delta``.

    ``kind``: earn (purchase line), visit, redeem, refund (earned points taken back),
    restore (a reward's points given back), expire, adjust (staff, with a reason), import
    (opening balance from another system), welcome (the programme's bonus on joining).
    """

    __tablename__ = "points_ledger"
    __table_args__ = (Index("ix_points_ledger_customer_at", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    delta: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    redemption_id: Mapped[int | None] = mapped_column(ForeignKey("redemptions.id"))
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visits.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    # a staff adjustment or an import is idempotent on this id too
    event_id: Mapped[str | None] = mapped_column(String(64), unique=True)


class ImportedCustomer(Base):
    """A customer brought over from another system, by that system's id (imports run twice)."""

    __tablename__ = "imported_customers"

    source_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), unique=True)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
