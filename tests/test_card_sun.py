"""NTAG 424 DNA SUN cards: CARDS.md section 2's vectors, key diversification, the card layout,
and taps through the API on SQLite and PostgreSQL (valid, replayed, forged, concurrent)."""

from __future__ import annotations

import json
import os
import stat
import threading
import uuid

import pytest
import requests
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from device_drivers.ndefmsg import uri_message
from server.api.problems import PROBLEMS
from server.cards import sun
from server.cards.models import Card, CardFlag
from server.cards.sun_keys import (
    SunKeyring,
    SunKeySet,
    diversify,
    layout,
    load_sun_keyring,
    parse_keyring,
    sun_cli,
    verify_any,
)
from server.taps.models import Visit
from tests.support.fixtures_server import assert_problem
from tests.support.sun_card import SdmFile

ZERO = bytes(16)
URL_1 = "?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086"
URL_2 = ("?picc_data=FD91EC264309878BE6345CBE53BADF40&enc=CEE9A53E3E463EF1F459635736738962"
         "&cmac=ECC1E7F6C6C73BF6")

# --------------------------------------------------------------------------- CARDS.md vectors


def test_session_keys_vector():
    key = bytes.fromhex("5ACE7E50AB65D5D51FD5BF5A16B8205B")
    uid = bytes.fromhex("04C767F2066180")
    counter = int.from_bytes(bytes.fromhex("010000"), "little")
    assert sun.SV_MAC + uid + bytes.fromhex("010000") == \
        bytes.fromhex("3CC30001008004C767F2066180010000")
    mac_key, enc_key = sun.session_keys(key, uid, counter)
    assert mac_key.hex().upper() == "3A3E8110E05311F7A3FCF0D969BF2B48"
    assert enc_key.hex().upper() == "66DA61797E23DECA5D8ECA13BBADF7A9"


def test_url_without_file_data_vector():
    result = sun.verify(URL_1, ZERO, ZERO)
    assert result == sun.SunResult(uid=bytes.fromhex("04DE5F1EACC040"), counter=61,
                                   file_data=None)
    # the MAC input is empty: "auto" and "empty" agree
    assert sun.verify(URL_1, ZERO, ZERO, mac_input="empty") == result
    assert sun.verify("https://shop.example/c/sun" + URL_1, ZERO, ZERO) == result


def test_altered_mac_fails():
    assert URL_1.endswith("86")
    with pytest.raises(sun.ForgedSun) as caught:
        sun.verify(URL_1[:-2] + "87", ZERO, ZERO)
    assert caught.value.code == "sun-forged"


def test_url_with_file_data_vector():
    result = sun.verify(URL_2, ZERO, ZERO)
    assert result.uid == bytes.fromhex("04958CAA5C5E80")
    assert result.counter == 8
    assert result.file_data == b"xxxxxxxxxxxxxxxx"
    # the MAC input is "<ENC hex>&cmac=": named explicitly, or as an index in the URL
    assert sun.verify(URL_2, ZERO, ZERO, mac_input="enc") == result
    assert sun.verify(URL_2, ZERO, ZERO, mac_input=URL_2.index("CEE9")) == result
    mac_key, _ = sun.session_keys(ZERO, result.uid, 8)
    assert sun.truncated_mac(mac_key, b"CEE9A53E3E463EF1F459635736738962&cmac=").hex() == \
        "ecc1e7f6c6c73bf6"
    # another MAC input than the card's fails
    for other in ("empty", "picc", URL_2.index("CEE9") + 1):
        with pytest.raises(sun.ForgedSun):
            sun.verify(URL_2, ZERO, ZERO, mac_input=other)


def test_a_wrong_key_is_a_forgery():
    with pytest.raises(sun.ForgedSun, match="PICC data"):
        sun.verify(URL_1, bytes(15) + b"\x01", ZERO)
    with pytest.raises(sun.ForgedSun, match="MAC"):
        sun.verify(URL_1, ZERO, bytes(15) + b"\x01")


def test_24_bytes_of_picc_data_is_lrp_and_refused():
    lrp = "?picc_data=" + "AB" * 24 + "&cmac=94EED9EE65337086"
    with pytest.raises(sun.LrpUnsupported, match="LRP") as caught:
        sun.verify(lrp, ZERO, ZERO)
    assert caught.value.code == "sun-lrp-unsupported"


