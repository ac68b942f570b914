"""A staff member: argon2 password hash, one role."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
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
