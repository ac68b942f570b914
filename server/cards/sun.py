"""NTAG 424 DNA Secure Unique NFC messages (CARDS.md section 2, NXP AN12196), AES mode.

At every read the card mirrors into its URL the PICC data (UID and read counter, encrypted
with K_SDMMetaRead), optionally encrypted file data, and a MAC made with session keys
derived from K_SDMFileRead, the UID and the counter:

    https://shop.example/c/sun?picc_data=<32 hex>&enc=<32 hex>&cmac=<16 hex>

:func:`verify` checks one such URL and returns the UID, the counter and the file data.
Replay checking (the counter must grow) is the caller's job: it needs the database.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

MAX_URL = 512
UID_LENGTH = 7
PICC_TAG = 0xC0 | UID_LENGTH  # UID mirrored (bit 7), counter mirrored (bit 6), UID length 7
SV_ENC = bytes.fromhex("C33C00010080")  # session vector 1: the file data encryption key
SV_MAC = bytes.fromhex("3CC300010080")  # session vector 2: the MAC key
_HEX = re.compile(r"[0-9A-Fa-f]*")
ZERO_IV = bytes(16)

MacInput = Literal["auto", "empty", "picc", "enc"] | int


class InvalidSun(ValueError):  # noqa: N818 - the name is the published API (CARDS.md)
    """The URL is not a valid SUN message. ``code`` is the stable problem type."""

    code = "sun-invalid"


class MalformedSun(InvalidSun):
    """A parameter is missing, repeated, not hex, or of the wrong length."""

    code = "sun-malformed"


class LrpUnsupported(InvalidSun):
    """24 bytes of PICC data: the card runs in LRP mode, which this server does not verify."""

    code = "sun-lrp-unsupported"


class ForgedSun(InvalidSun):
    """The PICC data or the MAC does not verify: altered, or made without our keys."""

    code = "sun-forged"


@dataclass(frozen=True)
class SunResult:
    """What a verified SUN message says: the card's UID, its read counter, its file data."""

    uid: bytes
    counter: int
    file_data: bytes | None


@dataclass(frozen=True)
class SunParams:
    """The query parameter names a shop's URL template uses, each with its accepted aliases."""

    picc: tuple[str, ...] = ("picc_data", "e", "p")
    enc: tuple[str, ...] = ("enc",)
    cmac: tuple[str, ...] = ("cmac", "c")

    @classmethod
    def from_config(cls, picc: str | list[str] | None = None, enc: str | list[str] | None = None,
                    cmac: str | list[str] | None = None) -> SunParams:
        """Names from configuration: a comma-separated text or a list; ``None``: default."""
        def names(value, default: tuple[str, ...]) -> tuple[str, ...]:
            if value is None:
                return default
            items = value.split(",") if isinstance(value, str) else list(value)
            found = tuple(n.strip() for n in items if n.strip())
            if not found:
                raise ValueError("a SUN parameter needs at least one name")
            return found

        made = cls(names(picc, cls.picc), names(enc, cls.enc), names(cmac, cls.cmac))
        every = made.picc + made.enc + made.cmac
        if len(set(every)) != len(every):
            raise ValueError(f"SUN parameter names overlap: {', '.join(every)}")
        return made


DEFAULT_PARAMS = SunParams()


