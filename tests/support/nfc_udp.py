"""Cards on nfcpy's simulated ``udp`` reader, for tests of the ``nfcpy:`` driver.

nfcpy's ``udp`` device carries the frames of a contactless link as UDP datagrams: a reader
(``ContactlessFrontend("udp:127.0.0.1:PORT")``) senses, a card listens on PORT with the same
device (``clf.listen``) and answers with ``clf.exchange``. Each card here runs in a child
process (``python -m tests.support.nfc_udp SPEC PORT``), so that its answers keep to the
few milliseconds nfcpy's Type 2 commands wait, whatever the test process is doing:

- ``ntag213(uid, ndef)``: an NTAG213 (Type 2): READ, WRITE, GET_VERSION and READ_SIG from a
  45-page memory image. Any other command (nfcpy's AUTH probe) makes it go mute until the
  next anticollision, as a real NTAG does; nfcpy then senses it again.
- ``type4(uid, ndef)``: a Type 4A tag: ATS ``0578807002`` to RATS, then ISO-DEP I-blocks whose
  APDUs ``tests.support.vcard.VirtualCard`` answers (R(NAK) -> R(ACK), S(DESELECT)).
- ``felica(idm, ndef)``: a Type 3 tag served by nfcpy's own ``Type3TagEmulation``.

    with UdpCard(ntag213(UID, uri_message(url)), port):   # the card is on the reader
        ...
    # it left the field (the child process is gone)

``responses`` maps exact command frames (Type 2) or APDUs (Type 4) to garbage answers, as in
``vcard.VirtualCard``. nfcpy's udp device listens on all addresses and closes its socket
between two listens; the cards here keep one socket bound to 127.0.0.1. ``unplugged(port)``
makes the reader side's udp device on that port fail as a USB reader pulled out does;
``synchronous_link()`` makes it drop late answers as a real reader does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ATS = bytes.fromhex("0578807002")  # FSCI 8 (256 bytes), FWI 7: what HARDWARE.md found working
NTAG213_VERSION = bytes.fromhex("0004040201000F03")
NXP_SIGNATURE = bytes.fromhex("67B1750BCCEB1174F9A33BF20E0226551A6366939B31F949848C3C087350FA90")
FELICA_PMM = bytes.fromhex("FFFFFFFFFFFFFFFF")  # no Sony IC code: nfcpy makes it a plain Type3Tag
ACK, NAK = b"\x0a", b"\x00"


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hex(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def _responses(responses: dict[bytes, bytes | None] | None) -> dict[str, str | None]:
    return {cmd.hex(): _hex(rsp) for cmd, rsp in (responses or {}).items()}


# -- card specs (JSON for the child process) ------------------------------------------------


def ntag213(
    uid: bytes,
    ndef: bytes | None,
    *,
    signature: bytes | None = NXP_SIGNATURE,
    cc: bytes | None = None,
    responses: dict[bytes, bytes | None] | None = None,
    drop: dict[bytes, int] | None = None,
) -> dict[str, Any]:
    """An NTAG213 holding ``ndef`` in an NDEF message TLV.

    Args:
        uid: 7 bytes.
        ndef: the NDEF message (at most 142 bytes); ``None``: a blank tag without a
            capability container (a UID-only card).
        signature: answered to READ_SIG; ``None``: READ_SIG is not supported (mute).
        cc: page 3, default ``E1 10 12 00`` (NDEF 1.0, 144 bytes, open) when there is NDEF.
        responses: exact command -> answer, before anything else (``None``: go mute).
        drop: exact command -> how many times it goes unanswered (the tag staying selected)
            before it is answered: a link that fails, then works again.
    """
    return {"kind": "type2", "uid": uid.hex(), "ndef": _hex(ndef), "cc": _hex(cc),
            "signature": _hex(signature), "responses": _responses(responses),
            "drop": {cmd.hex(): n for cmd, n in (drop or {}).items()}}


def type4(
    uid: bytes,
    ndef: bytes | None,
    *,
    cc: bytes | None = None,
    ats: bytes = ATS,
    responses: dict[bytes, bytes | None] | None = None,
) -> dict[str, Any]:
    """A Type 4A tag; ``ndef``, ``cc`` and ``responses`` as for ``vcard.VirtualCard``."""
    return {"kind": "type4", "uid": uid.hex(), "ndef": _hex(ndef), "cc": _hex(cc),
            "ats": ats.hex(), "responses": _responses(responses)}


def felica(
    idm: bytes,
    ndef: bytes | None,
    *,
    attribute: bytes | None = None,
    system: int = 0x12FC,
) -> dict[str, Any]:
    """A Type 3 tag (FeliCa) with ``ndef`` in its NDEF service (0x000B read, 0x0009 write).

    Args:
        idm: 8 bytes.
        ndef: the NDEF message; ``None`` with ``system`` other than 0x12FC: a FeliCa card
            without NDEF.
        attribute: block 0 as is (e.g. with a wrong checksum); default: computed.
        system: the system code the card answers polling for.
    """
    return {"kind": "type3", "idm": idm.hex(), "ndef": _hex(ndef),
            "attribute": _hex(attribute), "system": system}


def felica_attribute(length: int, blocks: int, checksum: int | None = None) -> bytes:
    """Block 0 of an NDEF FeliCa: version 1.0, 4 blocks per read, ``length`` bytes of NDEF."""
    data = bytearray(16)
    data[0:5] = bytes([0x10, 4, 1]) + blocks.to_bytes(2, "big")
    data[10] = 0x01  # read/write
    data[11:14] = length.to_bytes(3, "big")
    total = sum(data[0:14]) if checksum is None else checksum
    data[14:16] = total.to_bytes(2, "big")
    return bytes(data)


# -- the parent side -------------------------------------------------------------------------


class UdpCard:
    """A card on nfcpy's simulated reader at 127.0.0.1:``port``, served by a child process.

    The child writes each frame it receives to a log file before it answers, so that
    ``commands()`` holds every frame the reader has had an answer to.

    Args:
        spec: from ``ntag213``, ``type4`` or ``felica``.
        port: the reader's UDP port.
        timeout: how long ``present`` waits for the card to listen.
    """

    def __init__(self, spec: dict[str, Any], port: int, timeout: float = 10.0) -> None:
        self.spec, self.port, self.timeout = spec, port, timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._earlier: list[bytes] = []  # frames of the earlier presentations

    def present(self) -> UdpCard:
        """Put the card on the reader; returns once it listens (removes it first if needed).

        Raises:
            TimeoutError: the card did not listen within ``timeout`` (port taken?).
        """
        self.remove()
        fd, name = tempfile.mkstemp(prefix="nfc-udp-card-", suffix=".log")
        os.close(fd)
        self._log = Path(name)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "tests.support.nfc_udp", json.dumps(self.spec),
                   str(self.port), name]
        self._proc = subprocess.Popen(command, cwd=ROOT, env=env)
        deadline = time.monotonic() + self.timeout
        while not self._lines() or self._lines()[0] != "listening":
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.remove()
                raise TimeoutError(f"the emulated card did not listen on UDP port {self.port}")
            time.sleep(0.01)
        return self

    def remove(self) -> None:
        """Take the card off the reader at once (the child is killed); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(5)
        if self._log is not None:
            self._earlier += self._frames()
            self._log.unlink(missing_ok=True)
            self._log = None

    def commands(self, first: int | None = None) -> list[bytes]:
        """The frames received so far, optionally only those starting with byte ``first``."""
        frames = self._earlier + self._frames()
        return [f for f in frames if first is None or (f and f[0] == first)]

    def _lines(self) -> list[str]:
        return self._log.read_text().splitlines() if self._log is not None else []

    def _frames(self) -> list[bytes]:
        return [bytes.fromhex(line[6:]) for line in self._lines() if line.startswith("frame ")]

    def __enter__(self) -> UdpCard:
        return self.present()

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def unplugged(port: int) -> Iterator[None]:
    """The reader side of nfcpy's udp device on ``port`` behaves as a USB reader pulled out.

    Sensing and exchanging raise ``OSError(ENODEV)``, as nfcpy's USB transport does when the
    device is gone, and opening finds no device. Only readers in this process are affected.
    """
    from unittest import mock

    import nfc.clf.device
    import nfc.clf.udp

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    def failing(method):
        def wrapper(self, *args, **kwargs):
            return gone() if self.addr[1] == port else method(self, *args, **kwargs)

        return wrapper

    connect = nfc.clf.device.connect

    def no_device(path: str):
        return None if path.startswith("udp") and path.endswith(f":{port}") else connect(path)

    device = nfc.clf.udp.Device
    with (
        mock.patch.object(device, "sense_tta", failing(device.sense_tta)),
        mock.patch.object(device, "sense_ttf", failing(device.sense_ttf)),
        mock.patch.object(device, "send_cmd_recv_rsp", failing(device.send_cmd_recv_rsp)),
        mock.patch.object(nfc.clf.device, "connect", no_device),
    ):
        yield


