"""Writing and reading personal data in the vault. Callers audit the reads they make."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.db import on_main_failure
from server.vault.crypto import VaultKeys, blind_index, decrypt_record, encrypt_record
from server.vault.models import VaultRecord


def vault_keys() -> VaultKeys:
    """The app's vault keys, read once per process from the key file."""
    keys = current_app.extensions.get("loyalty.vault_keys")
    if keys is None:
        keys = VaultKeys.load(current_app.config["VAULT_KEY_FILE"])
        current_app.extensions["loyalty.vault_keys"] = keys
    return keys


def store_personal_data(session: Session, customer_id: str, data: dict) -> None:
    """Encrypt and add one customer's personal data; undone if the main database fails."""
    keys = vault_keys()
    kid, wrapped, ciphertext = encrypt_record(keys, customer_id, data)
    session.add(VaultRecord(
        customer_id=customer_id,
        master_key_id=kid,
        wrapped_key=wrapped,
        ciphertext=ciphertext,
        email_index=blind_index(keys, "email", data["email"]) if data.get("email") else None,
        phone_index=blind_index(keys, "phone", data["phone"]) if data.get("phone") else None,
    ))
    session.flush()
    on_main_failure(lambda s: s.execute(
        delete(VaultRecord).where(VaultRecord.customer_id == customer_id)))


def read_personal_data(session: Session, customer_id: str) -> dict | None:
    """Decrypt one customer's personal data, or ``None`` if there is none (erased)."""
    row = session.execute(
        select(VaultRecord.master_key_id, VaultRecord.wrapped_key, VaultRecord.ciphertext)
        .where(VaultRecord.customer_id == customer_id)
    ).first()
    if row is None:
        return None
    return decrypt_record(vault_keys(), customer_id, row[0], row[1], row[2])


def display_name(data: dict | None) -> str:
    """First name and the initial of the last name: all a till is shown."""
    if not data:
        return ""
    first = data.get("first_name", "").strip()
    last = data.get("last_name", "").strip()
    return f"{first} {last[0]}." if last else first
