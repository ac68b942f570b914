"""A contactless card for vsmartcard's ``vpcd`` reader driver: an NFC Forum Type 4 tag.

Standard library only, so it runs in the project's virtualenv. ``VirtualCard`` answers APDUs
the way an NDEF Type 4 tag behind an ACR122U does; ``VpcdCard`` puts it "on the reader" by
connecting to vpcd's TCP port (2-byte big-endian length + payload; a 1-byte payload is a
control message: 0 power off, 1 power on, 2 reset, 4 send the ATR).

    card = VpcdCard(VirtualCard(uid=bytes.fromhex("04A1B2C3D4E5F6"), ndef=message))
    card.insert(23040)   # the card is on "Virtual PCD 00 00"
    card.remove()
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

ATR = bytes.fromhex("3B8180018080")
NDEF_AID = bytes.fromhex("D2760000850101")
CC_FILE, NDEF_FILE = b"\xe1\x03", b"\xe1\x04"
OK = b"\x90\x00"
NOT_FOUND, NO_EF, BAD_OFFSET = b"\x6a\x82", b"\x69\x86", b"\x6b\x00"
WRONG_LENGTH, NO_SPACE, UNKNOWN_INS = b"\x67\x00", b"\x6a\x84", b"\x6d\x00"


def default_cc(ndef_file_size: int) -> bytes:
    """CC of a v2.0 tag: MLe 0x3B, MLc 0x34, NDEF file E104 of ``ndef_file_size``, open r/w."""
    return bytes.fromhex("000F20003B00340406E104") + struct.pack(">H", ndef_file_size) + b"\0\0"


class VirtualCard:
    """The APDU logic of a Type 4 tag; ``process(apdu) -> response`` never raises.

    Args:
        uid: answered to ``FF CA 00 00 00``.
        ndef: the NDEF message (the file holds a 2-byte NLEN, then this); ``None`` = the card
            has no NDEF application (SELECT AID answers 6A82).
        cc: the capability container file; default: ``default_cc`` sized to hold ``ndef``
            (at least 2 KiB). The NDEF file gets the id its NDEF file control TLV names.
        responses: exact command APDU -> response, answered before anything else (garbage);
            a response of ``None`` makes the card leave the field instead of answering.
        atr: answered to vpcd's "send your ATR".
    """

    def __init__(
        self,
        uid: bytes,
        ndef: bytes | None,
        cc: bytes | None = None,
        *,
        responses: dict[bytes, bytes | None] | None = None,
        atr: bytes = ATR,
    ) -> None:
        self.uid, self.atr, self.responses = uid, atr, dict(responses or {})
        self.has_ndef_app = ndef is not None
        message = ndef or b""
        size = max(0x0800, len(message) + 2)
        cc = default_cc(size) if cc is None else cc
        self.ndef_file = cc[9:11] if cc[7:9] == b"\x04\x06" and len(cc) >= 11 else NDEF_FILE
        content = bytearray(struct.pack(">H", len(message)) + message)
        self.files = {CC_FILE: cc, self.ndef_file: content + bytes(size - len(content))}
        self.apdus: list[bytes] = []  # every command APDU received, for assertions
        self.reset()

    @property
    def ndef(self) -> bytes:
        """The NDEF message now in the file (after any UPDATE BINARY)."""
        data = self.files[self.ndef_file]
        return bytes(data[2 : 2 + int.from_bytes(data[:2], "big")])

    def reset(self) -> None:
        """Field off / reset: nothing selected."""
        self.app_selected, self.current = False, None

    def process(self, apdu: bytes) -> bytes | None:
        """Answer one command APDU with its response APDU (data + SW1 SW2); ``None``: gone."""
        self.apdus.append(bytes(apdu))
        if apdu in self.responses:
            return self.responses[apdu]
        try:
            return self._process(apdu)
        except Exception:  # a card never crashes: "no precise diagnosis"
            return b"\x6f\x00"

    def _process(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return WRONG_LENGTH
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        lc = body[0] if len(body) > 1 else 0
        data = body[1 : 1 + lc]
        if (cla, ins, p1, p2) == (0xFF, 0xCA, 0, 0):
            return self.uid + OK
        if (cla, ins) == (0x00, 0xA4) and p1 == 0x04:
            self.app_selected = self.has_ndef_app and data == NDEF_AID
            self.current = None
            return OK if self.app_selected else NOT_FOUND
        if (cla, ins) == (0x00, 0xA4) and p1 == 0x00:
            found = self.app_selected and bytes(data) in self.files
            self.current = bytes(data) if found else None
            return OK if found else NOT_FOUND
        if (cla, ins) in ((0x00, 0xB0), (0x00, 0xD6)):
            if self.current is None:
                return NO_EF
            file, offset = self.files[self.current], (p1 & 0x7F) << 8 | p2
            if ins == 0xB0:
                le = (body[0] or 256) if len(body) == 1 else 256
                return (
                    (bytes(file[offset : offset + le]) + OK) if offset < len(file) else BAD_OFFSET
                )
            if self.current != self.ndef_file:
                return b"\x69\x82"  # security status not satisfied: the CC is read-only
            if lc == 0 or len(data) != lc:
                return WRONG_LENGTH
            if offset + lc > len(file):
                return NO_SPACE
            file[offset : offset + lc] = data
            return OK
        return UNKNOWN_INS


class VpcdCard:
    """Runs a ``VirtualCard`` against vpcd in a background thread.

    vpcd learns that a card came or went only when pcscd polls it (every ~0.4 s): it asks for
    the ATR, and a closed connection means "no card". ``insert`` and ``remove`` wait until
    vpcd has talked to the new card / hung up on the old one. That is not always enough for
    pcscd: when vpcd notices the removal inside the presence check that pcscd makes before
    powering an idle card down, pcscd ignores the answer, and if the next card is already
    waiting at the following check the removal is lost. Pass ``on_change`` (called as
    ``on_change(port, present)`` at the end of ``insert``/``remove``) to wait for pcscd's own
    view, as ``tests.support.fixtures_pcsc`` does.

    Args:
        card: the card logic.
        host: where vpcd listens.
        timeout: how long ``insert`` retries while pcscd/vpcd is still binding, and how long
            ``insert``/``remove`` wait for vpcd to notice.
        on_change: called after the card was inserted (``True``) or removed (``False``).
    """

    def __init__(
        self,
        card: VirtualCard,
        host: str = "127.0.0.1",
        timeout: float = 5.0,
        on_change: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.card, self.host, self.timeout, self.on_change = card, host, timeout, on_change
        self.stop = threading.Event()  # set: the card is being removed, answer nothing more
        self._seen = threading.Event()  # vpcd talked to the card
        self.port: int | None = None  # where the card is (or was last) inserted
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def inserted(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.stop.is_set()

    def insert(self, port: int, wait: bool = True) -> None:
        """Put the card on the reader listening on ``port`` (removing it first if needed).

        Args:
            port: vpcd's port (one per reader slot).
            wait: return only once vpcd has asked the card for its ATR.

        Raises:
            OSError: vpcd did not accept a connection within ``timeout``.
            TimeoutError: vpcd never polled the card (is pcscd running this vpcd?).
        """
        self.remove()
        self.stop.clear()
        self._seen.clear()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                sock = socket.create_connection((self.host, port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() >= deadline or self.stop.wait(0.05):
                    raise
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self.port = sock, port
        self.card.reset()
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), daemon=True, name=f"vpcd-card:{port}"
        )
        self._thread.start()
        if wait and not self._seen.wait(max(deadline - time.monotonic(), 0.1)):
            self.remove()
            raise TimeoutError(f"vpcd on port {port} did not poll the card")
        if self.on_change is not None:
            self.on_change(port, True)

    def remove(self) -> None:
        """Take the card off the reader; returns once vpcd has seen it go. Safe to call twice."""
        sock, thread, self._sock, self._thread = self._sock, self._thread, None, None
        self.stop.set()
        if sock is None or thread is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # vpcd's next read of an answer sees the end
        thread.join(timeout=self.timeout)  # until vpcd closes its side
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(timeout=1)
        if self.on_change is not None and self.port is not None:
            self.on_change(self.port, False)

    def __enter__(self) -> VpcdCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            if hasattr(socket, "TCP_QUICKACK"):  # Linux: ACK vpcd's split writes at once
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            data += chunk
        return data

    def _control(self, code: int) -> bytes | None:
        if code in (0, 2):  # power off / reset; 1 (power on) needs nothing
            self.card.reset()
        return self.card.atr if code == 4 else None  # 4: "send your ATR"

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # includes ConnectionError: vpcd closed
            while True:
                (length,) = struct.unpack(">H", self._recv(sock, 2))
                payload = self._recv(sock, length)
                self._seen.set()
                if self.stop.is_set():
                    continue  # removed: answer nothing, wait for vpcd to hang up
                if len(payload) == 1:
                    answer = self._control(payload[0])
                elif (answer := self.card.process(payload)) is None:
                    self.stop.set()  # the card left the field in the middle of a command
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                if answer is not None:
                    try:
                        sock.sendall(struct.pack(">H", len(answer)) + answer)
                    except OSError:
                        if not self.stop.is_set():
                            raise
