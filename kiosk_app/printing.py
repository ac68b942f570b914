"""The kiosk's printer, owned by one thread; web requests hand it jobs and wait or poll."""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from device_drivers.base import CardSlip, DriverError, PrinterError, open_printer

log = logging.getLogger(__name__)

KEEP_JOBS = 20  # finished jobs remembered for the pages that poll them


class PrinterWorker:
    """Serialises print jobs on one thread, so two customers never share a printer.

    ``status`` is what the last job said of the printer, for the heartbeat: ``ready`` (also
    before any job: nothing is known against it), ``paper-out``, ``offline`` or ``failed``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.status = "ready"
        self.error: str | None = None
        self._jobs: queue.Queue[tuple[CardSlip, Future] | None] = queue.Queue()
        self._known: dict[str, Future] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def print_card(self, slip: CardSlip, timeout: float) -> None:
        """Print ``slip`` and wait until it is done.

        Raises:
            PrinterError: the printer failed, or did not finish within ``timeout``.
        """
        done = self._queue(slip)
        try:
            done.result(timeout)
        except FutureTimeout:
            done.cancel()
            raise PrinterError("The printer did not finish in time", "offline") from None

    def submit(self, slip: CardSlip) -> str:
        """Queue ``slip`` and return at once the job id to give ``job()``."""
        done = self._queue(slip)
        job_id = secrets.token_hex(8)
        with self._lock:
            self._known[job_id] = done
            while len(self._known) > KEEP_JOBS:
                del self._known[next(iter(self._known))]
        return job_id

    def job(self, job_id: str | None) -> Future | None:
        """The future of a job ``submit`` queued lately; ``None`` if unknown (restarted)."""
        with self._lock:
            return self._known.get(job_id or "")

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(5)
            self._thread = None

    def _queue(self, slip: CardSlip) -> Future:
        self._ensure_thread()
        done: Future = Future()
        self._jobs.put((slip, done))
        return done

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
            if not done.set_running_or_notify_cancel():
                continue
            try:
                if printer is None:
                    printer = open_printer(self.uri)
                printer.print_card(slip)
            except PrinterError as exc:
                log.warning("printer %s: %s (%s)", self.uri, exc, exc.reason)
                self._fail(done, exc)
            except DriverError as exc:
                self._fail(done, PrinterError(str(exc), "failed"))
            except Exception as exc:  # a driver bug must not leave a customer waiting
                log.exception("printer %s crashed", self.uri)
                self._fail(done, PrinterError(f"printer error: {exc.__class__.__name__}"))
            else:
                self.status, self.error = "ready", None
                done.set_result(None)

    def _fail(self, done: Future, exc: PrinterError) -> None:
        status = exc.reason if exc.reason in ("paper-out", "offline") else "failed"
        self.status, self.error = status, str(exc)
        done.set_exception(exc)
