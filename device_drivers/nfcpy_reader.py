"""``nfcpy:`` reader: a contactless reader that nfcpy drives itself, over USB or a serial port.

| capability | |
|---|---|
| UID | yes: NFCID1 of Type 2 and Type 4A tags, IDm of Type 3 (FeliCa) tags; upper-case hex |
| NDEF URL | Type 2 (NTAG21x, Ultralight), Type 3 (FeliCa Lite-S, NFC Forum FeliCa), Type 4A |
| originality signature | NTAG21x: READ_SIG (``3C``), on ``Tap.signature``; not checked here |
| QR text | no |
| hardware | a reader nfcpy drives (PN531/532/533, ACR122U, RC-S380, ...), nfcpy in the venv |

The URI is ``nfcpy:`` followed by nfcpy's own device path: ``nfcpy:usb`` (the first supported
USB reader), ``nfcpy:usb:054c:06c1`` (vendor:product), ``nfcpy:usb:001:005`` (bus:device),
``nfcpy:tty:USB0:pn532`` (serial port and driver), ``nfcpy:udp`` or ``nfcpy:udp:HOST:PORT``
(nfcpy's simulated reader, for tests). ``nfcpy:`` alone means ``nfcpy:usb``.

nfcpy talks to the reader over USB directly, not through PC/SC: a reader is either pcscd's or
nfcpy's. Stop pcscd and blacklist the ``pn533_usb`` kernel module for nfcpy readers, and let
the agent's user open the device (a udev rule).

Each round senses 106 kbps Type A (Type 2 and 4A tags) and 212 kbps Type F (FeliCa) once and
activates what answered with nfcpy's tag classes. A card that was read is then watched with
nfcpy's presence check: it is reported once, however long it rests on the reader, and the next
tap can only come after it left. A card that failed is not raised again while it stays either.

nfcpy's own DEBUG records hold the card memory, that is the card token; its logger stays at
the INFO level nfcpy gives it.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from typing import Any

from device_drivers.base import DriverError, Reader, ReaderError, ReaderUnavailable, Tap
from device_drivers.ndefmsg import first_uri
from device_drivers.t4t import read_ndef_file

log = logging.getLogger(__name__)

TECHNOLOGIES = ("106A", "212F")  # Type 2 and 4A tags; Type 3 (FeliCa)
POLL_INTERVAL = 0.1  # seconds between two sense rounds, and between two presence checks
PATH_KINDS = ("usb", "tty", "com", "udp")
_HINT = (
    "is it plugged in, not claimed by pcscd or the pn533_usb kernel module, "
    "and may this user open it (udev rule)?"
)
# what nfcpy's tag classes raise when a card answers something they did not expect
_GARBAGE = (IndexError, KeyError, ValueError, TypeError, AssertionError, RuntimeError, struct.error)

NDEF_AID = bytes.fromhex("D2760000850101")
CC_FILE = bytes.fromhex("E103")
SW_OK = 0x9000


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _nfc() -> Any:
    import nfc  # imported here: a till without nfcpy readers never loads it

    return nfc


class NfcpyReader(Reader):
    """A reader found by its nfcpy path; see the module docstring.

    Args:
        uri: ``nfcpy:PATH``, e.g. ``nfcpy:usb:054c:06c1`` or ``nfcpy:udp:127.0.0.1:54321``.

    Raises:
        DriverError: the path is not one nfcpy knows (``usb``, ``tty``, ``com``, ``udp``).
    """

    def __init__(self, uri: str = "nfcpy:usb") -> None:
        self.uri = uri
        self.path = uri.partition(":")[2].strip() or "usb"
        parts = self.path.split(":")
        if parts[0] not in PATH_KINDS:
            raise DriverError(
                f"malformed reader URI {uri!r}: nfcpy paths start with {', '.join(PATH_KINDS)}"
            )
        if parts[0] == "udp" and len(parts) > 2 and parts[2] and not parts[2].isdigit():
            raise DriverError(f"malformed reader URI {uri!r}: the UDP port must be a number")
        self.device: str | None = None  # what nfcpy opened, e.g. "SONY RC-S380/P on usb:001:005"
        self._clf: Any = None
        self._tag: Any = None  # the card last handled, until it leaves the field
        # a card that failed to activate (no tag to check the presence of), until a sense
        # round without it
        self._refused: bytes | None = None

    # -- public API ------------------------------------------------------------------------

    def open(self) -> None:
        """Open the reader at the URI's path.

        Raises:
            ReaderUnavailable: no reader there, or it cannot be opened (permissions, busy);
                the message says what to check.
        """
        self.close()
        clf = _nfc().ContactlessFrontend()
        try:
            found = clf.open(self.path)
        except OSError as exc:  # a full path that names a device nfcpy cannot open
            raise ReaderUnavailable(
                f"cannot open the nfcpy reader {self.path!r}: {_reason(exc)}; {_HINT}"
            ) from exc
        if not found:
            raise ReaderUnavailable(f"no nfcpy reader at {self.path!r}; {_HINT}")
        self._clf = clf
        self.device = str(clf)
        log.info("nfcpy reader %s opened for %s", self.device, self.uri)

    def close(self) -> None:
        """Release the device so that another process can open it; safe to call twice."""
        clf, self._clf = self._clf, None
        self._tag = self._refused = None
        if clf is None:
            return
        try:
            clf.close()
        except Exception:  # a reader pulled out cannot be closed cleanly; it is released anyway
            log.debug("closing nfcpy reader %s", self.path, exc_info=True)

    def read(self, timeout: float) -> Tap | None:
        """Wait for a card that was not reported yet and read it.

        A sense round is not interrupted: with nfcpy's ``udp`` simulator a round without a
        card takes about a second per technology, so ``read`` may return that much later.

        Args:
            timeout: seconds to wait at most for a card.

        Returns:
            ``Tap(reader=<the URI>, uid=<hex>, url=<NDEF URL or None>, signature=<hex or
            None>)``, or ``None`` when no new card came within ``timeout`` (the card last
            read is still on the reader, or none is). A card without NDEF, or with an empty
            NDEF message, gives a UID-only tap.

        Raises:
            ReaderUnavailable: the reader failed or was unplugged; open it again later.
            ReaderError: the reader is not open, or the card was removed while being read
                or answered garbage (malformed capability container or NDEF message, NDEF
                length beyond its area, ...). A failed card is not raised again while it
                stays on the reader.
        """
        clf = self._clf
        if clf is None:
            raise ReaderError(f"nfcpy reader {self.uri!r} is not open")
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            if self._tag is not None and not self._wait_until_gone(deadline):
                return None
            while True:
                target = clf.sense(*self._targets(), iterations=1)
                if target is None:
                    self._refused = None
                elif _identity(target) != self._refused:
                    tap = self._read_target(clf, target)
                    if tap is not None:
                        return tap
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                time.sleep(min(POLL_INTERVAL, remaining))
        except OSError as exc:  # nfcpy's transports raise OSError (ENODEV, EIO, ...)
            raise ReaderUnavailable(
                f"nfcpy reader {self.path!r} failed: {_reason(exc)} (unplugged?)"
            ) from exc

    # -- sensing ---------------------------------------------------------------------------

    @staticmethod
    def _targets() -> list[Any]:
        from nfc.clf import RemoteTarget

        return [RemoteTarget(brty) for brty in TECHNOLOGIES]

    def _wait_until_gone(self, deadline: float) -> bool:
        """Watch the card last handled; ``True`` once it left, ``False`` at the deadline."""
        while _present(self._tag):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(POLL_INTERVAL, remaining))
        self._tag = None
        return True

    def _read_target(self, clf: Any, target: Any) -> Tap | None:
        """Activate and read what answered the sense; ``None`` if it is not a tag (any more).

        A card that stops answering in the middle is sensed again and read once more: a card
        at the edge of the field often fails once, and sensing again starts a clean link.
        """
        for attempt in (1, 2):
            self._tag = None
            tag = self._activate(clf, target)
            if tag is None:
                return None
            self._tag = tag  # watched until it leaves, whether it reads well or not
            uid = bytes(tag.identifier).hex().upper()
            try:
                url, signature = _read_tag(tag)
            except _NoAnswer as exc:
                if attempt == 1:
                    again = self._sense_again(clf, target)
                    if again is None:  # it left; nfcpy has forgotten the tag with the sense
                        self._tag = None
                    else:
                        log.info("card %s on %s: %s; reading it again", uid, self.uri, exc)
                        target = again
                        continue
                error: ReaderError = exc
            except ReaderError as exc:
                error = exc
            else:
                log.info("card %s on %s (%s, %s)", uid, self.uri, tag,
                         "NDEF URL" if url else "UID only")
                return Tap(reader=self.uri, uid=uid, url=url, signature=signature)
            log.warning("card %s on %s: %s", uid, self.uri, error)
            log.debug("card %s", uid, exc_info=error.__cause__ or error)
            raise error
        return None  # not reached: the second attempt returns or raises

    def _activate(self, clf: Any, target: Any) -> Any:
        nfc = _nfc()
        try:
            tag = nfc.tag.activate(clf, target)
        except (nfc.tag.TagCommandError, nfc.clf.CommunicationError, *_GARBAGE) as exc:
            self._refused = _identity(target)
            log.debug("activating %s", target, exc_info=True)
            raise ReaderError(
                f"the card answered garbage when it was activated ({type(exc).__name__})"
            ) from exc
        if tag is None:  # gone already, or a phone in peer-to-peer mode
            log.debug("%s answered the sense but is not a tag", target)
        return tag

    @staticmethod
    def _sense_again(clf: Any, target: Any) -> Any:
        """The same card sensed anew, or ``None`` if it left."""
        from nfc.clf import RemoteTarget

        again = RemoteTarget(target.brty)
        if target.sdd_res:
            again.sel_req = target.sdd_res  # only this card answers
        found = clf.sense(again, iterations=1)
        return found if found is not None and _identity(found) == _identity(target) else None


def _identity(target: Any) -> bytes:
    """What tells one card from another in a sense answer (its UID or IDm)."""
    return bytes(target.sdd_res or (target.sensf_res or b"")[1:9] or b"")


def _present(tag: Any) -> bool:
    """nfcpy's presence check; a card that answers it with garbage has gone."""
    nfc = _nfc()
    try:
        return bool(tag.is_present)
    except (nfc.tag.TagCommandError, nfc.clf.CommunicationError, *_GARBAGE):
        log.debug("presence check of %s", tag, exc_info=True)
        return False


