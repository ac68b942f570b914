"""Card writers: ``sim:``, ``pcsc:`` (pcscd + vpcd + emulated Type 4 / NTAG21x cards) and
``nfcpy:`` (nfcpy's udp device with an emulated NTAG213)."""

from __future__ import annotations

import struct
import time

import pytest

from device_drivers import (
    CardReadOnly,
    CardTooSmall,
    CardWriter,
    DriverError,
    NoCard,
    ReadBackMismatch,
    WriteError,
    WriteInterrupted,
    WrittenCard,
    open_reader,
    open_writer,
)
from device_drivers.ndefmsg import first_uri, uri_message
from tests.support.fixtures_pcsc import wait_card_state

URL = "https://shop.example/c/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
MESSAGE = uri_message(URL)  # 52 bytes
LONG_URL = "https://shop.example/c/" + "A" * 200  # 218 bytes of message: too much for an NTAG213
UID = bytes.fromhex("04A1B2C3D4E5F6")
OLD_URL = "https://old.example/c/OLD"


# -- sim: ------------------------------------------------------------------------------------


def test_sim_writer_returns_a_fake_ntag213_and_records_the_write():
    writer = open_writer("sim:")
    assert isinstance(writer, CardWriter)
    with writer:
        card = writer.write(URL, timeout=1)
        other = writer.write(URL, timeout=1, lock=True)

    assert isinstance(card, WrittenCard)
    assert (card.kind, card.capacity, card.locked) == ("type2", 144, False)
    assert len(card.uid) == 14 and card.uid.startswith("04") and card.uid == card.uid.upper()
    assert other.uid != card.uid and other.locked
    assert writer.written == [(card.uid, URL, False), (other.uid, URL, True)]


def test_sim_writer_fails_as_configured_then_writes():
    with open_writer("sim:fail=interrupted,read-only") as writer:
        with pytest.raises(WriteInterrupted) as first:
            writer.write(URL, timeout=1)
        with pytest.raises(CardReadOnly):
            writer.write(URL, timeout=1)
        assert writer.write(URL, timeout=1).uid
        writer.fail_next("no-card")
        with pytest.raises(NoCard):
            writer.write(URL, timeout=1)

    assert first.value.reason == "interrupted"
    assert len(writer.written) == 1


def test_sim_writer_refuses_a_message_larger_than_an_ntag213():
    with open_writer("sim:") as writer, pytest.raises(CardTooSmall) as exc:
        writer.write(LONG_URL, timeout=1)
    assert exc.value.reason == "too-small"


@pytest.mark.parametrize("uri", ["sim:fail=melted", "sim:colour=red", "nope:"])
def test_bad_writer_uris_are_refused(uri):
    with pytest.raises(DriverError):
        open_writer(uri)


def test_write_errors_are_driver_errors_with_stable_reasons():
    reasons = {cls: cls("x").reason for cls in
               (NoCard, CardTooSmall, CardReadOnly, WriteInterrupted, ReadBackMismatch)}
    assert reasons == {NoCard: "no-card", CardTooSmall: "too-small", CardReadOnly: "read-only",
                       WriteInterrupted: "interrupted", ReadBackMismatch: "mismatch"}
    assert all(issubclass(cls, WriteError) and issubclass(cls, DriverError) for cls in reasons)


# -- pcsc: -----------------------------------------------------------------------------------


def _update(offset: int, data: bytes) -> bytes:
    return bytes([0x00, 0xD6, offset >> 8, offset & 0xFF, len(data)]) + data


def _page_write(page: int, data: bytes) -> bytes:
    return bytes([0xFF, 0xD6, 0x00, page, 0x04]) + data


def _cc(size: int, write_access: int = 0x00, mlc: int = 0x34) -> bytes:
    return (bytes.fromhex("000F20003B") + mlc.to_bytes(2, "big") + bytes.fromhex("0406E104")
            + struct.pack(">H", size) + bytes([0x00, write_access]))


