"""Writing and reading personal data in the vault. Callers audit the reads they make."""

from __future__ import annotations

import dataclasses

from flask import current_app
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from server.db import on_main_failure, utcnow
from server.hotsql import Prepared
from server.secrets_file import KeyMap, WatchedFile
from server.vault.crypto import (
    VaultKeys,
    blind_index,
    decrypt_record,
    encrypt_record,
    normalise_email,
    normalise_name,
    normalise_phone,
)
from server.vault.models import VaultRecord


def vault_keys() -> VaultKeys:
    """The app's vault keys, re-read when the key file changes (docs/KEYS.md).

    The file is checked at most once per ``KEY_FILE_CHECK_INTERVAL`` seconds (default 1);
    a row under a master key id this process lacks makes it look at once (a stat, and
    a forced re-read at most once per interval): the key was added a moment ago.
    """
    interval = float(current_app.config.get("KEY_FILE_CHECK_INTERVAL", 1.0))
    watched = current_app.extensions.get("loyalty.vault_keys")
    if watched is None:
        def load(path: str) -> VaultKeys:
            keys = VaultKeys.load(path)
            return dataclasses.replace(keys, master=KeyMap(
                keys.master, lambda key_id: watched.refresh().master.known(key_id)))

        watched = WatchedFile(current_app.config["VAULT_KEY_FILE"], load, interval)
        current_app.extensions["loyalty.vault_keys"] = watched
    watched.interval = interval
    return watched.get()


def index_columns(keys: VaultKeys, data: dict, country: str) -> dict:
    """The blind indexes of one record: email, phone, last name and "first last"."""
    first = (data.get("first_name") or "").strip()
    last = (data.get("last_name") or "").strip()
    return {
        "email_index": blind_index(keys, "email", data["email"]) if data.get("email") else None,
        "phone_index": (blind_index(keys, "phone", data["phone"], country)
                        if data.get("phone") else None),
        "last_name_index": blind_index(keys, "last_name", last) if last else None,
        "full_name_index": (blind_index(keys, "full_name", f"{first} {last}")
                            if first and last else None),
    }


INDEXES = ("email_index", "phone_index", "last_name_index", "full_name_index")


def normalised(data: dict, country: str) -> dict:
    """``data`` with the email in lower case and the phone in E.164 (+33..., +370...)."""
    out = dict(data)
    if out.get("email"):
        out["email"] = normalise_email(out["email"])
    if out.get("phone"):
        out["phone"] = normalise_phone(out["phone"], country)
    return out


def store_personal_data(session: Session, customer_id: str, data: dict,
                        country: str = "FR") -> None:
    """Encrypt and add one customer's personal data; undone if the main database fails.

    ``country`` is the store's: how a phone number without +33/+370 is read.
    """
    keys = vault_keys()
    data = normalised(data, country)
    kid, wrapped, ciphertext = encrypt_record(keys, customer_id, data)
    session.add(VaultRecord(customer_id=customer_id, master_key_id=kid, wrapped_key=wrapped,
                            ciphertext=ciphertext, **index_columns(keys, data, country)))
    session.flush()
    on_main_failure(lambda s: s.execute(
        delete(VaultRecord).where(VaultRecord.customer_id == customer_id)))


def rewrite_personal_data(session: Session, customer_id: str, data: dict,
                          country: str = "FR") -> None:
    """Replace a customer's personal data (rectification): new data key, new indexes.

    Raises:
        LookupError: the customer has no personal data (erased).
    """
    keys = vault_keys()
    data = normalised(data, country)
    kid, wrapped, ciphertext = encrypt_record(keys, customer_id, data)
    done = session.execute(
        update(VaultRecord).where(VaultRecord.customer_id == customer_id)
        .values(master_key_id=kid, wrapped_key=wrapped, ciphertext=ciphertext,
                updated_at=utcnow(), **index_columns(keys, data, country)))
    if done.rowcount != 1:
        raise LookupError(customer_id)


def destroy_personal_data(session: Session, customer_id: str) -> bool:
    """Delete the row: ciphertext, wrapped data key and blind indexes (crypto-shredding).

    Returns whether there was a row.
    """
    done = session.execute(delete(VaultRecord).where(VaultRecord.customer_id == customer_id))
    return done.rowcount > 0


def find_customers(session: Session, *, email: str | None = None, phone: str | None = None,
                   name: str | None = None, country: str = "FR",
                   limit: int | None = None) -> list[str]:
    """Customer ids whose email, phone or name is exactly this one (after normalisation).

    A name is the last name alone or "first last", compared case- and accent-blind
    (``normalise_name``): never a partial match, the vault holds no readable name.
    """
    keys = vault_keys()
    query = select(VaultRecord.customer_id)
    if email:
        query = query.where(VaultRecord.email_index == blind_index(keys, "email", email))
    if phone:
        query = query.where(VaultRecord.phone_index == blind_index(keys, "phone", phone, country))
    if name and normalise_name(name):
        query = query.where(or_(
            VaultRecord.last_name_index == blind_index(keys, "last_name", name),
            VaultRecord.full_name_index == blind_index(keys, "full_name", name)))
    elif not email and not phone:
        return []
    query = query.order_by(VaultRecord.customer_id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def reindex(session: Session, countries: dict[str, str], default: str) -> tuple[int, int]:
    """Recompute every blind index (``flask privacy reindex``); ``(rows, rows changed)``.

    ``countries`` maps customer ids to their home store's country (how phones are read).
    """
    keys = vault_keys()
    rows = session.execute(select(VaultRecord.customer_id,
                                  *(getattr(VaultRecord, c) for c in INDEXES))).all()
    changed = 0
    for row in rows:
        data = read_personal_data(session, row.customer_id)
        if data is None:
            continue
        columns = index_columns(keys, data, countries.get(row.customer_id, default))
        if any(getattr(row, c) != columns[c] for c in INDEXES):
            session.execute(update(VaultRecord).where(VaultRecord.customer_id == row.customer_id)
                            .values(**columns))
            changed += 1
    return len(rows), changed


# read on every tap (the display name): compiled once, see server/hotsql.py
_RECORD = Prepared(
    select(VaultRecord.master_key_id, VaultRecord.wrapped_key, VaultRecord.ciphertext)
    .where(VaultRecord.customer_id == bindparam("customer_id")))


def read_personal_data(session: Session, customer_id: str) -> dict | None:
    """Decrypt one customer's personal data, or ``None`` if there is none (erased)."""
    row = _RECORD.first(session, customer_id=customer_id)
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
