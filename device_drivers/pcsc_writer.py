"""``pcsc:`` card writer: the card URL on NTAG21x (Type 2) and Type 4 tags through pcscd.

| capability | |
|---|---|
| Type 4 tags | NDEF file by ``UPDATE BINARY`` (NFC Forum Type 4 Tag, mapping 2.0) |
| Type 2 tags (NTAG213/215/216) | the reader's ``FF D6 00 <page> 04`` page write (ACR122U...) |
| read-back | every write is read back and compared byte for byte |
| permanent lock | NTAG213/215/216 only, off by default (below); Type 4 refuses ``lock=True`` |
| hardware | a PC/SC reader and a running ``pcscd`` (``pyscard`` in the virtualenv) |

The URI is the reader's (``pcsc:``, ``pcsc:ACR122``); the writer waits for cards the way
``PcscReader`` does (``SCardGetStatusChange``, one presentation handled once) and uses its
helpers. A presentation that was written successfully is not written again; after a failure
the card still on the reader is written again by the next ``write`` (try again).

**A card in use is not touched.** With ``keep``, the card's current message is read before
anything is written (Type 4: NLEN and the NDEF file, right after the capability container;
Type 2: the NDEF TLV from page 4, right after the header) and ``CardWriter.check_in_use``
refuses it (``CardInUse``) when it holds another of the shop's card URLs. That comes before
the read-only and size checks: a customer's locked card is "in use", not "read-only".

**Order of the writes, so that an interrupted write leaves an empty message, never half of
one.** Type 4 (NFC Forum T4T 2.0 §5.4.2): ``NLEN = 0``, then the message in chunks of at most
MLc bytes from offset 2, then the real NLEN. Type 2 (T2T 1.0 §2.4): page 4 becomes
``03 00 FE 00`` (an NDEF TLV of length 0 and the terminator), then pages 5 on get the rest of
the TLV, then page 4 its real bytes (tag, length, the first message bytes). The NDEF TLV
starts at page 4: whatever TLVs were there (an NTAG's lock control TLV) are overwritten,
which NTAG21x readers do not need.

**Permanent lock (``lock=True``), NTAG213/215/216 only** - the bits nfcpy's
``NTAG21x.protect()`` sets, in its order, after the read-back:

1. page 3 (capability container) byte 3 := ``0F`` (write access: none). Page 3 is one-time
   programmable: bits are OR-ed.
2. page 2 bytes 2-3 (static lock bytes) := ``FF FF``: pages 3 to 15 locked, and their
   block-lock bits. Bytes 0-1 (serial number check byte, internal) are written back as read.
3. dynamic lock bytes := ``FF FF FF`` (byte 3, RFUI, ``00``): pages 16 to the end of user
   memory, and their block-lock bits. Page 40 (0x28) on an NTAG213, 130 (0x82) on an NTAG215,
   226 (0xE2) on an NTAG216.
4. the CFGLCK bit (0x40) of the ACCESS byte (byte 0 of page 42 / 132 / 228): the
   configuration pages cannot be changed any more (no password can be set later). The other
   bytes of that page are written back as read.

Then pages 2-3 are read again: the lock holds when byte 3 of the CC is ``0F`` and the static
lock bytes are ``FF FF``. None of these can ever be undone. The card is identified as an
NTAG213/215/216 by the data area size in its CC (``12``, ``3E``, ``6D``), which is what an
ACR122U lets one see; another Type 2 tag is refused for locking before anything is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from smartcard.scard import (
    SCARD_LEAVE_CARD,
    SCARD_PCI_T0,
    SCARD_PCI_T1,
    SCARD_PROTOCOL_T0,
    SCARD_PROTOCOL_T1,
    SCARD_S_SUCCESS,
    SCARD_SHARE_SHARED,
    SCardConnect,
    SCardDisconnect,
    SCardGetErrorMessage,
    SCardTransmit,
)

from device_drivers.base import (
    CardReadOnly,
    CardTooSmall,
    CardWriter,
    NoCard,
    ReadBackMismatch,
    ReaderError,
    WriteError,
    WriteInterrupted,
    WriterUnavailable,
    WrittenCard,
)
from device_drivers.ndefmsg import uri_message
from device_drivers.pcsc import GET_UID, SW_OK, PcscReader
from device_drivers.t4t import SELECT_CC, SELECT_NDEF_APP, CapabilityContainer, parse_cc

log = logging.getLogger(__name__)

READ_CC = bytes.fromhex("00B000000F")
# status words of a write the card refuses because it may not be written
_READ_ONLY_SW = {0x6982, 0x6985, 0x6A81}
_NO_SPACE_SW = {0x6A84, 0x6B00}
EMPTY_TYPE2_PAGE4 = bytes.fromhex("0300FE00")  # an NDEF TLV of length 0, then the terminator


@dataclass(frozen=True)
class NtagLayout:
    """Where an NTAG21x keeps its dynamic lock bytes and configuration, by CC data size."""

    model: str
    dynamic_lock_page: int
    access_page: int  # CFG1: ACCESS is byte 0


NTAG_BY_CC_SIZE = {
    0x12: NtagLayout("NTAG213", 0x28, 0x2A),
    0x3E: NtagLayout("NTAG215", 0x82, 0x84),
    0x6D: NtagLayout("NTAG216", 0xE2, 0xE4),
}


@dataclass(frozen=True)
class _Keep:
    """The URL being written and the prefix of the shop's cards, refused on a card in use."""

    url: str
    prefix: str | None

    def check(self, current: bytes) -> None:
        CardWriter.check_in_use(current, self.url, self.prefix)


