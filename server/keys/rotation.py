"""Rotating the vault master keys and the card token keys while the service runs.

Plain functions over sessions and key-file paths; ``server.keys.cli`` is the command line.
Running workers re-read the key files within about a second (``WatchedFile``), and at once
when they meet a key id they do not know, so no step here needs a restart. docs/KEYS.md
gives the procedure.

Vault: :func:`add_vault_key` appends a new master key and makes it current (old keys stay);
:func:`rewrap_vault` re-encrypts each row's *data key* from its old master key to the
current one, in batches, each row with a conditional UPDATE on the values it read, so a
rectification or erasure running meanwhile is never overwritten. The ciphertext and the
data key do not change. :func:`retire_vault_key` drops an old master key once no row uses it.

Cards: :func:`add_card_key` adds a key under a free id (0..15) and makes it current; cards
issued before keep verifying with their own key until :func:`retire_card_key` lists it as
retired. The blind-index key is not rotated: new indexes need every plaintext.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.cards.models import LIVE, Card
from server.secrets_file import write_json
from server.vault.crypto import VaultError, VaultKeys, unwrap_key, wrap_key
from server.vault.models import VaultRecord

CARD_KEY_IDS = range(16)  # the token's key id is 4 bits (CARDS.md section 1)
BATCH_SIZE = 500
MAX_PASSES = 10

records = VaultRecord.__table__


class RotationError(Exception):
    """A rotation step refused to run; the message says why and what to do."""


def read_key_file(path: str | os.PathLike) -> dict:
    """The JSON of an existing key file. A rotation never creates one.

    Raises:
        RotationError: there is no file at ``path`` (the wrong configuration?).
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RotationError(
            f"no key file at {path} (the service creates it on first use): is this the "
            "configuration the servers use?") from None


