"""Signed card tokens (CARDS.md section 1): 20 bytes, base32 without padding, 32 characters.

Byte 0 is ``(version << 4) | key_id``; bytes 1..8 the card id; byte 9 the generation; bytes
10..19 the first 10 bytes of ``HMAC-SHA256(key, b"loyalty-card-token/v1" + bytes 0..9)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

VERSION = 1
DOMAIN = b"loyalty-card-token/v1"
TOKEN_LENGTH = 32
_ALPHABET = re.compile(r"[A-Z2-7]{32}")


class InvalidToken(ValueError):  # noqa: N818 - the name is the published API (CARDS.md)
    """The text is not a valid card token. ``code`` is the stable problem type."""

    code = "card-token-invalid"


class MalformedToken(InvalidToken):
    """Wrong length or characters outside the base32 alphabet."""

    code = "card-token-malformed"


class UnsupportedVersion(InvalidToken):
    """A token format this server does not know."""

    code = "card-token-version"


class UnknownKey(InvalidToken):
    """The key id is not configured (or has been retired)."""

    code = "card-token-unknown-key"


class ForgedToken(InvalidToken):
    """The tag does not match: the token was altered or made without our key."""

    code = "card-token-forged"


def _tag(key: bytes, head: bytes) -> bytes:
    return hmac.new(key, DOMAIN + head, hashlib.sha256).digest()[:10]


def encode(key_id: int, key: bytes, card_id: bytes, generation: int) -> str:
    """Return the 32-character token of a card.

    Raises:
        ValueError: an argument is out of range.
    """
    if not 0 <= key_id <= 15:
        raise ValueError("key_id must be 0..15")
    if len(card_id) != 8:
        raise ValueError("card_id must be 8 bytes")
    if not 0 <= generation <= 255:
        raise ValueError("generation must be 0..255")
    head = bytes([(VERSION << 4) | key_id]) + card_id + bytes([generation])
    return base64.b32encode(head + _tag(key, head)).decode("ascii")


def extract(token_or_url: str) -> str:
    """Return the bare upper-case token from a token or a card URL (``.../c/TOKEN``).

    Only ASCII is put in upper case: ``"ſ".upper()`` is ``"S"`` and ``"ı".upper()`` is
    ``"I"``, and a token with such a letter in it is another text, not the same token.
    """
    text = token_or_url.strip()
    if "/" in text:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    text = text.split("?", 1)[0].split("#", 1)[0]
    return text.upper() if text.isascii() else text


def decode(token_or_url: str, keys: dict[int, bytes]) -> tuple[int, bytes, int]:
    """Verify a token (or card URL) and return ``(key_id, card_id, generation)``.

    ``keys`` maps the key ids still accepted to their keys; retired ids are left out.

    Raises:
        MalformedToken, UnsupportedVersion, UnknownKey, ForgedToken: all ``InvalidToken``.
    """
    if not isinstance(token_or_url, str) or len(token_or_url) > 512:
        raise MalformedToken("a card token is a short text")
    token = extract(token_or_url)
    if len(token) != TOKEN_LENGTH or not _ALPHABET.fullmatch(token):
        raise MalformedToken("a card token is 32 characters of A-Z and 2-7")
    raw = base64.b32decode(token)
    version, key_id = raw[0] >> 4, raw[0] & 0x0F
    if version != VERSION:
        raise UnsupportedVersion(f"card token version {version} is not supported")
    key = keys.get(key_id)
    if key is None:
        raise UnknownKey(f"card key {key_id} is unknown or retired")
    if not hmac.compare_digest(raw[10:], _tag(key, raw[:10])):
        raise ForgedToken("card token signature does not match")
    return key_id, raw[1:9], raw[9]