@pytest.fixture
def writer(pcscd):
    from device_drivers.pcsc_writer import PcscWriter

    w = open_writer(f"pcsc:{pcscd.reader0}")
    assert isinstance(w, PcscWriter)
    w.open()
    yield w
    w.close()


@pytest.fixture
def type2(pcscd):
    """Factory: put a ``Type2Card`` on slot 0 (``Type2Card`` kwargs pass through)."""
    from tests.support.vcard import VpcdCard
    from tests.support.vcard_type2 import Type2Card

    cards = []

    def insert(uid: bytes, memory: bytes, **kwargs) -> VpcdCard:
        for old in cards:
            old.remove()
        card = VpcdCard(Type2Card(uid, memory, **kwargs), host=pcscd.host,
                        on_change=lambda p, present: wait_card_state(pcscd.reader0, present))
        cards.append(card)
        card.insert(pcscd.port0)
        return card

    yield insert
    for card in cards:
        card.remove()


@pytest.mark.hardware
def test_pcsc_type4_write_reads_back_and_the_reader_then_gives_the_url(pcscd, writer, vcard):
    card = vcard(UID, uri_message(OLD_URL))

    written = writer.write(URL, timeout=3)

    assert written == WrittenCard(uid=UID.hex().upper(), kind="type4", capacity=0x0800 - 2,
                                  locked=False)
    assert card.card.ndef == MESSAGE
    updates = [a for a in card.card.apdus if a[:2] == b"\x00\xd6"]
    # NFC Forum order: NLEN 0, the message (MLc 0x34 = 52 bytes per chunk), then NLEN
    assert updates == [_update(0, b"\0\0"), _update(2, MESSAGE), _update(0, b"\x00\x34")]
    reader = open_reader(f"pcsc:{pcscd.reader0}")
    with reader:
        tap = reader.read(timeout=3)
    assert tap is not None and (tap.uid, tap.url) == (UID.hex().upper(), URL)


@pytest.mark.hardware
def test_pcsc_a_written_card_is_not_written_again_until_presented_again(writer, vcard):
    vcard(UID, uri_message(OLD_URL))
    writer.write(URL, timeout=3)

    started = time.monotonic()
    with pytest.raises(NoCard):
        writer.write(URL, timeout=0.3)
    assert time.monotonic() - started < 1.5


@pytest.mark.hardware
def test_pcsc_type4_message_goes_in_chunks_no_larger_than_mlc(writer, vcard):
    card = vcard(UID, b"", _cc(0x0400, mlc=16))

    writer.write(URL, timeout=3)

    chunks = [a for a in card.card.apdus if a[:2] == b"\x00\xd6"][1:-1]
    assert len(chunks) == 4 and all(a[4] <= 16 for a in chunks)
    assert card.card.ndef == MESSAGE


@pytest.mark.hardware
@pytest.mark.parametrize(
    ("cc", "error"),
    [(_cc(0x0020), CardTooSmall), (_cc(0x0800, write_access=0xFF), CardReadOnly)],
    ids=["too-small", "read-only"],
)
def test_pcsc_type4_too_small_or_read_only_card_is_not_touched(writer, vcard, cc, error):
    card = vcard(UID, uri_message("https://a.example/x"), cc)

    with pytest.raises(error):
        writer.write(URL, timeout=3)

    assert not [a for a in card.card.apdus if a[:2] == b"\x00\xd6"]
    assert card.card.ndef == uri_message("https://a.example/x")


@pytest.mark.hardware
def test_pcsc_type4_card_removed_mid_write_leaves_an_empty_message(pcscd, writer, vcard):
    card = vcard(UID, uri_message(OLD_URL), responses={_update(2, MESSAGE): None})

    with pytest.raises(WriteInterrupted) as exc:
        writer.write(URL, timeout=3)

    assert exc.value.reason == "interrupted"
    assert card.card.files[b"\xe1\x04"][:2] == b"\0\0"  # NLEN 0: no half message
    wait_card_state(pcscd.reader0, present=False)


