"""A loyalty card: random 64-bit id, kind, generation, status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

KINDS = ("qr", "nfc")
REASONS = ("lost", "stolen", "damaged", "other")


class Card(Base):
    __tablename__ = "cards"

    # 16 hex digits: the 8 random bytes the token carries
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    key_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(String(32))
    nfc_uid: Mapped[str | None] = mapped_column(String(20), index=True)
    issue_event_id: Mapped[str] = mapped_column(String(36), unique=True)
    issued_by_device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    issued_by_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replaced_by: Mapped[str | None] = mapped_column(String(16))