def type2_tlv(message: bytes) -> bytes:
    """The NDEF message TLV of ``message`` (1- or 3-byte length), without the terminator."""
    if len(message) < 0xFF:
        return bytes([0x03, len(message)]) + message
    return b"\x03\xff" + len(message).to_bytes(2, "big") + message


class _Session:
    """One connection to the card on the reader; transport failures mean it left."""

    def __init__(self, card: int, pci: object, name: str) -> None:
        self.card, self.pci, self.name = card, pci, name

    def transmit(self, apdu: bytes, what: str) -> tuple[bytes, int]:
        hresult, response = SCardTransmit(self.card, self.pci, list(apdu))
        if hresult != SCARD_S_SUCCESS:
            raise WriteInterrupted(
                f"{what} failed: {SCardGetErrorMessage(hresult)} (card removed?)"
            )
        if len(response) < 2:
            raise WriteInterrupted(f"{what}: the card's answer has no status word (removed?)")
        return bytes(response[:-2]), response[-2] << 8 | response[-1]

    def command(self, apdu: bytes, what: str) -> bytes:
        """Send ``apdu``; its data, or a ``WriteError`` by the status word."""
        data, sw = self.transmit(apdu, what)
        if sw == SW_OK:
            return data
        if sw in _READ_ONLY_SW:
            raise CardReadOnly(f"{what}: the card refused it (status {sw:04X}): read-only")
        if sw in _NO_SPACE_SW:
            raise CardTooSmall(f"{what}: the card has no room (status {sw:04X})")
        raise WriteError(f"{what}: status {sw:04X}")


