"""Property tests (hypothesis) on every parser that takes bytes or text from outside.

- the card token (``server.cards.token``): anything but a token is an ``InvalidToken``; encode
  then decode gives the card back; one flipped bit, or one character changed, is refused;
- the SUN message (``server.cards.sun``): anything is a ``SunResult`` or an ``InvalidSun``; a
  card's URL (made by the card emulator of tests/support/sun_card.py, written from the
  datasheet) verifies to its UID, counter and file data; one flipped bit is refused;
- NDEF (``device_drivers.ndefmsg``, the Type 4 capability container and NDEF file of
  ``device_drivers.t4t``, the Type 2 TLVs of ``device_drivers.t2t``): anything is a URL or a
  ``ReaderError``; a written URL reads back;
- the keyboard wedge (``device_drivers.hid``): any key events are lines or a ``ReaderError``;
  what a scanner types comes back as the text it scanned;
- ESC/POS (``device_drivers.printer``): a printer URI is settings or a ``DriverError``; any
  slip text prints as text (read back by tests/support/escpos_parse.py, which refuses
  commands it does not know: nothing in a name becomes a printer command), printable text
  unchanged; any paper status byte is a print or a ``PrinterError``.

Deterministic (derandomized) and bounded; ``LOYALTY_FUZZ_EXAMPLES`` raises the number of
examples of each property (default 200) for a longer run.
"""

from __future__ import annotations

import base64
import contextlib
import os
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device_drivers import hid, ndefmsg, t2t, t4t
from device_drivers.base import CardSlip, DriverError, PrinterError, ReaderError
from server.cards import sun, token
from tests.support import escpos_parse

EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SOME = settings(FUZZ, max_examples=max(10, EXAMPLES // 10))  # the slow ones (a print job)

keys16 = st.binary(min_size=16, max_size=16)


# --------------------------------------------------------------------------- card token

VECTOR_KEY = bytes(range(32))
VECTOR = "CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
cards = st.tuples(st.integers(0, 15), st.binary(min_size=16, max_size=64),
                  st.binary(min_size=8, max_size=8), st.integers(0, 255))


def test_token_vector():
    assert token.encode(1, VECTOR_KEY, bytes.fromhex("8f3a5c2e91d04b77"), 0) == VECTOR
    assert token.decode(VECTOR, {1: VECTOR_KEY}) == (1, bytes.fromhex("8f3a5c2e91d04b77"), 0)


@FUZZ
@given(cards, st.sampled_from(["{t}", "https://shop.example/c/{t}", "HTTPS://SHOP.EXAMPLE/C/{t}",
                               " https://shop.example/c/{t}/ ", "https://x.example/c/{t}?a=1"]))
def test_token_round_trip(card, form):
    key_id, key, card_id, generation = card
    text = token.encode(key_id, key, card_id, generation)
    assert len(text) == 32 and text == text.upper()
    assert token.decode(form.format(t=text), {key_id: key}) == (key_id, card_id, generation)


@FUZZ
@given(st.one_of(st.text(max_size=600), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                                 min_size=32, max_size=32)))
@example(VECTOR.replace("S", "\u017f"))  # LATIN SMALL LETTER LONG S: "ſ".upper() == "S"
def test_token_anything_else_is_an_invalid_token(text):
    with pytest.raises(token.InvalidToken):
        token.decode(text, {1: VECTOR_KEY})


@FUZZ
@given(st.integers(0, 20 * 8 - 1))
def test_token_one_flipped_bit_is_refused(bit):
    raw = bytearray(base64.b32decode(VECTOR))
    raw[bit // 8] ^= 0x80 >> (bit % 8)
    # another key id must not help: every id 0..15 has a key here
    with pytest.raises(token.InvalidToken):
        token.decode(base64.b32encode(raw).decode(), {i: VECTOR_KEY for i in range(16)})


@FUZZ
@given(st.integers(0, 31), st.characters(codec="utf-8"))
@example(8, "\u017f")  # LATIN SMALL LETTER LONG S for the S: "ſ".upper() == "S"
@example(10, "\u0131")  # LATIN SMALL LETTER DOTLESS I for the I: "ı".upper() == "I"
def test_token_one_changed_character_is_refused(at, char):
    if char in (VECTOR[at], VECTOR[at].lower()):  # in lower case: the same token
        return
    changed = VECTOR[:at] + char + VECTOR[at + 1:]
    with pytest.raises(token.InvalidToken):
        token.decode(changed, {1: VECTOR_KEY})


def test_token_letters_that_upper_case_to_ascii_are_not_the_token():
    """Regression: ``extract`` upper-cased before checking the alphabet, so a token with
    "ſ" for an S or "ı" for an I verified as the card (a second spelling of one card)."""
    for changed in (VECTOR.replace("S", "\u017f"), VECTOR.replace("I", "\u0131"),
                    "https://shop.example/c/" + VECTOR.replace("S", "\u017f")):
        with pytest.raises(token.MalformedToken):
            token.decode(changed, {1: VECTOR_KEY})
    assert token.decode(VECTOR.lower(), {1: VECTOR_KEY})[0] == 1  # ASCII case stays free


# --------------------------------------------------------------------------- SUN

ZERO = bytes(16)


def test_sun_vectors():
    url = "?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086"
    assert sun.verify(url, ZERO, ZERO) == sun.SunResult(bytes.fromhex("04DE5F1EACC040"), 61,
                                                        None)
    with pytest.raises(sun.ForgedSun):
        sun.verify(url[:-2] + "87", ZERO, ZERO)


def _sun_card(uid, meta, file_key, file_data, counter):
    from server.cards.sun_keys import layout
    from tests.support.sun_card import SdmFile

    lay = layout("https://shop.example", file_data=file_data is not None)
    template = bytearray(lay.ndef_file)
    if file_data is not None:  # what the chip encrypts: the file's bytes at the ENC offset
        template[lay.enc_offset:lay.enc_offset + len(file_data)] = file_data
    tag = SdmFile(uid, meta, file_key, bytes(template), lay.picc_offset, lay.mac_input_offset,
                  lay.mac_offset, lay.enc_offset, lay.enc_length, counter=counter)
    tag.read()
    return tag.urls[-1]


sun_cards = st.tuples(st.binary(min_size=7, max_size=7), keys16, keys16,
                      st.none() | st.binary(min_size=16, max_size=16)
                      .filter(lambda b: b.isascii()).map(bytes),
                      st.integers(0, (1 << 24) - 2))


@FUZZ
@given(sun_cards)
def test_sun_round_trip(card):
    uid, meta, file_key, file_data, counter = card
    url = _sun_card(uid, meta, file_key, file_data, counter)
    assert sun.is_sun(url)
    assert sun.verify(url, meta, file_key) == sun.SunResult(uid, counter + 1, file_data)


@FUZZ
@given(sun_cards, st.data())
def test_sun_one_flipped_bit_is_refused(card, data):
    uid, meta, file_key, file_data, counter = card
    url = _sun_card(uid, meta, file_key, file_data, counter)
    fields = [f for f in sun.query_fields(url) if f.name in ("picc_data", "enc", "cmac")]
    field = data.draw(st.sampled_from(fields))
    raw = bytearray(bytes.fromhex(field.value))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 0x80 >> (bit % 8)
    changed = url[:field.start] + raw.hex().upper() + url[field.start + len(field.value):]
    with pytest.raises(sun.InvalidSun):
        sun.verify(changed, meta, file_key)


hexes = st.text(alphabet="0123456789abcdefABCDEF", max_size=50)
sun_like = st.builds(
    lambda parts, sep: "https://shop.example/c/sun?" + sep.join(parts),
    st.lists(st.tuples(st.sampled_from(["picc_data", "e", "p", "enc", "cmac", "c", "x", ""]),
                       st.one_of(hexes, st.text(max_size=40)))
             .map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=5),
    st.sampled_from(["&", "&&", "#", "?"]))


@FUZZ
@given(st.one_of(st.text(max_size=600), sun_like),
       st.sampled_from(["auto", "empty", "picc", "enc", 0, 40]))
def test_sun_anything_else_is_an_invalid_sun(text, mac_input):
    try:
        sun.verify(text, ZERO, ZERO, mac_input=mac_input)
    except sun.InvalidSun as exc:
        assert exc.code.startswith("sun-")
    # a forgery verifies with a probability of 2**-64: a success here would be news


# --------------------------------------------------------------------------- NDEF

urls = st.builds(lambda scheme, rest: scheme + rest,
                 st.sampled_from(["https://", "http://", "HTTPS://", "", "urn:x:"]),
                 st.text(alphabet=string.ascii_letters + string.digits + "-._~/?#&=%:",
                         max_size=200))


@FUZZ
@given(urls)
def test_ndef_round_trip(url):
    assert ndefmsg.first_uri(ndefmsg.uri_message(url)) == url


@FUZZ
@given(st.one_of(st.binary(max_size=300), urls.map(ndefmsg.uri_message).flatmap(
    lambda m: st.tuples(st.just(m), st.integers(0, len(m) - 1), st.integers(0, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:]))))
@example(b"\xd1\x01\x01U\x24")  # a URI record with an undefined prefix code
@example(b"\xd1\x01\x03T\x3fen")  # a text record whose language length runs past its end
def test_ndef_anything_is_a_uri_or_a_reader_error(message):
    with contextlib.suppress(ReaderError):
        assert isinstance(ndefmsg.first_uri(message), str)


cc_bytes = st.one_of(
    st.binary(max_size=20),
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 0xFFFF),
              st.binary(min_size=2, max_size=2), st.sampled_from([b"\x04\x06", b"\x05\x06"]),
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(min_size=2, max_size=2))
    .map(lambda t: t[0].to_bytes(2, "big") + bytes([t[1]]) + t[2].to_bytes(2, "big") + t[3]
         + t[4] + t[5].to_bytes(2, "big") + t[6].to_bytes(2, "big") + t[7]))