# -- reading one card ------------------------------------------------------------------------


class _NoAnswer(ReaderError):
    """The card stopped answering in the middle of a read: it left, or the link failed once."""


def _read_tag(tag: Any) -> tuple[str | None, str | None]:
    """``(URL, originality signature)`` of an activated tag.

    Raises:
        _NoAnswer: the card stopped answering (nfcpy's errors, or what they hide).
        ReaderError: the card answered garbage.
    """
    nfc = _nfc()
    try:
        return _read_url(tag), _read_signature(tag)
    except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
        raise _NoAnswer(f"the card stopped answering ({exc}): removed too soon?") from exc
    except _GARBAGE as exc:
        raise ReaderError(f"the card answered garbage ({type(exc).__name__})") from exc


def _read_url(tag: Any) -> str | None:
    """The URL of the card's NDEF message, by tag type; ``None`` without one."""
    from nfc.tag import tt2, tt3, tt4

    if isinstance(tag, tt2.Type2Tag):
        return _type2_url(tag)
    if isinstance(tag, tt4.Type4Tag):
        return _type4_url(tag)
    if isinstance(tag, tt3.Type3Tag):
        return _type3_url(tag)
    log.debug("%s: not a tag type with NDEF here", tag.type)
    return None


def _url(octets: bytes) -> str | None:
    return first_uri(bytes(octets)) if octets else None


