"""A Type 2 tag (NTAG213) behind a PC/SC reader, as vpcd presents it.

Contactless readers such as the ACR122U read Type 2 memory with the pseudo-APDU
``FF B0 00 <page> 10`` (16 bytes: four pages). The tag has no NDEF application, so the
Type 4 ``SELECT`` fails and a reader must fall back to pages: page 3 is the capability
container (``E1 10 12 00`` on an NTAG213), TLVs start at page 4.
"""

from __future__ import annotations

from tests.support.vcard import NOT_FOUND, OK, VirtualCard

PAGES = 45  # NTAG213: 180 bytes, 144 of them user memory (pages 4..39)
END_OF_MEMORY = b"\x63\x00"


def ntag213_memory(uid: bytes, tlvs: bytes, cc: bytes = bytes.fromhex("E1101200")) -> bytes:
    """The 180 bytes of an NTAG213 holding ``tlvs`` from page 4."""
    head = uid[:3] + b"\x88" + uid[3:7] + b"\x00\x48\x00\x00"  # UID, BCCs (unused here), lock
    memory = bytearray(head[:12] + cc + tlvs)
    if len(memory) > PAGES * 4:
        raise ValueError("the TLVs do not fit an NTAG213")
    return bytes(memory + bytes(PAGES * 4 - len(memory)))


def ndef_tlvs(message: bytes, *, lock_tlv: bool = False) -> bytes:
    """An NDEF TLV (1- or 3-byte length) and the terminator, optionally after a lock TLV."""
    length = (bytes([len(message)]) if len(message) < 0xFF
              else b"\xff" + len(message).to_bytes(2, "big"))
    lock = bytes.fromhex("0103A00C34") if lock_tlv else b""
    return lock + b"\x03" + length + message + b"\xfe"


class Type2Card(VirtualCard):
    """``FF CA`` answers the UID, ``FF B0`` reads pages, everything Type 4 is refused."""

    def __init__(self, uid: bytes, memory: bytes, **kwargs) -> None:
        super().__init__(uid, None, **kwargs)
        self.memory = memory

    def _process(self, apdu: bytes) -> bytes:
        cla, ins, p1, p2 = apdu[:4]
        if (cla, ins, p1) == (0xFF, 0xB0, 0x00):
            start = p2 * 4
            if start >= len(self.memory):
                return END_OF_MEMORY
            chunk = self.memory[start : start + 16]
            return chunk + bytes(16 - len(chunk)) + OK
        if (cla, ins) == (0x00, 0xA4):
            return NOT_FOUND
        return super()._process(apdu)
