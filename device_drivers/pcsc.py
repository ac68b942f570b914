"""``pcsc:`` reader: any PC/SC contactless reader (ACR122U and friends) through pcscd.

| capability | |
|---|---|
| UID | yes: ``FF CA 00 00 00``, upper-case hex |
| NDEF URL | NFC Forum Type 4 tags (NTAG 424 DNA, DESFire with an NDEF application) |
| NDEF URL on Type 2 tags (NTAG21x) | yes: the reader's ``FF B0`` page read (ACR122U, ACR1252...) |
| QR text | no |
| hardware | a PC/SC reader and a running ``pcscd`` (``pyscard`` in the virtualenv) |

``pcsc:`` uses the first reader present; ``pcsc:NAME`` the first whose name contains NAME,
ignoring case (``pcsc:ACR122``, ``pcsc:Virtual PCD 00 00``).

Every card presentation is reported once: PC/SC counts insertions and removals per reader
(the upper 16 bits of the reader's event state) and the reader remembers the count of the
presentation it last handled, so a card left on the reader is not reported again and one put
down between two ``read`` calls is not lost. Waiting is ``SCardGetStatusChange`` with the last
state seen, never a sleep. (pyscard's ``CardRequest(newcardonly=True)`` is not used: it takes
its own snapshot at every call, so a card that lands just before that snapshot counts as "old"
and is reported only after the whole timeout, or never.)
"""

from __future__ import annotations

import logging
import time

from smartcard.scard import (
    SCARD_E_INVALID_HANDLE,
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_E_SERVICE_STOPPED,
    SCARD_E_TIMEOUT,
    SCARD_E_UNKNOWN_READER,
    SCARD_F_COMM_ERROR,
    SCARD_LEAVE_CARD,
    SCARD_PCI_T0,
    SCARD_PCI_T1,
    SCARD_PROTOCOL_T0,
    SCARD_PROTOCOL_T1,
    SCARD_S_SUCCESS,
    SCARD_SCOPE_USER,
    SCARD_SHARE_SHARED,
    SCARD_STATE_CHANGED,
    SCARD_STATE_PRESENT,
    SCARD_STATE_UNAVAILABLE,
    SCARD_STATE_UNAWARE,
    SCARD_STATE_UNKNOWN,
    SCardConnect,
    SCardDisconnect,
    SCardEstablishContext,
    SCardGetErrorMessage,
    SCardGetStatusChange,
    SCardListReaders,
    SCardReleaseContext,
    SCardTransmit,
)

from device_drivers.base import Reader, ReaderError, ReaderUnavailable, Tap
from device_drivers.ndefmsg import first_uri
from device_drivers.t2t import read_ndef_tlv
from device_drivers.t4t import SELECT_NDEF_APP, read_ndef_file

log = logging.getLogger(__name__)

GET_UID = bytes.fromhex("FFCA000000")
SW_OK = 0x9000
_PCSCD_HINT = "is pcscd running? (systemctl start pcscd.socket, or run pcscd -f as root)"
# the PC/SC context died with pcscd (restarted, upgraded): a new context may work
_SERVICE_LOST = {
    SCARD_E_NO_SERVICE,
    SCARD_E_SERVICE_STOPPED,
    SCARD_E_INVALID_HANDLE,
    SCARD_F_COMM_ERROR,
}


def _check(hresult: int, what: str, error: type[ReaderError] = ReaderError) -> None:
    if hresult != SCARD_S_SUCCESS:
        raise error(f"{what} failed: {SCardGetErrorMessage(hresult)}")