def _type2_url(tag: Any) -> str | None:
    # nfcpy answers "no NDEF" both for a blank tag and for an unreadable one: the capability
    # container (page 3) tells them apart
    cc = bytes(tag.read(0))[12:16]
    if cc[0] != 0xE1:
        log.debug("no NDEF capability container: UID-only card")
        return None
    if cc[1] >> 4 != 1:
        raise ReaderError(f"unsupported Type 2 tag mapping version {cc[1] >> 4}.{cc[1] & 15}")
    if cc[3] >> 4 != 0:
        raise ReaderError(f"the NDEF area is read-protected (access {cc[3]:02X})")
    ndef = tag.ndef
    if ndef is None:
        # nfcpy says no more: a READ failed (timeout, short answer), or the TLVs hold no NDEF
        raise _NoAnswer("no readable NDEF message TLV in the tag memory (removed too soon?)")
    return _url(ndef.octets)


def _type3_url(tag: Any) -> str | None:
    ndef = tag.ndef
    if ndef is None:
        if tag.sys == 0x12FC:  # answered as an NDEF card, then failed (nfcpy does not say why)
            raise _NoAnswer(
                "the NDEF attribute block is unreadable, of an unknown version or fails its "
                "checksum (removed too soon?)"
            )
        log.debug("no NDEF system (12FC): UID-only card")
        return None
    return _url(ndef.octets)