@FUZZ
@given(cc_bytes)
def test_type4_capability_container_is_parsed_or_refused(cc):
    try:
        parsed = t4t.parse_cc(cc)
    except ReaderError:
        return
    assert parsed.mle >= 1 and parsed.ndef_max_size >= 2


class _Type4File:
    """A Type 4 tag's files in memory behind the two callables ``read_ndef_file`` takes
    (the same interface the pcsc: and nfcpy: drivers give it)."""

    def __init__(self, cc: bytes, ndef_file: bytes) -> None:
        self.files = {t4t.CC_FILE: cc}
        self.ndef_file = ndef_file
        self.selected = b""

    def select(self, file_id: bytes, what: str) -> int:
        self.selected = file_id
        if file_id in self.files:
            return t4t.SW_OK
        if len(self.files) == 1:  # the NDEF file is whatever id the container names
            self.files[file_id] = self.ndef_file
            return t4t.SW_OK
        return 0x6A82

    def read_binary(self, offset: int, length: int, what: str) -> bytes:
        data = self.files[self.selected][offset:offset + length]
        if not data:
            raise ReaderError(f"{what}: status 6B00")
        return data


def _cc(mle: int = 0x3B, size: int = 0x80) -> bytes:
    return bytes.fromhex("000F20") + mle.to_bytes(2, "big") + bytes.fromhex("0034") \
        + bytes.fromhex("0406E104") + size.to_bytes(2, "big") + b"\x00\x00"


@FUZZ
@given(urls, st.integers(1, 0xFF))
def test_type4_ndef_file_round_trip(url, mle):
    message = ndefmsg.uri_message(url)
    tag = _Type4File(_cc(mle, len(message) + 2), len(message).to_bytes(2, "big") + message)
    assert ndefmsg.first_uri(t4t.read_ndef_file(tag.select, tag.read_binary)) == url


@FUZZ
@given(st.one_of(cc_bytes, st.just(_cc())), st.binary(max_size=300))
def test_type4_any_tag_is_a_message_or_a_reader_error(cc, ndef_file):
    tag = _Type4File(cc, ndef_file)
    try:
        message = t4t.read_ndef_file(tag.select, tag.read_binary)
    except ReaderError:
        return
    assert message is None or len(message) <= len(ndef_file)


