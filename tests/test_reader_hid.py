"""The ``hid:`` keyboard-wedge reader: key decoding, the select/timeout loop, opening.

No real input device exists here, so the decoder is fed the event sequences a scanner
produces, and ``HidReader.read`` is driven through an ``os.pipe``-backed event source so
its real ``select`` and timeout logic runs. The uinput round trip runs only where
``/dev/uinput`` works.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time

import pytest

from device_drivers.base import ReaderError, Tap, open_reader
from device_drivers.hid import HidReader, KeyDecoder, decode_keys

CARD_URL = "HTTPS://SHOP.EXAMPLE/C/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
LOWER_URL = "https://shop.example/c/x_y-z?a=1&b=50%25"

# Linux key codes, written out here independently of the module's tables.
SHIFT, RSHIFT, ENTER, KPENTER, CTRL, RALT = 42, 54, 28, 96, 29, 100
DOWN, UP, REPEAT = 1, 0, 2


def _rows(*rows: tuple[int, str]) -> dict[str, int]:
    return {ch: first + i for first, row in rows for i, ch in enumerate(row)}


# char -> (key code, needs shift), from the physical keyboards.
_US_LETTERS = _rows((16, "qwertyuiop"), (30, "asdfghjkl"), (44, "zxcvbnm"))
US: dict[str, tuple[int, bool]] = {
    **{c: (k, False) for c, k in _US_LETTERS.items()},
    **{c.upper(): (k, True) for c, k in _US_LETTERS.items()},
    **{c: (k, False) for c, k in _rows((2, "1234567890")).items()},
    ":": (39, True), "/": (53, False), ".": (52, False), "-": (12, False),
    "_": (12, True), "?": (53, True), "=": (13, False), "&": (8, True), "%": (6, True),
}
_FR_LETTERS = _rows((16, "azertyuiop"), (30, "qsdfghjklm"), (44, "wxcvbn"))
FR: dict[str, tuple[int, bool]] = {
    **{c: (k, False) for c, k in _FR_LETTERS.items()},
    **{c.upper(): (k, True) for c, k in _FR_LETTERS.items()},
    **{c: (k, True) for c, k in _rows((2, "1234567890")).items()},
    ":": (52, False), "/": (52, True), ".": (51, True), "-": (7, False),
    "_": (9, False), "?": (50, True), "=": (13, False), "&": (2, False), "%": (40, True),
}


def scan(text: str, keymap: dict[str, tuple[int, bool]], *, hold_shift: bool = False,
         enter: int = ENTER) -> list[tuple[int, int]]:
    """The EV_KEY events a scanner types for ``text`` and Enter.

    With ``hold_shift`` Shift stays down across a run of shifted characters (as some
    scanners do); otherwise it goes down and up around each one.
    """
    events: list[tuple[int, int]] = []
    shift_down = False
    for ch in text:
        code, shifted = keymap[ch]
        if shifted and not shift_down:
            events.append((SHIFT, DOWN))
            shift_down = True
        if not shifted and shift_down:
            events.append((SHIFT, UP))
            shift_down = False
        events += [(code, DOWN), (code, UP)]
        if shift_down and not hold_shift:
            events.append((SHIFT, UP))
            shift_down = False
    if shift_down:
        events.append((SHIFT, UP))
    return events + [(enter, DOWN), (enter, UP)]


# --- decoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("hold_shift", [False, True])
def test_card_url_typed_on_a_us_scanner(hold_shift):
    assert decode_keys(scan(CARD_URL, US, hold_shift=hold_shift)) == [CARD_URL]


@pytest.mark.parametrize("hold_shift", [False, True])
def test_card_url_typed_on_an_azerty_scanner(hold_shift):
    events = scan(CARD_URL, FR, hold_shift=hold_shift)
    assert decode_keys(events, layout="fr") == [CARD_URL]
    # The same keys read as US are a different string: the layout setting matters.
    assert decode_keys(events, layout="us") != [CARD_URL]


@pytest.mark.parametrize(("keymap", "layout"), [(US, "us"), (FR, "fr")])
def test_lower_case_url_characters(keymap, layout):
    assert decode_keys(scan(LOWER_URL, keymap), layout=layout) == [LOWER_URL]


def test_shift_with_either_shift_key_and_release():
    events = [(RSHIFT, DOWN), (30, DOWN), (30, UP), (RSHIFT, UP), (30, DOWN), (30, UP),
              (SHIFT, DOWN), (48, DOWN), (48, UP), (SHIFT, UP), (ENTER, DOWN)]
    assert decode_keys(events) == ["AaB"]


def test_autorepeat_is_ignored():
    events = [(30, DOWN), (30, REPEAT), (30, REPEAT), (30, UP),
              (SHIFT, DOWN), (SHIFT, REPEAT), (SHIFT, REPEAT), (48, DOWN), (48, UP), (SHIFT, UP),
              (ENTER, DOWN), (ENTER, REPEAT), (ENTER, UP)]
    assert decode_keys(events) == ["aB"]


def test_keypad_enter_and_keypad_digits():
    events = [(79, DOWN), (79, UP), (80, DOWN), (80, UP), (82, DOWN), (82, UP),
              (KPENTER, DOWN), (KPENTER, UP)]
    assert decode_keys(events) == ["120"]


def test_several_lines_and_empty_enters():
    events = [(ENTER, DOWN), *scan("ab", US), (ENTER, DOWN), *scan("c1", US)]
    assert decode_keys(events) == ["ab", "c1"]


def test_line_without_enter_is_not_returned():
    assert decode_keys(scan("abc", US)[:-2]) == []


def test_azerty_altgr():
    events = [(RALT, DOWN), (11, DOWN), (11, UP), (RALT, UP), (2, DOWN), (2, UP), (ENTER, DOWN)]
    assert decode_keys(events, layout="fr") == ["@&"]


def test_unknown_key_rejects_the_line_and_the_next_line_is_clean():
    decoder = KeyDecoder("us")
    line = [(30, DOWN), (30, UP), (59, DOWN), (59, UP), (31, DOWN), (31, UP)]  # a F1 s
    assert [decoder.feed(c, v, at=0.0) for c, v in line] == [None] * len(line)
    with pytest.raises(ReaderError, match="scanner sent a key this layout does not know: code 59"):
        decoder.feed(ENTER, DOWN, at=0.0)
    assert [decoder.feed(c, v, at=0.0) for c, v in scan("ok", US)][-2:] == ["ok", None]


def test_unknown_key_in_decode_keys():
    # KEY_LEFTBRACE is a dead key on AZERTY: not in the French table.
    with pytest.raises(ReaderError, match="code 26"):
        decode_keys([(26, DOWN), (26, UP), (ENTER, DOWN)], layout="fr")


@pytest.mark.parametrize("modifier", [CTRL, RALT])
def test_shortcut_chord_on_us_is_rejected(modifier):
    # Ctrl+A, or right Alt (plain Alt on US) + A, is a shortcut, not the letter a.
    events = [(modifier, DOWN), (30, DOWN), (30, UP), (modifier, UP), (ENTER, DOWN)]
    with pytest.raises(ReaderError, match="code 30"):
        decode_keys(events)


def test_stale_partial_line_is_dropped():
    decoder = KeyDecoder("us", stale_after=1.0)
    decoder.feed(30, DOWN, at=100.0)  # a stray key press ...
    decoder.feed(30, UP, at=100.05)
    assert decoder.pending == 1
    lines = [decoder.feed(c, v, at=102.0) for c, v in scan(CARD_URL, US)]  # ... a scan later
    assert [x for x in lines if x is not None] == [CARD_URL]


def test_fresh_partial_line_is_kept():
    decoder = KeyDecoder("us", stale_after=1.0)
    decoder.feed(30, DOWN, at=100.0)
    decoder.feed(30, UP, at=100.05)
    lines = [decoder.feed(c, v, at=100.5) for c, v in scan("bc", US)]
    assert [x for x in lines if x is not None] == ["abc"]


def test_stale_unknown_key_does_not_poison_the_next_scan():
    decoder = KeyDecoder("us", stale_after=1.0)
    decoder.feed(59, DOWN, at=10.0)  # someone pressed F1 on the scanner's keyboard port
    lines = [decoder.feed(c, v, at=20.0) for c, v in scan("ok", US)]
    assert [x for x in lines if x is not None] == ["ok"]


def test_unknown_layout():
    with pytest.raises(ReaderError, match="unknown keyboard layout 'de'"):
        KeyDecoder("de")


# --- HidReader.read over a pipe --------------------------------------------------------

_RECORD = struct.Struct("<Hid")  # code, value, timestamp


class PipeSource:
    """A ``KeyEventSource`` backed by ``os.pipe``: select-able, non-blocking."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self._buf = b""
        self.closed = 0
        self.fail: OSError | None = None

    def send(self, events, at: float | None = None) -> None:
        stamp = time.time() if at is None else at
        os.write(self.w, b"".join(_RECORD.pack(c, v, stamp) for c, v in events))

    def fileno(self) -> int:
        return self.r

    def read(self):
        if self.fail is not None:
            raise self.fail
        self._buf += os.read(self.r, 65536)  # BlockingIOError when empty, as evdev
        n = len(self._buf) - len(self._buf) % _RECORD.size
        chunk, self._buf = self._buf[:n], self._buf[n:]
        return [_RECORD.unpack_from(chunk, i) for i in range(0, n, _RECORD.size)]

    def close(self) -> None:
        self.closed += 1
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def source():
    return PipeSource()


