"""One customer's personal data: ciphertext under their own data key, plus blind indexes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import UTCDateTime, VaultBase, utcnow


class VaultRecord(VaultBase):
    __tablename__ = "vault_records"

    customer_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    master_key_id: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)  # nonce + AES-GCM(data key)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # nonce + AES-GCM(JSON)
    email_index: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_index: Mapped[str | None] = mapped_column(String(64), index=True)
    # the normalised last name, and "first last" (server.vault.crypto.normalise_name): an
    # exact name search at the desk without a readable name in the database
    last_name_index: Mapped[str | None] = mapped_column(String(64), index=True)
    full_name_index: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
