"""Key rotation without downtime (docs/KEYS.md): ``flask keys ...`` on SQLite and PostgreSQL.

The vault master key is rotated by re-wrapping each row's data key (the ciphertext stays);
card keys are added and later retired; running workers pick the new files up without a
restart, and taps go on while it happens.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from server.cards import token
from server.cards.models import Card
from server.keys import rotation
from server.secrets_file import KeyMap, WatchedFile, write_json
from server.vault.models import VaultRecord
from server.vault.service import read_personal_data, rewrite_personal_data
from tests.support.fixtures_server import assert_problem


def _keys(app, *args: str):
    return app.test_cli_runner().invoke(args=["keys", *args])


def _vault(app) -> Session:
    return Session(app.extensions["loyalty.db"].vault)


def _rows(app) -> dict[str, tuple[int, bytes, bytes]]:
    with _vault(app) as s:
        return {r.customer_id: (r.master_key_id, r.wrapped_key, r.ciphertext)
                for r in s.execute(select(VaultRecord.customer_id, VaultRecord.master_key_id,
                                          VaultRecord.wrapped_key, VaultRecord.ciphertext))}


def _file(app, name: str) -> dict:
    with open(app.config[name]) as fh:
        return json.load(fh)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tap_ok(api, card: dict, name: str = "Élodie D.") -> dict:
    tapped = api.tap(url=card["url"])
    assert tapped.status_code == 200, tapped.get_json()
    assert tapped.get_json()["display_name"] == name
    return tapped.get_json()


# --------------------------------------------------------------------------- the watcher


def test_watched_file_checks_once_per_interval_and_on_unknown_ids(tmp_path):
    path = tmp_path / "keys.json"
    write_json(path, {"keys": {"1": "aa"}})
    clock = Clock()
    loads = []

    def load(p: str) -> KeyMap:
        loads.append(p)
        data = json.loads(Path(p).read_text())
        return KeyMap({int(k): bytes.fromhex(v) for k, v in data["keys"].items()},
                      lambda key_id: watched.refresh().known(key_id))

    watched = WatchedFile(path, load, interval=1.0, clock=clock)
    assert dict(watched.get()) == {1: b"\xaa"} and len(loads) == 1
    write_json(path, {"keys": {"1": "aa", "2": "bb"}})
    # within the second: no stat, the keys in memory
    clock.now += 0.5
    assert 2 not in watched.get() and len(loads) == 1
    # an id it lacks re-reads at once (the file changed) and answers
    assert watched.get().get(2) == b"\xbb" and len(loads) == 2
    assert watched.get()[2] == b"\xbb"
    # an id nobody has: no re-read while the file is unchanged, within the interval ...
    assert watched.get().get(9) is None and len(loads) == 2
    clock.now += 1.0
    # ... then one forced re-read per interval at most (an NFS cache may hide a change)
    assert watched.get().get(9) is None and len(loads) == 3
    assert watched.get().get(9) is None and len(loads) == 3
    # the periodic check sees a change once the interval has passed
    write_json(path, {"keys": {"3": "cc"}})
    assert 3 not in watched.get()
    clock.now += 1.0
    assert set(watched.get()) == {3}
    # a broken or missing file keeps the keys in memory
    path.write_text("{not json")
    clock.now += 1.0
    assert set(watched.get()) == {3}
    path.unlink()
    clock.now += 1.0
    assert set(watched.get()) == {3}
    assert "cc" not in repr(watched.get())  # ids only, never key material


# --------------------------------------------------------------------------- the vault


def test_rotate_vault_rewraps_every_row_and_keeps_the_data(app, api):
    cards = [api.customer_with_card()[1] for _ in range(5)]
    before = _rows(app)
    assert {kid for kid, _, _ in before.values()} == {1}

    result = _keys(app, "rotate-vault", "--batch-size", "2", "--settle", "0")
    assert result.exit_code == 0, result.output
    assert "master key 2 added" in result.output
    assert "5 rows re-wrapped to master key 2" in result.output
    assert _file(app, "VAULT_KEY_FILE")["current"] == 2
    assert set(_file(app, "VAULT_KEY_FILE")["master"]) == {"1", "2"}

    after = _rows(app)
    assert after.keys() == before.keys()
    for cid, (kid, wrapped, ciphertext) in after.items():
        assert kid == 2
        assert ciphertext == before[cid][2]  # the data is not re-encrypted ...
        assert wrapped != before[cid][1]  # ... only its data key is re-wrapped
    with app.app_context(), _vault(app) as s:
        for cid in after:
            assert read_personal_data(s, cid)["last_name"] == "Durand"
    for card in cards:
        _tap_ok(api, card)

    # a second run has nothing to do
    again = _keys(app, "rotate-vault", "--rewrap-only", "--settle", "0")
    assert again.exit_code == 0, again.output
    assert "0 rows re-wrapped" in again.output
    assert _rows(app) == after
    assert _file(app, "VAULT_KEY_FILE")["current"] == 2

    status = _keys(app, "status")
    assert status.exit_code == 0, status.output
    assert "master keys: 1, 2 (current 2)" in status.output
    assert "vault rows per master key: key 2: 5" in status.output
    for secret in [*_file(app, "VAULT_KEY_FILE")["master"].values(),
                   _file(app, "VAULT_KEY_FILE")["index"],
                   *_file(app, "CARD_KEYS_FILE")["keys"].values()]:
        assert secret not in status.output


def test_retire_vault_only_when_no_row_uses_the_key(app, api):
    cards = [api.customer_with_card()[1] for _ in range(3)]
    # a rotation that stopped before re-wrapping (a crash): rows still on key 1
    assert rotation.add_vault_key(app.config["VAULT_KEY_FILE"]) == 2

    refused = _keys(app, "retire-vault", "1")
    assert refused.exit_code != 0
    assert "3 vault rows are still wrapped with master key 1" in refused.output
    assert "1" in _file(app, "VAULT_KEY_FILE")["master"]
    current = _keys(app, "retire-vault", "2")
    assert current.exit_code != 0 and "current" in current.output
    status = _keys(app, "status")
    assert "3 rows are not on the current key yet" in status.output

    resumed = _keys(app, "rotate-vault", "--rewrap-only", "--settle", "0")
    assert resumed.exit_code == 0, resumed.output
    assert "3 rows re-wrapped to master key 2" in resumed.output
    assert _file(app, "VAULT_KEY_FILE")["current"] == 2  # no third key

    retired = _keys(app, "retire-vault", "1")
    assert retired.exit_code == 0, retired.output
    assert set(_file(app, "VAULT_KEY_FILE")["master"]) == {"2"}
    for card in cards:
        _tap_ok(api, card)
    again = _keys(app, "retire-vault", "1")
    assert again.exit_code != 0 and "no master key 1" in again.output


def test_rewrap_never_overwrites_a_concurrent_rectification_or_erasure(app, api):
    for _ in range(4):
        api.customer_with_card()
    first, second, *_ = sorted(_rows(app))
    rotation.add_vault_key(app.config["VAULT_KEY_FILE"])
    engine = app.extensions["loyalty.db"].vault
    raced = []

    def racing_session() -> Session:
        session = Session(engine)

        @event.listens_for(session, "do_orm_execute")
        def _race(state) -> None:
            # between the rewrap's read and its first update, a request rectifies one row
            # and erases another
            if state.is_update and not raced:
                raced.append(True)
                with app.app_context(), Session(engine) as other:
                    rewrite_personal_data(other, first, {"first_name": "Anna",
                                                         "last_name": "Zee"})
                    other.execute(VaultRecord.__table__.delete()
                                  .where(VaultRecord.customer_id == second))
                    other.commit()
        return session

    with app.app_context():
        report = rotation.rewrap_vault(racing_session, app.config["VAULT_KEY_FILE"],
                                       batch_size=10, settle=0)
    assert raced and report.raced >= 1
    assert report.done and not report.failed
    rows = _rows(app)
    assert second not in rows  # the erasure stands
    assert {kid for kid, _, _ in rows.values()} == {2}
    with app.app_context(), _vault(app) as s:
        assert read_personal_data(s, first) == {"first_name": "Anna", "last_name": "Zee"}


def test_rewrap_stops_if_its_key_leaves_the_file(app, api):
    for _ in range(3):
        api.customer_with_card()
    before = _rows(app)
    path = app.config["VAULT_KEY_FILE"]
    rotation.add_vault_key(path)
    engine = app.extensions["loyalty.db"].vault

    def session_meanwhile_edited() -> Session:
        session = Session(engine)

        @event.listens_for(session, "do_orm_execute")
        def _edit(state) -> None:
            # someone replaces key 2 while the batch is being re-wrapped with it
            if state.is_update:
                data = _file(app, "VAULT_KEY_FILE")
                data["master"]["2"] = "11" * 32
                write_json(path, data)
        return session

    with pytest.raises(rotation.RotationError, match="no longer"):
        rotation.rewrap_vault(session_meanwhile_edited, path, settle=0)
    assert _rows(app) == before  # the batch was rolled back: every row opens with key 1


def test_rotations_started_together_never_lose_a_key(tmp_path):
    path = tmp_path / "vault.key"
    write_json(path, {"current": 1, "master": {"1": "00" * 32}, "index": "00" * 32})
    threads = [threading.Thread(target=rotation.add_vault_key, args=(path,))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data = json.loads(path.read_text())
    assert sorted(int(k) for k in data["master"]) == list(range(1, 10))
    assert data["current"] == 9


def test_rotate_vault_refuses_a_key_file_that_does_not_open_the_rows(app, api, tmp_path):
    api.customer_with_card()
    before = _rows(app)
    app.config["VAULT_KEY_FILE"] = str(tmp_path / "missing.key")
    missing = _keys(app, "rotate-vault", "--settle", "0")
    assert missing.exit_code != 0 and "no key file" in missing.output
    assert not (tmp_path / "missing.key").exists()
    write_json(tmp_path / "other.key", {"current": 1, "master": {"1": "00" * 32},
                                        "index": "00" * 32})
    app.config["VAULT_KEY_FILE"] = str(tmp_path / "other.key")
    wrong = _keys(app, "rotate-vault", "--settle", "0")
    assert wrong.exit_code != 0 and "does not open" in wrong.output
    assert _file(app, "VAULT_KEY_FILE")["current"] == 1
    assert _rows(app) == before


# --------------------------------------------------------------------------- card keys


def _key_id(card: dict) -> int:
    """The key id a card's token names (byte 0, low 4 bits)."""
    return base64.b32decode(card["token"])[0] & 0x0F


