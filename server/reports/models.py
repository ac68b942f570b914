"""Sales the tills make without a card, as daily totals: what the share of sales to card
holders needs (the purchases the loyalty service records are all card holders')."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class AnonymousSales(Base):
    """One till's sales without a card on one local day, for one seller: the last report
    replaces the earlier ones (a till sends its running totals, and again after a restart)."""

    __tablename__ = "anonymous_sales"
    __table_args__ = (UniqueConstraint("device_id", "day", "seller"),
                      CheckConstraint("baskets >= 0 AND total_cents >= 0",
                                      name="not_negative"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    # "" when the till names no seller: a NULL would escape the unique constraint
    seller: Mapped[str] = mapped_column(String(64), default="")
    baskets: Mapped[int] = mapped_column(Integer)
    total_cents: Mapped[int] = mapped_column(Integer)  # net of that day's anonymous returns
    currency: Mapped[str] = mapped_column(String(3))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SalesDayState(Base):
    """The zone ``sales_days`` is built in (one row, PostgreSQL only; none on SQLite, where the
    reports read the purchases). A report uses ``sales_days`` only when it matches the
    programme's zone; ``flask reports rebuild`` rebuilds it after the zone changes."""

    __tablename__ = "sales_days_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zone: Mapped[str] = mapped_column(String(64))
    rebuilt_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SalesDay(Base):
    """Net sales of one SKU in one store on one local day: lines sold less what refunds took
    back from them (in the sale's day, as the reports count them). Written only by the
    database's triggers (migration 0017), in the transaction of each purchase or refund line."""

    __tablename__ = "sales_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(64))
    lines: Mapped[int] = mapped_column(Integer)  # the row goes when its last line does
    quantity_milli: Mapped[int] = mapped_column(BigInteger)
    net_cents: Mapped[int] = mapped_column(BigInteger)


class SalesMonth(Base):
    """``sales_days`` by local month (the sum of its day rows), kept by triggers on
    ``sales_days`` (migration 0018): the best sellers of whole months read it."""

    __tablename__ = "sales_months"

    month: Mapped[date] = mapped_column(Date, primary_key=True)  # the first day
    store_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(64))
    lines: Mapped[int] = mapped_column(Integer)
    quantity_milli: Mapped[int] = mapped_column(BigInteger)
    net_cents: Mapped[int] = mapped_column(BigInteger)


class CustomerDay(Base):
    """One customer's purchases in one store from one seller ("" when the till named none) on
    one local day: baskets and their total less what refunds took back (in the purchase's
    day). Written only by the database's triggers (migration 0018), like ``sales_days``."""

    __tablename__ = "customer_days"
    __table_args__ = (Index("ix_customer_days_customer_day", "customer_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller: Mapped[str] = mapped_column(String(64), primary_key=True)
    baskets: Mapped[int] = mapped_column(Integer)  # the row goes with its last purchase
    net_cents: Mapped[int] = mapped_column(BigInteger)


class CategoryDay(Base):
    """A customer bought ``lines`` lines of a category on a local day (refunds do not count:
    a segment asks who bought). Lines without a category are not kept. Triggers only."""

    __tablename__ = "category_days"

    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    lines: Mapped[int] = mapped_column(Integer)


class VisitDay(Base):
    """One visit as the visits report counts it (a customer at a store on a local day) and
    its taps. Written only by the database's triggers on ``visits`` (migration 0018)."""

    __tablename__ = "visit_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    taps: Mapped[int] = mapped_column(Integer)


class VisitMonth(Base):
    """``visit_days`` by local month: the visits (days) and taps of a customer at a store,
    kept by triggers on ``visit_days`` (migration 0018). In key order, a month's customers
    per store are counted as they are read."""

    __tablename__ = "visit_months"

    month: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    taps: Mapped[int] = mapped_column(Integer)