@pytest.mark.parametrize("url, what", [
    ("?e=EF963FF7828658A599F3041510671E8G&c=94EED9EE65337086", "not hexadecimal"),
    ("?e=EF963FF7828658A599F3041510671E8&c=94EED9EE65337086", "not hexadecimal"),
    ("?e=EF963FF7828658A599F3041510671E88&c=94EED9EE6533708", "not hexadecimal"),
    ("?e=EF96 3FF7828658A599F3041510671E8&c=94EED9EE65337086", "not hexadecimal"),
    ("?e=EF963FF7828658A599F3041510671E&c=94EED9EE65337086", "16 bytes"),
    ("?e=EF963FF7828658A599F3041510671E88&c=94EED9EE653370", "8 bytes"),
    ("?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086AA", "8 bytes"),
    ("?e=EF963FF7828658A599F3041510671E88", "MAC is missing"),
    ("?c=94EED9EE65337086", "PICC data is missing"),
    ("https://shop.example/c/sun", "PICC data is missing"),
    ("", "PICC data is missing"),
    ("?e=EF963FF7828658A599F3041510671E88&p=EF963FF7828658A599F3041510671E88"
     "&c=94EED9EE65337086", "more than once"),
    ("?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086&cmac=94EED9EE65337086",
     "more than once"),
    ("?picc_data=FD91EC264309878BE6345CBE53BADF40&enc=CEE9A53E3E463EF1F4596357367389"
     "&cmac=ECC1E7F6C6C73BF6", "16-byte blocks"),
    ("?picc_data=FD91EC264309878BE6345CBE53BADF40&cmac=ECC1E7F6C6C73BF6"
     "&enc=CEE9A53E3E463EF1F459635736738962", "after the start"),
    ("?e=ÉF963FF7828658A599F3041510671E88&c=94EED9EE65337086", "ASCII"),
    ("?e=" + "0" * 600, "short text"),
])
def test_malformed_urls(url, what):
    with pytest.raises(sun.MalformedSun, match=what) as caught:
        sun.verify(url, ZERO, ZERO)
    assert caught.value.code == "sun-malformed"


def test_every_error_is_an_invalid_sun_with_a_problem_type():
    for cls in (sun.InvalidSun, sun.MalformedSun, sun.LrpUnsupported, sun.ForgedSun):
        assert issubclass(cls, sun.InvalidSun)
        assert PROBLEMS[cls.code][0] == 422
    assert len({c.code for c in (sun.MalformedSun, sun.LrpUnsupported, sun.ForgedSun)}) == 3


def test_parameter_names_aliases_and_configuration():
    picc, mac = URL_1[3:35], URL_1[-16:]
    for name in ("e", "p", "picc_data"):
        for mac_name in ("c", "cmac"):
            assert sun.verify(f"https://x.example/c/sun?{name}={picc}&{mac_name}={mac}",
                              ZERO, ZERO).counter == 61
    # other parameters (and a fragment) are left alone
    assert sun.verify(f"/c/sun?v=2&e={picc}&x&c={mac}#top", ZERO, ZERO).counter == 61
    custom = sun.SunParams.from_config("u", ["f"], "m, sig")
    assert custom == sun.SunParams(picc=("u",), enc=("f",), cmac=("m", "sig"))
    assert sun.verify(f"?u={picc}&sig={mac}", ZERO, ZERO, params=custom).counter == 61
    with pytest.raises(sun.MalformedSun, match="PICC data is missing"):
        sun.verify(URL_1, ZERO, ZERO, params=custom)
    with pytest.raises(ValueError, match="overlap"):
        sun.SunParams.from_config("e", "e", "c")
    with pytest.raises(ValueError, match="at least one"):
        sun.SunParams.from_config(" , ")
    assert sun.is_sun(URL_1) and sun.is_sun("https://s.example/c/sun" + URL_2)
    assert not sun.is_sun("https://shop.example/c/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF")
    assert not sun.is_sun("CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF")
    assert not sun.is_sun(URL_1, custom)


def _flip(url: str, name: str, bit: int) -> str:
    field = next(f for f in sun.query_fields(url) if f.name == name)
    raw = bytearray(bytes.fromhex(field.value))
    raw[bit // 8] ^= 1 << (bit % 8)
    return url.replace(field.value, raw.hex().upper())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([("picc_data", 128), ("enc", 128), ("cmac", 64)]).flatmap(
    lambda p: st.tuples(st.just(p[0]), st.integers(0, p[1] - 1))))
