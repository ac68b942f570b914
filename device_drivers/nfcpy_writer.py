"""``nfcpy:`` card writer: the card URL on Type 2 (NTAG21x) and Type 4A tags with nfcpy.

| capability | |
|---|---|
| Type 2 tags (NTAG21x, Ultralight) | nfcpy's NDEF write (``tag.ndef.octets``) |
| Type 4A tags | nfcpy's NDEF write |
| read-back | raw reads (Type 2 pages, Type 4 READ BINARY), compared byte for byte |
| permanent lock | NTAG21x only, nfcpy's ``protect()`` without a password; off by default |
| hardware | a reader nfcpy drives (PN53x, ACR122U, RC-S380...), nfcpy in the venv |

The URI is the reader's (``nfcpy:usb``, ``nfcpy:udp:127.0.0.1:PORT``, see
``device_drivers.nfcpy_reader``). nfcpy writes in the NFC Forum order: a Type 2 NDEF TLV gets
length 0, then the data, then its length; a Type 4 NDEF file gets NLEN 0 with the first
chunk, then the rest, then NLEN (or all of it in one UPDATE BINARY when it fits one), so an
interrupted write leaves an empty message. The lock sets the bits listed in
``device_drivers.pcsc_writer`` (CC write access ``0F``, static lock bytes ``FF FF``, dynamic
lock bytes ``FF FF FF``, CFGLCK): ``pcsc:`` does exactly what nfcpy does here.

A card written successfully is not written again while it stays on the reader; after a
failure the card still there is written again by the next ``write`` (try again). With
``keep``, the message nfcpy read when it found the card (``tag.ndef.octets``) is checked by
``CardWriter.check_in_use`` before the read-only and size checks and before any write: a card
holding another of the shop's card URLs is refused (``CardInUse``), untouched.
"""

from __future__ import annotations

import logging
import time
from typing import Any

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
from device_drivers.nfcpy_reader import (
    _GARBAGE,
    CC_FILE,
    NDEF_AID,
    POLL_INTERVAL,
    SW_OK,
    NfcpyReader,
    _apdu,
    _nfc,
    _present,
    _read_binary,
    _reason,
)
from device_drivers.t4t import parse_cc

log = logging.getLogger(__name__)


class NfcpyWriter(CardWriter):
    """Writes card URLs through a reader found by its nfcpy path.

    Args:
        uri: ``nfcpy:PATH``, as for ``NfcpyReader``.

    Raises:
        DriverError: the path is not one nfcpy knows.
    """

    def __init__(self, uri: str = "nfcpy:usb") -> None:
        self.uri = uri
        self._reader = NfcpyReader(uri)  # opening, the sense targets
        self._written: Any = None  # the tag last written, until it leaves

    def open(self) -> None:
        """Open the reader at the URI's path.

        Raises:
            WriterUnavailable: no reader there, or it cannot be opened.
        """
        self._written = None
        try:
            self._reader.open()
        except ReaderError as exc:
            raise WriterUnavailable(str(exc)) from exc

    def close(self) -> None:
        """Release the device; safe to call twice."""
        self._written = None
        self._reader.close()

    def write(self, url: str, *, timeout: float, lock: bool = False,
              keep: str | None = None) -> WrittenCard:
        """Wait for a card and write ``url`` on it; see ``CardWriter.write``.

        Raises:
            NoCard: no card (other than the one last written) within ``timeout``.
            CardInUse: the card holds another URL starting with ``keep``; nothing was written.
            CardTooSmall: the NDEF area cannot hold the message.
            CardReadOnly: the card's NDEF area is not writeable.
            WriteInterrupted: the card stopped answering during the write.
            ReadBackMismatch: the card reads back other bytes than were written.
            WriterUnavailable: the reader is not open, or failed (unplugged?).
            WriteError: anything else (no NDEF on the card, garbage, lock not supported).
        """
        clf = self._reader._clf
        if clf is None:
            raise WriterUnavailable(f"nfcpy writer {self.uri!r} is not open")
        message = uri_message(url)
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            tag = self._wait_for_tag(clf, deadline)
            if tag is None:
                raise NoCard(f"no card on {self.uri} within {timeout:g} s")
            uid = bytes(tag.identifier).hex().upper()
            try:
                written = _write_tag(tag, uid, message, lock, url, keep)
            except WriteError as exc:
                log.warning("card %s on %s not written (%s): %s", uid, self.uri, exc.reason, exc)
                raise
        except OSError as exc:
            raise WriterUnavailable(
                f"nfcpy reader {self._reader.path!r} failed: {_reason(exc)} (unplugged?)"
            ) from exc
        self._written = tag
        log.info("card %s on %s written (%s, %d bytes%s)", uid, self.uri, written.kind,
                 len(message), ", locked" if written.locked else "")
        return written

    def _wait_for_tag(self, clf: Any, deadline: float) -> Any:
        """The next tag activated that is not the one last written; ``None`` at the deadline."""
        nfc = _nfc()
        while self._written is not None and _present(self._written):
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL)
        self._written = None
        while True:
            target = clf.sense(*self._reader._targets(), iterations=1)
            if target is not None:
                try:
                    tag = nfc.tag.activate(clf, target)
                except (nfc.tag.TagCommandError, nfc.clf.CommunicationError, *_GARBAGE) as exc:
                    raise WriteInterrupted(
                        f"the card did not activate ({type(exc).__name__}): removed too soon?"
                    ) from exc
                if tag is not None:
                    return tag
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(POLL_INTERVAL, remaining))


