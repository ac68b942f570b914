"""Sales the tills make without a card, as daily totals: what the share of sales to card
holders needs (the purchases the loyalty service records are all card holders')."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
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