@pytest.mark.hardware
def test_pcsc_type4_ignored_write_is_a_read_back_mismatch_and_try_again_works(writer, vcard):
    card = vcard(UID, b"", responses={_update(2, MESSAGE): b"\x90\x00"})  # says OK, writes not

    with pytest.raises(ReadBackMismatch):
        writer.write(URL, timeout=3)

    card.card.responses.clear()  # the same card, still on the reader: try again
    assert writer.write(URL, timeout=3).kind == "type4"
    assert card.card.ndef == MESSAGE


@pytest.mark.hardware
def test_pcsc_type4_refuses_lock_before_writing(writer, vcard):
    card = vcard(UID, b"")

    with pytest.raises(WriteError, match="lock is not supported on Type 4"):
        writer.write(URL, timeout=3, lock=True)

    assert not [a for a in card.card.apdus if a[:2] == b"\x00\xd6"]


@pytest.mark.hardware
def test_pcsc_without_card_raises_no_card_within_the_timeout(writer):
    started = time.monotonic()

    with pytest.raises(NoCard):
        writer.write(URL, timeout=0.3)

    assert time.monotonic() - started < 1.0


@pytest.mark.hardware
def test_pcsc_ntag213_write_reads_back_and_the_reader_then_gives_the_url(pcscd, writer, type2):
    from tests.support.vcard_type2 import ndef_tlvs, ntag213_memory

    vpcd = type2(UID, ntag213_memory(UID, ndef_tlvs(uri_message(OLD_URL), lock_tlv=True)))
    tag = vpcd.card

    written = writer.write(URL, timeout=3)

    assert written == WrittenCard(uid=UID.hex().upper(), kind="type2", capacity=144, locked=False)
    tlv = b"\x03" + bytes([len(MESSAGE)]) + MESSAGE + b"\xfe"
    assert bytes(tag.memory[16 : 16 + len(tlv)]) == tlv
    pages = (len(tlv) + 3) // 4
    assert tag.writes == [4, *range(5, 4 + pages), 4]  # length 0, data, real length
    assert [a for a in tag.apdus if a[:2] == b"\xff\xd6"][0] == _page_write(4, b"\x03\x00\xfe\x00")
    with open_reader(f"pcsc:{pcscd.reader0}") as reader:
        tap = reader.read(timeout=3)
    assert tap is not None and tap.url == URL


@pytest.mark.hardware
def test_pcsc_ntag215_has_room_for_a_long_url(pcscd, writer, type2):
    from tests.support.vcard_type2 import ntag215_memory

    type2(UID, ntag215_memory(UID, b"\x03\x00\xfe"))

    written = writer.write(LONG_URL, timeout=3)

    assert (written.kind, written.capacity) == ("type2", 496)
    with open_reader(f"pcsc:{pcscd.reader0}") as reader:
        tap = reader.read(timeout=3)
    assert tap is not None and tap.url == LONG_URL


@pytest.mark.hardware
def test_pcsc_ntag213_too_small_for_a_long_url(writer, type2):
    from tests.support.vcard_type2 import ntag213_memory

    tag = type2(UID, ntag213_memory(UID, b"\x03\x00\xfe")).card

    with pytest.raises(CardTooSmall, match="NTAG213"):
        writer.write(LONG_URL, timeout=3)
    assert tag.writes == []


@pytest.mark.hardware
@pytest.mark.parametrize(
    ("cc", "kwargs"),
    [("E110120F", {}), ("E1101200", {"read_only": True})],
    ids=["cc-read-only", "refuses-writes"],
)
def test_pcsc_read_only_ntag213_raises_read_only(writer, type2, cc, kwargs):
    from tests.support.vcard_type2 import ntag213_memory

    tag = type2(UID, ntag213_memory(UID, b"\x03\x00\xfe", bytes.fromhex(cc)), **kwargs).card

    with pytest.raises(CardReadOnly):
        writer.write(URL, timeout=3)
    assert tag.writes == []