@pytest.fixture
def reader(source):
    r = HidReader("hid:/dev/input/fake?layout=us", source_factory=lambda: source)
    r.open()
    yield r
    r.close()


def test_read_returns_a_tap_for_a_scanned_line(reader, source):
    source.send(scan(CARD_URL, US))
    tap = reader.read(1.0)
    assert isinstance(tap, Tap)
    assert tap.qr == CARD_URL
    assert tap.reader == "hid:/dev/input/fake?layout=us"
    assert tap.uid is None and tap.url is None


def test_read_times_out_with_none(reader):
    start = time.monotonic()
    assert reader.read(0.15) is None
    assert 0.13 <= time.monotonic() - start < 0.6


def test_read_zero_timeout_polls(reader, source):
    assert reader.read(0) is None
    source.send(scan("a1", US))
    assert reader.read(0).qr == "a1"


def test_read_wakes_up_as_soon_as_a_scan_arrives(reader, source):
    timer = threading.Timer(0.05, source.send, args=(scan(CARD_URL, US),))
    timer.start()
    start = time.monotonic()
    tap = reader.read(5.0)
    timer.join()
    assert tap is not None and tap.qr == CARD_URL
    assert time.monotonic() - start < 0.3  # woken by select, not by a polling sleep


def test_partial_line_is_kept_across_reads(reader, source):
    events = scan(CARD_URL, US)
    source.send(events[:40])
    assert reader.read(0.05) is None
    source.send(events[40:])
    assert reader.read(1.0).qr == CARD_URL