def _apdu(tag: Any, ins: int, p1: int, p2: int, data: bytes | None = None, le: int = 0):
    """Send one APDU over ISO-DEP; ``(response data, status word)``."""
    response = bytes(tag.send_apdu(0x00, ins, p1, p2, data, le, check_status=False))
    return response[:-2], response[-2] << 8 | response[-1]


def _read_binary(tag: Any, offset: int, length: int, what: str) -> bytes:
    if offset > 0x7FFF:
        raise ReaderError(f"{what}: offset {offset} beyond READ BINARY's reach")
    data, sw = _apdu(tag, 0xB0, offset >> 8, offset & 0xFF, le=length)
    if sw != SW_OK:
        raise ReaderError(f"{what}: status {sw:04X}")
    if not data:
        raise ReaderError(f"{what}: the tag returned no data")
    return data[:length]


def _type4_url(tag: Any) -> str | None:
    """Walk the NDEF application of a Type 4 tag (nfcpy's own walk hides what went wrong)."""
    _, sw = _apdu(tag, 0xA4, 0x04, 0x00, NDEF_AID, le=256)
    if sw != SW_OK:
        log.debug("no NDEF application (status %04X): UID-only card", sw)
        return None
    message = read_ndef_file(
        lambda file_id, _what: _apdu(tag, 0xA4, 0x00, 0x0C, file_id)[1],
        lambda offset, length, what: _read_binary(tag, offset, length, what))
    if message is None:
        log.debug("empty NDEF file: UID-only card")
        return None
    return first_uri(message)


def _read_signature(tag: Any) -> str | None:
    """The NTAG21x originality signature (CARDS.md §4) in hex; ``None`` for other cards."""
    from nfc.tag import TagCommandError, tt2_nxp

    if not isinstance(tag, tt2_nxp.NTAG21x):
        return None
    try:
        signature = bytes(tag.signature)  # nfcpy gives 32 zero bytes when READ_SIG fails
    except (TagCommandError, _nfc().clf.CommunicationError, *_GARBAGE):
        log.debug("READ_SIG", exc_info=True)
        return None
    if len(signature) != 32 or not any(signature):
        log.debug("no originality signature (%d bytes)", len(signature))
        return None
    return signature.hex().upper()