def _write_tag(tag: Any, uid: str, message: bytes, lock: bool, url: str,
               keep: str | None) -> WrittenCard:
    nfc = _nfc()
    from nfc.tag import tt2, tt2_nxp, tt4

    if isinstance(tag, tt2.Type2Tag):
        kind = "type2"
    elif isinstance(tag, tt4.Type4Tag):
        kind = "type4"
    else:
        raise WriteError(f"{tag.type} tags are not written here (Type 2 and Type 4A only)")
    if lock and not isinstance(tag, tt2_nxp.NTAG21x):
        raise WriteError(f"a permanent lock is supported on NTAG21x only, not on {tag}")
    try:
        ndef = tag.ndef
        if ndef is None:
            raise WriteError("the card holds no NDEF area (not NDEF-formatted, or unreadable)")
        if keep:
            CardWriter.check_in_use(bytes(ndef.octets), url, keep)
        if not ndef.is_writeable:
            raise CardReadOnly("the card's NDEF area is read-only")
        capacity = ndef.capacity
        if len(message) > capacity:
            raise CardTooSmall(
                f"the message takes {len(message)} bytes; the card holds {capacity}"
            )
        ndef.octets = message
        back = _type2_message(tag) if kind == "type2" else _type4_message(tag)
        if back != message:
            raise ReadBackMismatch("the message reads back other bytes than were written")
        locked = False
        if lock:
            if not tag.protect():
                raise WriteError("the lock bits could not be set")
            cc = bytes(tag.read(3))[:4]
            if cc[3] != 0x0F:
                raise WriteError(f"the lock did not hold (CC {cc.hex()})")
            locked = True
    except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
        raise WriteInterrupted(f"the card stopped answering ({exc}): removed?") from exc
    except ReaderError as exc:  # the read-back found garbage
        raise ReadBackMismatch(f"reading back: {exc}") from exc
    except _GARBAGE as exc:
        raise WriteError(f"the card answered garbage ({type(exc).__name__})") from exc
    return WrittenCard(uid=uid, kind=kind, capacity=capacity, locked=locked)


def _type2_message(tag: Any) -> bytes:
    """The NDEF message TLV's value, read from the card page by page (no cache)."""
    area = bytes(tag.read(3))[2] * 8
    data = bytearray()

    def need(n: int) -> None:
        while len(data) < n:
            if len(data) >= area:
                raise ReaderError("the NDEF TLV runs past the end of the Type 2 tag")
            data.extend(bytes(tag.read(4 + len(data) // 4)))

    pos = 0
    while True:
        need(pos + 1)
        if data[pos] == 0x00:
            pos += 1
            continue
        if data[pos] == 0xFE:
            return b""
        need(pos + 2)
        length, start = data[pos + 1], pos + 2
        if length == 0xFF:
            need(pos + 4)
            length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        if data[pos] == 0x03:
            need(start + length)
            return bytes(data[start : start + length])
        pos = start + length


def _type4_message(tag: Any) -> bytes:
    """The NDEF file's message, read with SELECT and READ BINARY (no cache)."""
    _, sw = _apdu(tag, 0xA4, 0x04, 0x00, NDEF_AID, le=256)
    if sw != SW_OK:
        raise ReaderError(f"the NDEF application cannot be selected (status {sw:04X})")
    _, sw = _apdu(tag, 0xA4, 0x00, 0x0C, CC_FILE)
    if sw != SW_OK:
        raise ReaderError(f"the capability container cannot be selected (status {sw:04X})")
    cc = parse_cc(_read_binary(tag, 0, 15, "reading back the capability container"))
    _, sw = _apdu(tag, 0xA4, 0x00, 0x0C, cc.ndef_file_id.to_bytes(2, "big"))
    if sw != SW_OK:
        raise ReaderError(f"the NDEF file cannot be selected (status {sw:04X})")
    nlen = int.from_bytes(_read_binary(tag, 0, 2, "reading back the NDEF length"), "big")
    message, chunk = b"", min(cc.mle, 0xFF)
    while len(message) < nlen:
        message += _read_binary(tag, 2 + len(message), min(chunk, nlen - len(message)),
                                "reading back the NDEF message")
    return message