def test_rotate_and_retire_card_keys(app, api):
    cid = api.enrol().get_json()["customer_id"]
    issue_event = str(uuid.uuid4())
    old = api.issue_card(cid, event_id=issue_event).get_json()
    assert _key_id(old) == 1

    rotated = _keys(app, "rotate-cards")
    assert rotated.exit_code == 0, rotated.output
    assert "card key 2 added" in rotated.output
    assert _file(app, "CARD_KEYS_FILE")["current"] == 2
    app.extensions["loyalty.card_keys"].expire()  # as a second later

    _tap_ok(api, old)  # cards issued before keep working
    _, new = api.customer_with_card()
    assert _key_id(new) == 2
    with Session(app.extensions["loyalty.db"].main) as s:
        assert s.get(Card, new["card_id"]).key_id == 2
    _tap_ok(api, new)

    current = _keys(app, "retire-card", "2")
    assert current.exit_code != 0 and "current" in current.output
    refused = _keys(app, "retire-card", "1")
    assert refused.exit_code != 0
    assert "1 active cards are still signed with card key 1" in refused.output
    assert _file(app, "CARD_KEYS_FILE")["retired"] == []
    _tap_ok(api, old)

    forced = _keys(app, "retire-card", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert "1 active cards signed with it stop working" in forced.output
    assert _file(app, "CARD_KEYS_FILE")["retired"] == [1]
    app.extensions["loyalty.card_keys"].expire()
    assert_problem(api.tap(url=old["url"]), 422, "card-token-unknown-key")
    # a kiosk retrying that first issue gets a clear problem, not a 500
    assert_problem(api.issue_card(cid, event_id=issue_event), 422, "card-token-unknown-key")
    _tap_ok(api, new)

    status = _keys(app, "status")
    assert "card keys: 1, 2 (current 2); retired: 1" in status.output
    assert "active cards per card key: key 1: 1, key 2: 1" in status.output
    assert status.exit_code == 1 and "retired or missing" in status.output

    # a retired id is never handed out again
    assert _keys(app, "rotate-cards").exit_code == 0
    assert _file(app, "CARD_KEYS_FILE")["current"] == 3


def test_card_key_ids_run_out_after_sixteen(app):
    path = Path(app.config["CARD_KEYS_FILE"])
    missing = _keys(app, "rotate-cards")
    assert missing.exit_code != 0 and "no key file" in missing.output  # never created here
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"current": 0, "keys": {str(i): "00" * 32 for i in range(15)},
                      "retired": [15]})
    result = _keys(app, "rotate-cards")
    assert result.exit_code != 0 and "none is free" in result.output