@pytest.mark.hardware
def test_pcsc_ntag213_removed_mid_write_leaves_tlv_length_zero(pcscd, writer, type2):
    from tests.support.vcard_type2 import ntag213_memory

    tlv = b"\x03" + bytes([len(MESSAGE)]) + MESSAGE
    tag = type2(UID, ntag213_memory(UID, b"\x03\x00\xfe"),
                responses={_page_write(7, tlv[12:16]): None}).card

    with pytest.raises(WriteInterrupted):
        writer.write(URL, timeout=3)

    assert tag.page(4) == b"\x03\x00\xfe\x00"  # an empty NDEF message, never half of one
    assert tag.writes == [4, 5, 6]


@pytest.mark.hardware
def test_pcsc_ntag213_ignored_write_is_a_read_back_mismatch(writer, type2):
    from tests.support.vcard_type2 import ntag213_memory

    tlv = b"\x03" + bytes([len(MESSAGE)]) + MESSAGE
    type2(UID, ntag213_memory(UID, b"\x03\x00\xfe"),
          responses={_page_write(6, tlv[8:12]): b"\x90\x00"})

    with pytest.raises(ReadBackMismatch, match="from byte 8"):
        writer.write(URL, timeout=3)


@pytest.mark.hardware
def test_pcsc_ntag213_lock_sets_the_documented_bytes(writer, type2):
    from tests.support.vcard_type2 import ntag213_memory

    memory = bytearray(ntag213_memory(UID, b"\x03\x00\xfe"))
    memory[0x2A * 4] = 0x04  # ACCESS: a bit already set stays set
    tag = type2(UID, bytes(memory)).card

    written = writer.write(URL, timeout=3, lock=True)

    assert written.locked
    assert tag.page(3) == bytes.fromhex("E110120F")  # CC: no write access
    assert tag.page(2)[2:] == b"\xff\xff"  # static lock bytes
    assert tag.page(0x28) == bytes.fromhex("FFFFFF00")  # dynamic lock bytes
    assert tag.page(0x2A)[0] == 0x44  # CFGLCK
    assert tag.writes[-4:] == [3, 2, 0x28, 0x2A]


@pytest.mark.hardware
def test_pcsc_lock_is_off_by_default(writer, type2):
    from tests.support.vcard_type2 import ntag213_memory

    tag = type2(UID, ntag213_memory(UID, b"\x03\x00\xfe")).card

    assert writer.write(URL, timeout=3).locked is False
    assert tag.page(3) == bytes.fromhex("E1101200")
    assert tag.page(2)[2:] == b"\0\0" and tag.page(0x28) == b"\0\0\0\0"


# -- nfcpy: ----------------------------------------------------------------------------------


@pytest.fixture
def udp_writer():
    """``(writer, port)``: an open ``nfcpy:udp`` writer on a free port, late answers dropped."""
    from device_drivers.nfcpy_writer import NfcpyWriter
    from tests.support.nfc_udp import free_udp_port, synchronous_link

    port = free_udp_port()
    with synchronous_link():
        w = open_writer(f"nfcpy:udp:127.0.0.1:{port}")
        assert isinstance(w, NfcpyWriter)
        w.open()
        yield w, port
        w.close()


@pytest.mark.hardware
def test_nfcpy_ntag213_write_reads_back_and_the_reader_then_gives_the_url(udp_writer):
    from tests.support.nfc_udp import UdpCard, ntag213

    writer, port = udp_writer
    with UdpCard(ntag213(UID, uri_message(OLD_URL)), port) as tag:
        written = writer.write(URL, timeout=5)

        assert written == WrittenCard(uid=UID.hex().upper(), kind="type2", capacity=142,
                                      locked=False)
        writes = tag.commands(0xA2)
        assert writes[0][:4] == bytes.fromhex("A2040300")  # TLV length 0 first
        assert writes[-1][:4] == bytes([0xA2, 0x04, 0x03, len(MESSAGE)])  # its length last
        with open_reader(f"nfcpy:udp:127.0.0.1:{port}") as reader:
            tap = reader.read(timeout=5)
    assert tap is not None and tap.url == URL


