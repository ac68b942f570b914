"""A staff member: argon2 password hash, one role."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

ROLES = ("cashier", "desk", "manager", "admin")
# who may reissue cards (replace lost, stolen or damaged ones)
CARD_ROLES = {"desk", "manager", "admin"}


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # staff mode on a kiosk: a 4-8 digit PIN (argon2) or a staff card's UID (SHA-256)
    pin_hash: Mapped[str | None] = mapped_column(String(255))
    card_uid_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)


class AuthFailure(Base):
    """A failed sign-in, by subject (``user:NAME``, ``device:ID``): counted for lockouts.

    A table, not memory, so that every worker and node sees the same count.
    """

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_subject_at", "subject", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
