"""``sim:`` reader: taps injected by software, for the demo and the tests.

| capability | |
|---|---|
| UID | yes, as given |
| NDEF URL | yes, as given |
| QR text | yes, as given |
| hardware | none |
"""

from __future__ import annotations

import logging
import queue

from device_drivers.base import Reader, ReaderError, Tap

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