@pytest.mark.hardware
def test_nfcpy_type4_write_reads_back(udp_writer):
    from tests.support.nfc_udp import UdpCard, type4

    writer, port = udp_writer
    with UdpCard(type4(UID, uri_message(OLD_URL)), port):
        written = writer.write(URL, timeout=5)
        writer.close()  # field off: the Type 4A card stays selected by the writer until then
        with open_reader(f"nfcpy:udp:127.0.0.1:{port}") as reader:
            tap = reader.read(timeout=5)

    assert (written.kind, written.uid, written.locked) == ("type4", UID.hex().upper(), False)
    assert tap is not None and tap.url == URL


@pytest.mark.hardware
@pytest.mark.parametrize(
    ("url", "cc", "error"),
    [(LONG_URL, None, CardTooSmall), (URL, bytes.fromhex("E110120F"), CardReadOnly)],
    ids=["too-small", "read-only"],
)
def test_nfcpy_ntag213_too_small_or_read_only_is_not_written(udp_writer, url, cc, error):
    from tests.support.nfc_udp import UdpCard, ntag213

    writer, port = udp_writer
    with UdpCard(ntag213(UID, uri_message(OLD_URL), cc=cc), port) as tag:
        with pytest.raises(error):
            writer.write(url, timeout=5)
        assert tag.commands(0xA2) == []


# -- a card in use (keep=): someone's loyalty card is refused, untouched ----------------------

KEEP = "https://shop.example/c/"
OTHER_URL = "https://shop.example/c/ZZZZZBOSHIEW5YA6OROMWBGNZUUWXZFQ"  # another customer's card
# stored by hand, the way a QR-style upper-case URL may be: "HTTPS://" is not abbreviated
UPPER_URL = OTHER_URL.upper()
LONG_OTHER = "https://shop.example/c/" + "B" * 300  # a 3-byte TLV length on an NTAG215
REFUSED = {"other": uri_message(OTHER_URL), "upper-case": uri_message(UPPER_URL)}
# written: the same URL (try again), a URL that is not ours, an empty message
WRITTEN = {"same-url": MESSAGE, "foreign-url": uri_message(OLD_URL), "empty": b""}


def test_in_use_is_a_write_error_with_its_reason():
    from device_drivers.base import CardInUse

    assert issubclass(CardInUse, WriteError) and CardInUse("x").reason == "in-use"


@pytest.mark.parametrize(
    ("held", "refused"),
    [(OTHER_URL, True), (UPPER_URL, True), ("https://SHOP.example/C/x", True),
     (URL, False), (URL.upper(), False), (OLD_URL, False), ("https://shop.example/cx", False)],
)
def test_check_in_use_compares_the_first_uri_case_insensitively(held, refused):
    from device_drivers.base import CardInUse

    raised = None
    try:
        CardWriter.check_in_use(uri_message(held), URL, KEEP)
    except CardInUse as exc:
        raised = exc
    assert (raised is not None) is refused
    if raised is not None:
        assert held not in str(raised)  # someone's card URL is a credential: never in a message
    for current, keep in ((b"", KEEP), (uri_message(held), None), (b"\xd1garbage", KEEP)):
        CardWriter.check_in_use(current, URL, keep)  # nothing to refuse


def test_sim_writer_refuses_a_card_in_use_until_another_card_is_presented():
    from device_drivers.base import CardInUse

    with open_writer("sim:") as writer:
        writer.present(OTHER_URL)
        for _ in range(2):  # the card stays on the writer: refused again, "use another card"
            with pytest.raises(CardInUse) as exc:
                writer.write(URL, timeout=1, keep=KEEP)
            assert exc.value.reason == "in-use"
        assert writer.written == []
        writer.present(UPPER_URL)
        with pytest.raises(CardInUse):
            writer.write(URL, timeout=1, keep=KEEP)
        blank = writer.present(None)
        assert writer.write(URL, timeout=1, keep=KEEP).uid != blank  # a fresh card each time
        same = writer.present(URL)
        assert writer.write(URL, timeout=1, keep=KEEP).uid == same
        foreign = writer.present(OLD_URL)
        assert writer.write(URL, timeout=1, keep=KEEP).uid == foreign
        writer.present(OTHER_URL)
        assert writer.write(URL, timeout=1).uid  # without keep: any writable card

    assert [url for _, url, _ in writer.written] == [URL] * 4


