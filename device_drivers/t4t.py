"""NFC Forum Type 4 tags, independent of the reader stack: the NDEF application's APDUs and
the capability container. Shared by the ``pcsc:`` and ``nfcpy:`` drivers (this module imports
no hardware library)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from device_drivers.base import ReaderError

SELECT_NDEF_APP = bytes.fromhex("00A4040007D276000085010100")
SELECT_CC = bytes.fromhex("00A4000C02E103")
CC_FILE = bytes.fromhex("E103")
SW_OK = 0x9000
_RESERVED_FILE_IDS = {0x0000, 0xE102, 0xE103, 0x3F00, 0x3FFF, 0xFFFF}


@dataclass(frozen=True)
class CapabilityContainer:
    """The parts of a Type 4 tag's capability container that a reader needs."""

    mle: int  # the largest R-APDU data the tag sends (READ BINARY chunk size)
    ndef_file_id: int
    ndef_max_size: int  # size of the NDEF file, NLEN included
    read_access: int


def parse_cc(cc: bytes) -> CapabilityContainer:
    """Parse the first 15 bytes of a Type 4 tag's capability container (mapping 1.0/2.0).

    Args:
        cc: the bytes READ BINARY returned for file E103.

    Returns:
        The maximum R-APDU size and the NDEF file control TLV.

    Raises:
        ReaderError: the container is short, of an unknown version or malformed.
    """
    if len(cc) < 15:
        raise ReaderError(f"malformed capability container: {len(cc)} bytes, need 15")
    cclen, mle = int.from_bytes(cc[0:2], "big"), int.from_bytes(cc[3:5], "big")
    if cclen < 15:
        raise ReaderError(f"malformed capability container: CCLEN {cclen} < 15")
    if cc[2] >> 4 not in (1, 2):
        raise ReaderError(f"unsupported Type 4 tag mapping version {cc[2] >> 4}.{cc[2] & 15}")
    if mle < 1:
        raise ReaderError("malformed capability container: maximum R-APDU size 0")
    if cc[7:9] != b"\x04\x06":
        raise ReaderError("malformed capability container: no NDEF file control TLV (04 06)")
    file_id = int.from_bytes(cc[9:11], "big")
    max_size = int.from_bytes(cc[11:13], "big")
    if file_id in _RESERVED_FILE_IDS:
        raise ReaderError(f"malformed capability container: reserved NDEF file id {file_id:04X}")
    if max_size < 2:
        raise ReaderError(f"malformed capability container: NDEF file size {max_size}")
    return CapabilityContainer(mle, file_id, max_size, cc[13])


def read_ndef_file(select: Callable[[bytes, str], int],
                   read_binary: Callable[[int, int, str], bytes]) -> bytes | None:
    """The NDEF message of a Type 4 tag whose NDEF application is selected; ``None`` if empty.

    Args:
        select: ``select(file_id, what) -> status word`` (SELECT by file id, ``00 A4 00 0C``).
        read_binary: ``read_binary(offset, length, what) -> data``, raising ``ReaderError``
            on a status other than 9000 or no data.

    Raises:
        ReaderError: no capability container, read-protected or malformed file.
    """
    sw = select(CC_FILE, "selecting the capability container")
    if sw != SW_OK:
        raise ReaderError(f"NDEF application without a capability container (status {sw:04X})")
    cc = parse_cc(read_binary(0, 15, "reading the capability container"))
    if cc.read_access != 0x00:
        raise ReaderError(f"the NDEF file is read-protected (access {cc.read_access:02X})")
    sw = select(cc.ndef_file_id.to_bytes(2, "big"), "selecting the NDEF file")
    if sw != SW_OK:
        raise ReaderError(f"NDEF file {cc.ndef_file_id:04X} cannot be selected (status {sw:04X})")
    nlen_bytes = read_binary(0, 2, "reading the NDEF length")
    if len(nlen_bytes) != 2:
        raise ReaderError("reading the NDEF length: the tag returned 1 byte")
    nlen = int.from_bytes(nlen_bytes, "big")
    if nlen == 0:
        return None
    if nlen > cc.ndef_max_size - 2:
        raise ReaderError(
            f"NDEF length {nlen} is beyond the NDEF file ({cc.ndef_max_size - 2} bytes at most)"
        )
    chunk = min(cc.mle, 0xFF)
    message = b""
    while len(message) < nlen:
        message += read_binary(2 + len(message), min(chunk, nlen - len(message)),
                               "reading the NDEF message")
    return message