def test_stray_key_before_a_scan_is_dropped(reader, source):
    source.send([(30, DOWN), (30, UP)], at=1000.0)
    source.send(scan(CARD_URL, US), at=1003.0)
    assert reader.read(1.0).qr == CARD_URL


def test_stray_key_within_a_second_is_kept(reader, source):
    source.send([(30, DOWN), (30, UP)], at=1000.0)
    source.send(scan("bc", US), at=1000.2)
    assert reader.read(1.0).qr == "abc"


def test_two_scans_in_one_batch_are_both_returned(reader, source):
    source.send(scan("first", US) + scan("second", US))
    assert reader.read(1.0).qr == "first"
    assert reader.read(0).qr == "second"
    assert reader.read(0) is None


def test_unknown_key_raises_then_reading_goes_on(reader, source):
    source.send([(30, DOWN), (30, UP), (15, DOWN), (15, UP), (ENTER, DOWN), (ENTER, UP)]
                + scan("next", US))
    with pytest.raises(ReaderError, match="does not know: code 15"):
        reader.read(1.0)
    assert reader.read(0).qr == "next"


def test_french_layout_from_the_uri(source):
    with HidReader("hid:name=Scanner?layout=fr", source_factory=lambda: source) as r:
        assert r.name == "Scanner" and r.layout.name == "fr"
        source.send(scan(CARD_URL, FR))
        assert r.read(1.0).qr == CARD_URL