@contextlib.contextmanager
def synchronous_link(min_timeout: float = 0.1) -> Iterator[None]:
    """Make the reader side of nfcpy's udp device take only the answer to its last command.

    nfcpy's udp device takes whatever datagram comes next as the answer. Under CPU load a
    Type 2 READ (nfcpy waits 5 ms) times out, nfcpy sends it again, and the late answer to
    the first try is taken as the answer to the next READ: the card memory reads wrong. A
    real reader's chip drops late answers. Here late answers still waiting are dropped before
    each command, and each command waits at least ``min_timeout`` seconds.
    """
    import select
    from unittest import mock

    import nfc.clf.udp

    send = nfc.clf.udp.Device.send_cmd_recv_rsp

    def send_cmd_recv_rsp(self, target, data, timeout):
        if data is not None and self.socket is not None:
            while select.select([self.socket], [], [], 0)[0]:
                self.socket.recvfrom(1024)  # a late answer to an earlier command
        return send(self, target, data, max(timeout, min_timeout) if timeout else timeout)

    with mock.patch.object(nfc.clf.udp.Device, "send_cmd_recv_rsp", send_cmd_recv_rsp):
        yield


# -- the child side: the cards ---------------------------------------------------------------


_LOG: list[Any] = []  # the child's log file


def _say(*words: str) -> None:
    print(*words, file=_LOG[0], flush=True)


