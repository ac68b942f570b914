"""Envelope encryption for the vault, and keyed blind indexes.

Each customer's personal data is a JSON document encrypted with AES-256-GCM under that
customer's own random data key; the data key is itself encrypted (wrapped) with the current
master key. Both ciphertexts are bound to the customer id as associated data, so a row
copied onto another customer does not decrypt. The master keys and the blind-index key live
in a key file outside both databases (``vault.key``, created on first use)::

    {"current": 1, "master": {"1": "<64 hex>"}, "index": "<64 hex>"}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass

import phonenumbers
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.secrets_file import load_or_create_json

NONCE = 12


class VaultError(Exception):
    """A vault record cannot be opened (wrong or missing master key, tampered ciphertext)."""


@dataclass(frozen=True)
class VaultKeys:
    current: int
    master: dict[int, bytes]
    index_key: bytes

    @classmethod
    def load(cls, path: str) -> VaultKeys:
        data = load_or_create_json(path, lambda: {
            "current": 1,
            "master": {"1": secrets.token_hex(32)},
            "index": secrets.token_hex(32),
        })
        master = {int(k): bytes.fromhex(v) for k, v in data["master"].items()}
        if int(data["current"]) not in master:
            raise ValueError(f"{path}: the current master key is missing")
        return cls(int(data["current"]), master, bytes.fromhex(data["index"]))


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except InvalidTag as exc:
        raise VaultError("vault record does not decrypt (wrong key or altered)") from exc


def wrap_key(master: bytes, customer_id: str, data_key: bytes) -> bytes:
    """A customer's data key, encrypted under a master key (what ``wrapped_key`` holds)."""
    return _seal(master, data_key, b"wrap:" + customer_id.encode())


def unwrap_key(master: bytes, customer_id: str, wrapped: bytes) -> bytes:
    """The data key back from ``wrap_key``.

    Raises:
        VaultError: wrong master key, another customer's row, or altered bytes.
    """
    return _open(master, wrapped, b"wrap:" + customer_id.encode())


def encrypt_record(keys: VaultKeys, customer_id: str, data: dict) -> tuple[int, bytes, bytes]:
    """Encrypt ``data`` under a new data key. Returns ``(master_key_id, wrapped, ciphertext)``."""
    data_key = AESGCM.generate_key(bit_length=256)
    aad = customer_id.encode()
    plaintext = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    wrapped = wrap_key(keys.master[keys.current], customer_id, data_key)
    return keys.current, wrapped, _seal(data_key, plaintext, b"data:" + aad)


def decrypt_record(keys: VaultKeys, customer_id: str, master_key_id: int,
                   wrapped: bytes, ciphertext: bytes) -> dict:
    """Decrypt one record.

    Raises:
        VaultError: the master key is unknown or the record was altered.
    """
    master = keys.master.get(master_key_id)
    if master is None:
        raise VaultError(f"vault master key {master_key_id} is not configured")
    aad = customer_id.encode()
    data_key = unwrap_key(master, customer_id, wrapped)
    return json.loads(_open(data_key, ciphertext, b"data:" + aad))


def normalise_email(email: str) -> str:
    """Case and surrounding spaces do not matter: ``" Anna@Example.FR "`` is anna@example.fr."""
    return email.strip().lower()


def normalise_phone(phone: str, country: str = "FR") -> str:
    """The E.164 form of a phone number; without a +33/+370 it is read in ``country``.

    ``06 12 34 56 78`` in France and ``+33 6 12 34 56 78`` or ``0033612345678`` anywhere are
    all ``+33612345678``; ``8 612 34567`` (or ``0 612 34567``) in Lithuania is
    ``+37061234567``. Text that is not a possible number keeps its digits (and a leading +),
    so it still finds itself.
    """
    text = phone.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else country.upper())
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return ("+" if text.startswith("+") else "") + re.sub(r"\D", "", text)


def normalise_name(name: str) -> str:
    """A name as the desk may type it: ``" JŪRATĖ  Kazlauskaitė "`` is jurate kazlauskaite.

    Case folded, accents dropped (NFKD, combining marks removed), spaces collapsed; letters
    without a decomposition (ł, ø, ß folded to ss) stay as they are.
    """
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.split())


def blind_index(keys: VaultKeys, kind: str, value: str, country: str = "FR") -> str:
    """A keyed HMAC of a normalised value: exact lookup without storing the value.

    ``kind`` is ``email``, ``phone``, ``last_name`` or ``full_name`` ("first last"); it is
    part of the HMAC input, so equal texts of two kinds never share an index.
    """
    if kind == "email":
        norm = normalise_email(value)
    elif kind == "phone":
        norm = normalise_phone(value, country)
    elif kind in ("last_name", "full_name"):
        norm = normalise_name(value)
    else:
        raise ValueError(f"no blind index of kind {kind!r}")
    return hmac.new(keys.index_key, f"{kind}:{norm}".encode(), hashlib.sha256).hexdigest()
