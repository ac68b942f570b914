"""A Type 2 tag (NTAG213) behind a PC/SC reader, as vpcd presents it.

Contactless readers such as the ACR122U read Type 2 memory with the pseudo-APDU
``FF B0 00 <page> 10`` (16 bytes: four pages) and write a page with ``FF D6 00 <page> 04
<4 bytes>``. The tag has no NDEF application, so the Type 4 ``SELECT`` fails and a reader
must fall back to pages: page 3 is the capability container (``E1 10 12 00`` on an NTAG213),
TLVs start at page 4.
"""

from __future__ import annotations

from tests.support.vcard import NOT_FOUND, OK, VirtualCard

PAGES = 45  # NTAG213: 180 bytes, 144 of them user memory (pages 4..39)
NTAG215_PAGES = 135  # 496 bytes of user memory (pages 4..127)
NTAG215_CC = bytes.fromhex("E1103E00")
END_OF_MEMORY = b"\x63\x00"
WRITE_FAILED = b"\x63\x00"  # what an ACR122U answers when the tag NAKs a WRITE


def ntag213_memory(
    uid: bytes, tlvs: bytes, cc: bytes = bytes.fromhex("E1101200"), *, pages: int = PAGES
) -> bytes:
    """The 180 bytes of an NTAG213 (or ``pages`` * 4 of another NTAG) holding ``tlvs``."""
    head = uid[:3] + b"\x88" + uid[3:7] + b"\x00\x48\x00\x00"  # UID, BCCs (unused here), lock
    memory = bytearray(head[:12] + cc + tlvs)
    if len(memory) > pages * 4:
        raise ValueError("the TLVs do not fit an NTAG213")
    return bytes(memory + bytes(pages * 4 - len(memory)))


def ntag215_memory(uid: bytes, tlvs: bytes) -> bytes:
    """The 540 bytes of an NTAG215 holding ``tlvs`` from page 4."""
    return ntag213_memory(uid, tlvs, NTAG215_CC, pages=NTAG215_PAGES)


def ndef_tlvs(message: bytes, *, lock_tlv: bool = False) -> bytes:
    """An NDEF TLV (1- or 3-byte length) and the terminator, optionally after a lock TLV."""
    length = (bytes([len(message)]) if len(message) < 0xFF
              else b"\xff" + len(message).to_bytes(2, "big"))
    lock = bytes.fromhex("0103A00C34") if lock_tlv else b""
    return lock + b"\x03" + length + message + b"\xfe"


class Type2Card(VirtualCard):
    """``FF CA`` answers the UID, ``FF B0`` reads pages, ``FF D6`` writes one, Type 4 refused.

    Writes follow the NTAG21x rules the card writer relies on: pages 0-1 (serial number) are
    not writable; page 2 bytes 2-3 (static lock bytes) and page 3 (capability container) are
    OR-ed (one-time programmable); a page locked by a static lock bit (pages 3-15) refuses.
    ``read_only=True``: every write is refused (``63 00``), as by a locked tag. Dynamic lock
    bytes are stored, not enforced. ``writes`` lists the pages written, in order.
    """

    def __init__(self, uid: bytes, memory: bytes, *, read_only: bool = False, **kwargs) -> None:
        super().__init__(uid, None, **kwargs)
        self.memory = bytearray(memory)
        self.read_only = read_only
        self.writes: list[int] = []

    def page(self, page: int) -> bytes:
        """The 4 bytes of ``page`` now."""
        return bytes(self.memory[page * 4 : page * 4 + 4])

    def _locked(self, page: int) -> bool:
        lock0, lock1 = self.memory[10], self.memory[11]
        if page == 3:
            return bool(lock0 & 0x08)
        if 4 <= page <= 7:
            return bool(lock0 & (0x10 << (page - 4)))
        if 8 <= page <= 15:
            return bool(lock1 & (0x01 << (page - 8)))
        return False

    def _write(self, page: int, data: bytes) -> bytes:
        start = page * 4
        if self.read_only or page < 2 or start + 4 > len(self.memory) or self._locked(page):
            return WRITE_FAILED
        self.writes.append(page)
        if page == 2:
            self.memory[10] |= data[2]
            self.memory[11] |= data[3]
        elif page == 3:
            for i in range(4):
                self.memory[12 + i] |= data[i]
        else:
            self.memory[start : start + 4] = data
        return OK

    def _process(self, apdu: bytes) -> bytes:
        cla, ins, p1, p2 = apdu[:4]
        if (cla, ins, p1) == (0xFF, 0xB0, 0x00):
            start = p2 * 4
            if start >= len(self.memory):
                return END_OF_MEMORY
            chunk = self.memory[start : start + 16]
            return bytes(chunk) + bytes(16 - len(chunk)) + OK
        if (cla, ins, p1) == (0xFF, 0xD6, 0x00):
            if len(apdu) != 9 or apdu[4] != 4:
                return b"\x67\x00"
            return self._write(p2, bytes(apdu[5:9]))
        if (cla, ins) == (0x00, 0xA4):
            return NOT_FOUND
        return super()._process(apdu)