def test_any_bit_flip_fails(flip):
    name, bit = flip
    with pytest.raises(sun.ForgedSun):
        sun.verify(_flip(URL_2, name, bit), ZERO, ZERO)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([("e", 128), ("c", 64)]).flatmap(
    lambda p: st.tuples(st.just(p[0]), st.integers(0, p[1] - 1))))
def test_any_bit_flip_fails_without_file_data(flip):
    name, bit = flip
    with pytest.raises(sun.ForgedSun):
        sun.verify(_flip(URL_1, name, bit), ZERO, ZERO)


# --------------------------------------------------------------------------- keys


def test_an10922_vector():
    master = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    div = bytes.fromhex("04782E21801D80" "3042F5" "4E585020416275")
    assert diversify(master, div).hex().upper() == "A8DD63A3B89D54B37CA802473FDA9175"


def test_an10922_without_padding_is_cmac():
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.cmac import CMAC

    master, div = bytes(range(16)), bytes(range(31))
    mac = CMAC(algorithms.AES(master))
    mac.update(b"\x01" + div)
    assert diversify(master, div) == mac.finalize()
    with pytest.raises(ValueError):
        diversify(master, bytes(32))


def test_card_keys_are_per_card_except_the_meta_read_key():
    keys = SunKeySet(meta_read=os.urandom(16), master=os.urandom(16))
    a, b = bytes.fromhex("04958CAA5C5E80"), bytes.fromhex("04958CAA5C5E81")
    ka, kb = keys.card_keys(a), keys.card_keys(b)
    assert ka[1] == kb[1] == keys.meta_read
    assert all(ka[n] != kb[n] for n in (0, 2, 3, 4))
    assert len({ka[n] for n in range(5)}) == 5
    assert keys.file_read(a) == ka[2] == diversify(keys.master, a + b"\x02" + b"loyalty/424")
    assert "meta" not in repr(keys) and keys.meta_read.hex() not in repr(keys)


