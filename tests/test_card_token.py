"""The signed card token of CARDS.md section 1: the test vector and every failure class."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from server.cards import token

KEY = bytes(range(32))
CARD_ID = bytes.fromhex("8f3a5c2e91d04b77")
VECTOR = "CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
KEYS = {1: KEY}
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _raw_token(head: bytes, key: bytes) -> str:
    """A token built by hand from CARDS.md, independent of ``token.encode``."""
    tag = hmac.new(key, b"loyalty-card-token/v1" + head, hashlib.sha256).digest()[:10]
    return base64.b32encode(head + tag).decode()


def test_vector_is_reproduced():
    assert token.encode(1, KEY, CARD_ID, 0) == VECTOR


def test_vector_matches_the_written_layout():
    raw = base64.b32decode(VECTOR)
    assert len(VECTOR) == 32 and len(raw) == 20
    assert raw[0] == 0x11 and raw[1:9] == CARD_ID and raw[9] == 0
    assert _raw_token(raw[:10], KEY) == VECTOR


@pytest.mark.parametrize("text", [
    VECTOR,
    VECTOR.lower(),
    f"https://shop.example/c/{VECTOR}",
    f"HTTPS://SHOP.EXAMPLE/C/{VECTOR}",
    f"  https://shop.example/c/{VECTOR}\n",
], ids=["bare", "lower", "url", "qr-upper-url", "whitespace"])
def test_decode_accepts_token_and_url(text):
    assert token.decode(text, KEYS) == (1, CARD_ID, 0)


def test_generation_and_key_id_round_trip():
    other = bytes(range(100, 132))
    tok = token.encode(15, other, CARD_ID, 255)
    assert token.decode(tok, {15: other, 1: KEY}) == (15, CARD_ID, 255)


@pytest.mark.parametrize("position", range(32))
def test_any_changed_character_fails(position):
    original = VECTOR[position]
    for replacement in (B32[(B32.index(original) + 1) % 32], B32[(B32.index(original) + 17) % 32]):
        altered = VECTOR[:position] + replacement + VECTOR[position + 1:]
        assert altered != VECTOR
        with pytest.raises(token.InvalidToken):
            token.decode(altered, KEYS)


@pytest.mark.parametrize("text", [
    "", "ABC", VECTOR[:-1], VECTOR + "A", VECTOR[:-1] + "1", VECTOR[:-1] + "=",
    VECTOR[:-1] + "É", "https://shop.example/c/", "not a token at all", "X" * 600,
])
def test_malformed(text):
    with pytest.raises(token.MalformedToken) as info:
        token.decode(text, KEYS)
    assert info.value.code == "card-token-malformed"


def test_malformed_non_string():
    with pytest.raises(token.MalformedToken):
        token.decode(None, KEYS)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 2, 15])
def test_unsupported_version(version):
    head = bytes([(version << 4) | 1]) + CARD_ID + b"\x00"
    with pytest.raises(token.UnsupportedVersion) as info:
        token.decode(_raw_token(head, KEY), KEYS)
    assert info.value.code == "card-token-version"
    assert not isinstance(info.value, token.ForgedToken)


def test_unknown_key():
    tok = token.encode(7, KEY, CARD_ID, 0)
    with pytest.raises(token.UnknownKey) as info:
        token.decode(tok, KEYS)
    assert info.value.code == "card-token-unknown-key"


def test_retired_key_is_unknown():
    new = bytes(32)
    ring = {1: KEY, 2: new}
    old_card = token.encode(1, KEY, CARD_ID, 0)
    assert token.decode(old_card, ring) == (1, CARD_ID, 0)  # still verifies before retiring
    retired = {2: new}  # key 1 retired: left out of the keys
    with pytest.raises(token.UnknownKey):
        token.decode(old_card, retired)
    assert token.decode(token.encode(2, new, CARD_ID, 0), retired) == (2, CARD_ID, 0)


def test_forged_with_another_key():
    tok = token.encode(1, bytes(32), CARD_ID, 0)
    with pytest.raises(token.ForgedToken) as info:
        token.decode(tok, KEYS)
    assert info.value.code == "card-token-forged"


def test_forged_changed_generation_keeps_old_tag():
    raw = bytearray(base64.b32decode(VECTOR))
    raw[9] = 1  # a new generation without re-signing
    with pytest.raises(token.ForgedToken):
        token.decode(base64.b32encode(bytes(raw)).decode(), KEYS)


def test_failure_classes_are_distinct_invalid_tokens():
    classes = [token.MalformedToken, token.UnsupportedVersion, token.UnknownKey,
               token.ForgedToken]
    assert all(issubclass(c, token.InvalidToken) for c in classes)
    assert len({c.code for c in classes}) == 4
    for a in classes:
        for b in classes:
            assert a is b or not issubclass(a, b)


@pytest.mark.parametrize("args", [
    (16, KEY, CARD_ID, 0), (-1, KEY, CARD_ID, 0), (1, KEY, CARD_ID[:7], 0),
    (1, KEY, CARD_ID, 256), (1, KEY, CARD_ID, -1),
])
def test_encode_rejects_out_of_range(args):
    with pytest.raises(ValueError):
        token.encode(*args)
