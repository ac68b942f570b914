"""A visit: one tap of a card at a till, written once per event id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Visit(Base):
    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_customer_recorded", "customer_id", "recorded_at"),
                      # clone signals read a card's recent visits on every tap
                      Index("ix_visits_card_recorded", "card_id", "recorded_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    reader: Mapped[str | None] = mapped_column(String(120))
    method: Mapped[str] = mapped_column(String(8))  # url | qr | uid
    weak: Mapped[bool] = mapped_column(Boolean, default=False)
    tapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