class PcscWriter(CardWriter):
    """Writes card URLs through a PC/SC reader chosen by (part of) its name.

    Args:
        uri: ``pcsc:`` or ``pcsc:NAME``, as for ``PcscReader``.
    """

    def __init__(self, uri: str = "pcsc:") -> None:
        self.uri = uri
        self._reader = PcscReader(uri)  # waiting for cards, finding the reader again

    @property
    def name(self) -> str | None:
        """The PC/SC name of the reader in use, set by ``open()``."""
        return self._reader.name

    # -- public API ------------------------------------------------------------------------

    def open(self) -> None:
        """Connect to pcscd and pick the reader.

        Raises:
            WriterUnavailable: pcscd does not answer, or no reader present matches the URI.
        """
        try:
            self._reader.open()
        except ReaderError as exc:
            raise WriterUnavailable(str(exc)) from exc

    def close(self) -> None:
        """Release the PC/SC context; safe to call twice."""
        self._reader.close()

    def write(self, url: str, *, timeout: float, lock: bool = False,
              keep: str | None = None) -> WrittenCard:
        """Wait for a card and write ``url`` on it; see ``CardWriter.write``.

        Raises:
            NoCard: no card within ``timeout``.
            CardInUse: the card holds another URL starting with ``keep``; nothing was written.
            CardTooSmall: the NDEF file or data area cannot hold the message.
            CardReadOnly: the CC says read-only, lock bits are set, or the card refused.
            WriteInterrupted: the card left (or stopped answering) during the write; it holds
                an empty NDEF message (or, if it left before the first write, its old one).
            ReadBackMismatch: the card reads back other bytes than were written.
            WriterUnavailable: the reader is not open, gone, or pcscd failed.
            WriteError: anything else (not NDEF-formatted, garbage, lock not supported).
        """
        reader = self._reader
        if not reader._open:
            raise WriterUnavailable(f"PC/SC writer {self.uri!r} is not open")
        message = uri_message(url)
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            if reader._context is None:  # lost with pcscd on an earlier call
                reader._context = reader._establish()
            name = reader._current_reader()
            count = reader._wait_for_card(name, deadline)
        except ReaderError as exc:
            raise WriterUnavailable(str(exc)) from exc
        if count is None:
            raise NoCard(f"no card on {name!r} within {timeout:g} s")
        written = self._write_card(name, message, lock, _Keep(url, keep))
        reader._handled, reader._empty_since = count, False  # written once per presentation
        return written

    # -- one card ----------------------------------------------------------------------------

    def _write_card(self, name: str, message: bytes, lock: bool, keep: _Keep) -> WrittenCard:
        hresult, card, protocol = SCardConnect(
            self._reader._context, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1
        )
        if hresult != SCARD_S_SUCCESS:
            raise WriteInterrupted(
                f"connecting to the card on {name!r} failed: {SCardGetErrorMessage(hresult)} "
                "(removed too soon?)"
            )
        pci = SCARD_PCI_T1 if protocol == SCARD_PROTOCOL_T1 else SCARD_PCI_T0
        session = _Session(card, pci, name)
        uid = "?"
        try:
            uid = self._read_uid(session)
            _, sw = session.transmit(SELECT_NDEF_APP, "selecting the NDEF application")
            if sw == SW_OK:
                written = _write_type4(session, uid, message, lock, keep)
            else:
                log.debug("no NDEF application (status %04X): writing Type 2 pages", sw)
                written = _write_type2(session, uid, message, lock, keep)
        except ReaderError as exc:  # parse_cc: a malformed capability container
            log.warning("card %s on %r: %s", uid, name, exc)
            raise WriteError(str(exc)) from exc
        except WriteError as exc:
            log.warning("card %s on %r not written (%s): %s", uid, name, exc.reason, exc)
            raise
        finally:
            hresult = SCardDisconnect(card, SCARD_LEAVE_CARD)
            if hresult != SCARD_S_SUCCESS:
                log.debug("SCardDisconnect: %s", SCardGetErrorMessage(hresult))
        log.info("card %s on %r written (%s, %d bytes%s)", uid, name, written.kind,
                 len(message), ", locked" if written.locked else "")
        return written

    @staticmethod
    def _read_uid(session: _Session) -> str:
        data, sw = session.transmit(GET_UID, "reading the card UID")
        if sw != SW_OK:
            raise WriteError(f"the reader refused the card UID (status {sw:04X})")
        if not 1 <= len(data) <= 10:
            raise WriteError(f"card UID of {len(data)} bytes is not a UID")
        return data.hex().upper()


# -- Type 4 ----------------------------------------------------------------------------------


def _update_binary(session: _Session, offset: int, data: bytes, what: str) -> None:
    apdu = bytes([0x00, 0xD6, offset >> 8, offset & 0xFF, len(data)]) + data
    session.command(apdu, what)


def _read_binary(session: _Session, offset: int, length: int, what: str) -> bytes:
    data = session.command(bytes([0x00, 0xB0, offset >> 8, offset & 0xFF, length & 0xFF]), what)
    if not data:
        raise WriteError(f"{what}: the tag returned no data")
    return data[:length]


