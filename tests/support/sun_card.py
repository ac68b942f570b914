"""The card side of NTAG 424 DNA Secure Dynamic Messaging (AES mode), for tests.

Written from the datasheet (NT4H2421Gx) and AN12196 independently of ``server.cards.sun``,
so that the two check each other. ``SdmFile`` is the NDEF file of a provisioned card: a
template, the SDM offsets and the card's keys; ``read()`` increments the read counter and
returns the file with the mirrors filled in, as the chip does. ``SunVirtualCard`` puts it in
a Type 4 tag for ``tests.support.vcard``: each selection of the NDEF file followed by a
read is one tap (one counter step), however many READ BINARY chunks the reader uses.

    tag = SdmFile(uid, meta_key, file_key, layout.ndef_file, layout.picc_offset, ...)
    card = VpcdCard(SunVirtualCard(tag))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from device_drivers.ndefmsg import first_uri
from tests.support.vcard import NDEF_FILE, VirtualCard


def _aes_cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def _aes(key: bytes, mode, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), mode).encryptor()
    return e.update(data) + e.finalize()


@dataclass
class SdmFile:
    """An NTAG 424 DNA NDEF file (file 02) with SDM on: UID and counter mirrored as
    encrypted PICC data (SDMMetaRead = a key), a MAC (SDMFileRead = a key), ASCII mirrors.

    Offsets are from the start of the file (its 2-byte NLEN included), as in
    ChangeFileSettings. ``counter`` is the SDMReadCtr before the next read.
    """

    uid: bytes
    meta_read_key: bytes
    file_read_key: bytes
    template: bytes  # the NDEF file as written: NLEN + message, placeholders at the offsets
    picc_offset: int
    mac_input_offset: int
    mac_offset: int
    enc_offset: int | None = None
    enc_length: int | None = None  # ASCII characters (2 per byte), a multiple of 32
    counter: int = 0
    urls: list[str] = field(default_factory=list)  # every URL this card has given

    def __post_init__(self) -> None:
        assert len(self.uid) == 7 and len(self.meta_read_key) == len(self.file_read_key) == 16
        assert self.mac_input_offset <= self.mac_offset
        if self.enc_offset is not None:
            assert self.enc_length and self.enc_length % 32 == 0
            assert self.mac_input_offset <= self.enc_offset
            assert self.enc_offset + self.enc_length <= self.mac_offset

    def read(self) -> bytes:
        """One read of the file: the counter steps, the mirrors are computed."""
        self.counter += 1
        assert self.counter < 1 << 24, "SDMReadCtr overflow"
        ctr = self.counter.to_bytes(3, "little")
        data = bytearray(self.template)
        # PICCDataTag: UID mirrored, counter mirrored, UID length 7; random padding
        plain = bytes([0xC7]) + self.uid + ctr + os.urandom(5)
        picc = _aes(self.meta_read_key, modes.CBC(bytes(16)), plain)
        data[self.picc_offset:self.picc_offset + 32] = picc.hex().upper().encode()
        sv = self.uid + ctr
        mac_key = _aes_cmac(self.file_read_key, bytes.fromhex("3CC300010080") + sv)
        if self.enc_offset is not None and self.enc_length is not None:
            enc_key = _aes_cmac(self.file_read_key, bytes.fromhex("C33C00010080") + sv)
            iv = _aes(enc_key, modes.ECB(), ctr + bytes(13))
            size = self.enc_length // 2
            plain_file = bytes(self.template[self.enc_offset:self.enc_offset + size])
            enc = _aes(enc_key, modes.CBC(iv), plain_file)
            data[self.enc_offset:self.enc_offset + self.enc_length] = enc.hex().upper().encode()
        mac = _aes_cmac(mac_key, bytes(data[self.mac_input_offset:self.mac_offset]))[1::2]
        data[self.mac_offset:self.mac_offset + 16] = mac.hex().upper().encode()
        nlen = int.from_bytes(data[:2], "big")
        self.urls.append(first_uri(bytes(data[2:2 + nlen])))
        return bytes(data)


class SunVirtualCard(VirtualCard):
    """A Type 4 tag whose NDEF file is an ``SdmFile``: a fresh SUN URL at every tap.

    The mirrors are computed at the first READ BINARY after the NDEF file is selected and
    kept for the following chunks, until the next selection or reset.
    """

    def __init__(self, sdm: SdmFile, **kw) -> None:
        self.sdm = sdm
        self._fresh = False
        nlen = int.from_bytes(sdm.template[:2], "big")
        super().__init__(uid=sdm.uid, ndef=sdm.template[2:2 + nlen], **kw)

    def reset(self) -> None:
        super().reset()
        self._fresh = False

    def _process(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\x00\xa4":
            self._fresh = False
        if (apdu[:2] == b"\x00\xb0" and self.current == self.ndef_file == NDEF_FILE
                and not self._fresh):
            self._fresh = True
            content = self.sdm.read()
            self.files[self.ndef_file][:len(content)] = content
        return super()._process(apdu)
