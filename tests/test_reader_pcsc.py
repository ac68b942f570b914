"""``pcsc:`` reader against the real stack: pcscd + vpcd + an emulated Type 4 tag + pyscard."""

from __future__ import annotations

import time

import pytest

from device_drivers import ReaderError, Tap, open_reader
from device_drivers.ndefmsg import uri_message
from device_drivers.pcsc import PcscReader
from device_drivers.t4t import parse_cc
from tests.support.fixtures_pcsc import wait_card_state

pytestmark = pytest.mark.hardware

URL = "https://shop.example/c/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
MESSAGE = uri_message(URL)  # 52 bytes
UID = bytes.fromhex("04A1B2C3D4E5F6")
READ_NLEN = bytes.fromhex("00B0000002")
READ_CC = bytes.fromhex("00B000000F")


@pytest.fixture
def reader(pcscd):
    r = open_reader(f"pcsc:{pcscd.reader0}")
    assert isinstance(r, PcscReader)
    r.open()
    yield r
    r.close()


def test_ndef_card_gives_its_url_and_uid(pcscd, reader, vcard):
    vcard(UID, MESSAGE)

    tap = reader.read(timeout=3)

    assert isinstance(tap, Tap)
    assert (tap.reader, tap.uid, tap.url, tap.qr) == (pcscd.reader0, "04A1B2C3D4E5F6", URL, None)


def test_card_left_on_reader_is_reported_once_and_again_when_presented_again(pcscd, reader, vcard):
    card = vcard(UID, MESSAGE)
    assert reader.read(timeout=3).url == URL

    started = time.monotonic()
    assert reader.read(timeout=0.5) is None
    assert 0.4 <= time.monotonic() - started < 1.5

    card.remove()
    card.insert(pcscd.port0)
    again = reader.read(timeout=3)
    assert again is not None and (again.uid, again.url) == ("04A1B2C3D4E5F6", URL)
    assert reader.read(timeout=0.3) is None


def test_card_put_down_while_nobody_reads_is_reported_by_the_next_read(pcscd, reader, vcard):
    vcard(UID, MESSAGE)
    assert reader.read(timeout=3) is not None
    # swapped while the kiosk is busy: vcard() returns once pcscd reports the new card
    vcard(bytes.fromhex("04998877665544"), MESSAGE)

    tap = reader.read(timeout=1)

    assert tap is not None and (tap.uid, tap.url) == ("04998877665544", URL)


def test_long_message_is_read_in_chunks_no_larger_than_the_cc_allows(reader, vcard):
    url = "https://shop.example/c/" + "A" * 300
    cc = bytes.fromhex("000F20001000340406E10408000000")  # MLe 16
    card = vcard(UID, uri_message(url), cc)

    tap = reader.read(timeout=3)

    assert tap is not None and tap.url == url
    reads = [apdu for apdu in card.card.apdus if apdu[:2] == b"\x00\xb0"]
    assert len(reads) >= 2 + len(uri_message(url)) // 16  # CC, NLEN, then 16-byte chunks
    assert all(apdu[4] <= 16 for apdu in reads[2:])


def test_card_without_ndef_application_is_a_uid_only_tap(reader, vcard):
    card = vcard(bytes.fromhex("04112233445566"), ndef=None)

    tap = reader.read(timeout=3)

    assert tap is not None
    assert (tap.uid, tap.url) == ("04112233445566", None)
    assert bytes.fromhex("00A4040007D276000085010100") in card.card.apdus


