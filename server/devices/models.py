"""A kiosk or till, known by the SHA-256 of its random key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

ROLES = ("kiosk", "till")


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(120))
    # the key has 256 random bits, so a plain SHA-256 is as strong as a slow hash and costs
    # microseconds on every request (DESIGN.md: no slow hash on the hot path)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # written by the device's heartbeat (POST /api/v1/devices/heartbeat), never on a tap
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # what the device said then: its readers' states, its offline queue
    health: Mapped[dict | None] = mapped_column(JSON)