@contextlib.contextmanager
def key_file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of the key file at ``path``.

    Two rotations started together would otherwise both add "key N+1" and one of them would
    be lost with the rows it re-wrapped. The lock is a sibling file (``.NAME.lock``): the key
    file itself is replaced on each write, so it cannot carry the lock.
    """
    path = Path(path)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- vault


@dataclass
class VaultStatus:
    current: int
    key_ids: list[int]
    rows: dict[int, int]  # master key id -> vault rows wrapped with it

    @property
    def missing(self) -> list[int]:
        """Key ids that rows use but the file lacks: those rows cannot be opened."""
        return sorted(set(self.rows) - set(self.key_ids))

    @property
    def not_current(self) -> int:
        return sum(n for kid, n in self.rows.items() if kid != self.current)


def rows_per_master_key(vault: Session) -> dict[int, int]:
    return dict(vault.execute(
        select(records.c.master_key_id, func.count())
        .group_by(records.c.master_key_id).order_by(records.c.master_key_id)).all())


def vault_status(vault: Session, path: str | os.PathLike) -> VaultStatus:
    data = read_key_file(path)
    return VaultStatus(current=int(data["current"]),
                       key_ids=sorted(int(k) for k in data["master"]),
                       rows=rows_per_master_key(vault))


def check_vault_keys(vault: Session, keys: VaultKeys) -> None:
    """Open one row per master key id in use: the key file is the vault's own.

    Raises:
        RotationError: a row does not open with this file (wrong file, or a key missing).
    """
    for key_id in rows_per_master_key(vault):
        row = vault.execute(
            select(records.c.customer_id, records.c.wrapped_key)
            .where(records.c.master_key_id == key_id).limit(1)).first()
        master = keys.master.get(key_id)
        try:
            if master is None:
                raise VaultError(f"master key {key_id} is not in the key file")
            unwrap_key(master, row.customer_id, row.wrapped_key)
        except VaultError as exc:
            raise RotationError(
                f"the key file does not open the vault's rows under master key {key_id} "
                f"({exc}): is this the servers' key file?") from None


def add_vault_key(path: str | os.PathLike) -> int:
    """Add a new master key (id = highest + 1) and make it current; returns its id.

    The old keys stay: rows wrapped with them keep opening until :func:`rewrap_vault`.
    """
    read_key_file(path)
    with key_file_lock(path):
        data = read_key_file(path)
        new_id = max(int(k) for k in data["master"]) + 1
        data["master"][str(new_id)] = secrets.token_hex(32)
        data["current"] = new_id
        write_json(path, data)
    return new_id


def _key_in_file(path: str | os.PathLike, key_id: int, key: bytes) -> bool:
    master = read_key_file(path)["master"].get(str(key_id))
    return master is not None and bytes.fromhex(master) == key


@dataclass
class RewrapReport:
    current: int
    rewrapped: int = 0
    raced: int = 0  # changed by a request between our read and our update: looked at again
    failed: dict[str, str] = field(default_factory=dict)  # customer id -> why
    passes: int = 0
    remaining: dict[int, int] = field(default_factory=dict)  # key id -> rows still on it

    @property
    def done(self) -> bool:
        return not self.remaining


def _rewrap_pass(new_session: Callable[[], Session], path: str | os.PathLike, keys: VaultKeys,
                 batch_size: int, report: RewrapReport) -> int:
    """One walk over the rows not on the current key, by customer id; returns rows changed.

    Raises:
        RotationError: the key being wrapped with has left the key file (another rotation
            or a hand edit): the batch is rolled back, nothing is lost.
    """
    current = keys.current
    new_master = keys.master[current]
    changed, after = 0, ""
    while True:
        with new_session() as vault:
            rows = vault.execute(
                select(records.c.customer_id, records.c.master_key_id, records.c.wrapped_key)
                .where(records.c.master_key_id != current, records.c.customer_id > after)
                .order_by(records.c.customer_id).limit(batch_size)).all()
            if not rows:
                return changed
            for row in rows:
                old_master = keys.master.get(row.master_key_id)
                try:
                    if old_master is None:
                        raise VaultError(f"master key {row.master_key_id} is not in the file")
                    data_key = unwrap_key(old_master, row.customer_id, row.wrapped_key)
                except VaultError as exc:
                    report.failed[row.customer_id] = str(exc)
                    continue
                done = vault.execute(
                    update(records)
                    .where(records.c.customer_id == row.customer_id,
                           records.c.master_key_id == row.master_key_id,
                           records.c.wrapped_key == row.wrapped_key)
                    .values(master_key_id=current,
                            wrapped_key=wrap_key(new_master, row.customer_id, data_key)))
                if done.rowcount == 1:
                    changed += 1
                    report.failed.pop(row.customer_id, None)
                else:
                    report.raced += 1
            if changed and not _key_in_file(path, current, new_master):
                vault.rollback()
                raise RotationError(f"master key {current} is no longer the one in {path}; "
                                    "stopped (rows re-wrapped so far are safe)")
            vault.commit()
            after = rows[-1].customer_id


def rewrap_vault(new_session: Callable[[], Session], path: str | os.PathLike, *,
                 batch_size: int = BATCH_SIZE, settle: float = 2.0,
                 progress: Callable[[RewrapReport], None] | None = None) -> RewrapReport:
    """Re-wrap every row's data key under the current master key of the file at ``path``.

    ``new_session()`` opens a vault session; each batch of ``batch_size`` rows is one
    transaction. Rows already on the current key are skipped, so a second run (or a run
    after a crash) only does what is left. The first row moves ``settle`` seconds after the
    key file changed, when every worker has seen the new key (they check once a second, and
    at once when a row names a key they lack). A worker that was slower may still write a
    row under the old key: the walk is repeated while it finds work, and rows left over are
    reported in ``remaining`` (the old key keeps opening them). Rows that do not open are
    reported in ``failed`` and left untouched.
    """
    read_key_file(path)  # never create one
    keys = VaultKeys.load(str(path))
    wait = os.stat(path).st_mtime + settle - time.time()
    if wait > 0:
        time.sleep(wait)
    report = RewrapReport(current=keys.current)
    while True:
        changed = _rewrap_pass(new_session, path, keys, batch_size, report)
        report.passes += 1
        report.rewrapped += changed
        if progress is not None:
            progress(report)
        if not changed or report.passes >= MAX_PASSES:
            break
    with new_session() as vault:
        report.remaining = {kid: n for kid, n in rows_per_master_key(vault).items()
                            if kid != keys.current}
    return report


def retire_vault_key(vault: Session, path: str | os.PathLike, key_id: int) -> None:
    """Remove master key ``key_id`` from the file, once no row is wrapped with it.

    Raises:
        RotationError: it is the current key, it is not in the file, or rows still use it.
    """
    read_key_file(path)
    with key_file_lock(path):
        data = read_key_file(path)
        if key_id == int(data["current"]):
            raise RotationError(f"master key {key_id} is the current one; rotate first")
        if str(key_id) not in data["master"]:
            raise RotationError(f"there is no master key {key_id} in {path}")
        left = vault.scalar(select(func.count()).select_from(records)
                            .where(records.c.master_key_id == key_id))
        if left:
            raise RotationError(f"{left} vault rows are still wrapped with master key "
                                f"{key_id}; run 'keys rotate-vault --rewrap-only' first")
        del data["master"][str(key_id)]
        write_json(path, data)


# --------------------------------------------------------------------------- cards


@dataclass
class CardStatus:
    current: int
    key_ids: list[int]
    retired: list[int]
    active_cards: dict[int, int]  # key id -> active cards signed with it

    @property
    def unusable(self) -> dict[int, int]:
        """Active cards whose key is retired or missing: their taps are refused."""
        usable = set(self.key_ids) - set(self.retired)
        return {kid: n for kid, n in self.active_cards.items() if kid not in usable}

    @property
    def free(self) -> list[int]:
        return [i for i in CARD_KEY_IDS if i not in self.key_ids and i not in self.retired]


def active_cards_per_key(main: Session) -> dict[int, int]:
    return dict(main.execute(
        select(Card.key_id, func.count()).where(Card.status.in_(LIVE))
        .group_by(Card.key_id).order_by(Card.key_id)).all())


def card_status(main: Session, path: str | os.PathLike) -> CardStatus:
    data = read_key_file(path)
    return CardStatus(current=int(data["current"]),
                      key_ids=sorted(int(k) for k in data["keys"]),
                      retired=sorted(int(k) for k in data.get("retired", [])),
                      active_cards=active_cards_per_key(main))


def add_card_key(path: str | os.PathLike) -> int:
    """Add a card key under a never-used id (0..15) and make it current; returns the id.

    Old keys keep verifying; cards issued from now on are signed with the new one. A retired
    id is never reused: its old tokens must stay refused.

    Raises:
        RotationError: all 16 ids are taken.
    """
    read_key_file(path)
    with key_file_lock(path):
        data = read_key_file(path)
        used = {int(k) for k in data["keys"]} | {int(k) for k in data.get("retired", [])}
        free = [i for i in CARD_KEY_IDS if i not in used]
        if not free:
            raise RotationError("all 16 card key ids (0..15) have been used; none is free")
        higher = [i for i in free if i > max(used, default=-1)]
        new_id = (higher or free)[0]
        data["keys"][str(new_id)] = secrets.token_hex(32)
        data["current"] = new_id
        data.setdefault("retired", [])
        write_json(path, data)
    return new_id


def retire_card_key(main: Session, path: str | os.PathLike, key_id: int, *,
                    force: bool = False) -> int:
    """List card key ``key_id`` as retired: its tokens are refused (``card-token-unknown-key``).

    Returns the number of active cards signed with it (refused from now on).

    Raises:
        RotationError: it is the current key, unknown, already retired, or active cards
            still use it and ``force`` is not given.
    """
    read_key_file(path)
    with key_file_lock(path):
        data = read_key_file(path)
        retired = {int(k) for k in data.get("retired", [])}
        if key_id == int(data["current"]):
            raise RotationError(f"card key {key_id} is the current one; run 'keys "
                                "rotate-cards' first")
        if str(key_id) not in data["keys"]:
            raise RotationError(f"there is no card key {key_id} in {path}")
        if key_id in retired:
            raise RotationError(f"card key {key_id} is retired already")
        active = main.scalar(select(func.count()).select_from(Card)
                             .where(Card.key_id == key_id, Card.status.in_(LIVE)))
        if active and not force:
            raise RotationError(f"{active} active cards are still signed with card key "
                                f"{key_id}; replace them first, or use --force to refuse "
                                "them from now on")
        data["retired"] = sorted(retired | {key_id})
        write_json(path, data)
    return active
