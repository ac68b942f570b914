"""The driver interfaces: one ``Reader``, one ``CardWriter``, one ``Printer``, chosen by URI."""

from __future__ import annotations

import abc
import importlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)


class DriverError(Exception):
    """A device could not be opened or used; the message says why, for a person."""


class ReaderError(DriverError):
    """A reader failed or returned something that is not a card."""


class ReaderUnavailable(ReaderError):
    """The reader itself is gone (unplugged, its service down), not just one card.

    The agent closes the reader and opens it again a little later instead of reporting a
    card error for every read.
    """


class PrinterError(DriverError):
    """A printer is offline, out of paper or refused the job.

    Attributes:
        reason: a stable code: ``offline``, ``paper-out``, ``failed``.
    """

    def __init__(self, message: str, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Tap:
    """What a reader saw when a card was presented.

    At least one of ``uid``, ``url`` or ``qr`` is set. ``url`` is the NDEF URI of an
    NFC card; ``qr`` is the text a scanner read; ``uid`` is the card serial in
    upper-case hex. ``signature`` is an NTAG21x card's originality signature (READ_SIG,
    CARDS.md §4) in upper-case hex, from readers that can read it; it is not checked
    here and not sent to the service.
    """

    reader: str
    uid: str | None = None
    url: str | None = None
    qr: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    signature: str | None = None

    def as_payload(self) -> dict:
        """Return the fields of ``POST /api/v1/taps`` (without ``event_id``)."""
        payload: dict = {"reader": self.reader, "tapped_at": self.at.isoformat()}
        for key in ("uid", "url", "qr"):
            value = getattr(self, key)
            if value:
                payload[key] = value
        return payload


class Reader(abc.ABC):
    """A card reader owned by one thread.

    ``read`` blocks at most ``timeout`` seconds and returns one ``Tap`` per card
    presentation (a card left on the reader is reported once).
    """

    uri: str = ""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device.

        Raises:
            ReaderError: the device is missing or cannot be opened.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Tap | None:
        """Wait for a card.

        Args:
            timeout: seconds to wait at most.

        Returns:
            The tap, or ``None`` when no card came within ``timeout``.

        Raises:
            ReaderError: the reader failed or the card answered garbage.
        """

    def __enter__(self) -> Reader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriteError(DriverError):
    """Writing a card failed; no card was written that should be activated.

    Every subclass leaves the card without a new message: the write either did not start,
    or left an empty NDEF message (length 0), never half of one. The kiosk may offer to try
    again (the same card, or another one for ``too-small``, ``read-only`` and ``in-use``).

    Attributes:
        reason: a stable code: ``no-card``, ``too-small``, ``read-only``, ``in-use`` (the
            card already holds another of the shop's card URLs, ``CardInUse``),
            ``interrupted``, ``mismatch``, ``unavailable``, or ``failed`` (anything else: a
            card that refused a command, an unformatted card, a lock that is not supported or
            failed).
    """

    reason = "failed"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class NoCard(WriteError):
    """No card was presented within the timeout."""

    reason = "no-card"


class CardTooSmall(WriteError):
    """The card's NDEF area cannot hold the message."""

    reason = "too-small"


class CardReadOnly(WriteError):
    """The card is locked or read-only (capability container, lock bits, or it refused)."""

    reason = "read-only"


class CardInUse(WriteError):
    """The card already holds another card URL of the shop: someone's working card.

    Nothing was written: overwriting it would make that customer's card open another account.
    """

    reason = "in-use"


class WriteInterrupted(WriteError):
    """The card left the field (or stopped answering) in the middle of the write."""

    reason = "interrupted"


class ReadBackMismatch(WriteError):
    """The card accepted the write, but reading it back gave other bytes."""

    reason = "mismatch"


class WriterUnavailable(WriteError):
    """The writer device itself is gone (unplugged, its service down); open it again."""

    reason = "unavailable"


@dataclass(frozen=True)
class WrittenCard:
    """A card that holds the URL, read back and compared.

    Attributes:
        uid: the card serial in upper-case hex (to record with the card).
        kind: ``type2`` (NTAG21x) or ``type4``.
        capacity: bytes of NDEF area the card has (NTAG213 144, NTAG215 496, NTAG216 872;
            a Type 4 tag's NDEF file size less the 2-byte length).
        locked: the card was made permanently read-only.
    """

    uid: str
    kind: str
    capacity: int
    locked: bool = False


class CardWriter(abc.ABC):
    """A card writer (the kiosk's NFC reader) owned by one thread."""

    uri: str = ""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device.

        Raises:
            WriterUnavailable: the device is missing or cannot be opened.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    @abc.abstractmethod
    def write(self, url: str, *, timeout: float, lock: bool = False,
              keep: str | None = None) -> WrittenCard:
        """Wait for a card, write ``url`` as an NDEF URI message, read it back and compare.

        A card presented once is written once: after a successful write, the next call waits
        for another presentation. After a failure the card still on the writer is written
        again by the next call (that is "try again"; a card refused as in use is refused
        again).

        With ``keep`` (the shop's card URL prefix, e.g. ``https://shop.example/c/``), the card's
        current NDEF message is read first: when its first URI record (as the readers read
        it) starts with ``keep`` and is not ``url``, both compared case-insensitively, the
        card is someone's working card and ``CardInUse`` is raised before any write command.
        An empty card, an empty message (length 0: an interrupted write), a message that is
        not NDEF or holds another URL, and a card already holding ``url`` (try again after a
        write whose result was lost) are written as before.

        Args:
            url: the card URL (CARDS.md §1).
            timeout: seconds to wait at most for a card.
            lock: make the card permanently read-only after the read-back (NTAG21x only).
            keep: refuse cards holding another URL that starts with this; ``None``: write
                any writable card.

        Returns:
            What was written on: UID, kind, capacity, locked.

        Raises:
            WriteError: one of its subclasses says why (``reason``); the card holds no new
                message to activate.
        """

    @staticmethod
    def check_in_use(current: bytes | None, url: str, keep: str | None) -> None:
        """Raise ``CardInUse`` if ``current`` (the card's NDEF message) is another card of ``keep``.

        Raises:
            CardInUse: its first URI starts with ``keep`` and is not ``url`` (case-insensitive).
        """
        if not keep or not current:
            return
        from device_drivers.ndefmsg import first_uri  # it imports this module

        try:
            held = first_uri(bytes(current))
        except ReaderError:  # not NDEF, or no URI: no till reads it as a card
            return
        if held.lower().startswith(keep.lower()) and held.lower() != url.lower():
            # the URL is the other customer's credential: never logged
            raise CardInUse("the card already holds another loyalty card URL: not written")

    def __enter__(self) -> CardWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CardSlip:
    """What is printed on a QR loyalty card. Never more personal data than a first name.

    ``logo`` is the path of an image file (PNG, JPEG, BMP) printed centred at the top; a
    missing or unreadable file is logged and the slip printed without it.
    """

    shop_name: str
    first_name: str
    customer_code: str
    card_url: str
    lines: tuple[str, ...] = ()
    logo: str | None = None


class Printer(abc.ABC):
    """A receipt printer owned by one thread."""

    uri: str = ""

    @abc.abstractmethod
    def print_card(self, slip: CardSlip) -> None:
        """Print one card slip, opening and closing the device around the job.

        Args:
            slip: what to print.

        Raises:
            PrinterError: the printer is offline, out of paper, or failed.
        """


# scheme -> "module:factory"; the module is imported only when its scheme is asked for.
READERS = {
    "sim": "device_drivers.sim:SimReader",
    "pcsc": "device_drivers.pcsc:PcscReader",
    "hid": "device_drivers.hid:HidReader",
    "nfcpy": "device_drivers.nfcpy_reader:NfcpyReader",
}
WRITERS = {
    "sim": "device_drivers.sim:SimWriter",
    "pcsc": "device_drivers.pcsc_writer:PcscWriter",
    "nfcpy": "device_drivers.nfcpy_writer:NfcpyWriter",
}
PRINTERS = {
    "escpos": "device_drivers.printer:open_escpos",
    "file": "device_drivers.printer:open_escpos",
}


def _factory(table: dict[str, str], uri: str, kind: str):
    scheme = uri.split(":", 1)[0].strip().lower()
    if scheme not in table:
        raise DriverError(f"unknown {kind} URI {uri!r}: use one of {', '.join(sorted(table))}")
    module_name, _, attr = table[scheme].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def open_reader(uri: str) -> Reader:
    """Make (not open) the reader for ``uri``, e.g. ``pcsc:ACR122`` or ``sim:``.

    Raises:
        DriverError: the URI names no known driver or is malformed.
    """
    return _factory(READERS, uri, "reader")(uri)


def open_printer(uri: str) -> Printer:
    """Make the printer for ``uri``, e.g. ``escpos:net:127.0.0.1:9100`` or ``file:/tmp/out.bin``.

    Raises:
        DriverError: the URI names no known driver or is malformed.
    """
    return _factory(PRINTERS, uri, "printer")(uri)


def open_writer(uri: str) -> CardWriter:
    """Make (not open) the card writer for ``uri``: ``pcsc:NAME``, ``nfcpy:PATH`` or ``sim:``.

    Raises:
        DriverError: the URI names no known driver or is malformed.
    """
    return _factory(WRITERS, uri, "card writer")(uri)
