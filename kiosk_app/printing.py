"""The kiosk's printer, owned by one thread; web requests hand it jobs and wait."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from device_drivers.base import CardSlip, DriverError, PrinterError, open_printer

log = logging.getLogger(__name__)


class PrinterWorker:
    """Serialises print jobs on one thread, so two customers never share a printer."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._jobs: queue.Queue[tuple[CardSlip, Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def print_card(self, slip: CardSlip, timeout: float) -> None:
        """Print ``slip`` and wait until it is done.

        Raises:
            PrinterError: the printer failed, or did not finish within ``timeout``.
        """
        self._ensure_thread()
        done: Future = Future()
        self._jobs.put((slip, done))
        try:
            done.result(timeout)
        except FutureTimeout:
            raise PrinterError("The printer did not finish in time", "offline") from None

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(5)
            self._thread = None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="printer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        printer = None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            slip, done = job
            if done.cancelled():
                continue
            try:
                if printer is None:
                    printer = open_printer(self.uri)
                printer.print_card(slip)
            except PrinterError as exc:
                log.warning("printer %s: %s (%s)", self.uri, exc, exc.reason)
                done.set_exception(exc)
            except DriverError as exc:
                done.set_exception(PrinterError(str(exc), "failed"))
            except Exception as exc:  # a driver bug must not leave a customer waiting
                log.exception("printer %s crashed", self.uri)
                done.set_exception(PrinterError(f"printer error: {exc.__class__.__name__}"))
            else:
                done.set_result(None)
