"""A customer as the main database knows them: a neutral id, no personal data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (CheckConstraint("points >= 0", name="points_not_negative"),)

    # random, e.g. C-7F3K-9Q2M; never derived from personal data
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    language: Mapped[str] = mapped_column(String(2))
    home_store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    enrolled_by_device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    enrol_event_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    tier: Mapped[str] = mapped_column(String(32), default="member")
    # a tier goes up at once but down only at this date (server.loyalty.programme)
    tier_review_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the balance: the sum of the points ledger, kept in the same transaction as every
    # ledger entry by a conditional UPDATE, so that it can never go below zero
    points: Mapped[int] = mapped_column(Integer, default=0)
    # points a return took back that had already been spent; paid from future earnings
    points_debt: Mapped[int] = mapped_column(Integer, default=0)
    last_counted_visit_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # an optional PIN for the step-up of large redemptions: argon2, locked after 5 misses
    pin_hash: Mapped[str | None] = mapped_column(String(255))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # coarse profile for segmentation, kept only with the profiling consent
    sex: Mapped[str | None] = mapped_column(String(8))
    age_band: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # set by erasure: the personal data is destroyed, this pseudonymous row stays
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the retention job told the customer their account will close for inactivity
    retention_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SurveyResponse(Base):
    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    answers: Mapped[dict] = mapped_column(JSON)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
