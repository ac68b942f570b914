"""The kiosk's NFC device, owned by one thread: web requests hand it jobs and poll them.

The worker holds one device open at a time (nfcpy cannot share a reader): the card writer
(``WRITER``), or from a "read one tap" job on the staff reader (``STAFF_READER``, or the
writer's URI) until the next write job. A job runs in short slices so that
it can be cancelled (the customer walked away, the idle reset, a newer job): the kiosk has one
screen, so a new job supersedes the one before it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from device_drivers.base import (
    CardWriter,
    DriverError,
    NoCard,
    Reader,
    ReaderError,
    ReaderUnavailable,
    Tap,
    WriteError,
    WriterUnavailable,
    WrittenCard,
    open_reader,
    open_writer,
)

log = logging.getLogger(__name__)

SLICE = 0.5  # seconds of one wait for a card: how late a cancel may be seen
REOPEN_DELAY = 5.0  # seconds between two attempts to open a device that failed
KEEP_JOBS = 20  # finished jobs remembered for the pages that poll them


@dataclass
class Job:
    """One thing for the device to do; its fields are read by the web threads.

    Attributes:
        state: ``queued``, ``waiting`` (for a card), ``writing`` (a card is on the writer),
            ``done``, ``failed`` or ``cancelled``.
        result: the ``WrittenCard`` of a write, the ``Tap`` of a read.
        reason: why it failed: a ``WriteError`` reason (``no-card``, ``too-small``,
            ``read-only``, ``in-use``, ``interrupted``, ``mismatch``, ``unavailable``,
            ``failed``), or for a read ``no-card``, ``unavailable``, ``failed``.
        keep: for a write, the prefix of the shop's card URLs: a card holding another one is
            refused (``in-use``), see ``CardWriter.write``.
    """

    kind: str
    url: str | None = None
    timeout: float = 30.0
    lock: bool = False
    keep: str | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    state: str = "queued"
    result: WrittenCard | Tap | None = None
    reason: str | None = None
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "waiting", "writing")

    def cancel(self) -> None:
        """Ask the worker to stop this job at the next slice."""
        self.cancel_event.set()
        if self.state == "queued":
            self._finish("cancelled")

    def wait(self, timeout: float) -> bool:
        return self.finished.wait(timeout)

    def _finish(self, state: str, *, result: Any = None, reason: str | None = None,
                error: str | None = None) -> None:
        self.result, self.reason, self.error = result, reason, error
        self.state = state
        self.finished.set()


@dataclass
class DeviceStatus:
    """What the heartbeat reports of a device: ``starting``, ``ready`` or ``failed``."""

    uri: str
    status: str = "starting"
    error: str | None = None

    def as_payload(self) -> dict:
        return {"uri": self.uri, "status": self.status, "error": self.error}


class DeviceWorker:
    """Owns the NFC writer (and the staff reader) on one thread; see the module docstring.

    Args:
        writer_uri: ``WRITER``; empty: no NFC device (every job fails ``unavailable``).
        reader_uri: ``STAFF_READER``; empty: the writer's URI.
    """

    def __init__(self, writer_uri: str, reader_uri: str = "") -> None:
        self.writer_uri = writer_uri.strip()
        self.reader_uri = reader_uri.strip() or self.writer_uri
        self.writer_status = DeviceStatus(self.writer_uri or "none")
        self.writer: CardWriter | None = None  # the open writer (tests reach a sim: one here)
        self.reader: Reader | None = None  # the open reader, from a read job to a write
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._known: dict[str, Job] = {}
        self._current: Job | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the web side ------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.writer_uri)

    def write(self, url: str, *, timeout: float, lock: bool = False,
              keep: str | None = None) -> Job:
        """Queue "write ``url`` on the next card presented" (not on a card in use: ``keep``);
        returns the job to poll."""
        return self._submit(Job("write", url=url, timeout=timeout, lock=lock, keep=keep))

    def read(self, *, timeout: float) -> Job:
        """Queue "read one tap" on the staff reader; returns the job to poll."""
        return self._submit(Job("read", timeout=timeout))

    def job(self, job_id: str | None) -> Job | None:
        """A job submitted lately, by its id; ``None`` if unknown (the app restarted)."""
        with self._lock:
            return self._known.get(job_id or "")

    def cancel(self, job_id: str | None = None) -> None:
        """Cancel that job, or every job not finished."""
        with self._lock:
            jobs = [self._known[job_id]] if job_id in self._known else (
                [] if job_id else list(self._known.values()))
        for job in jobs:
            if job.active:
                job.cancel()

    def start(self) -> None:
        """Start the thread (idempotent); it opens the writer at once."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="nfc-device",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Cancel every job, close the device and end the thread."""
        self._stop.set()
        self.cancel()
        self._jobs.put(None)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)

    def _submit(self, job: Job) -> Job:
        with self._lock:
            for old in self._known.values():  # one screen: the newer job supersedes
                if old.active:
                    old.cancel()
            self._known[job.id] = job
            while len(self._known) > KEEP_JOBS:
                del self._known[next(iter(self._known))]
        if not self.enabled:
            job._finish("failed", reason="unavailable", error="no card writer configured")
            return job
        self.start()
        self._jobs.put(job)
        return job

    # -- the device thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.writer is None and self.reader is None:
                    self._open_writer()
                wait = None if (self.writer or self.reader) is not None else REOPEN_DELAY
                try:
                    job = self._jobs.get(timeout=wait)
                except queue.Empty:
                    continue
                if job is None:
                    return
                if not job.active:  # cancelled while queued, or given a tap already
                    continue
                if job.cancel_event.is_set():
                    job._finish("cancelled")
                    continue
                self._current = job
                try:
                    if job.kind == "write":
                        self._do_write(job)
                    else:
                        self._do_read(job)
                except Exception as exc:  # a driver bug must not leave the screen waiting
                    log.exception("NFC device job %s crashed", job.kind)
                    job._finish("failed", reason="failed", error=exc.__class__.__name__)
                finally:
                    self._current = None
        finally:
            self._close_reader()
            self._close_writer()

    def _open_writer(self) -> bool:
        try:
            writer = open_writer(self.writer_uri)
            writer.open()
        except (WriteError, DriverError) as exc:
            if self.writer_status.status != "failed" or self.writer_status.error != str(exc):
                log.warning("card writer %s: %s", self.writer_uri, exc)
            self.writer_status.status, self.writer_status.error = "failed", str(exc)
            return False
        self.writer = writer
        self.writer_status.status, self.writer_status.error = "ready", None
        log.info("card writer %s open", self.writer_uri)
        return True

    def _close_writer(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                log.exception("closing card writer %s", self.writer_uri)

    def _do_write(self, job: Job) -> None:
        self._close_reader()
        if self.writer is None and not self._open_writer():
            job._finish("failed", reason="unavailable", error=self.writer_status.error)
            return
        assert self.writer is not None and job.url is not None
        job.state = "waiting"
        deadline = time.monotonic() + job.timeout
        with _card_arrival(self.writer, lambda: setattr(job, "state", "writing")):
            while True:
                if job.cancel_event.is_set():
                    job._finish("cancelled")
                    return
                started = time.monotonic()
                remaining = deadline - started
                try:
                    written = self.writer.write(job.url, timeout=max(min(SLICE, remaining), 0),
                                                lock=job.lock, keep=job.keep)
                except NoCard as exc:
                    if remaining <= SLICE:
                        job._finish("failed", reason=exc.reason, error=str(exc))
                        return
                    # a writer that does not wait (sim:) must not make this loop spin
                    job.cancel_event.wait(max(SLICE - (time.monotonic() - started), 0))
                    continue
                except WriteError as exc:
                    if isinstance(exc, WriterUnavailable):
                        self.writer_status.status, self.writer_status.error = "failed", str(exc)
                        self._close_writer()  # opened again before the next job
                    job._finish("failed", reason=exc.reason, error=str(exc))
                    return
                job._finish("done", result=written)
                return

    def _close_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.exception("closing staff reader %s", self.reader_uri)

    def _do_read(self, job: Job) -> None:
        # one device open at a time: the writer makes way for the reader, which stays open
        # for the next read (a staff card left on it is not read again as the old card)
        # until a write brings the writer back
        if self.reader is None:
            self._close_writer()
            try:
                reader = open_reader(self.reader_uri)
                reader.open()
            except DriverError as exc:
                log.warning("staff reader %s: %s", self.reader_uri, exc)
                job._finish("failed", reason="unavailable", error=str(exc))
                return
            self.reader = reader
        reader = self.reader
        job.state = "waiting"
        deadline = time.monotonic() + job.timeout
        while True:
            if job.cancel_event.is_set():
                job._finish("cancelled")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                job._finish("failed", reason="no-card", error="no card was presented")
                return
            try:
                tap = reader.read(timeout=min(SLICE, remaining))
            except ReaderError as exc:
                if isinstance(exc, ReaderUnavailable):
                    self._close_reader()
                    job._finish("failed", reason="unavailable", error=str(exc))
                else:
                    job._finish("failed", reason="failed", error=str(exc))
                return
            if tap is not None:
                if job.cancel_event.is_set() and self._hand_over(tap):
                    job._finish("cancelled")
                else:
                    job._finish("done", result=tap)
                return

    def _hand_over(self, tap: Tap) -> bool:
        """Give a tap that came as its job was cancelled to the read job queued after it.

        The screen that cancelled it is waiting for a card too (the login page gave way to
        the search page): the card was held to the reader for it, and will not be reported
        again while it stays there.
        """
        with self._jobs.mutex:
            queued = [job for job in self._jobs.queue if job is not None and job.active]
        if queued and queued[0].kind == "read":
            queued[0]._finish("done", result=tap)
            return True
        return False


class _card_arrival:  # noqa: N801 - used as a context manager, reads as one
    """Calls ``callback`` when the writer finds a card, before it writes (best effort).

    ``CardWriter.write`` waits for the card and writes in one call; the page wants to say
    "Writing... keep the card still" in between. The ``pcsc:`` and ``nfcpy:`` writers wait
    in one method each, wrapped here on this instance only; any other writer is left as is.
    """

    def __init__(self, writer: CardWriter, callback) -> None:
        self.callback = callback
        self.target: Any = None
        self.name = ""
        inner = getattr(writer, "_reader", None)
        if hasattr(writer, "_wait_for_tag"):  # nfcpy: returns the tag or None
            self.target, self.name = writer, "_wait_for_tag"
        elif inner is not None and hasattr(inner, "_wait_for_card"):  # pcsc: count or None
            self.target, self.name = inner, "_wait_for_card"

    def __enter__(self) -> _card_arrival:
        if self.target is not None:
            original = getattr(self.target, self.name)

            def waiting(*args: Any, **kwargs: Any) -> Any:
                found = original(*args, **kwargs)
                if found is not None:
                    self.callback()
                return found

            setattr(self.target, self.name, waiting)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.target is not None:
            with contextlib.suppress(AttributeError):
                delattr(self.target, self.name)  # the class's method again
