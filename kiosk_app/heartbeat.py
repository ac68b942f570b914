"""The kiosk's heartbeat: tells the service every so often that it is alive, and how its
card writer and printer are."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from device_drivers.forwarder import ServerProblem, ServerUnavailable, ServiceClient
from kiosk_app.devices import DeviceWorker
from kiosk_app.printing import PrinterWorker

log = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread posting ``/devices/heartbeat`` every ``interval`` seconds (0: never)."""

    def __init__(self, client_args: tuple[str, str, float, str], interval: float,
                 devices: DeviceWorker, printer: PrinterWorker) -> None:
        self.client_args = client_args
        self.interval = float(interval)
        self.devices, self.printer = devices, printer
        self.last_sent: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread once (idempotent; nothing when the interval is 0)."""
        if self.interval <= 0:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)

    def body(self) -> dict:
        """What the kiosk reports: its card writer (as a reader) and its printer."""
        readers = [self.devices.writer_status.as_payload()] if self.devices.enabled else []
        return {"readers": readers,
                "printer": {"uri": self.printer.uri, "status": self.printer.status,
                            "error": self.printer.error}}

    def _run(self) -> None:
        # a connection of its own: a heartbeat never waits behind a customer's request
        client = ServiceClient(*self.client_args)
        refused: str | None = None
        try:
            while not self._stop.is_set():
                try:
                    client.post("/devices/heartbeat", self.body())
                except ServerUnavailable:
                    pass  # the pages say so when a customer needs the service
                except ServerProblem as exc:
                    if exc.slug != refused:  # said once, not at every beat
                        log.warning("heartbeat refused: %s %s", exc.status, exc.slug)
                    refused = exc.slug
                except Exception:  # the heartbeat must never take the kiosk down
                    log.exception("heartbeat failed")
                else:
                    refused = None
                    self.last_sent = datetime.now(UTC).isoformat()
                self._stop.wait(self.interval)
        finally:
            client.close()