# --------------------------------------------------------------------------- AES primitives


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _cbc_decrypt(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def _ecb_encrypt(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block: an IV
    return enc.update(block) + enc.finalize()


def session_keys(file_read_key: bytes, uid: bytes, counter: int) -> tuple[bytes, bytes]:
    """``(MAC key, encryption key)`` of one read: AES-CMAC of SV2 / SV1 under K_SDMFileRead.

    SV = 6 fixed bytes, the UID, the counter (3 bytes, least significant first), zero-padded
    to 16 bytes (exactly 16 with a 7-byte UID).
    """
    tail = uid + counter.to_bytes(3, "little")
    pad = bytes(max(0, 16 - len(SV_MAC) - len(tail)))
    return (_cmac(file_read_key, SV_MAC + tail + pad), _cmac(file_read_key, SV_ENC + tail + pad))


def truncated_mac(mac_key: bytes, mac_input: bytes) -> bytes:
    """The 8-byte SDM MAC: AES-CMAC, bytes 1, 3, 5, ... 15."""
    return _cmac(mac_key, mac_input)[1::2]


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Field:
    name: str
    value: str
    start: int  # index of the value's first character in the URL text


def query_fields(url: str) -> list[_Field]:
    """The query's name=value pairs with where each value starts in ``url``."""
    query_at = url.find("?")
    start = 0 if query_at < 0 else query_at + 1
    end = url.find("#", start)
    end = len(url) if end < 0 else end
    fields, pos = [], start
    for part in url[start:end].split("&"):
        name, eq, value = part.partition("=")
        if eq:
            fields.append(_Field(name, value, pos + len(name) + 1))
        pos += len(part) + 1
    return fields


def _one(fields: list[_Field], names: tuple[str, ...], what: str,
         required: bool = True) -> _Field | None:
    found = [f for f in fields if f.name in names]
    if len(found) > 1:
        raise MalformedSun(f"the {what} is given more than once "
                           f"({', '.join(f.name for f in found)})")
    if not found:
        if required:
            raise MalformedSun(f"the {what} is missing (parameter {' or '.join(names)})")
        return None
    return found[0]


def _hex(field: _Field, what: str) -> bytes:
    if not _HEX.fullmatch(field.value) or len(field.value) % 2:
        raise MalformedSun(f"the {what} ({field.name}) is not hexadecimal")
    return bytes.fromhex(field.value)


def is_sun(url: str, params: SunParams = DEFAULT_PARAMS) -> bool:
    """Whether ``url`` carries a SUN parameter (cheap: no crypto; a card token URL is not)."""
    if "?" not in url and "=" not in url:
        return False
    return any(f.name in params.picc for f in query_fields(url))


def decrypt_picc(meta_read_key: bytes, picc: bytes) -> tuple[bytes, int]:
    """``(UID, counter)`` from 16 bytes of encrypted PICC data.

    Raises:
        ForgedSun: the plaintext does not start with the tag byte of a mirrored 7-byte UID and
            counter: the data was altered, or encrypted under another K_SDMMetaRead.
    """
    plain = _cbc_decrypt(meta_read_key, picc)
    if plain[0] != PICC_TAG:
        raise ForgedSun("the PICC data does not decrypt to a UID and a read counter "
                        "(altered, or another K_SDMMetaRead)")
    return plain[1:8], int.from_bytes(plain[8:11], "little")


def _mac_input(url: str, mode: MacInput, picc: _Field, enc: _Field | None,
               mac: _Field) -> bytes:
    if isinstance(mode, int) and not isinstance(mode, bool):
        start = mode
    elif mode == "empty" or (mode == "auto" and enc is None):
        return b""
    elif mode in ("auto", "enc"):
        if enc is None:
            raise MalformedSun("the encrypted file data is missing (the MAC input starts there)")
        start = enc.start
    elif mode == "picc":
        start = picc.start
    else:
        raise ValueError(f"mac_input must be auto, empty, picc, enc or an offset, not {mode!r}")
    if not 0 <= start <= mac.start:
        raise MalformedSun("the MAC must come after the start of the MAC input")
    return url[start:mac.start].encode("ascii", "replace")


def verify(url: str, meta_read_key: bytes, file_read_key: bytes | Callable[[bytes], bytes], *,
           mac_input: MacInput = "auto", params: SunParams = DEFAULT_PARAMS) -> SunResult:
    """Verify a SUN URL (or its bare query) and return what the card said.

    Args:
        url: the URL as read from the card, e.g. ``https://shop.example/c/sun?e=..&c=..``.
        meta_read_key: K_SDMMetaRead (16 bytes), shared by the shop's cards.
        file_read_key: K_SDMFileRead (16 bytes), or a function of the UID returning it (a
            key diversified per card).
        mac_input: where the MAC input starts. ``"auto"``: at the encrypted file data when
            there is some (``<enc>&cmac=``), else empty; ``"empty"``; ``"picc"`` / ``"enc"``:
            at that parameter's value; an ``int``: that index in ``url``. It ends just
            before the MAC's value.
        params: the parameter names to look for (defaults: ``picc_data``/``e``/``p``,
            ``enc``, ``cmac``/``c``).

    Returns:
        ``SunResult(uid, counter, file_data)``; ``file_data`` is ``None`` without ``enc``.

    Raises:
        MalformedSun, LrpUnsupported, ForgedSun: all ``InvalidSun``.
    """
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise MalformedSun("a SUN URL is a short text")
    if not url.isascii():
        raise MalformedSun("a SUN URL is ASCII text")
    fields = query_fields(url)
    picc_f = _one(fields, params.picc, "PICC data")
    mac_f = _one(fields, params.cmac, "MAC")
    enc_f = _one(fields, params.enc, "encrypted file data", required=False)
    picc = _hex(picc_f, "PICC data")
    if len(picc) == 24:
        raise LrpUnsupported("24 bytes of PICC data: the card is in LRP mode, which is not "
                             "supported; configure the card's SDM in AES mode")
    if len(picc) != 16:
        raise MalformedSun(f"the PICC data is 16 bytes (32 hex digits), not {len(picc)}")
    mac = _hex(mac_f, "MAC")
    if len(mac) != 8:
        raise MalformedSun(f"the MAC is 8 bytes (16 hex digits), not {len(mac)}")
    enc = None
    if enc_f is not None:
        enc = _hex(enc_f, "encrypted file data")
        if not enc or len(enc) % 16:
            raise MalformedSun("the encrypted file data is a whole number of 16-byte blocks")
    message = _mac_input(url, mac_input, picc_f, enc_f, mac_f)

    uid, counter = decrypt_picc(meta_read_key, picc)
    key = file_read_key(uid) if callable(file_read_key) else file_read_key
    mac_key, enc_key = session_keys(key, uid, counter)
    if not hmac.compare_digest(truncated_mac(mac_key, message), mac):
        raise ForgedSun("the SUN MAC does not match")
    file_data = None
    if enc is not None:
        iv = _ecb_encrypt(enc_key, counter.to_bytes(3, "little") + bytes(13))
        file_data = _cbc_decrypt(enc_key, enc, iv)
    return SunResult(uid=uid, counter=counter, file_data=file_data)