class PcscReader(Reader):
    """A PC/SC reader chosen by (part of) its name; see the module docstring.

    Args:
        uri: ``pcsc:`` or ``pcsc:NAME``.
    """

    def __init__(self, uri: str = "pcsc:") -> None:
        self.uri = uri
        self.wanted = uri.partition(":")[2].strip()
        self.name: str | None = None  # the PC/SC name of the reader in use, set by open()
        self._context: int | None = None
        self._open = False
        self._handled: int | None = None  # event count of the presentation last handled
        self._empty_since = True  # the reader was seen without a card since then

    # -- public API ------------------------------------------------------------------------

    def open(self) -> None:
        """Connect to pcscd and pick the reader.

        Raises:
            ReaderError: pcscd does not answer, or no reader present matches the URI (the
                message lists the readers that are present).
        """
        if self._context is None:
            self._context = self._establish()
        try:
            self.name = self._find_reader()
        except ReaderError:
            self.close()
            raise
        self._open = True
        log.info("PC/SC reader %r opened for %s", self.name, self.uri)

    def close(self) -> None:
        """Release the PC/SC context; safe to call twice."""
        self._open = False
        context, self._context = self._context, None
        if context is not None:
            hresult = SCardReleaseContext(context)
            if hresult != SCARD_S_SUCCESS:
                log.debug("SCardReleaseContext: %s", SCardGetErrorMessage(hresult))

    def read(self, timeout: float) -> Tap | None:
        """Wait for a card presentation not reported yet and read it.

        Args:
            timeout: seconds to wait at most for a card.

        Returns:
            ``Tap(reader=<PC/SC reader name>, uid=<hex>, url=<NDEF URL or None>)``, or
            ``None`` when no new card came within ``timeout``. A card without an NDEF
            application (or with an empty NDEF file) gives a UID-only tap. A card already
            on the reader when it was first opened is reported by the first call.

        Raises:
            ReaderError: the reader is closed or gone, pcscd failed, the card was removed
                while being read, or it answered garbage (bad UID status, malformed
                capability container, NDEF length beyond the file, undecodable NDEF). A
                failed presentation is not retried: the next call waits for a new one.
        """
        if not self._open:
            raise ReaderError(f"PC/SC reader {self.uri!r} is not open")
        if self._context is None:  # lost with pcscd on an earlier call
            self._context = self._establish()
        deadline = time.monotonic() + max(timeout, 0.0)
        name = self._current_reader()
        count = self._wait_for_card(name, deadline)
        if count is None:
            return None
        self._handled, self._empty_since = count, False  # a bad card is raised once, too
        return self._read_card(name)

    # -- waiting -----------------------------------------------------------------------------

    @staticmethod
    def _establish() -> int:
        hresult, context = SCardEstablishContext(SCARD_SCOPE_USER)
        if hresult != SCARD_S_SUCCESS:
            raise ReaderUnavailable(
                f"cannot reach the PC/SC service ({SCardGetErrorMessage(hresult)}): {_PCSCD_HINT}"
            )
        return context

    def _list_readers(self) -> list[str]:
        hresult, names = SCardListReaders(self._context, [])
        if hresult in _SERVICE_LOST:  # pcscd restarted since open(): try a new context once
            log.warning(
                "PC/SC context lost (%s); connecting to pcscd again", SCardGetErrorMessage(hresult)
            )
            SCardReleaseContext(self._context)
            self._context = None  # read() tries again if pcscd is not back yet
            self._context = self._establish()
            hresult, names = SCardListReaders(self._context, [])
        if hresult == SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, f"listing PC/SC readers ({_PCSCD_HINT})", ReaderUnavailable)
        return list(names)

    def _find_reader(self) -> str:
        names = self._list_readers()
        for name in names:
            if self.wanted.lower() in name.lower():
                return name
        present = ", ".join(repr(n) for n in names) or "none"
        wanted = f"matching {self.wanted!r}" if self.wanted else "at all"
        raise ReaderUnavailable(f"no PC/SC reader {wanted}; readers present: {present}")

    def _current_reader(self) -> str:
        """The reader in use; found again by the URI if it was unplugged and came back."""
        if self.name not in self._list_readers():
            log.warning("PC/SC reader %r is gone; looking for %s again", self.name, self.uri)
            self.name = self._find_reader()
        return self.name

    def _wait_for_card(self, name: str, deadline: float) -> int | None:
        """Wait for a card on ``name`` not handled yet; its event count, or ``None``."""
        state, first = SCARD_STATE_UNAWARE, True
        while True:
            wait_ms = 0 if first else max(int((deadline - time.monotonic()) * 1000), 0)
            hresult, states = SCardGetStatusChange(self._context, wait_ms, [(name, state)])
            if hresult == SCARD_E_TIMEOUT:
                return None
            if hresult == SCARD_E_UNKNOWN_READER:
                raise ReaderUnavailable(f"PC/SC reader {name!r} was unplugged")
            _check(hresult, f"waiting for a card on {name!r} ({_PCSCD_HINT})", ReaderUnavailable)
            state = states[0][1] & ~SCARD_STATE_CHANGED
            if state & (SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE):
                raise ReaderUnavailable(f"PC/SC reader {name!r} is unavailable (unplugged?)")
            count = state >> 16  # pcsc-lite and Windows count insertions and removals here
            if not state & SCARD_STATE_PRESENT:
                self._empty_since = True  # for a PC/SC without counts
            elif count != self._handled or self._empty_since:
                return count
            if not first and wait_ms == 0:
                return None
            first = False

    # -- reading a card ----------------------------------------------------------------------

    def _read_card(self, name: str) -> Tap:
        hresult, card, protocol = SCardConnect(
            self._context, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1
        )
        _check(hresult, f"connecting to the card on {name!r} (removed too soon?)")
        pci = SCARD_PCI_T1 if protocol == SCARD_PROTOCOL_T1 else SCARD_PCI_T0
        try:
            uid = self._read_uid(card, pci)
            try:
                url = self._read_ndef_url(card, pci)
            except ReaderError as exc:
                log.warning("card %s on %r: %s", uid, name, exc)
                raise
        finally:
            hresult = SCardDisconnect(card, SCARD_LEAVE_CARD)
            if hresult != SCARD_S_SUCCESS:
                log.debug("SCardDisconnect: %s", SCardGetErrorMessage(hresult))
        log.info("card %s on %r (%s)", uid, name, "NDEF URL" if url else "UID only")
        return Tap(reader=name, uid=uid, url=url)

    @staticmethod
    def _transmit(card: int, pci: object, apdu: bytes, what: str) -> tuple[bytes, int]:
        hresult, response = SCardTransmit(card, pci, list(apdu))
        _check(hresult, f"{what} (card removed?)")
        if len(response) < 2:
            raise ReaderError(f"{what}: the card's answer has no status word (card removed?)")
        return bytes(response[:-2]), response[-2] << 8 | response[-1]

    def _read_uid(self, card: int, pci: object) -> str:
        data, sw = self._transmit(card, pci, GET_UID, "reading the card UID")
        if sw != SW_OK:
            raise ReaderError(f"the reader refused the card UID (status {sw:04X})")
        if not 1 <= len(data) <= 10:
            raise ReaderError(f"card UID of {len(data)} bytes is not a UID")
        return data.hex().upper()

    def _read_binary(self, card: int, pci: object, offset: int, length: int, what: str) -> bytes:
        if offset > 0x7FFF:
            raise ReaderError(f"{what}: offset {offset} beyond READ BINARY's reach")
        apdu = bytes([0x00, 0xB0, offset >> 8, offset & 0xFF, length & 0xFF])
        data, sw = self._transmit(card, pci, apdu, what)
        if sw != SW_OK:
            raise ReaderError(f"{what}: status {sw:04X}")
        if not data:
            raise ReaderError(f"{what}: the tag returned no data")
        return data[:length]

    def _read_ndef_url(self, card: int, pci: object) -> str | None:
        """The URL of a Type 4 or Type 2 tag's NDEF message; ``None`` without one."""
        _, sw = self._transmit(card, pci, SELECT_NDEF_APP, "selecting the NDEF application")
        if sw != SW_OK:
            log.debug("no NDEF application (status %04X): trying Type 2 pages", sw)
            return self._read_type2_url(card, pci)
        message = read_ndef_file(
            lambda file_id, what: self._transmit(
                card, pci, b"\x00\xa4\x00\x0c\x02" + file_id, what)[1],
            lambda offset, length, what: self._read_binary(card, pci, offset, length, what))
        if message is None:
            log.debug("empty NDEF file: UID-only card")
            return None
        return first_uri(message)

    # -- Type 2 tags (NTAG21x, MIFARE Ultralight) through the reader's page read ---------------

    def _read_pages(self, card: int, pci: object, page: int, what: str) -> bytes | None:
        """16 bytes from ``page`` on (4 pages), or ``None`` if the reader or tag refuses."""
        apdu = bytes([0xFF, 0xB0, 0x00, page & 0xFF, 0x10])
        data, sw = self._transmit(card, pci, apdu, what)
        if sw != SW_OK or len(data) < 16:
            log.debug("%s: status %04X, %d bytes", what, sw, len(data))
            return None
        return data[:16]

    def _read_type2_url(self, card: int, pci: object) -> str | None:
        """Read the NDEF TLV of a Type 2 tag (NFC Forum T2T): CC at page 3, TLVs from page 4.

        A tag that is not Type 2, a reader without ``FF B0``, or a tag without an NDEF TLV is
        a UID-only tap; a Type 2 tag whose TLVs are broken is a ``ReaderError``.
        """
        message = read_ndef_tlv(lambda page, what: self._read_pages(card, pci, page, what))
        return None if message is None else first_uri(message)
