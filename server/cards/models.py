"""A loyalty card: random 64-bit id, kind, generation, status; flags raised on a card."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

KINDS = ("qr", "nfc")
REASONS = ("lost", "stolen", "damaged", "other")
# statuses: active; pending (an NFC card issued, not yet written and read back); revoked
# (replaced, blocked, erased); void (a pending card whose write was given up).
# LIVE cards are those a key rotation or an erasure must still take care of.
LIVE = ("active", "pending")


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
    # an NTAG 424 DNA card (docs/CARDS-424.md): accepted at a till only through a verified
    # SUN URL; sun_counter is the last read counter accepted, which must grow at every tap
    sun: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sun_counter: Mapped[int | None] = mapped_column(Integer)


class CardFlag(Base):
    """Something seen on a card that staff should know of, e.g. a replayed SUN URL.

    On the customer's file (shown in the tap record's ``flags`` while the card is active);
    no personal data: ids, a kind and a small technical detail.
    """

    __tablename__ = "card_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"))
    kind: Mapped[str] = mapped_column(String(32))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    # the tap that raised it: a till retrying the same tap flags once
    event_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    detail: Mapped[dict | None] = mapped_column(JSON)
