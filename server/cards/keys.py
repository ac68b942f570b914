"""Card token keys, by key id, from the key file (created on first use).

File format (JSON, mode 0600, outside both databases)::

    {"current": 1, "keys": {"1": "<64 hex>"}, "retired": []}

New cards use ``current``; every key id in ``keys`` and not in ``retired`` still verifies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from server.secrets_file import load_or_create_json


@dataclass(frozen=True)
class CardKeyring:
    """The card keys a server verifies with, and the one it signs new cards with."""

    current: int
    keys: dict[int, bytes]

    def signing_key(self) -> tuple[int, bytes]:
        return self.current, self.keys[self.current]


def _new_file() -> dict:
    return {"current": 1, "keys": {"1": secrets.token_hex(32)}, "retired": []}


def load_keyring(path: str) -> CardKeyring:
    """Read (or create) the card key file at ``path``.

    Raises:
        ValueError: the file is inconsistent (current key missing or retired, bad key id).
    """
    data = load_or_create_json(path, _new_file)
    retired = {int(k) for k in data.get("retired", [])}
    keys = {int(k): bytes.fromhex(v) for k, v in data["keys"].items() if int(k) not in retired}
    current = int(data["current"])
    if any(not 0 <= k <= 15 for k in keys):
        raise ValueError(f"{path}: card key ids are 0..15")
    if current not in keys:
        raise ValueError(f"{path}: the current card key {current} is missing or retired")
    return CardKeyring(current=current, keys=keys)
