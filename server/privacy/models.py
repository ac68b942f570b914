"""Consent ledger and audit log (append-only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

PURPOSES = ("terms", "marketing_email", "marketing_sms", "profiling")


class Consent(Base):
    """One decision: a purpose given or withdrawn, where, and the text version shown."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    text_version: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEntry(Base):
    """Who read or changed personal data of which customer, and why."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(16), index=True)
    detail: Mapped[dict | None] = mapped_column(JSON)
