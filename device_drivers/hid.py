"""``hid:`` reader: keyboard-wedge QR/barcode scanners, read through Linux evdev.

| capability | |
|---|---|
| UID | no |
| NDEF URL | no |
| QR text | yes, one line per scan (ended by Enter) |
| hardware | a USB/Bluetooth scanner in keyboard (HID) mode, ``/dev/input/event*`` |

URIs:

- ``hid:/dev/input/by-id/usb-SCANNER-event-kbd`` or ``hid:/dev/input/event3``: a device path;
- ``hid:name=Honeywell``: the first input device whose name contains ``Honeywell``
  (case-insensitive) and that can type Enter;
- ``?layout=fr`` after either form decodes French AZERTY instead of the default US layout
  (the scanner's own "keyboard language" setting must match).

The device is grabbed exclusively while open, so a scan does not also type into the
focused window. The user running the kiosk needs read access to the device: membership
of the ``input`` group, or a udev rule such as
``SUBSYSTEM=="input", ATTRS{idVendor}=="0c2e", MODE="0660", GROUP="kiosk"``.

Key decoding is plain data (``LAYOUTS``) and a small state machine (``KeyDecoder``) that
work on Linux key codes from ``linux/input-event-codes.h`` and do not need evdev, so they
can be tested without a device. A scanned line is a bearer token: it is never logged,
only its length.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import select
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, unquote

from device_drivers.base import Reader, ReaderError, ReaderUnavailable, Tap

log = logging.getLogger(__name__)

# --- Linux input constants (linux/input-event-codes.h) ---------------------------------

EV_KEY = 1
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2  # the ``value`` of an EV_KEY event

KEY_ENTER = 28
KEY_KPENTER = 96
KEY_LEFTSHIFT = 42
KEY_RIGHTSHIFT = 54
KEY_LEFTCTRL = 29
KEY_RIGHTCTRL = 97
KEY_LEFTALT = 56
KEY_RIGHTALT = 100  # AltGr on layouts that have one
KEY_LEFTMETA = 125
KEY_RIGHTMETA = 126
KEY_CAPSLOCK = 58
KEY_NUMLOCK = 69
KEY_SCROLLLOCK = 70

LINE_END_KEYS = frozenset({KEY_ENTER, KEY_KPENTER})
SHIFT_KEYS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
# Lock keys change LED state that we cannot see from raw events; scanners do not rely on
# them, so they are ignored rather than guessed at.
IGNORED_KEYS = frozenset({KEY_CAPSLOCK, KEY_NUMLOCK, KEY_SCROLLLOCK})
# Held with a character key, these make a shortcut, not a character.
CHORD_KEYS = frozenset({KEY_LEFTCTRL, KEY_RIGHTCTRL, KEY_LEFTALT, KEY_LEFTMETA, KEY_RIGHTMETA})

STALE_AFTER = 1.0  # seconds of silence after which a partial line is a stray key press

# --- layouts: key code -> (plain, with Shift); None = no character -------------------

# Keypad keys with NumLock on (scanners that "type digits on the keypad"); Shift+keypad
# is a navigation key, not a character.
_KEYPAD: dict[int, tuple[str, str | None]] = {
    71: ("7", None), 72: ("8", None), 73: ("9", None), 74: ("-", None),
    75: ("4", None), 76: ("5", None), 77: ("6", None), 78: ("+", None),
    79: ("1", None), 80: ("2", None), 81: ("3", None), 82: ("0", None),
    83: (".", None), 55: ("*", None), 98: ("/", None),
}

US_KEYS: dict[int, tuple[str, str | None]] = {
    # digit row: KEY_1 (2) .. KEY_0 (11), KEY_MINUS (12), KEY_EQUAL (13)
    2: ("1", "!"), 3: ("2", "@"), 4: ("3", "#"), 5: ("4", "$"), 6: ("5", "%"),
    7: ("6", "^"), 8: ("7", "&"), 9: ("8", "*"), 10: ("9", "("), 11: ("0", ")"),
    12: ("-", "_"), 13: ("=", "+"),
    # top row: KEY_Q (16) .. KEY_P (25), KEY_LEFTBRACE, KEY_RIGHTBRACE
    16: ("q", "Q"), 17: ("w", "W"), 18: ("e", "E"), 19: ("r", "R"), 20: ("t", "T"),
    21: ("y", "Y"), 22: ("u", "U"), 23: ("i", "I"), 24: ("o", "O"), 25: ("p", "P"),
    26: ("[", "{"), 27: ("]", "}"),
    # home row: KEY_A (30) .. KEY_L (38), KEY_SEMICOLON, KEY_APOSTROPHE, KEY_GRAVE
    30: ("a", "A"), 31: ("s", "S"), 32: ("d", "D"), 33: ("f", "F"), 34: ("g", "G"),
    35: ("h", "H"), 36: ("j", "J"), 37: ("k", "K"), 38: ("l", "L"),
    39: (";", ":"), 40: ("'", '"'), 41: ("`", "~"), 43: ("\\", "|"),
    # bottom row: KEY_Z (44) .. KEY_M (50), KEY_COMMA, KEY_DOT, KEY_SLASH, KEY_102ND
    44: ("z", "Z"), 45: ("x", "X"), 46: ("c", "C"), 47: ("v", "V"), 48: ("b", "B"),
    49: ("n", "N"), 50: ("m", "M"), 51: (",", "<"), 52: (".", ">"), 53: ("/", "?"),
    86: ("\\", "|"),
    57: (" ", " "),  # KEY_SPACE
    **_KEYPAD,
}

# French AZERTY (xkb "fr" basic / Windows "Français"), keyed by the physical key code.
FR_KEYS: dict[int, tuple[str, str | None]] = {
    # digit row: digits need Shift
    2: ("&", "1"), 3: ("é", "2"), 4: ('"', "3"), 5: ("'", "4"), 6: ("(", "5"),
    7: ("-", "6"), 8: ("è", "7"), 9: ("_", "8"), 10: ("ç", "9"), 11: ("à", "0"),
    12: (")", "°"), 13: ("=", "+"),
    # top row: a z e r t y u i o p; KEY_LEFTBRACE is the dead circumflex (left out)
    16: ("a", "A"), 17: ("z", "Z"), 18: ("e", "E"), 19: ("r", "R"), 20: ("t", "T"),
    21: ("y", "Y"), 22: ("u", "U"), 23: ("i", "I"), 24: ("o", "O"), 25: ("p", "P"),
    27: ("$", "£"),
    # home row: q s d f g h j k l m ù *
    30: ("q", "Q"), 31: ("s", "S"), 32: ("d", "D"), 33: ("f", "F"), 34: ("g", "G"),
    35: ("h", "H"), 36: ("j", "J"), 37: ("k", "K"), 38: ("l", "L"), 39: ("m", "M"),
    40: ("ù", "%"), 41: ("²", None), 43: ("*", "µ"),
    # bottom row: < w x c v b n , ; : !
    86: ("<", ">"),
    44: ("w", "W"), 45: ("x", "X"), 46: ("c", "C"), 47: ("v", "V"), 48: ("b", "B"),
    49: ("n", "N"), 50: (",", "?"), 51: (";", "."), 52: (":", "/"), 53: ("!", "§"),
    57: (" ", " "),
    **_KEYPAD,
}

FR_ALTGR: dict[int, str] = {
    3: "~", 4: "#", 5: "{", 6: "[", 7: "|", 8: "`", 9: "\\", 10: "^", 11: "@",
    12: "]", 13: "}", 18: "€",
}


@dataclass(frozen=True)
class Layout:
    """A keyboard layout as data.

    Attributes:
        name: the value of ``?layout=``.
        keys: key code -> (character, character with Shift); ``None`` = no character.
        altgr: key code -> character with AltGr (right Alt); empty when the layout has no
            AltGr, in which case right Alt is an ordinary Alt.
    """

    name: str
    keys: Mapping[int, tuple[str, str | None]]
    altgr: Mapping[int, str] = field(default_factory=dict)


LAYOUTS: dict[str, Layout] = {
    "us": Layout("us", US_KEYS),
    "fr": Layout("fr", FR_KEYS, FR_ALTGR),
}


def get_layout(name: str) -> Layout:
    """Return the layout called ``name``.

    Args:
        name: ``us`` or ``fr`` (case-insensitive).

    Returns:
        The layout.

    Raises:
        ReaderError: no layout has that name.
    """
    try:
        return LAYOUTS[name.strip().lower()]
    except KeyError:
        raise ReaderError(
            f"unknown keyboard layout {name!r} for the hid: reader; use one of "
            f"{', '.join(sorted(LAYOUTS))}"
        ) from None


class KeyDecoder:
    """Turns key events into lines of text, one line per scan.

    Feed it every EV_KEY event in order. Key-down events of character keys append to the
    current line; Enter (main or keypad) completes it. Key-up events only release
    modifiers and auto-repeat events are ignored. A line that contains a key the layout
    cannot type is reported as an error when its Enter arrives, so the rest of that scan
    does not leak into the next one. A partial line followed by more than ``stale_after``
    seconds of silence is dropped: scanners type a whole code within milliseconds, so it
    was a stray key press.

    Attributes:
        layout: the layout in use.
        stale_after: the silence, in seconds, after which a partial line is dropped.
    """

    def __init__(self, layout: str | Layout = "us", stale_after: float = STALE_AFTER) -> None:
        """Make a decoder.

        Args:
            layout: a ``Layout`` or the name of one in ``LAYOUTS``.
            stale_after: seconds of silence after which a partial line is dropped.

        Raises:
            ReaderError: ``layout`` names no known layout.
        """
        self.layout = layout if isinstance(layout, Layout) else get_layout(layout)
        self.stale_after = stale_after
        self._chars: list[str] = []
        self._bad_code: int | None = None
        self._held: set[int] = set()
        self._last_at: float | None = None

    @property
    def pending(self) -> int:
        """The number of characters typed so far on the unfinished line."""
        return len(self._chars)

    def reset(self) -> None:
        """Forget the unfinished line and the held modifiers."""
        self._chars.clear()
        self._bad_code = None
        self._held.clear()
        self._last_at = None

    def feed(self, code: int, value: int, at: float | None = None) -> str | None:
        """Take one key event.

        Args:
            code: the Linux key code, e.g. 30 for KEY_A.
            value: 1 key down, 0 key up, 2 auto-repeat (ignored).
            at: when the event happened, in seconds on any one clock (evdev event time);
                ``time.monotonic()`` when omitted.

        Returns:
            The completed line when this event is Enter ending a non-empty line, else
            ``None``.

        Raises:
            ReaderError: this Enter ends a line that contained a key the layout does not
                know; the line is discarded.
        """
        if value == KEY_REPEAT:
            return None
        now = time.monotonic() if at is None else at
        if value == KEY_DOWN and self._last_at is not None and (
            self._chars or self._bad_code is not None
        ) and abs(now - self._last_at) > self.stale_after:
            log.warning("hid: dropped a stale partial line of %d characters (stray key press?)",
                        len(self._chars))
            self._chars.clear()
            self._bad_code = None
        self._last_at = now

        if code in SHIFT_KEYS or code in CHORD_KEYS or code == KEY_RIGHTALT:
            if value == KEY_DOWN:
                self._held.add(code)
            else:
                self._held.discard(code)
            return None
        if value != KEY_DOWN or code in IGNORED_KEYS:
            return None
        if code in LINE_END_KEYS:
            return self._end_line()

        char = self._char_for(code)
        if char is None:
            if self._bad_code is None:
                self._bad_code = code
        else:
            self._chars.append(char)
        return None

    def _char_for(self, code: int) -> str | None:
        held = self._held
        if held & CHORD_KEYS:
            return None
        if KEY_RIGHTALT in held:
            if not self.layout.altgr:  # right Alt is plain Alt: a shortcut
                return None
            return self.layout.altgr.get(code) if not held & SHIFT_KEYS else None
        pair = self.layout.keys.get(code)
        if pair is None:
            return None
        return pair[1] if held & SHIFT_KEYS else pair[0]

    def _end_line(self) -> str | None:
        text = "".join(self._chars)
        bad = self._bad_code
        self._chars.clear()
        self._bad_code = None
        if bad is not None:
            log.warning("hid: rejected a line of %d characters: unknown key code %d",
                        len(text), bad)
            raise ReaderError(
                f"scanner sent a key this layout does not know: code {bad} "
                f"(layout {self.layout.name!r}; check the scanner's keyboard-language setting "
                f"and the ?layout= of the hid: URI)"
            )
        return text or None


def decode_keys(events: Iterable[tuple[int, int]], layout: str = "us") -> list[str]:
    """Decode a whole sequence of key events into the lines they type.

    Timing is not considered (no stale-line dropping); a trailing line without Enter is
    not returned.

    Args:
        events: ``(code, value)`` EV_KEY pairs in order; value 1 down, 0 up, 2 repeat.
        layout: the name of a layout in ``LAYOUTS``.

    Returns:
        The completed, non-empty lines in order.

    Raises:
        ReaderError: ``layout`` is unknown, or a line contained a key the layout does not
            know.
    """
    decoder = KeyDecoder(layout, stale_after=float("inf"))
    lines = []
    for code, value in events:
        line = decoder.feed(code, value, at=0.0)
        if line is not None:
            lines.append(line)
    return lines


# --- event sources ---------------------------------------------------------------------


class KeyEventSource(Protocol):
    """Where ``HidReader`` gets key events: an open, non-blocking, select-able device."""

    def fileno(self) -> int:
        """Return the file descriptor that becomes readable when events are waiting."""

    def read(self) -> Iterable[tuple[int, int, float]]:
        """Return the waiting ``(code, value, timestamp)`` EV_KEY events.

        Raises:
            BlockingIOError: nothing is waiting after all.
            OSError: the device is gone (``ENODEV``) or failed.
        """

    def close(self) -> None:
        """Release the device (ungrab and close)."""


def _import_evdev():
    try:
        import evdev
    except ImportError as exc:  # pragma: no cover - evdev is a Linux dependency
        raise ReaderError(
            "the hid: reader needs the python 'evdev' package (Linux only): pip install evdev"
        ) from exc
    return evdev


_PERMISSION_HINT = (
    "add the kiosk user to the 'input' group (sudo usermod -aG input USER, then log in "
    "again) or install a udev rule giving it read access to the scanner"
)


class _EvdevSource:
    """A grabbed evdev ``InputDevice`` as a ``KeyEventSource``."""

    def __init__(self, device) -> None:
        self.device = device

    def fileno(self) -> int:
        return self.device.fd

    def read(self) -> list[tuple[int, int, float]]:
        return [(e.code, e.value, e.timestamp()) for e in self.device.read() if e.type == EV_KEY]

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already released, or the device is gone
            self.device.ungrab()
        self.device.close()


def _open_device(path: str) -> _EvdevSource:
    evdev = _import_evdev()
    try:
        device = evdev.InputDevice(path)
    except FileNotFoundError:
        raise ReaderError(
            f"no input device at {path}: is the scanner plugged in? "
            "`ls -l /dev/input/by-id/` lists the devices (use the one ending in -event-kbd), "
            "or use hid:name=PART-OF-ITS-NAME"
        ) from None
    except PermissionError:
        raise ReaderError(f"permission denied opening {path}: {_PERMISSION_HINT}") from None
    except OSError as exc:
        raise ReaderError(
            f"cannot open {path} as an input device: {exc.strerror or exc}"
        ) from None
    try:
        device.grab()
    except OSError as exc:
        device.close()
        if exc.errno == errno.EBUSY:
            raise ReaderError(
                f"{path} ({device.name}) is already grabbed by another program "
                "(a second kiosk process?)"
            ) from None
        raise ReaderError(f"cannot grab {path}: {exc.strerror or exc}") from None
    log.info("hid: opened %s (%s) and grabbed it", path, device.name)
    return _EvdevSource(device)


def _event_number(path: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", path)
    return (int(match.group(1)) if match else 1 << 30, path)


def find_device(name: str, input_dir: str = "/dev/input") -> str:
    """Find the scanner whose device name contains ``name``.

    Args:
        name: a case-insensitive part of the device name (``evdev`` ``InputDevice.name``).
        input_dir: where the ``event*`` device nodes are.

    Returns:
        The path of the first such device, by event number, that can type Enter (a
        scanner's consumer-control or mouse interfaces share its name but cannot).

    Raises:
        ReaderError: no readable device matches; the message lists what was seen.
    """
    evdev = _import_evdev()
    wanted = name.lower()
    seen: list[str] = []
    matched_no_enter: list[str] = []
    for path in sorted(evdev.list_devices(input_dir, writable=False), key=_event_number):
        try:
            device = evdev.InputDevice(path)
        except OSError:
            continue
        try:
            seen.append(f"{path}: {device.name}")
            if wanted not in device.name.lower():
                continue
            keys = device.capabilities().get(EV_KEY, [])
            if KEY_ENTER in keys or KEY_KPENTER in keys:
                return path
            matched_no_enter.append(path)
        finally:
            device.close()
    if matched_no_enter:
        raise ReaderError(
            f"input devices named like {name!r} cannot type Enter: "
            f"{', '.join(matched_no_enter)}; is the scanner in keyboard (HID) mode?"
        )
    nodes = glob.glob(os.path.join(input_dir, "event*"))
    if nodes and not seen:
        raise ReaderError(
            f"no input device named like {name!r}: {len(nodes)} devices in {input_dir} but "
            f"none readable; {_PERMISSION_HINT}"
        )
    listing = "; ".join(seen) if seen else f"no input devices in {input_dir}"
    raise ReaderError(f"no input device named like {name!r} ({listing})")


# --- the reader ------------------------------------------------------------------------


class HidReader(Reader):
    """A keyboard-wedge scanner: each scanned line becomes ``Tap(qr=line)``.

    Attributes:
        uri: the URI as given.
        path: the device path, or ``None`` for ``hid:name=...``.
        name: the device-name part to look for, or ``None`` for a path.
        layout: the keyboard layout used to decode.
    """

    def __init__(
        self,
        uri: str,
        *,
        source_factory: Callable[[], KeyEventSource] | None = None,
        stale_after: float = STALE_AFTER,
    ) -> None:
        """Parse ``uri``; the device is opened by ``open()``.

        Args:
            uri: ``hid:/dev/input/...``, ``hid:name=PART``, either with ``?layout=us|fr``.
            source_factory: opens the key-event source instead of the evdev device named by
                ``uri`` (tests, other backends).
            stale_after: seconds of silence after which a partial line is dropped.

        Raises:
            ReaderError: the URI is malformed or names an unknown layout.
        """
        self.uri = uri
        scheme, _, rest = uri.partition(":")
        if scheme.strip().lower() != "hid":
            raise ReaderError(f"not a hid: reader URI: {uri!r}")
        target, _, query = rest.partition("?")
        params = parse_qs(query, keep_blank_values=True)
        unknown = set(params) - {"layout"}
        if unknown:
            raise ReaderError(f"unknown option(s) {', '.join(sorted(unknown))} in {uri!r}")
        self.layout = get_layout(params.get("layout", ["us"])[-1])
        self.path: str | None = None
        self.name: str | None = None
        if target.startswith("name="):
            self.name = unquote(target[len("name="):])
            if not self.name:
                raise ReaderError(f"{uri!r}: name= needs part of the device name")
        elif target:
            self.path = target
        elif source_factory is None:
            raise ReaderError(
                f"{uri!r} names no device: use hid:/dev/input/by-id/...-event-kbd "
                "or hid:name=PART-OF-ITS-NAME"
            )
        self._source_factory = source_factory
        self._decoder = KeyDecoder(self.layout, stale_after=stale_after)
        self._source: KeyEventSource | None = None
        self._pending: deque[tuple[int, int, float]] = deque()

    def open(self) -> None:
        """Open the scanner and grab it so its keys reach only this reader.

        Raises:
            ReaderError: the device is missing, not readable (permissions), not an input
                device, or grabbed by another program.
        """
        if self._source is not None:
            return
        if self._source_factory is not None:
            source = self._source_factory()
        else:
            path = self.path if self.path is not None else find_device(self.name or "")
            source = _open_device(path)
        self._source = source
        self._decoder.reset()
        self._pending.clear()

    def close(self) -> None:
        """Ungrab and close the device; safe to call twice."""
        source, self._source = self._source, None
        if source is None:
            return
        try:
            source.close()
        except OSError as exc:
            log.debug("hid: closing %s: %s", self.uri, exc)
        self._decoder.reset()
        self._pending.clear()

    def read(self, timeout: float) -> Tap | None:
        """Wait for one scanned line.

        A partial line stays buffered across calls (a scan may straddle two calls), but
        is dropped when the next key comes more than ``stale_after`` seconds after it.

        Args:
            timeout: seconds to wait at most; 0 only takes what is already there.

        Returns:
            ``Tap(reader=uri, qr=line)``, or ``None`` when no complete line came within
            ``timeout``.

        Raises:
            ReaderError: the reader is not open, the device disappeared (it is then
                closed), or the line contained a key the layout does not know.
        """
        source = self._source
        if source is None:
            raise ReaderError(f"hid reader {self.uri} is not open")
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            line = self._drain()
            if line is not None:
                return Tap(reader=self.uri, qr=line)
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([source], [], [], remaining)
            if not ready:
                return None
            try:
                self._pending.extend(source.read())
            except BlockingIOError:
                continue
            except OSError as exc:
                self.close()
                if exc.errno == errno.ENODEV:
                    raise ReaderUnavailable(
                        f"scanner {self.uri} disappeared (unplugged?)") from None
                raise ReaderError(f"reading {self.uri} failed: {exc.strerror or exc}") from None

    def _drain(self) -> str | None:
        while self._pending:
            code, value, at = self._pending.popleft()
            line = self._decoder.feed(code, value, at)
            if line is not None:
                log.debug("hid: %s scanned a line of %d characters", self.uri, len(line))
                return line
        return None