def _write_type4(session: _Session, uid: str, message: bytes, lock: bool,
                 keep: _Keep) -> WrittenCard:
    """SELECT CC, the NDEF file, refuse a card in use, check the CC, NLEN 0, the message,
    NLEN; read back."""
    if lock:
        raise WriteError(
            "a permanent lock is not supported on Type 4 tags: write without lock", "failed"
        )
    _, sw = session.transmit(SELECT_CC, "selecting the capability container")
    if sw != SW_OK:
        raise WriteError(f"NDEF application without a capability container (status {sw:04X})")
    raw = _read_binary(session, 0, 15, "reading the capability container")
    cc = parse_cc(raw)
    mlc, write_access = int.from_bytes(raw[5:7], "big"), raw[14]
    capacity = cc.ndef_max_size - 2
    select = bytes([0x00, 0xA4, 0x00, 0x0C, 0x02]) + cc.ndef_file_id.to_bytes(2, "big")
    _, sw = session.transmit(select, "selecting the NDEF file")
    if sw != SW_OK:
        raise WriteError(f"NDEF file {cc.ndef_file_id:04X} cannot be selected (status {sw:04X})")
    if keep.prefix:
        keep.check(_type4_current(session, cc))
    if write_access != 0x00:
        raise CardReadOnly(f"the NDEF file is read-only (write access {write_access:02X})")
    if mlc < 1:
        raise WriteError("malformed capability container: maximum C-APDU size 0")
    if len(message) > capacity or 2 + len(message) > 0x8000:
        raise CardTooSmall(
            f"the message takes {len(message)} bytes; the card's NDEF file holds {capacity}"
        )

    _update_binary(session, 0, b"\x00\x00", "emptying the NDEF file (NLEN 0)")
    chunk = min(mlc, 0xFF)
    for start in range(0, len(message), chunk):
        _update_binary(session, 2 + start, message[start : start + chunk],
                       "writing the NDEF message")
    _update_binary(session, 0, len(message).to_bytes(2, "big"), "writing the NDEF length")

    back_len = int.from_bytes(_read_binary(session, 0, 2, "reading back the NDEF length"), "big")
    if back_len != len(message):
        raise ReadBackMismatch(f"NDEF length reads back {back_len}, {len(message)} written")
    back, read_chunk = b"", min(cc.mle, 0xFF)
    while len(back) < len(message):
        back += _read_binary(session, 2 + len(back), min(read_chunk, len(message) - len(back)),
                             "reading back the NDEF message")
    if back != message:
        raise ReadBackMismatch(_first_difference(back, message))
    return WrittenCard(uid=uid, kind="type4", capacity=capacity, locked=False)


def _type4_current(session: _Session, cc: CapabilityContainer) -> bytes:
    """The message now in the selected NDEF file; empty if NLEN is 0 or not a length."""
    if cc.read_access != 0x00:
        return b""  # no reader can read it: not a working card
    nlen = int.from_bytes(_read_binary(session, 0, 2, "reading the current NDEF length"), "big")
    if not 0 < nlen <= cc.ndef_max_size - 2:
        return b""
    current, chunk = b"", min(cc.mle, 0xFF)
    while len(current) < nlen:
        current += _read_binary(session, 2 + len(current), min(chunk, nlen - len(current)),
                                "reading the current NDEF message")
    return current


def _first_difference(back: bytes, written: bytes) -> str:
    differing = (i for i, (a, b) in enumerate(zip(back, written, strict=False)) if a != b)
    at = next(differing, min(len(back), len(written)))
    return f"the message reads back other bytes from byte {at} on than were written"


# -- Type 2 (NTAG21x) through the reader's page commands -------------------------------------


def _read4(session: _Session, page: int, what: str) -> bytes:
    """16 bytes (4 pages) from ``page`` with ``FF B0``."""
    data = session.command(bytes([0xFF, 0xB0, 0x00, page & 0xFF, 0x10]), what)
    if len(data) < 16:
        raise WriteError(f"{what}: the tag returned {len(data)} bytes, not 16")
    return data[:16]


def _write_page(session: _Session, page: int, data: bytes, what: str) -> None:
    session.command(bytes([0xFF, 0xD6, 0x00, page, 0x04]) + data, f"{what} (page {page})")


