"""NFC Forum Type 2 tags (NTAG21x, MIFARE Ultralight), independent of the reader stack: the
capability container at page 3 and the TLVs from page 4. Used by the ``pcsc:`` driver through
the reader's ``FF B0`` page read (this module imports no hardware library)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from device_drivers.base import ReaderError

log = logging.getLogger(__name__)
CC_MAGIC = 0xE1  # byte 0 of the capability container: NDEF-formatted


def read_ndef_tlv(read_pages: Callable[[int, str], bytes | None]) -> bytes | None:
    """The NDEF message of a Type 2 tag; ``None`` if it has none or is not NDEF-formatted.

    Args:
        read_pages: ``read_pages(page, what) -> 16 bytes`` from ``page`` on (four pages, the
            READ command's answer), or ``None`` if the reader or the tag refuses.

    Returns:
        The bytes of the NDEF message TLV; ``None`` for a tag that is not Type 2, a reader
        that cannot read pages, an empty NDEF TLV or a terminator before any (a UID-only
        card).

    Raises:
        ReaderError: the tag is read-protected, its TLVs run past its data area, or it
            stopped answering in the middle.
    """
    head = read_pages(3, "reading the Type 2 capability container")
    if head is None or len(head) < 16 or head[0] != CC_MAGIC:
        log.debug("not an NDEF-formatted Type 2 tag: UID-only card")
        return None
    if head[3] & 0xF0:
        raise ReaderError(f"the Type 2 tag is read-protected (access {head[3]:02X})")
    area = head[2] * 8  # data area size in bytes, from page 4
    data = bytearray(head[4:16])  # pages 4..6 came with the first read
    page = 7

    def need(n: int) -> None:
        nonlocal page
        if n > area:
            raise ReaderError("the NDEF TLV runs past the end of the Type 2 tag")
        while len(data) < n:
            chunk = read_pages(page, "reading Type 2 pages")
            if chunk is None or len(chunk) < 16:
                raise ReaderError(f"the Type 2 tag refused page {page} (removed?)")
            data.extend(chunk[:16])
            page += 4

    pos = 0
    while True:
        need(pos + 1)
        tag = data[pos]
        if tag == 0x00:  # NULL TLV
            pos += 1
            continue
        if tag == 0xFE:  # terminator before any NDEF message
            return None
        need(pos + 2)
        length, start = data[pos + 1], pos + 2
        if length == 0xFF:
            need(pos + 4)
            length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        if tag == 0x03:
            if length == 0:
                return None
            if start + length > area:
                raise ReaderError(f"NDEF length {length} is beyond the Type 2 tag's area")
            need(start + length)
            return bytes(data[start : start + length])
        pos = start + length  # lock/memory control or proprietary TLV: skip it
