"""A store of the chain; devices and staff belong to one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Store(Base):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    # legacy cards identified by their UID alone (CARDS.md section 3): off unless enabled
    allow_uid_only: Mapped[bool] = mapped_column(Boolean, default=False)
    # ISO 3166 country (FR, LT): how a phone number typed without its +33/+370 is read
    country: Mapped[str] = mapped_column(String(2), default="FR", server_default="FR")
    # free text such as "Vilnius" or "Île-de-France": segments select customers by it
    region: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