def _write_type2(session: _Session, uid: str, message: bytes, lock: bool,
                 keep: _Keep) -> WrittenCard:
    """Refuse a card in use; check CC and lock bytes, TLV length 0, the data, the real length;
    read back; lock."""
    data, sw = session.transmit(bytes.fromhex("FFB0000010"), "reading the Type 2 header")
    if sw != SW_OK or len(data) < 16:
        raise WriteError(f"not a Type 2 tag this reader can write (page read status {sw:04X})")
    static_lock, cc = data[10:12], data[12:16]
    if cc[0] != 0xE1:
        raise WriteError("the Type 2 tag is not NDEF-formatted (no capability container)")
    if cc[1] >> 4 != 1:
        raise WriteError(f"unsupported Type 2 tag mapping version {cc[1] >> 4}.{cc[1] & 15}")
    capacity = cc[2] * 8
    if keep.prefix and not cc[3] & 0xF0:  # a read-protected tag is no one's working card
        keep.check(_type2_current(session, capacity))
    if cc[3] & 0x0F:
        raise CardReadOnly(f"the Type 2 tag is read-only (CC write access {cc[3]:02X})")
    if static_lock[0] & 0xF0 or static_lock[1]:  # pages 4..15
        raise CardReadOnly(f"the Type 2 tag's pages are locked (lock bytes {static_lock.hex()})")
    layout = NTAG_BY_CC_SIZE.get(cc[2])
    if lock and layout is None:
        raise WriteError(
            f"a permanent lock is supported on NTAG213/215/216 only (CC size {cc[2]:02X})"
        )
    if layout is not None:
        dynamic = _read4(session, layout.dynamic_lock_page, "reading the dynamic lock bytes")
        if dynamic[0] or dynamic[1]:
            raise CardReadOnly(
                f"the {layout.model}'s pages are locked (dynamic lock bytes {dynamic[:3].hex()})"
            )
    tlv = type2_tlv(message)
    if len(tlv) > capacity:
        raise CardTooSmall(
            f"the message takes {len(message)} bytes; the card holds {capacity - 2}"
            + (f" ({layout.model})" if layout else "")
        )
    image = tlv + (b"\xfe" if len(tlv) < capacity else b"")
    image += bytes(-len(image) % 4)
    pages = [image[i : i + 4] for i in range(0, len(image), 4)]

    try:
        _write_page(session, 4, EMPTY_TYPE2_PAGE4, "emptying the NDEF TLV (length 0)")
    except WriteError as exc:
        if type(exc) is WriteError:  # a refused first write: the tag may not be written
            raise CardReadOnly(f"the Type 2 tag refused to be written: {exc}") from exc
        raise
    try:
        for index, page_data in enumerate(pages[1:], start=5):
            _write_page(session, index, page_data, "writing the NDEF message")
        _write_page(session, 4, pages[0], "writing the NDEF TLV length")
    except WriteError as exc:
        if type(exc) is WriteError:  # refused half way: the tag left or failed
            raise WriteInterrupted(f"{exc}: the card left or failed half way") from exc
        raise

    back = b""
    while len(back) < len(image):
        back += _read4(session, 4 + len(back) // 4, "reading back the NDEF TLV")
    if back[: len(image)] != image:
        raise ReadBackMismatch(_first_difference(back, image))
    locked = False
    if lock:
        assert layout is not None
        _lock_ntag(session, layout, data[8:10], cc)
        locked = True
    return WrittenCard(uid=uid, kind="type2", capacity=capacity, locked=locked)


def _type2_current(session: _Session, area: int) -> bytes:
    """The message of the first NDEF TLV from page 4; empty if none, length 0 or broken."""
    data = bytearray()

    def have(n: int) -> bool:
        while len(data) < n:
            if len(data) >= area:
                return False
            data.extend(_read4(session, 4 + len(data) // 4, "reading the current NDEF TLV"))
        return True

    pos = 0
    while have(pos + 1):
        tag = data[pos]
        if tag == 0x00:  # NULL TLV
            pos += 1
            continue
        if tag == 0xFE or not have(pos + 2):  # the terminator: no NDEF message
            return b""
        length, start = data[pos + 1], pos + 2
        if length == 0xFF:
            if not have(pos + 4):
                return b""
            length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        if tag == 0x03:
            if start + length > area or not have(start + length):
                return b""  # runs past the data area: no reader takes it for a card
            return bytes(data[start : start + length])
        pos = start + length  # lock/memory control or proprietary TLV: skip it
    return b""


def _lock_ntag(session: _Session, layout: NtagLayout, page2_head: bytes, cc: bytes) -> None:
    """Set the lock bits listed in the module docstring, in that order, and check them."""
    what = f"locking the {layout.model}"
    _write_page(session, 3, cc[:3] + b"\x0f", f"{what}: CC write access")
    _write_page(session, 2, page2_head + b"\xff\xff", f"{what}: static lock bytes")
    _write_page(session, layout.dynamic_lock_page, b"\xff\xff\xff\x00",
                f"{what}: dynamic lock bytes")
    access = _read4(session, layout.access_page, f"{what}: reading ACCESS")[:4]
    if not access[0] & 0x40:
        _write_page(session, layout.access_page, bytes([access[0] | 0x40]) + access[1:],
                    f"{what}: CFGLCK")
    check = _read4(session, 0, f"{what}: reading the lock bytes back")
    if check[10:12] != b"\xff\xff" or check[15] != 0x0F:
        raise WriteError(f"{what}: the lock bits did not hold (page 2-3: {check[8:16].hex()})")