class Type2Card:
    """NTAG213 memory and commands."""

    PAGES = 45

    def __init__(self, spec: dict[str, Any]) -> None:
        from nfc.clf import LocalTarget

        uid = bytes.fromhex(spec["uid"])
        assert len(uid) == 7
        memory = bytearray(self.PAGES * 4)
        memory[0:3] = uid[0:3]
        memory[3] = 0x88 ^ uid[0] ^ uid[1] ^ uid[2]
        memory[4:8] = uid[3:7]
        memory[8] = uid[3] ^ uid[4] ^ uid[5] ^ uid[6]
        memory[9] = 0x48
        ndef = None if spec["ndef"] is None else bytes.fromhex(spec["ndef"])
        if ndef is not None:
            memory[12:16] = bytes.fromhex("E1101200")
            tlv = bytes([0x03, len(ndef)]) + ndef + b"\xfe"
            assert len(tlv) <= 144, "an NTAG213 holds 144 bytes of NDEF TLVs"
            memory[16 : 16 + len(tlv)] = tlv
        if spec["cc"] is not None:
            memory[12:16] = bytes.fromhex(spec["cc"])
        memory[160:164] = bytes.fromhex("000000BD")  # dynamic lock bytes
        memory[164:168] = bytes.fromhex("040000FF")  # CFG0: AUTH0 FF, no password
        self.memory = memory
        self.signature = None if spec["signature"] is None else bytes.fromhex(spec["signature"])
        self.responses = {bytes.fromhex(k): None if v is None else bytes.fromhex(v)
                          for k, v in spec["responses"].items()}
        self.drop = {bytes.fromhex(k): n for k, n in spec["drop"].items()}
        self.target = LocalTarget("106A", sens_res=bytearray.fromhex("4400"),
                                  sdd_res=bytearray(uid), sel_res=bytearray.fromhex("00"))
        self.halted = False

    def activate(self, clf: Any, activated: Any) -> bytes | None:
        self.halted = False
        return activated.tt2_cmd

    def answer(self, cmd: bytes) -> bytes | None:
        """The answer to one command; ``None`` and ``halted``: the tag went mute."""
        if self.drop.get(cmd):
            self.drop[cmd] -= 1
            return None
        if cmd in self.responses:
            rsp = self.responses[cmd]
            self.halted = rsp is None
            return rsp
        if cmd[0] == 0x30 and len(cmd) == 2:  # READ: 4 pages, rolling over at the end
            if cmd[1] >= self.PAGES:
                return NAK
            start = cmd[1] * 4
            return bytes((self.memory + self.memory)[start : start + 16])
        if cmd[0] == 0xA2 and len(cmd) == 6 and 4 <= cmd[1] < 40:  # WRITE user memory
            self.memory[cmd[1] * 4 : cmd[1] * 4 + 4] = cmd[2:6]
            return ACK
        if cmd == b"\x60":  # GET_VERSION
            return NTAG213_VERSION
        if cmd == b"\x3c\x00" and self.signature is not None:  # READ_SIG
            return self.signature
        self.halted = True  # AUTH (1A) and anything else: mute until the next anticollision
        return None


