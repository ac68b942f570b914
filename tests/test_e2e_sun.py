"""NTAG 424 DNA cards end to end: an emulated 424 (a fresh SUN URL at each tap) on pcscd +
vpcd, read by the ``pcsc:`` reader of the till agent, verified by the live service.

A genuine card is accepted tap after tap; a cloned card (a plain Type 4 tag holding a URL
skimmed from the genuine one) is refused and the customer's file flagged; a card made with
other keys, or a URL with an altered MAC, is refused as forged.
"""

from __future__ import annotations

import os
import uuid

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from device_drivers.ndefmsg import uri_message
from server.cards.models import CardFlag
from server.cards.sun_keys import SunKeySet, layout, load_sun_keyring
from server.taps.models import Visit
from tests.support.fixtures_devices import last_after
from tests.support.fixtures_pcsc import wait_card_state
from tests.support.sun_card import SdmFile, SunVirtualCard
from tests.support.vcard import VirtualCard, VpcdCard

pytestmark = pytest.mark.hardware


@pytest.fixture
def sun_keys(live_server) -> SunKeySet:
    """The live service's current SUN key set (the key file is created on first use)."""
    ring = load_sun_keyring(live_server.app.config["SUN_KEYS_FILE"])
    return ring.sets[ring.current]


@pytest.fixture
def put_card(pcscd):
    """``put_card(virtual_card) -> VpcdCard``: the card alone on reader 0, once pcscd sees it."""
    cards: list[VpcdCard] = []

    def put(card: VirtualCard) -> VpcdCard:
        for old in cards:
            old.remove()
        vpcd = VpcdCard(card, host=pcscd.host,
                        on_change=lambda _port, present: wait_card_state(pcscd.reader0, present))
        cards.append(vpcd)
        vpcd.insert(pcscd.port0)
        return vpcd

    yield put
    for card in cards:
        card.remove()


def provision(live_server, keys: SunKeySet, uid: bytes) -> SdmFile:
    """What the shop's encoding station does to a blank 424: the layout, the card's keys."""
    lay = layout(live_server.app.config["CARD_BASE_URL"])
    return SdmFile(uid, keys.card_key(uid, 1), keys.card_key(uid, 2), lay.ndef_file,
                   lay.picc_offset, lay.mac_input_offset, lay.mac_offset)


def issue(live_server, uid: bytes) -> tuple[str, dict]:
    """Enrol a customer and issue the 424 card ``uid`` to them, as the kiosk."""
    kiosk = {"Authorization": f"Bearer {live_server.creds['kiosk_key']}"}
    r = requests.post(f"{live_server.url}/api/v1/enrolments", headers=kiosk, timeout=5, json={
        "event_id": str(uuid.uuid4()), "first_name": "Rūta", "last_name": "Jonaitienė",
        "email": f"{uuid.uuid4().hex[:8]}@example.lt", "language": "lt",
        "consents": {"terms": True}, "consent_version": "2026-11"})
    assert r.status_code == 201, r.text
    customer_id = r.json()["customer_id"]
    r = requests.post(f"{live_server.url}/api/v1/customers/{customer_id}/cards", headers=kiosk,
                      timeout=5, json={"event_id": str(uuid.uuid4()), "kind": "nfc",
                                       "uid": uid.hex().upper(), "sun": True})
    assert r.status_code == 201, r.text
    return customer_id, r.json()


def new_uid() -> bytes:
    return b"\x04" + os.urandom(6)


def test_genuine_taps_count_up_and_a_clone_is_refused_and_flagged(
        live_server, pcscd, put_card, make_agent, sun_keys):
    uid = new_uid()
    customer_id, card = issue(live_server, uid)
    tag = provision(live_server, sun_keys, uid)
    client = make_agent(f"pcsc:{pcscd.reader0}").test_client()

    genuine = put_card(SunVirtualCard(tag))
    first = last_after(client, 0, timeout=10)
    assert first["ok"] is True, first
    assert first["record"]["customer_id"] == customer_id
    assert first["record"]["display_name"] == "Rūta J."
    assert first["record"]["flags"] == []
    genuine.remove()
    genuine.insert(pcscd.port0)  # the customer taps again: a new URL, counter 2
    second = last_after(client, first["seq"], timeout=10)
    assert second["ok"] is True, second
    assert tag.counter == 2 and len(set(tag.urls)) == 2

    # a skimmer reads the card in the customer's bag (counter 3, never shown to the service),
    # then the customer pays with it (counter 4); the clone holds the skimmed URL
    tag.read()
    skimmed = tag.urls[-1]
    put_card(SunVirtualCard(tag))
    paid = last_after(client, second["seq"], timeout=10)
    assert paid["ok"] is True and tag.counter == 4

    put_card(VirtualCard(uid=bytes.fromhex("04DEADBEEF0001"), ndef=uri_message(skimmed)))
    cloned = last_after(client, paid["seq"], timeout=10)
    assert cloned["ok"] is False, cloned
    assert (cloned["error"]["type"], cloned["error"]["status"]) == ("card-replayed", 409)

    # the same clone with the URL of the last genuine tap: refused too
    put_card(VirtualCard(uid=uid, ndef=uri_message(tag.urls[-1])))
    again = last_after(client, cloned["seq"], timeout=10)
    assert again["ok"] is False and again["error"]["type"] == "card-replayed"

    put_card(SunVirtualCard(tag))
    back = last_after(client, again["seq"], timeout=10)
    assert back["ok"] is True, back
    assert back["record"]["flags"] == ["card-replayed"]  # on the customer's file now

    with Session(live_server.app.extensions["loyalty.db"].main) as s:
        flags = list(s.scalars(select(CardFlag).where(CardFlag.card_id == card["card_id"])
                               .order_by(CardFlag.id)))
        visits = s.scalar(select(func.count()).select_from(Visit)
                          .where(Visit.card_id == card["card_id"], Visit.method == "sun"))
    assert [(f.kind, f.detail) for f in flags] == [
        ("card-replayed", {"counter": 3, "last_accepted": 4}),
        ("card-replayed", {"counter": 4, "last_accepted": 4})]
    assert visits == 4


def test_forged_cards_are_refused(live_server, pcscd, put_card, make_agent, sun_keys):
    uid = new_uid()
    issue(live_server, uid)
    client = make_agent(f"pcsc:{pcscd.reader0}").test_client()

    # a 424 of the attacker's own, keyed without the shop's keys, claiming the UID
    stranger = SunKeySet(meta_read=sun_keys.meta_read, master=os.urandom(16))
    put_card(SunVirtualCard(provision(live_server, stranger, uid)))
    own_keys = last_after(client, 0, timeout=10)
    assert own_keys["ok"] is False
    assert (own_keys["error"]["type"], own_keys["error"]["status"]) == ("sun-forged", 422)

    # a genuine read whose MAC was altered on its way to a clone
    tag = provision(live_server, sun_keys, uid)
    tag.read()
    url = tag.urls[-1]
    altered = url[:-1] + ("0" if url[-1] != "0" else "1")
    put_card(VirtualCard(uid=uid, ndef=uri_message(altered)))
    bad_mac = last_after(client, own_keys["seq"], timeout=10)
    assert bad_mac["ok"] is False and bad_mac["error"]["type"] == "sun-forged"

    # forgeries flag nobody: the genuine card still reads clean
    put_card(SunVirtualCard(tag))
    genuine = last_after(client, bad_mac["seq"], timeout=10)
    assert genuine["ok"] is True and genuine["record"]["flags"] == []