def test_unplugged_device_raises_and_closes(reader, source):
    source.fail = OSError(errno.ENODEV, "No such device")
    source.send([(30, DOWN)])
    with pytest.raises(ReaderError, match="disappeared"):
        reader.read(1.0)
    assert source.closed == 1
    with pytest.raises(ReaderError, match="not open"):
        reader.read(0)


def test_close_is_safe_twice(reader, source):
    reader.close()
    reader.close()
    assert source.closed == 1
    with pytest.raises(ReaderError, match="not open"):
        reader.read(0)


def test_scanned_text_is_not_logged(reader, source, caplog):
    caplog.set_level("DEBUG", logger="device_drivers.hid")
    source.send(scan(CARD_URL, US))
    assert reader.read(1.0).qr == CARD_URL
    assert str(len(CARD_URL)) in caplog.text
    assert "CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF" not in caplog.text


# --- URIs and opening real devices -----------------------------------------------------


def test_registry_makes_a_hid_reader():
    r = open_reader("hid:/dev/input/event3")
    assert isinstance(r, HidReader)
    assert r.path == "/dev/input/event3" and r.name is None and r.layout.name == "us"


@pytest.mark.parametrize(("uri", "message"), [
    ("hid:", "names no device"),
    ("hid:name=", "name= needs"),
    ("hid:/dev/input/event3?layout=de", "unknown keyboard layout"),
    ("hid:/dev/input/event3?speed=fast", "unknown option"),
])
def test_malformed_uris(uri, message):
    with pytest.raises(ReaderError, match=message):
        HidReader(uri)


def test_open_missing_path_says_what_to_do(tmp_path):
    path = tmp_path / "usb-Nothing-event-kbd"
    reader = HidReader(f"hid:{path}")
    with pytest.raises(ReaderError) as info:
        reader.open()
    assert str(path) in str(info.value)
    assert "plugged in" in str(info.value) and "/dev/input/by-id" in str(info.value)
    reader.close()


def test_open_a_file_that_is_not_an_input_device():
    with pytest.raises(ReaderError, match="cannot open /dev/null as an input device"):
        HidReader("hid:/dev/null").open()


def test_open_permission_denied_mentions_the_input_group(monkeypatch):
    # Tests run as root here, so EACCES cannot be produced for real.
    import evdev

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(evdev, "InputDevice", denied)
    with pytest.raises(ReaderError, match="permission denied opening /dev/input/event7.*'input'"):
        HidReader("hid:/dev/input/event7").open()


def test_open_by_name_that_matches_nothing():
    with pytest.raises(ReaderError, match="no input device named like 'nothing-matches'"):
        HidReader("hid:name=nothing-matches").open()


# --- a real kernel device through uinput -----------------------------------------------


def _uinput_or_skip():
    evdev = pytest.importorskip("evdev")
    if not os.path.exists("/dev/uinput"):
        pytest.skip("/dev/uinput is missing (kernel built without CONFIG_INPUT_UINPUT here)")
    try:
        return evdev, evdev.UInput(name="hid-test-scanner")
    except (OSError, evdev.UInputError) as exc:
        pytest.skip(f"cannot create a uinput device: {exc}")


def test_uinput_keyboard_round_trip():
    evdev, ui = _uinput_or_skip()
    try:
        time.sleep(0.2)  # let udev create the node
        with HidReader(f"hid:{ui.device.path}") as reader:
            for code, value in scan(CARD_URL, US):
                ui.write(evdev.ecodes.EV_KEY, code, value)
                ui.syn()
            tap = reader.read(2.0)
        assert tap is not None and tap.qr == CARD_URL
    finally:
        ui.close()