def test_sim_writer_uri_presents_a_card_and_fails_in_use():
    from device_drivers.base import CardInUse

    with open_writer(f"sim:card={OTHER_URL}") as writer, pytest.raises(CardInUse):
        writer.write(URL, timeout=1, keep=KEEP)
    with open_writer("sim:fail=in-use") as writer:
        with pytest.raises(CardInUse):
            writer.write(URL, timeout=1)
        assert writer.write(URL, timeout=1, keep=KEEP).uid


def _type4_updates(card) -> list[bytes]:
    return [a for a in card.card.apdus if a[:2] == b"\x00\xd6"]


@pytest.mark.hardware
@pytest.mark.parametrize("held", REFUSED.values(), ids=REFUSED.keys())
def test_pcsc_type4_card_in_use_is_refused_and_not_touched(writer, vcard, held):
    from device_drivers.base import CardInUse

    card = vcard(UID, held)
    before = bytes(card.card.files[b"\xe1\x04"])

    for _ in range(2):  # still on the reader: refused again by the next call
        with pytest.raises(CardInUse) as exc:
            writer.write(URL, timeout=3, keep=KEEP)
        assert exc.value.reason == "in-use"

    assert _type4_updates(card) == []
    assert bytes(card.card.files[b"\xe1\x04"]) == before


@pytest.mark.hardware
def test_pcsc_type4_card_in_use_is_in_use_even_when_read_only(writer, vcard):
    from device_drivers.base import CardInUse

    card = vcard(UID, REFUSED["other"], _cc(0x0800, write_access=0xFF))

    with pytest.raises(CardInUse):
        writer.write(URL, timeout=3, keep=KEEP)
    assert _type4_updates(card) == []


@pytest.mark.hardware
@pytest.mark.parametrize("held", WRITTEN.values(), ids=WRITTEN.keys())
def test_pcsc_type4_card_not_in_use_is_written(writer, vcard, held):
    card = vcard(UID, held)

    assert writer.write(URL, timeout=3, keep=KEEP).kind == "type4"

    assert card.card.ndef == MESSAGE
    assert _type4_updates(card)[0] == _update(0, b"\0\0")


@pytest.mark.hardware
def test_pcsc_type4_nlen_zero_is_empty_whatever_the_file_holds(writer, vcard):
    card = vcard(UID, b"")
    leftover = REFUSED["other"]  # an interrupted write: NLEN 0, the old bytes behind it
    card.card.files[b"\xe1\x04"][2 : 2 + len(leftover)] = leftover

    writer.write(URL, timeout=3, keep=KEEP)

    assert card.card.ndef == MESSAGE


def _ntag213_holding(message: bytes, cc: bytes = bytes.fromhex("E1101200")) -> bytes:
    from tests.support.vcard_type2 import ndef_tlvs, ntag213_memory

    tlvs = ndef_tlvs(message, lock_tlv=True) if message else b"\x03\x00\xfe"
    return ntag213_memory(UID, tlvs, cc)


@pytest.mark.hardware
@pytest.mark.parametrize("held", REFUSED.values(), ids=REFUSED.keys())
def test_pcsc_ntag213_card_in_use_is_refused_and_not_touched(writer, type2, held):
    from device_drivers.base import CardInUse

    memory = _ntag213_holding(held)
    tag = type2(UID, memory).card

    for _ in range(2):
        with pytest.raises(CardInUse):
            writer.write(URL, timeout=3, keep=KEEP)

    assert tag.writes == [] and bytes(tag.memory) == memory