def test_key_file_created_private_and_read_again(tmp_path):
    path = tmp_path / "sun-keys.json"
    ring = load_sun_keyring(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.current == 1 and set(ring.sets) == {1}
    assert load_sun_keyring(str(path)) == ring
    data = json.loads(path.read_text())
    with pytest.raises(ValueError, match="16 bytes"):
        parse_keyring({**data, "sets": {"1": {**data["sets"]["1"], "master": "00"}}})
    with pytest.raises(ValueError, match="missing or retired"):
        parse_keyring({**data, "retired": [1]})


def _tag(keys: SunKeySet, uid: bytes, base="https://shop.example", file_data=False,
         params=sun.DEFAULT_PARAMS, **kw) -> SdmFile:
    lay = layout(base, params, file_data=file_data)
    return SdmFile(uid, keys.meta_read, keys.file_read(uid), lay.ndef_file, lay.picc_offset,
                   lay.mac_input_offset, lay.mac_offset, lay.enc_offset, lay.enc_length, **kw)


def test_verify_any_tries_every_set_not_retired():
    old, new = (SunKeySet(os.urandom(16), os.urandom(16)) for _ in range(2))
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    ring = SunKeyring(current=2, sets={1: old, 2: new})
    assert [i for i, _ in ring.in_order()] == [2, 1]
    tag_old, tag_new = _tag(old, uid), _tag(new, uid)
    tag_old.read()
    tag_new.read()
    assert verify_any(tag_old.urls[-1], ring)[0] == 1
    assert verify_any(tag_new.urls[-1], ring) == (2, sun.SunResult(uid, 1, None))
    with pytest.raises(sun.ForgedSun):
        verify_any(tag_old.urls[-1], SunKeyring(current=2, sets={2: new}))
    with pytest.raises(sun.MalformedSun):
        verify_any("?e=00&c=00", ring)


# --------------------------------------------------------------------------- card layout


def test_layout_matches_the_ndef_encoding_and_the_card_emulator():
    for base in ("https://shop.example", "http://127.0.0.1:8000", "https://www.shop.example",
                 "https://shop.example/" + "x" * 250):
        for file_data in (False, True):
            lay = layout(base, file_data=file_data)
            assert lay.ndef_file[2:] == uri_message(lay.template)
            assert int.from_bytes(lay.ndef_file[:2], "big") == len(lay.ndef_file) - 2
            f = lay.ndef_file
            assert f[lay.picc_offset - 10:lay.picc_offset] == b"picc_data="
            assert f[lay.picc_offset:lay.picc_offset + 32] == b"0" * 32
            assert f[lay.mac_offset - 5:lay.mac_offset + 16] == b"cmac=" + b"0" * 16
            if file_data:
                assert f[lay.enc_offset - 4:lay.enc_offset + 32] == b"enc=" + b"0" * 32
                assert lay.mac_input_offset == lay.enc_offset
            else:
                assert lay.mac_input_offset == lay.mac_offset
    lay = layout("https://shop.example")
    # shop.example/c/sun?picc_data=: the URL after "https://" starts at offset 7
    assert (lay.picc_offset, lay.mac_offset) == (7 + 29, 7 + 29 + 32 + 6)
    assert lay.file_settings().hex().upper() == "4000E0C1FF12" + "240000" + "4A0000" * 2
    with_enc = layout("https://shop.example", file_data=True)
    assert with_enc.file_settings().hex().upper() == (
        "4000E0D1FF12" "240000" "490000" "490000" "200000" "6F0000")


@pytest.mark.parametrize("file_data, mac_input", [(False, "auto"), (True, "auto"),
                                                  (False, "picc"), (True, "picc")])
def test_emulated_card_urls_verify_and_count_up(file_data, mac_input):
    keys = SunKeySet(os.urandom(16), os.urandom(16))
    uid = bytes.fromhex("04C767F2066180")
    tag = _tag(keys, uid, file_data=file_data)
    if mac_input == "picc":  # SDMMACInputOffset at the PICC data: the MAC covers it too
        tag.mac_input_offset = tag.picc_offset
    results = [sun.verify(first, keys.meta_read, keys.file_read, mac_input=mac_input)
               for first in (_read_url(tag) for _ in range(3))]
    assert [r.counter for r in results] == [1, 2, 3]
    assert {r.uid for r in results} == {uid}
    assert all(r.file_data == (b"0" * 16 if file_data else None) for r in results)
    assert len(set(tag.urls)) == 3


def _read_url(tag: SdmFile) -> str:
    tag.read()
    return tag.urls[-1]


def test_cli_prints_card_keys_and_layout(app):
    uid = "04A1B2C3D4E5F6"
    runner = CliRunner()
    with app.app_context():
        missing = runner.invoke(sun_cli, ["card-keys", uid])
        assert missing.exit_code != 0 and "no SUN key file" in missing.output
        assert "created" in runner.invoke(sun_cli, ["init"]).output
        out = runner.invoke(sun_cli, ["card-keys", uid, "--json"])
        assert out.exit_code == 0, out.output
        keys = json.loads(out.output)
        ring = load_sun_keyring(app.config["SUN_KEYS_FILE"])
        assert keys["keys"]["2"] == ring.sets[1].file_read(bytes.fromhex(uid)).hex().upper()
        assert keys["keys"]["1"] == ring.sets[1].meta_read.hex().upper()
        assert runner.invoke(sun_cli, ["card-keys", "04A1"]).exit_code != 0
        lay = runner.invoke(sun_cli, ["layout"]).output
        assert "https://shop.example/c/sun?picc_data=" in lay and "4000E0C1FF12" in lay

        assert "key set 2 added" in runner.invoke(sun_cli, ["rotate"]).output
        assert runner.invoke(sun_cli, ["retire", "2"]).exit_code != 0  # current
        assert "retired" in runner.invoke(sun_cli, ["retire", "1"]).output
        ring = load_sun_keyring(app.config["SUN_KEYS_FILE"])
        assert (ring.current, set(ring.sets)) == (2, {2})


# --------------------------------------------------------------------------- taps, both DBs

UID = "04958CAA5C5E80"


@pytest.fixture
def sun_keys(app) -> SunKeySet:
    """The app's current SUN key set (the key file is created on first use)."""
    ring = load_sun_keyring(app.config["SUN_KEYS_FILE"])
    return ring.sets[ring.current]


@pytest.fixture
def sun_card(app, api, sun_keys):
    """A customer with an NTAG 424 DNA card; returns ``(customer_id, card, emulated tag)``."""
    customer_id, card = api.customer_with_card("nfc", uid=UID, sun=True)
    assert card["sun"] is True and card["kind"] == "nfc"
    return customer_id, card, _tag(sun_keys, bytes.fromhex(UID))


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _flags(app) -> list[CardFlag]:
    with _main(app) as s:
        return list(s.scalars(select(CardFlag).order_by(CardFlag.id)))


def test_sun_tap_is_accepted_and_counts(app, api, creds, sun_card):
    customer_id, card, tag = sun_card
    for expected in (1, 2, 3):
        r = api.tap(url=_read_url(tag), uid=UID, reader="Virtual PCD 00 00")
        assert r.status_code == 200, r.get_json()
        record = r.get_json()
        assert record["customer_id"] == customer_id and record["replayed"] is False
        assert record["card"]["card_id"] == card["card_id"]
        assert record["flags"] == []
        with _main(app) as s:
            assert s.get(Card, card["card_id"]).sun_counter == expected
    with _main(app) as s:
        methods = s.scalars(select(Visit.method).where(Visit.card_id == card["card_id"]))
        assert list(methods) == ["sun"] * 3
    assert _flags(app) == []


def test_replayed_url_is_refused_and_flagged_on_the_next_record(app, api, creds, sun_card):
    customer_id, card, tag = sun_card
    url = _read_url(tag)
    first = api.tap(url=url)
    assert first.status_code == 200

    again = api.tap(url=url)  # a new event id: a copy of the URL, not a till's retry
    body = assert_problem(again, 409, "card-replayed")
    assert body["card_id"] == card["card_id"]
    [flag] = _flags(app)
    assert (flag.kind, flag.customer_id, flag.card_id) == \
        ("card-replayed", customer_id, card["card_id"])
    assert flag.device_id == creds.device_ids["till"] and flag.store_id is not None
    assert flag.detail == {"counter": 1, "last_accepted": 1}
    with _main(app) as s:
        assert s.get(Card, card["card_id"]).sun_counter == 1

    later = api.tap(url=_read_url(tag))
    assert later.status_code == 200
    assert later.get_json()["flags"] == ["card-replayed"]
    # every tap of the customer shows it, whatever the card, while that card is active
    qr = api.issue_card(customer_id, "qr").get_json()
    assert api.tap(url=qr["url"]).get_json()["flags"] == ["card-replayed"]


def test_lower_counter_is_a_replay(app, api, sun_card):
    _, _, tag = sun_card
    old, new = _read_url(tag), _read_url(tag)
    assert api.tap(url=new).status_code == 200
    assert_problem(api.tap(url=old), 409, "card-replayed")
    assert [f.detail for f in _flags(app)] == [{"counter": 1, "last_accepted": 2}]


def test_the_same_event_id_again_is_the_first_answer_not_a_replay(app, api, creds, sun_card):
    _, _, tag = sun_card
    body = {"event_id": str(uuid.uuid4()), "url": _read_url(tag)}
    first = api.client.post("/api/v1/taps", json=body, headers=creds.h("till"))
    assert first.status_code == 200
    retry = api.client.post("/api/v1/taps", json=body, headers=creds.h("till"))
    assert retry.status_code == 200, retry.get_json()
    assert retry.get_json()["replayed"] is True
    assert retry.get_json()["visit_id"] == first.get_json()["visit_id"]
    assert _flags(app) == []
    # another till with the same event id is a conflict, not a record
    other = api.client.post("/api/v1/taps", json=body, headers=creds.h("till_uid"))
    assert_problem(other, 409, "event-id-conflict")


def test_a_retried_replay_is_flagged_once(app, api, creds, sun_card):
    _, _, tag = sun_card
    url = _read_url(tag)
    assert api.tap(url=url).status_code == 200
    body = {"event_id": str(uuid.uuid4()), "url": url}
    for _ in range(2):
        r = api.client.post("/api/v1/taps", json=body, headers=creds.h("till"))
        assert_problem(r, 409, "card-replayed")
    assert len(_flags(app)) == 1


def test_forged_mac_is_refused_and_not_flagged(app, api, sun_card):
    _, _, tag = sun_card
    url = _read_url(tag)
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert_problem(api.tap(url=forged), 422, "sun-forged")
    # a card made with other keys (a clone's own chip) is a forgery too
    stranger = _tag(SunKeySet(os.urandom(16), os.urandom(16)), bytes.fromhex(UID))
    assert_problem(api.tap(url=_read_url(stranger)), 422, "sun-forged")
    assert_problem(api.tap(url=url.replace("picc_data=", "picc_data=AB")), 422,
                   "sun-malformed")
    lrp = "https://shop.example/c/sun?picc_data=" + "00" * 24 + "&cmac=" + "00" * 8
    assert_problem(api.tap(url=lrp), 422, "sun-lrp-unsupported")
    assert _flags(app) == []
    assert api.tap(url=url).status_code == 200  # the real read still counts


def test_unknown_uid_is_not_found(app, api, sun_keys):
    stranger = _tag(sun_keys, bytes.fromhex("04000000000001"))
    assert_problem(api.tap(url=_read_url(stranger)), 404, "card-not-found")


def test_sun_card_is_refused_by_token_or_uid_alone(app, api, creds, sun_card):
    _, card, tag = sun_card
    assert_problem(api.tap(url=card["url"]), 403, "card-sun-required")
    assert_problem(api.tap(uid=UID, headers=creds.h("till_uid")), 403, "card-sun-required")
    assert api.tap(url=_read_url(tag)).status_code == 200


def test_uid_mismatch_is_flagged_but_a_random_uid_is_not(app, api, sun_card):
    _, _, tag = sun_card
    assert api.tap(url=_read_url(tag), uid="08A1B2C3").get_json()["flags"] == []
    assert api.tap(url=_read_url(tag), uid="04A1B2C3D4E5F6").get_json()["flags"] == \
        ["uid-mismatch"]


def test_issue_validation_and_a_reissued_chip_keeps_its_counter(app, api, creds, sun_keys):
    customer_id = api.enrol().get_json()["customer_id"]
    assert_problem(api.issue_card(customer_id, "qr", uid=UID, sun=True), 422,
                   "validation-error")
    assert_problem(api.issue_card(customer_id, "nfc", sun=True), 422, "validation-error")
    assert_problem(api.issue_card(customer_id, "nfc", uid="04A1B2C3", sun=True), 422,
                   "validation-error")
    plain = api.issue_card(customer_id, "nfc", uid="04A1B2C3D4E5F6").get_json()
    assert plain["sun"] is False

    first_id, first = api.customer_with_card("nfc", uid=UID, sun=True)
    tag = _tag(sun_keys, bytes.fromhex(UID))
    old = _read_url(tag)
    assert api.tap(url=_read_url(tag)).status_code == 200  # counter 2 accepted
    # the desk replaces the card... with the same chip, e.g. found again
    replaced = api.issue_card(first_id, "nfc", headers=creds.h("kiosk", staff="desk1"),
                              uid=UID, sun=True, replace=True, reason="other")
    assert replaced.status_code == 201, replaced.get_json()
    assert_problem(api.tap(url=old), 409, "card-replayed")
    r = api.tap(url=_read_url(tag))
    assert r.status_code == 200
    assert r.get_json()["card"]["card_id"] == replaced.get_json()["card_id"]
    # the flag was raised on the new card: the replacement is active, so it shows
    assert r.get_json()["flags"] == ["card-replayed"]


def test_a_replacement_card_clears_the_flag_from_the_record(app, api, creds, sun_card):
    customer_id, _, tag = sun_card
    url = _read_url(tag)
    api.tap(url=url)
    assert_problem(api.tap(url=url), 409, "card-replayed")
    new = api.issue_card(customer_id, "qr", headers=creds.h("kiosk", staff="desk1"),
                         replace=True, reason="stolen").get_json()
    assert api.tap(url=new["url"]).get_json()["flags"] == []
    assert len(_flags(app)) == 1  # still on file


def test_openapi_lists_the_sun_problems(client):
    taps = client.get("/api/v1/openapi.json").get_json()["paths"]["/taps"]["post"]
    described = " ".join(r["description"] for r in taps["responses"].values())
    for slug in ("sun-malformed", "sun-lrp-unsupported", "sun-forged", "card-replayed",
                 "card-sun-required"):
        assert slug in described


def test_concurrent_taps_of_one_counter_accept_one(app, creds, sun_card, server_url):
    _, card, tag = sun_card
    url = _read_url(tag)
    n = 8
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def tap(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = requests.post(f"{server_url}/api/v1/taps", timeout=30,
                                       headers=creds.h("till"),
                                       json={"event_id": str(uuid.uuid4()), "url": url})
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=tap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [409] * (n - 1), [r.text for r in results]
    assert all(r.json()["type"].endswith("/card-replayed") for r in results
               if r.status_code == 409)
    with _main(app) as s:
        assert len(list(s.scalars(select(Visit).where(Visit.card_id == card["card_id"])))) == 1
    assert len(_flags(app)) == n - 1