def _type2_reader(memory: bytes, refuse_from: int | None = None):
    """A Type 2 tag's memory (4-byte pages from page 0) behind the page-read callable
    ``read_ndef_tlv`` takes (what the pcsc: driver gives it from ``FF B0``)."""
    def read_pages(page: int, what: str) -> bytes | None:
        data = memory[page * 4:page * 4 + 16]
        if len(data) < 16 or (refuse_from is not None and page >= refuse_from):
            return None
        return data
    return read_pages


def _type2_memory(message: bytes, area_bytes: int | None = None) -> bytes:
    length = bytes([len(message)]) if len(message) < 0xFF else \
        b"\xff" + len(message).to_bytes(2, "big")
    tlvs = b"\x01\x03\xa0\x0c\x34" + b"\x03" + length + message + b"\xfe"  # lock control TLV first
    area = area_bytes if area_bytes is not None else -(-len(tlvs) // 8) * 8
    cc = bytes([t2t.CC_MAGIC, 0x10, area // 8, 0x00])
    return bytes(12) + cc + tlvs.ljust(area, b"\x00") + bytes(16)


@FUZZ
@given(st.one_of(urls, st.text(alphabet=string.ascii_letters, min_size=250, max_size=600)
                 .map(lambda s: "https://shop.example/" + s)))
def test_type2_ndef_tlv_round_trip(url):
    message = ndefmsg.uri_message(url)
    assert t2t.read_ndef_tlv(_type2_reader(_type2_memory(message))) == message


@FUZZ
@given(st.binary(min_size=4, max_size=4), st.binary(max_size=120), st.integers(0, 40))
@example(bytes([0xE1, 0x10, 0x00, 0x00]), b"\x03\x05\xd1\x01\x01U\x04", 40)  # area 0
@example(bytes([0xE1, 0x10, 0x06, 0x00]), b"\x03\xff\xff\xff", 40)  # 64 KiB in 48 bytes
@example(bytes([0xE1, 0x10, 0xFF, 0x00]), b"\x00" * 40, 3)  # the tag is taken away
def test_type2_any_tag_is_a_message_or_a_reader_error(cc, tlvs, refuse_from):
    memory = bytes(12) + cc + tlvs + bytes(16)
    try:
        message = t2t.read_ndef_tlv(_type2_reader(memory, refuse_from))
    except ReaderError:
        return
    assert message is None or len(message) <= cc[2] * 8


# --------------------------------------------------------------------------- keyboard wedge


def _typing(layout: hid.Layout) -> dict[str, list[tuple[int, int]]]:
    """How a scanner types each character of ``layout``: key events, Shift or AltGr held."""
    how: dict[str, list[tuple[int, int]]] = {}
    for code, (plain, shifted) in sorted(layout.keys.items()):
        how.setdefault(plain, [(code, 1), (code, 0)])
        if shifted:
            how.setdefault(shifted, [(hid.KEY_LEFTSHIFT, 1), (code, 1), (code, 0),
                                     (hid.KEY_LEFTSHIFT, 0)])
    for code, char in sorted(layout.altgr.items()):
        how.setdefault(char, [(hid.KEY_RIGHTALT, 1), (code, 1), (code, 0),
                              (hid.KEY_RIGHTALT, 0)])
    return how


TYPING = {name: _typing(layout) for name, layout in hid.LAYOUTS.items()}


@FUZZ
@given(st.sampled_from(sorted(TYPING)).flatmap(lambda name: st.tuples(
    st.just(name), st.lists(st.text(alphabet=sorted(TYPING[name]), min_size=1, max_size=80),
                            max_size=3))))
def test_wedge_round_trip(scan):
    name, lines = scan
    events = []
    for line in lines:
        events += [e for ch in line for e in TYPING[name][ch]] + [(hid.KEY_ENTER, 1),
                                                                 (hid.KEY_ENTER, 0)]
    assert hid.decode_keys(events, name) == lines


@FUZZ
@given(st.sampled_from(sorted(hid.LAYOUTS)),
       st.lists(st.tuples(st.integers(0, 300), st.integers(0, 2)), max_size=200))
def test_wedge_any_key_events_are_lines_or_a_reader_error(layout, events):
    decoder = hid.KeyDecoder(layout, stale_after=float("inf"))
    for code, value in events:
        try:
            line = decoder.feed(code, value, at=0.0)
        except ReaderError:
            continue
        assert line is None or (line and "\n" not in line)


# --------------------------------------------------------------------------- ESC/POS

uri_parts = st.builds(
    lambda scheme, rest, query: scheme + rest + query,
    st.sampled_from(["escpos:net:", "escpos:usb:", "escpos:serial:", "file:", "ESCPOS:NET:",
                     "escpos:", ""]),
    st.text(max_size=30),
    st.one_of(st.just(""), st.lists(
        st.tuples(st.sampled_from(["profile", "width", "qr", "image", "timeout", "status",
                                   "baud", "x", ""]), st.text(max_size=12))
        .map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=4).map(lambda ps: "?" + "&".join(ps))))


@FUZZ
@given(st.one_of(st.text(max_size=100), uri_parts))
@example("escpos:net:printer.example:9100?width=99999999999999999999999")
@example("escpos:usb:0x04b8:0x0202?timeout=nan")
def test_printer_uri_is_settings_or_a_driver_error(uri):
    from device_drivers.printer import parse_uri

    with contextlib.suppress(DriverError):
        parse_uri(uri)


@pytest.fixture(scope="module")
def slip_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-printer") / "slip.bin"


printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                    max_size=30)


@SOME
@given(first_name=st.one_of(printable, st.text(max_size=30)),
       shop=st.one_of(printable, st.text(max_size=20)),
       line=st.text(max_size=60))
@example(first_name="\x1b@\x1dV\x00\x10\x14", shop="Shop\x1bE\x01", line="\x1d(k")
def test_any_slip_text_prints_as_text(slip_file, first_name, shop, line):
    """The printer is python-escpos' ``File`` transport writing a real file (``file:``)."""
    from device_drivers.printer import EscposPrinter

    printer = EscposPrinter(f"file:{slip_file}?profile=TM-T20II&qr=native")
    slip = CardSlip(shop_name=shop, first_name=first_name, customer_code="C-7F3K-9Q2M",
                    card_url="https://shop.example/c/" + VECTOR, lines=(line,))
    printer.print_card(slip)
    data = slip_file.read_bytes()
    # every byte is text or a command the reference parser knows: no injected command
    escpos_parse.tokenize(data)
    printed = "\n".join(escpos_parse.text_lines(data))
    assert escpos_parse.native_qr_payloads(data) == [slip.card_url.upper().encode()]
    if all(" " <= ch < "\x7f" for ch in first_name + shop):
        assert shop.strip() in printed and first_name.strip() in printed


@SOME
@given(st.integers(0, 255))
@example(0x12 | 0x0C)  # paper near its end: printed
@example(0x12 | 0x60)  # paper out
@example(0x60)  # the paper-out bits without the fixed bits: not a status byte
def test_any_paper_status_is_a_print_or_a_printer_error(status):
    """A real TCP printer (tests/support/escpos_capture.py) answering ``status`` to
    DLE EOT 4."""
    from device_drivers.printer import EscposPrinter
    from tests.support.escpos_capture import CapturePrinter

    class Answers(CapturePrinter):
        def _status_answer(self, n: int) -> bytes | None:
            super()._status_answer(n)
            return bytes([status])

    with Answers() as capture:
        printer = EscposPrinter(f"escpos:net:127.0.0.1:{capture.port}?status=1&qr=native")
        slip = CardSlip(shop_name="Shop", first_name="Ana", customer_code="C-7F3K-9Q2M",
                        card_url="https://shop.example/c/" + VECTOR)
        is_status = status & 0x93 == 0x12  # bits 0 and 7 clear, 1 and 4 set
        try:
            printer.print_card(slip)
        except PrinterError as exc:
            if is_status:
                assert exc.reason == "paper-out" and status & 0x60 == 0x60
            else:
                assert exc.reason == "failed" and "not a status" in str(exc)
        else:
            assert is_status and status & 0x60 != 0x60
            assert capture.wait_for_jobs(1)