# --------------------------------------------------------------------------- no restart


def test_a_running_app_picks_up_rotated_files(app, api):
    _, old = api.customer_with_card()
    _tap_ok(api, old)  # both key files are cached by this app now
    clock = Clock()
    cards_w, vault_w = app.extensions["loyalty.card_keys"], app.extensions["loyalty.vault_keys"]
    for watched in (cards_w, vault_w):
        watched.clock = clock
        watched.expire()
        watched.get()  # checked "now": the next stat is due at now + 1 s

    # card keys: within the second the app still signs with key 1 (no stat on each request)
    assert _keys(app, "rotate-cards").exit_code == 0
    _, stale = api.customer_with_card()
    assert _key_id(stale) == 1
    # ... but a token naming key 2 makes it look at once
    card_id = bytes.fromhex(old["card_id"])
    key2 = bytes.fromhex(_file(app, "CARD_KEYS_FILE")["keys"]["2"])
    tapped = api.tap(url=token.encode(2, key2, card_id, 0))
    assert tapped.status_code == 200, tapped.get_json()
    _, fresh = api.customer_with_card()
    assert _key_id(fresh) == 2

    # vault: rows re-wrapped to key 2 open in this app at once (key 2 is looked up) ...
    assert _keys(app, "rotate-vault", "--settle", "0").exit_code == 0
    for card in (old, stale, fresh):
        _tap_ok(api, card)
    # ... and new rows use key 2 once the second has passed
    clock.now += 1.0
    customer_id, _ = api.customer_with_card()
    assert _rows(app)[customer_id][0] == 2

    # the periodic check alone, with no unknown id to trigger it
    assert _keys(app, "rotate-cards").exit_code == 0
    _, same_second = api.customer_with_card()
    assert _key_id(same_second) == 2
    clock.now += 1.0
    _, next_second = api.customer_with_card()
    assert _key_id(next_second) == 3


