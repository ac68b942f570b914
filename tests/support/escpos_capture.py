"""A network ESC/POS printer stand-in: a TCP server on 127.0.0.1 that keeps what it is sent.

Each connection is one job (python-escpos ``Network`` connects, sends, closes). The server
answers the real-time status queries ``DLE EOT n`` like an Epson printer does, found at
command boundaries (the stream is tokenized with ``escpos_parse.scan``, so the bytes
``10 04 04`` inside image data are not taken for a query):

| query | paper ok | paper near end | paper out |
|---|---|---|---|
| ``DLE EOT 1`` printer | ``0x16`` | ``0x16`` | ``0x1E`` (offline) |
| ``DLE EOT 2`` offline cause | ``0x12`` | ``0x12`` | ``0x32`` (stopped: paper end) |
| ``DLE EOT 3`` error | ``0x12`` | ``0x12`` | ``0x12`` |
| ``DLE EOT 4`` paper sensor | ``0x12`` | ``0x1E`` | ``0x7E`` |

python-escpos ``paper_status()`` reads the first byte of ``DLE EOT 4``'s answer: ``& 0x72 ==
0x72`` -> 0 (no paper), ``& 0x1E == 0x1E`` -> 1 (near end), ``& 0x12 == 0x12`` -> 2 (ok).

Usage::

    with CapturePrinter() as printer:
        open_printer(printer.uri).print_card(slip)
        (job,) = printer.wait_for_jobs(1)
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

from tests.support.escpos_parse import EscposParseError, scan

PAPER_STATES = ("ok", "near-end", "out")
DROP_MODES = (None, "on-status", "after-status")

_STATUS = {
    "ok": {1: 0x16, 2: 0x12, 3: 0x12, 4: 0x12},
    "near-end": {1: 0x16, 2: 0x12, 3: 0x12, 4: 0x1E},
    "out": {1: 0x1E, 2: 0x32, 3: 0x12, 4: 0x7E},
}


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        capture = self.server.capture
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = bytearray()
        parsed = 0
        parse_ok = True
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if not parse_ok:
                    continue
                try:
                    tokens, parsed = scan(bytes(data), parsed)
                except EscposParseError:
                    parse_ok = False  # keep capturing; the test's parse will report it
                    continue
                for token in tokens:
                    if token.kind != "DLE EOT":
                        continue
                    answer = capture._status_answer(token.params[0])
                    if capture.drop == "on-status":
                        self._reset(sock)
                        return
                    if answer is not None:
                        sock.sendall(answer)
                    if capture.drop == "after-status":
                        self._reset(sock)
                        return
        except OSError:
            pass  # the client reset the connection: keep what arrived
        finally:
            capture._finish(bytes(data))

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with RST (SO_LINGER 0), as a printer that drops the link."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, capture: CapturePrinter) -> None:
        self.capture = capture
        super().__init__(("127.0.0.1", 0), _Handler)


class CapturePrinter:
    """A fake network receipt printer listening on 127.0.0.1 (a free port).

    Args:
        paper: ``"ok"``, ``"near-end"`` or ``"out"``: what status queries report.
        answer_status: ``False`` for a printer that never answers ``DLE EOT``.
        drop: ``None``; ``"on-status"`` to reset the connection (RST) when a ``DLE EOT``
            query arrives, instead of answering; ``"after-status"`` to answer it, then reset.
            (A reset right after accepting is not offered: whether the client's ``connect``
            or its first ``send`` sees it is a race.)

    The three settings are attributes and may be changed while the server runs.
    """

    def __init__(
        self, *, paper: str = "ok", answer_status: bool = True, drop: str | None = None
    ) -> None:
        if paper not in PAPER_STATES:
            raise ValueError(f"paper must be one of {PAPER_STATES}")
        if drop not in DROP_MODES:
            raise ValueError(f"drop must be one of {DROP_MODES}")
        self.paper = paper
        self.answer_status = answer_status
        self.drop = drop
        self._jobs: list[bytes] = []
        self._queries: list[int] = []
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> CapturePrinter:
        """Start listening (idempotent); returns ``self``."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="escpos-capture",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and free the port (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> CapturePrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- address -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port (the server must be started)."""
        if self._server is None:
            raise RuntimeError("CapturePrinter is not started")
        return self._server.server_address[1]

    @property
    def uri(self) -> str:
        """``escpos:net:127.0.0.1:PORT``, for ``device_drivers.base.open_printer``."""
        return f"escpos:net:127.0.0.1:{self.port}"

    # -- what arrived ----------------------------------------------------------------------
    @property
    def jobs(self) -> list[bytes]:
        """The finished jobs (one per closed connection), oldest first; a copy."""
        with self._changed:
            return list(self._jobs)

    @property
    def status_queries(self) -> list[int]:
        """The ``n`` of every ``DLE EOT n`` received, answered or not."""
        with self._changed:
            return list(self._queries)

    def wait_for_jobs(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Wait until at least ``count`` jobs have finished.

        Args:
            count: how many jobs to wait for.
            timeout: seconds to wait at most.

        Returns:
            All the finished jobs (a copy), oldest first.

        Raises:
            TimeoutError: fewer than ``count`` jobs finished within ``timeout``.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._jobs) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} print job(s) within {timeout} s, got {len(self._jobs)}"
                )
            return list(self._jobs)

    def clear(self) -> None:
        """Forget the jobs and queries received so far."""
        with self._changed:
            self._jobs.clear()
            self._queries.clear()

    # -- used by the handler ------------------------------------------------------------------
    def _status_answer(self, n: int) -> bytes | None:
        with self._changed:
            self._queries.append(n)
        if not self.answer_status:
            return None
        value = _STATUS[self.paper].get(n)
        return None if value is None else bytes([value])

    def _finish(self, job: bytes) -> None:
        with self._changed:
            self._jobs.append(job)
            self._changed.notify_all()
