"""The driver interfaces: one ``Reader``, one ``Printer``, chosen by URI."""

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


@dataclass(frozen=True)
class CardSlip:
    """What is printed on a QR loyalty card. Never more personal data than a first name."""

    shop_name: str
    first_name: str
    customer_code: str
    card_url: str
    lines: tuple[str, ...] = ()


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