def test_taps_go_on_while_keys_rotate(app, api, creds):
    # each card is tapped many times a second here: the per-card clone limit would refuse it
    app.config["CARD_TAP_LIMIT"] = 0
    cards = [api.customer_with_card()[1] for _ in range(12)]
    stop = threading.Event()
    failures: list = []
    done = [0]

    def tapping() -> None:
        client = app.test_client()
        i = 0
        while not stop.is_set():
            card = cards[i % len(cards)]
            i += 1
            response = client.post("/api/v1/taps", headers=creds.h("till"),
                                   json={"event_id": str(uuid.uuid4()), "url": card["url"]})
            body = response.get_json()
            if response.status_code != 200 or body.get("display_name") != "Élodie D.":
                failures.append((response.status_code, body))
            done[0] += 1

    threads = [threading.Thread(target=tapping) for _ in range(2)]
    for thread in threads:
        thread.start()

    def taps_after(count: int) -> None:
        while done[0] < count and all(t.is_alive() for t in threads):
            threading.Event().wait(0.005)

    try:
        taps_after(5)
        before = done[0]
        for args in (["rotate-vault", "--batch-size", "1", "--settle", "0"], ["rotate-cards"],
                     ["rotate-vault", "--batch-size", "2", "--settle", "0"]):
            result = _keys(app, *args)
            assert result.exit_code == 0, result.output
        during = done[0] - before
        _, new = api.customer_with_card()
        cards.append(new)
        taps_after(done[0] + 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:3]
    assert during > 0  # the taps really ran while the keys rotated
    assert {kid for kid, _, _ in _rows(app).values()} == {3}
