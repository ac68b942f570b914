"""``sim:`` reader and card writer: taps injected by software, writes that write nothing.

The reader:

| capability | |
|---|---|
| UID | yes, as given |
| NDEF URL | yes, as given |
| QR text | yes, as given |
| hardware | none |

The writer (``open_writer("sim:")``, for ``make run``) writes nothing: each ``write`` returns
at once with a fresh fake NTAG213 UID. ``sim:fail=REASON[,REASON...]`` makes the first writes
fail, one per reason and in order, with the ``WriteError`` of that ``reason`` (``no-card``,
``too-small``, ``read-only``, ``in-use``, ``interrupted``, ``mismatch``, ``unavailable``,
``failed``); the writes after them succeed. ``fail_next(reason)`` queues one more failure.

``present(url)`` (or ``sim:card=URL``) puts a card holding ``url`` on the writer: the writes
see it, and refuse it as ``CardInUse`` when ``keep`` says it is someone's card, until it is
written (then the next write gets a fresh blank card, as before) or ``present()`` replaces
it (``present(None)``: a blank card).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading

from device_drivers.base import (
    CardInUse,
    CardReadOnly,
    CardTooSmall,
    CardWriter,
    DriverError,
    NoCard,
    ReadBackMismatch,
    Reader,
    ReaderError,
    Tap,
    WriteError,
    WriteInterrupted,
    WriterUnavailable,
    WrittenCard,
)

log = logging.getLogger(__name__)


class SimReader(Reader):
    """A reader whose cards are pushed with ``present()``; ``sim:NAME`` names it."""

    def __init__(self, uri: str = "sim:") -> None:
        self.uri = uri
        self.name = uri.partition(":")[2] or "sim"
        self._taps: queue.Queue[Tap] = queue.Queue()
        self._open = False

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def present(self, *, uid: str | None = None, url: str | None = None,
                qr: str | None = None) -> Tap:
        """Queue a card presentation as if a card were held to the reader.

        Raises:
            ReaderError: nothing to present.
        """
        if not (uid or url or qr):
            raise ReaderError("a simulated tap needs a uid, url or qr text")
        tap = Tap(reader=self.uri, uid=uid.upper() if uid else None, url=url, qr=qr)
        self._taps.put(tap)
        return tap

    def read(self, timeout: float) -> Tap | None:
        if not self._open:
            raise ReaderError("simulated reader is closed")
        try:
            return self._taps.get(timeout=timeout)
        except queue.Empty:
            return None


NTAG213_CAPACITY = 144  # bytes of NDEF TLV area
FAILURES: dict[str, type[WriteError]] = {
    "no-card": NoCard,
    "too-small": CardTooSmall,
    "read-only": CardReadOnly,
    "in-use": CardInUse,
    "interrupted": WriteInterrupted,
    "mismatch": ReadBackMismatch,
    "unavailable": WriterUnavailable,
    "failed": WriteError,
}


class SimWriter(CardWriter):
    """A card writer that writes nothing; see the module docstring.

    Args:
        uri: ``sim:``, ``sim:fail=REASON[,REASON...]``, ``sim:card=URL`` (options joined
            with ``;``).

    Raises:
        DriverError: an unknown option or failure reason in the URI.

    Attributes:
        written: ``(uid, url, locked)`` of every successful write, oldest first.
    """

    def __init__(self, uri: str = "sim:") -> None:
        self.uri = uri
        self.written: list[tuple[str, str, bool]] = []
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self._open = False
        self._card: tuple[str, str] | None = None  # (uid, url) of a card presented, until written
        options = uri.partition(":")[2].strip()
        for option in filter(None, options.split(";")):
            key, _, value = option.partition("=")
            if key == "card" and value:
                self.present(value)
            elif key == "fail":
                for reason in filter(None, value.split(",")):
                    self.fail_next(reason)
            else:
                raise DriverError(f"malformed writer URI {uri!r}: unknown option {key!r}")

    def present(self, url: str | None = None) -> str:
        """Put a card holding ``url`` (``None``: a blank card) on the writer; returns its UID."""
        uid = "04" + secrets.token_hex(6).upper()
        with self._lock:
            self._card = (uid, url) if url else None
        return uid

    def fail_next(self, reason: str) -> None:
        """Make the next write not failed yet fail with ``reason``.

        Raises:
            DriverError: ``reason`` is not one of ``WriteError``'s reasons.
        """
        if reason not in FAILURES:
            raise DriverError(
                f"unknown simulated write failure {reason!r}: use one of {', '.join(FAILURES)}"
            )
        with self._lock:
            self._failures.append(reason)

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def write(self, url: str, *, timeout: float, lock: bool = False,
              keep: str | None = None) -> WrittenCard:
        """Pretend to write ``url`` on an NTAG213; see ``CardWriter.write``."""
        from device_drivers.ndefmsg import uri_message

        if not self._open:
            raise WriterUnavailable(f"simulated writer {self.uri!r} is not open")
        with self._lock:
            reason = self._failures.pop(0) if self._failures else None
        if reason is not None:
            raise FAILURES[reason](f"simulated write failure: {reason}", reason)
        with self._lock:
            card = self._card
        if card is not None:  # the card stays until written: refused again the next time
            self.check_in_use(uri_message(card[1]), url, keep)
        message = uri_message(url)
        if len(message) + 2 > NTAG213_CAPACITY:  # the TLV: tag, length, message
            raise CardTooSmall(
                f"the message takes {len(message)} bytes; the simulated NTAG213 holds "
                f"{NTAG213_CAPACITY - 2}"
            )
        uid = card[0] if card is not None else "04" + secrets.token_hex(6).upper()
        with self._lock:
            if self._card is card:
                self._card = None  # written: the next write gets a fresh blank card
        self.written.append((uid, url, lock))
        log.info("simulated card %s written (%d bytes%s)", uid, len(message),
                 ", locked" if lock else "")
        return WrittenCard(uid=uid, kind="type2", capacity=NTAG213_CAPACITY, locked=lock)