class Type4Card:
    """ISO-DEP blocks around ``vcard.VirtualCard``'s APDU logic."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from nfc.clf import LocalTarget

        from tests.support.vcard import VirtualCard

        uid = bytes.fromhex(spec["uid"])
        responses = {bytes.fromhex(k): None if v is None else bytes.fromhex(v)
                     for k, v in spec["responses"].items()}
        self.card = VirtualCard(
            uid, None if spec["ndef"] is None else bytes.fromhex(spec["ndef"]),
            None if spec["cc"] is None else bytes.fromhex(spec["cc"]), responses=responses)
        self.ats = bytes.fromhex(spec["ats"])
        self.target = LocalTarget("106A", sens_res=bytearray.fromhex("4403"),
                                  sdd_res=bytearray(uid), sel_res=bytearray.fromhex("20"))
        self.active = self.halted = False
        self.block = 1
        self.chained = b""

    def activate(self, clf: Any, activated: Any) -> bytes | None:
        self.active = self.halted = False
        return activated.tt4_cmd or activated.tt2_cmd

    def answer(self, cmd: bytes) -> bytes | None:
        pcb = cmd[0]
        if not self.active:
            if pcb == 0xE0 and len(cmd) == 2:  # RATS
                self.active, self.block, self.chained = True, 1, b""
                self.card.reset()
                return self.ats
            self.halted = True  # not activated: silent until the next anticollision
            return None
        if pcb & 0xE2 == 0x02:  # I-block
            self.block = pcb & 1
            if pcb & 0x10:  # the reader chains a long command: acknowledge the part
                self.chained += cmd[1:]
                return bytes([0xA2 | self.block])
            apdu, self.chained = self.chained + cmd[1:], b""
            response = self.card.process(apdu)
            if response is None:  # the card leaves the field in the middle of the command
                os._exit(0)
            return bytes([0x02 | self.block]) + response
        if pcb & 0xF6 == 0xB2:  # R(NAK): nfcpy's presence check
            return bytes([0xA2 | self.block])
        if pcb & 0xF7 == 0xC2:  # S(DESELECT)
            self.active, self.halted = False, True
            return bytes(cmd[:1])
        return None  # nothing else is answered; the tag stays selected


class Type3Card:
    """nfcpy's ``Type3TagEmulation`` over an NDEF memory (attribute block + data blocks)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from nfc.clf import LocalTarget

        idm = bytes.fromhex(spec["idm"])
        ndef = bytes.fromhex(spec["ndef"]) if spec["ndef"] is not None else b""
        blocks = max(4, (len(ndef) + 15) // 16)
        attribute = (bytes.fromhex(spec["attribute"]) if spec["attribute"] is not None
                     else felica_attribute(len(ndef), blocks))
        self.blocks = bytearray(attribute + ndef + bytes(blocks * 16 - len(ndef)))
        sensf_res = b"\x01" + idm + FELICA_PMM + spec["system"].to_bytes(2, "big")
        self.target = LocalTarget("212F", sensf_res=bytearray(sensf_res))
        self.system = spec["system"]
        self.halted = False
        self.emulation: Any = None

    def activate(self, clf: Any, activated: Any) -> bytes | None:
        import nfc.tag

        self.emulation = nfc.tag.emulate(clf, activated)
        if self.system == 0x12FC:
            self.emulation.add_service(0x0009, self._read, self._write)
            self.emulation.add_service(0x000B, self._read, None)
        return self.emulation.cmd

    def _read(self, block: int, rb: bool, re: bool) -> bytes | None:
        if block < len(self.blocks) // 16:
            return bytes(self.blocks[block * 16 : block * 16 + 16])
        return None

    def _write(self, block: int, data: bytes, wb: bool, we: bool) -> bool:
        if block < len(self.blocks) // 16:
            self.blocks[block * 16 : block * 16 + 16] = data
            return True
        return False

    def answer(self, cmd: bytes) -> bytes | None:
        return self.emulation.process_command(bytearray(cmd))  # None: not answered, still here


CARDS = {"type2": Type2Card, "type3": Type3Card, "type4": Type4Card}


def _keep_listening(device: Any) -> None:
    """Give nfcpy's udp device one socket, bound to 127.0.0.1, for the card's whole life.

    nfcpy's device closes its socket at every ``listen`` (``mute``) and binds a new one to all
    addresses: a frame the reader sends in between (its SENS_REQ right after the RFOFF that
    ended the last exchange) would be lost, and the reader would wait a second for nothing.
    With one socket such frames wait until the card listens. A card has no field to mute.
    """

    def bind(time_to_return: float) -> bool:
        if device.socket.getsockname()[1] == device.addr[1]:
            return True  # bound since the first listen
        try:
            device.socket.bind(device.addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        _say("listening")
        return True

    device._bind_socket = bind
    device.mute = lambda: None


def _next_command(clf: Any, answer: bytes | None) -> bytes | None:
    """Send ``answer`` and wait for the next command; ``None`` when the reader's field went off."""
    import nfc.clf

    while True:
        try:
            command = clf.exchange(answer, 1.0)
        except nfc.clf.BrokenLinkError:  # the reader muted: sense again, or closed
            return None
        except nfc.clf.CommunicationError:  # still selected, nothing came: keep waiting
            answer = None
            continue
        if command is not None:
            return bytes(command)


def serve(spec: dict[str, Any], port: int) -> None:
    """Be the card of ``spec`` on the simulated reader at 127.0.0.1:``port``, forever."""
    import nfc

    card = CARDS[spec["kind"]](spec)
    clf = nfc.ContactlessFrontend(f"udp:127.0.0.1:{port}")
    _keep_listening(clf.device)
    while True:
        activated = clf.listen(card.target, 60.0)
        if activated is None:
            continue
        command = card.activate(clf, activated)
        while command is not None:
            _say("frame", bytes(command).hex())
            answer = card.answer(bytes(command))
            if card.halted:  # mute: the answer (if any) goes out, then anticollision again
                card.halted = False
                if answer is not None:
                    clf.exchange(answer, 0)
                break
            command = _next_command(clf, answer)


if __name__ == "__main__":
    _LOG.append(open(sys.argv[3], "a", encoding="ascii"))  # noqa: SIM115 (open until killed)
    serve(json.loads(sys.argv[1]), int(sys.argv[2]))
