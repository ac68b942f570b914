"""``nfcpy:`` reader against nfcpy's real ``udp`` device, with emulated cards on the other end.

The cards (``tests/support/nfc_udp.py``) are child processes listening on a free UDP port per
test. nfcpy's udp device waits a second per technology for an answer that does not come, so a
read without a card takes about two seconds whatever its timeout. Every test runs with
``synchronous_link()``: late answers are dropped, as a real reader's chip drops them.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from device_drivers import DriverError, ReaderError, ReaderUnavailable, Tap, open_reader
from device_drivers.ndefmsg import uri_message
from device_drivers.nfcpy_reader import NfcpyReader
from tests.support.fixtures_devices import ROOT, last_after, wait_until
from tests.support.nfc_udp import (
    NXP_SIGNATURE,
    UdpCard,
    felica,
    felica_attribute,
    free_udp_port,
    ntag213,
    synchronous_link,
    type4,
    unplugged,
)
from tests.test_e2e_till import enrol_with_card

pytestmark = pytest.mark.hardware

URL = "https://shop.example/c/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
MESSAGE = uri_message(URL)
UID = bytes.fromhex("04AB87F2CA1190")  # the UID of the CARDS.md §4 signature vector
OTHER_UID = bytes.fromhex("04998877665544")
IDM = bytes.fromhex("02FE000000000001")
READ_CC = bytes.fromhex("00B000000F")
READ_NLEN = bytes.fromhex("00B0000002")


@pytest.fixture(autouse=True)
def _synchronous_link():
    with synchronous_link():
        yield


@pytest.fixture
def port() -> int:
    return free_udp_port()


@pytest.fixture
def uri(port: int) -> str:
    return f"nfcpy:udp:127.0.0.1:{port}"


@pytest.fixture
def reader(uri: str):
    r = open_reader(uri)
    assert isinstance(r, NfcpyReader)
    r.open()
    yield r
    r.close()


@pytest.fixture
def card(port: int):
    """``card(spec) -> UdpCard`` on the test's reader; it takes the previous card's place."""
    cards: list[UdpCard] = []

    def put(spec: dict) -> UdpCard:
        for old in cards:
            old.remove()
        new = UdpCard(spec, port).present()
        cards.append(new)
        return new

    yield put
    for old in cards:
        old.remove()


def test_ntag213_gives_its_uid_url_and_originality_signature(reader, uri, card):
    tag = card(ntag213(UID, MESSAGE))

    tap = reader.read(timeout=5)

    assert isinstance(tap, Tap)
    assert (tap.reader, tap.uid, tap.url, tap.qr) == (uri, UID.hex().upper(), URL, None)
    assert tap.signature == NXP_SIGNATURE.hex().upper()
    assert "signature" not in tap.as_payload()  # the service does not take it (yet)
    # nfcpy's NXP probes were answered as an NTAG213 answers them
    assert tag.commands(0x1A) and tag.commands(0x60) and tag.commands(0x3C)


def test_ntag213_without_read_sig_gives_no_signature(reader, card):
    card(ntag213(UID, MESSAGE, signature=None))

    tap = reader.read(timeout=5)

    assert tap is not None and (tap.url, tap.signature) == (URL, None)


def test_type4_tag_gives_its_uid_and_url(reader, card):
    tag = card(type4(UID, MESSAGE))

    tap = reader.read(timeout=5)

    assert tap is not None
    assert (tap.uid, tap.url, tap.signature) == (UID.hex().upper(), URL, None)
    frames = tag.commands()
    assert frames[0] == bytes.fromhex("E080")  # RATS, answered with the ATS 0578807002
    assert frames[1] == bytes.fromhex("02") + bytes.fromhex("00A4040007D276000085010100")


def test_type4_long_message_is_read_in_chunks_no_larger_than_the_cc_allows(reader, card):
    url = "https://shop.example/c/" + "A" * 300
    cc = bytes.fromhex("000F20001000340406E10408000000")  # MLe 16
    tag = card(type4(UID, uri_message(url), cc=cc))

    tap = reader.read(timeout=5)

    assert tap is not None and tap.url == url
    reads = [f[1:] for f in tag.commands() if f[1:3] == b"\x00\xb0"]
    assert len(reads) >= 2 + len(uri_message(url)) // 16
    assert all(apdu[4] <= 16 for apdu in reads[2:])


def test_felica_type3_tag_gives_its_idm_and_url(reader, card):
    card(felica(IDM, MESSAGE))

    tap = reader.read(timeout=5)

    assert tap is not None and (tap.uid, tap.url) == (IDM.hex().upper(), URL)


def test_card_left_on_the_reader_is_reported_once_and_again_after_it_left(reader, card):
    tag = card(ntag213(UID, MESSAGE))
    assert reader.read(timeout=5).url == URL

    started = time.monotonic()
    assert reader.read(timeout=0.5) is None  # still there: nfcpy's presence check answers
    assert time.monotonic() - started < 1.5

    tag.remove()  # the card leaves the field (the emulator goes away) ...
    assert reader.read(timeout=0.5) is None  # ... which is not an error
    tag.present()  # and comes back
    again = reader.read(timeout=5)
    assert again is not None and (again.uid, again.url) == (UID.hex().upper(), URL)
    assert reader.read(timeout=0.3) is None


def test_card_put_down_while_nobody_reads_is_reported_by_the_next_read(reader, card):
    card(type4(UID, MESSAGE))
    assert reader.read(timeout=5) is not None
    card(type4(OTHER_UID, MESSAGE))  # swapped while the till is busy

    tap = reader.read(timeout=5)

    assert tap is not None and (tap.uid, tap.url) == (OTHER_UID.hex().upper(), URL)


@pytest.mark.parametrize(
    "spec",
    [
        ntag213(UID, None),  # blank: no capability container
        ntag213(UID, b""),  # formatted, empty NDEF message TLV
        type4(UID, None),  # no NDEF application
        type4(UID, b""),  # empty NDEF file
        felica(IDM, None, system=0x0003),  # a FeliCa card that is not NDEF
    ],
    ids=["type2-blank", "type2-empty", "type4-no-app", "type4-empty", "type3-not-ndef"],
)
def test_card_without_ndef_is_a_uid_only_tap(reader, card, spec):
    card(spec)

    tap = reader.read(timeout=5)

    assert tap is not None and tap.url is None
    assert tap.uid == bytes.fromhex(spec.get("uid") or spec["idm"]).hex().upper()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ntag213(UID, b"\xde\xad\xbe\xef not an NDEF message"), "malformed NDEF message"),
        (ntag213(UID, MESSAGE, responses={b"\x30\x04": b"\x01\x02"}), "no readable NDEF message"),
        (ntag213(UID, MESSAGE, cc=bytes.fromhex("E1201200")), "mapping version 2.0"),
        (
            type4(UID, MESSAGE, cc=bytes.fromhex("000F20003B00340506E10408000000")),
            "no NDEF file control TLV",
        ),
        (
            type4(UID, MESSAGE, responses={READ_CC: bytes.fromhex("000F20003B9000")}),
            "capability container: 5 bytes",
        ),
        (
            type4(UID, MESSAGE, responses={READ_NLEN: bytes.fromhex("10009000")}),
            "NDEF length 4096 is beyond",
        ),
        (type4(UID, b"\xde\xad\xbe\xef not an NDEF message"), "malformed NDEF message"),
        (
            felica(IDM, MESSAGE, attribute=felica_attribute(len(MESSAGE), 4, checksum=1)),
            "attribute block",
        ),
    ],
    ids=[
        "type2-not-ndef",
        "type2-short-read",
        "type2-cc-version",
        "type4-cc-without-ndef-tlv",
        "type4-cc-too-short",
        "type4-nlen-beyond-file",
        "type4-not-ndef",
        "type3-attribute-checksum",
    ],
)
def test_garbage_card_raises_once_and_the_reader_goes_on(reader, card, spec, message):
    card(spec)

    with pytest.raises(ReaderError, match=message) as info:
        reader.read(timeout=5)
    assert not isinstance(info.value, ReaderUnavailable)
    assert reader.read(timeout=0.3) is None  # the bad card resting there is not raised again

    card(type4(OTHER_UID, MESSAGE))  # replaces the bad card
    tap = reader.read(timeout=5)
    assert tap is not None and (tap.uid, tap.url) == (OTHER_UID.hex().upper(), URL)


def test_garbage_answer_to_activation_raises_and_the_reader_goes_on(reader, card):
    card(type4(UID, MESSAGE, ats=b"\x05"))  # an ATS cut short

    with pytest.raises(ReaderError, match="garbage when it was activated"):
        reader.read(timeout=5)
    assert reader.read(timeout=0.3) is None  # not raised again while it stays

    card(type4(OTHER_UID, MESSAGE))
    tap = reader.read(timeout=5)
    assert tap is not None and tap.uid == OTHER_UID.hex().upper()


def test_card_removed_in_the_middle_of_a_read_raises_and_the_next_card_is_read(reader, card):
    read_message = bytes([0x00, 0xB0, 0x00, 0x02, len(MESSAGE)])  # the message after NLEN
    card(type4(UID, MESSAGE, responses={read_message: None}))  # leaves instead of answering

    with pytest.raises(ReaderError, match="removed too soon"):
        reader.read(timeout=5)

    card(type4(UID, MESSAGE))
    tap = reader.read(timeout=5)
    assert tap is not None and tap.url == URL


def test_card_that_stops_answering_once_is_sensed_and_read_again(reader, card):
    # page 4 (the NDEF TLV) goes unanswered three times: nfcpy's READ gives up
    tag = card(ntag213(UID, MESSAGE, drop={b"\x30\x04": 3}))

    tap = reader.read(timeout=5)

    assert tap is not None and tap.url == URL
    assert len(tag.commands(0x1A)) == 2  # activated twice (nfcpy's AUTH probe)
    assert tag.commands().count(b"\x30\x04") == 4


def test_read_without_a_card_returns_none(reader):
    started = time.monotonic()

    assert reader.read(timeout=0) is None

    assert time.monotonic() - started < 3.0  # one sense round: ~1 s per technology on udp


def test_unplugged_reader_is_unavailable_and_works_again_once_plugged_back(reader, uri, card, port):
    card(ntag213(UID, MESSAGE))
    assert reader.read(timeout=5) is not None

    with unplugged(port):
        with pytest.raises(ReaderUnavailable, match="No such device"):
            reader.read(timeout=1)
        reader.close()
        with pytest.raises(ReaderUnavailable, match="no nfcpy reader at .*pn533_usb"):
            reader.open()

    reader.open()
    tap = reader.read(timeout=5)  # the card still on it is a new presentation for a new reader
    assert tap is not None and tap.url == URL


def test_close_releases_the_device_and_is_idempotent(uri, card):
    card(ntag213(UID, MESSAGE))
    first = open_reader(uri)
    first.open()
    clf = first._clf
    assert first.read(timeout=5) is not None

    first.close()
    first.close()

    assert clf.device is None  # nfcpy's clf.close() ran: the device is free
    with pytest.raises(ReaderError, match="not open"):
        first.read(timeout=0.1)
    with open_reader(uri) as second:  # another owner can open it and read the card
        tap = second.read(timeout=5)
    assert tap is not None and tap.uid == UID.hex().upper()


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("nfcpy:", "usb"),
        ("nfcpy:usb", "usb"),
        ("nfcpy:usb:054c:06c1", "usb:054c:06c1"),
        ("nfcpy:tty:USB0:pn532", "tty:USB0:pn532"),
        ("nfcpy:udp", "udp"),
        ("nfcpy:udp:127.0.0.1:54321", "udp:127.0.0.1:54321"),
    ],
)
def test_the_uri_carries_nfcpys_own_path(uri, path):
    reader = open_reader(uri)
    assert isinstance(reader, NfcpyReader)
    assert (reader.uri, reader.path) == (uri, path)


@pytest.mark.parametrize("uri", ["nfcpy:pcsc", "nfcpy:udp:localhost:port"])
def test_malformed_uri_is_refused(uri):
    with pytest.raises(DriverError, match="malformed reader URI"):
        open_reader(uri)


def test_missing_usb_reader_fails_on_open_with_what_to_check():
    reader = open_reader("nfcpy:usb:054c:06c1")

    with pytest.raises(ReaderUnavailable) as info:
        reader.open()

    text = str(info.value)
    assert "usb:054c:06c1" in text and "pcscd" in text and "pn533_usb" in text
    reader.close()


def test_importing_the_driver_does_not_load_nfcpy():
    code = "import sys, device_drivers.nfcpy_reader; print('nfc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert out.strip() == "False"


# -- through the till agent ------------------------------------------------------------------


def test_ntag213_tap_at_the_till_shows_the_customer(live_server, make_agent, uri, card):
    customer_id, issued = enrol_with_card(live_server, "Jūratė", "Kazlauskienė")
    agent = make_agent(uri)
    client = agent.test_client()

    card(ntag213(UID, uri_message(issued["url"])))

    result = last_after(client, 0, timeout=15)
    assert result["ok"] is True, result
    assert result["reader"] == uri
    assert result["record"]["customer_id"] == customer_id
    assert result["record"]["display_name"] == "Jūratė K."
    assert result["record"]["card"]["card_id"] == issued["card_id"]


def test_till_agent_picks_an_unplugged_nfcpy_reader_up_again(live_server, make_agent, port, uri,
                                                              card):
    customer_id, issued = enrol_with_card(live_server)
    agent = make_agent(uri)
    client = agent.test_client()

    def status() -> dict:
        return client.get("/status").json["readers"][0]

    wait_until(lambda: status()["status"] == "ready", 10, "the nfcpy reader to be ready")
    with unplugged(port):
        failed = wait_until(lambda: (s := status())["status"] == "failed" and s, 10,
                            "the agent to report the unplugged reader")
        assert "nfcpy" in failed["error"]
    wait_until(lambda: status()["status"] == "ready", 10, "the reader to be picked up again")

    card(ntag213(UID, uri_message(issued["url"])))
    result = last_after(client, 0, timeout=15)
    assert result["ok"] is True and result["record"]["customer_id"] == customer_id