@pytest.mark.hardware
def test_pcsc_locked_ntag213_in_use_is_in_use_and_ntag215_long_url_too(writer, type2):
    from device_drivers.base import CardInUse
    from tests.support.vcard_type2 import ndef_tlvs, ntag215_memory

    tag = type2(UID, _ntag213_holding(REFUSED["other"], bytes.fromhex("E110120F"))).card
    with pytest.raises(CardInUse):  # a shop that locks its cards: still "in use"
        writer.write(URL, timeout=3, keep=KEEP)
    assert tag.writes == []

    memory = ntag215_memory(UID, ndef_tlvs(uri_message(LONG_OTHER)))
    tag = type2(UID, memory).card
    with pytest.raises(CardInUse):
        writer.write(URL, timeout=3, keep=KEEP)
    assert tag.writes == [] and bytes(tag.memory) == memory


@pytest.mark.hardware
@pytest.mark.parametrize("held", WRITTEN.values(), ids=WRITTEN.keys())
def test_pcsc_ntag213_card_not_in_use_is_written(writer, type2, held):
    tag = type2(UID, _ntag213_holding(held)).card

    assert writer.write(URL, timeout=3, keep=KEEP).kind == "type2"

    tlv = b"\x03" + bytes([len(MESSAGE)]) + MESSAGE + b"\xfe"
    assert bytes(tag.memory[16 : 16 + len(tlv)]) == tlv


@pytest.mark.hardware
def test_pcsc_ntag213_tlv_length_zero_is_empty_whatever_follows(writer, type2):
    from device_drivers.pcsc_writer import EMPTY_TYPE2_PAGE4, type2_tlv
    from tests.support.vcard_type2 import ntag213_memory

    # what an interrupted write leaves: page 4 "03 00 FE 00", pages 5.. another message's bytes
    tlvs = EMPTY_TYPE2_PAGE4 + type2_tlv(REFUSED["other"])[4:]
    tag = type2(UID, ntag213_memory(UID, tlvs)).card

    writer.write(URL, timeout=3, keep=KEEP)

    assert tag.page(4) == b"\x03" + bytes([len(MESSAGE)]) + MESSAGE[:2]


@pytest.mark.hardware
@pytest.mark.parametrize("held", REFUSED.values(), ids=REFUSED.keys())
def test_nfcpy_ntag213_card_in_use_is_refused_and_not_touched(udp_writer, held):
    from device_drivers.base import CardInUse
    from tests.support.nfc_udp import UdpCard, ntag213

    writer, port = udp_writer
    with UdpCard(ntag213(UID, held), port) as tag:
        for _ in range(2):
            with pytest.raises(CardInUse) as exc:
                writer.write(URL, timeout=5, keep=KEEP)
            assert exc.value.reason == "in-use"
        assert tag.commands(0xA2) == []  # no WRITE: the card is as it was
        with open_reader(f"nfcpy:udp:127.0.0.1:{port}") as reader:
            tap = reader.read(timeout=5)
    assert tap is not None and tap.url == first_uri(held)


@pytest.mark.hardware
@pytest.mark.parametrize("held", WRITTEN.values(), ids=WRITTEN.keys())
def test_nfcpy_ntag213_card_not_in_use_is_written(udp_writer, held):
    from tests.support.nfc_udp import UdpCard, ntag213

    writer, port = udp_writer
    with UdpCard(ntag213(UID, held), port):
        assert writer.write(URL, timeout=5, keep=KEEP).kind == "type2"
        with open_reader(f"nfcpy:udp:127.0.0.1:{port}") as reader:
            tap = reader.read(timeout=5)
    assert tap is not None and tap.url == URL


@pytest.mark.hardware
def test_nfcpy_type4_card_in_use_is_refused_and_not_touched(udp_writer):
    from device_drivers.base import CardInUse
    from tests.support.nfc_udp import UdpCard, type4

    writer, port = udp_writer
    with UdpCard(type4(UID, REFUSED["other"]), port) as tag:
        with pytest.raises(CardInUse):
            writer.write(URL, timeout=5, keep=KEEP)
        assert not [f for f in tag.commands() if f[1:3] == b"\x00\xd6"]  # no UPDATE BINARY
