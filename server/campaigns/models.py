"""Campaigns, their send log, and the birthdays (month-day only) of consenting customers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

CHANNELS = ("email", "sms")
# a one-off campaign has no trigger; the others are sent by ``flask campaigns triggers``
TRIGGERS = ("welcome", "birthday", "points_expiring", "no_visit")
STATUSES = ("queued", "sending", "sent", "failed", "skipped")


class Campaign(Base):
    """One message (a template per language) for a channel, to a target or on a trigger."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("channel IN ('email', 'sms')", name="channel"),
        CheckConstraint("status IN ('draft', 'queued', 'active', 'paused')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(8))
    # draft → queued (one-off, messages in the send log); triggered: active or paused
    status: Mapped[str] = mapped_column(String(8), default="draft")
    trigger: Mapped[str | None] = mapped_column(String(20))
    # the trigger's N: days before points expire, days without a visit, days after enrolment
    trigger_days: Mapped[int | None] = mapped_column(Integer)
    # {language: {"subject", "text", "html"}} (email) or {language: {"text"}} (SMS)
    templates: Mapped[dict] = mapped_column(JSON)
    # the saved segment it was sent to (no FK: segments arrive on another branch) and the
    # definition as it was when queued, so the log says who was meant even if the segment changes
    segment_id: Mapped[int | None] = mapped_column(Integer)
    segment_definition: Mapped[dict | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CampaignMessage(Base):
    """The send log: one row per (campaign, customer, channel, trigger key), so a re-run or a
    crash never sends twice; ``trigger_key`` (``birthday:2026``) lets a trigger send again
    on a later occasion."""

    __tablename__ = "campaign_messages"
    __table_args__ = (
        UniqueConstraint("campaign_id", "customer_id", "channel", "trigger_key",
                         name="uq_campaign_messages_once"),
        CheckConstraint("status IN ('queued', 'sending', 'sent', 'failed', 'skipped')",
                        name="status"),
        Index("ix_campaign_messages_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    trigger_key: Mapped[str] = mapped_column(String(40), default="")
    status: Mapped[str] = mapped_column(String(8), default="queued")
    # why skipped or failed, in words (never the address or number)
    reason: Mapped[str | None] = mapped_column(String(200))
    # a failed message the next run tries again (a gateway's 5xx, a connection refused)
    retry: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SendPace(Base):
    """The next free sending slot of a channel (Unix time, seconds), shared by every process
    and node: a sender takes the slot and moves it on by one interval in one conditional
    UPDATE, so the rate holds however many senders run (``service.Pace``)."""

    __tablename__ = "send_pace"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float)


class BirthdayDay(Base):
    """The month and day of birth ("MM-DD", no year) of a customer who consents to marketing
    by email or SMS, copied from the vault by the triggers job so that the daily birthday
    query needs no decryption; removed as soon as neither consent holds (or on erasure).
    ``month_day`` is None when the vault has no birth date (looked once, not again)."""

    __tablename__ = "campaign_birthdays"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    month_day: Mapped[str | None] = mapped_column(String(5), index=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