@pytest.mark.parametrize(
    ("card_kwargs", "message"),
    [
        ({"cc": bytes.fromhex("000F20003B00340506E10408000000")}, "no NDEF file control TLV"),
        (
            {"responses": {READ_CC: bytes.fromhex("000F20003B9000")}},
            "capability container: 5 bytes",
        ),
        ({"responses": {READ_NLEN: bytes.fromhex("10009000")}}, "NDEF length 4096 is beyond"),
        (
            {"cc": bytes.fromhex("000F20003B00340406E10400100000")},
            f"NDEF length {len(MESSAGE)} is beyond the NDEF file \\(14 bytes",
        ),
        ({"ndef": b"\xde\xad\xbe\xef not an NDEF message"}, "malformed NDEF message"),
        ({"responses": {bytes.fromhex("FFCA000000"): bytes.fromhex("6A81")}}, "UID .*6A81"),
    ],
    ids=[
        "cc-without-ndef-tlv",
        "cc-too-short",
        "nlen-beyond-file",
        "nlen-beyond-small-file",
        "not-ndef",
        "uid-refused",
    ],
)
def test_garbage_card_raises_once_and_the_reader_keeps_working(
    pcscd, reader, vcard, card_kwargs, message
):
    kwargs = {"uid": UID, "ndef": MESSAGE, **card_kwargs}
    vcard(**kwargs)

    with pytest.raises(ReaderError, match=message):
        reader.read(timeout=3)
    assert reader.read(timeout=0.2) is None  # the bad presentation is not raised again

    vcard(bytes.fromhex("04998877665544"), MESSAGE)  # replaces the bad card
    tap = reader.read(timeout=3)
    assert tap is not None and (tap.uid, tap.url) == ("04998877665544", URL)


def test_card_removed_in_the_middle_of_a_read_raises_and_the_next_card_is_read(
    pcscd, reader, vcard
):
    read_message = bytes([0x00, 0xB0, 0x00, 0x02, len(MESSAGE)])  # the message after NLEN
    vcard(UID, MESSAGE, responses={read_message: None})

    with pytest.raises(ReaderError, match="card removed"):
        reader.read(timeout=3)

    wait_card_state(pcscd.reader0, present=False)
    vcard(UID, MESSAGE)
    tap = reader.read(timeout=3)
    assert tap is not None and tap.url == URL


def test_read_without_a_card_returns_none_within_the_timeout(reader):
    started = time.monotonic()

    assert reader.read(timeout=0.3) is None

    assert time.monotonic() - started < 1.0


def test_first_reader_is_used_when_no_name_is_given(pcscd, vcard):
    vcard(UID, MESSAGE)
    with open_reader("pcsc:") as r:
        assert r.name == pcscd.reader0
        tap = r.read(timeout=3)
    assert tap is not None and tap.reader == pcscd.reader0


def test_unknown_reader_name_fails_on_open_listing_the_readers(pcscd):
    r = open_reader("pcsc:NoSuchReader")

    with pytest.raises(ReaderError) as info:
        r.open()

    text = str(info.value)
    assert "NoSuchReader" in text
    assert pcscd.reader0 in text and pcscd.reader1 in text


def test_name_match_ignores_case_and_close_is_idempotent(pcscd):
    r = open_reader("pcsc:virtual pcd 00 01")
    r.open()
    assert r.name == pcscd.reader1
    r.close()
    r.close()
    with pytest.raises(ReaderError, match="not open"):
        r.read(timeout=0.1)


@pytest.mark.parametrize(
    "cc",
    [
        "000F20003B00340406E10408000000"[:-2],  # 14 bytes: the write access byte is missing
        "000F30003B00340406E10408000000",  # mapping version 3.0
        "000F20000000340406E10408000000",  # MLe 0
        "000F20003B00340406E10308000000",  # NDEF file id is the CC's
        "000F20003B00340406E10400010000",  # NDEF file of 1 byte
        "000A20003B00340406E10408000000",  # CCLEN 10
    ],
)
def test_parse_cc_refuses_malformed_containers(cc):
    with pytest.raises(ReaderError):
        parse_cc(bytes.fromhex(cc))


def test_parse_cc_reads_the_ndef_file_control_tlv():
    cc = parse_cc(bytes.fromhex("000F20003B00340406E10408000000"))
    assert (cc.mle, cc.ndef_file_id, cc.ndef_max_size, cc.read_access) == (0x3B, 0xE104, 0x0800, 0)


# --------------------------------------------------------------------------- Type 2 (NTAG21x)


@pytest.fixture
def type2(pcscd):
    """Factory: put a ``Type2Card`` on slot 0; removed at the end."""
    from tests.support.vcard import VpcdCard
    from tests.support.vcard_type2 import Type2Card

    cards = []

    def insert(uid: bytes, memory: bytes, port: int | None = None) -> VpcdCard:
        port = pcscd.port0 if port is None else port
        readers = {pcscd.port0: pcscd.reader0, pcscd.port1: pcscd.reader1}
        card = VpcdCard(Type2Card(uid, memory), host=pcscd.host,
                        on_change=lambda p, present: wait_card_state(readers[p], present))
        cards.append(card)
        card.insert(port)
        return card

    yield insert
    for card in cards:
        card.remove()


@pytest.mark.parametrize("lock_tlv", [False, True], ids=["ndef-tlv", "lock-tlv-first"])
def test_ntag213_gives_its_url_through_page_reads(reader, type2, lock_tlv):
    from tests.support.vcard_type2 import ndef_tlvs, ntag213_memory

    uid = bytes.fromhex("04AB87F2CA1190")
    card = type2(uid, ntag213_memory(uid, ndef_tlvs(MESSAGE, lock_tlv=lock_tlv)))

    tap = reader.read(timeout=3)

    assert tap is not None and (tap.uid, tap.url) == ("04AB87F2CA1190", URL)
    pages = [a for a in card.card.apdus if a[:3] == b"\xff\xb0\x00"]
    assert pages[0] == bytes.fromhex("FFB0000310")  # the capability container first
    assert len(pages) <= 1 + (len(MESSAGE) + 8) // 16 + 1  # only the pages the message needs


@pytest.mark.parametrize("state", ["blank", "empty-ndef"])
def test_unformatted_or_empty_type2_tag_is_a_uid_only_tap(reader, type2, state):
    from tests.support.vcard_type2 import ntag213_memory

    uid = bytes.fromhex("04010203040506")
    # blank: no E1 magic in the capability container; empty: formatted, NDEF TLV of length 0
    type2(uid, bytes(180) if state == "blank" else ntag213_memory(uid, b"\x03\x00\xfe"))
    tap = reader.read(timeout=3)
    assert tap is not None and (tap.uid, tap.url) == ("04010203040506", None)


def test_broken_type2_tlv_raises_and_the_reader_keeps_working(reader, type2, vcard):
    from tests.support.vcard_type2 import ntag213_memory

    uid = bytes.fromhex("04DEADBEEF0001")
    # an NDEF TLV claiming 200 bytes on a tag with 144 bytes of user memory
    bad = type2(uid, ntag213_memory(uid, b"\x03\xc8" + MESSAGE))
    with pytest.raises(ReaderError, match="beyond the Type 2 tag"):
        reader.read(timeout=3)
    bad.remove()
    vcard(UID, MESSAGE)
    tap = reader.read(timeout=3)
    assert tap is not None and tap.url == URL


def test_two_readers_at_once_each_report_their_own_cards(pcscd, vcard):
    """A till with two readers (counter and customer side): each is its own Reader."""
    import threading

    first = open_reader(f"pcsc:{pcscd.reader0}")
    second = open_reader(f"pcsc:{pcscd.reader1}")
    first.open()
    second.open()
    try:
        taps: dict[str, Tap | None] = {}

        def read(name, reader):
            taps[name] = reader.read(timeout=5)

        threads = [threading.Thread(target=read, args=(n, r))
                   for n, r in (("first", first), ("second", second))]
        for t in threads:
            t.start()
        vcard(UID, MESSAGE, port=pcscd.port0)
        vcard(bytes.fromhex("04000000000002"), None, port=pcscd.port1)
        for t in threads:
            t.join(timeout=10)
        assert (taps["first"].reader, taps["first"].uid, taps["first"].url) == (
            pcscd.reader0, UID.hex().upper(), URL)
        assert (taps["second"].reader, taps["second"].uid, taps["second"].url) == (
            pcscd.reader1, "04000000000002", None)
    finally:
        first.close()
        second.close()
