"""Key files created on first use: written once, atomically, readable by their owner only.

Running processes watch them (:class:`WatchedFile`), so a key rotation needs no restart.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_or_create_json(path: str | os.PathLike, make: Callable[[], dict]) -> dict:
    """Read the JSON key file at ``path``; create it with ``make()`` (mode 0600) if missing.

    Two processes starting together agree on one file: creation uses O_EXCL and the loser
    reads the winner's file.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(make(), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Replace the key file at ``path`` atomically, keeping it private."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class KeyMap(Mapping[int, bytes]):
    """Key ids to keys. Asking for an id it lacks calls ``on_miss(id)`` once, which may
    re-read the key file (rate-limited) and return the key: a token or vault row naming a
    key this process has not seen yet (rotated on another node a moment ago) still opens.
    """

    def __init__(self, keys: dict[int, bytes],
                 on_miss: Callable[[int], bytes | None] | None = None) -> None:
        self._keys = dict(keys)
        self._on_miss = on_miss

    def known(self, key_id: int) -> bytes | None:
        """The key of ``key_id`` if this map has it, without asking ``on_miss``."""
        return self._keys.get(key_id)

    def __getitem__(self, key_id: int) -> bytes:
        key = self.get(key_id)
        if key is None:
            raise KeyError(key_id)
        return key

    def get(self, key_id, default=None):
        key = self._keys.get(key_id)
        if key is None and self._on_miss is not None:
            key = self._on_miss(key_id)
        return default if key is None else key

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # ids only: never key material in a log or traceback
        return f"KeyMap(ids={sorted(self._keys)})"


class WatchedFile(Generic[T]):
    """A value parsed from a key file, re-read when the file is replaced or changed.

    :meth:`get` stats the file at most once per ``interval`` seconds (one ``os.stat`` a
    second is nothing on a tap) and re-reads it when its inode, size or mtime changed, so a
    rotation done by the CLI reaches every running worker without a restart.

    :meth:`refresh` is what a key id missing from the value triggers (a token or row made
    with a key added a moment ago): it stats the file at once and re-reads it if it changed;
    if not, it re-reads it anyway (an NFS attribute cache may hide a change) but at most
    once per ``interval``, since anybody can send a token naming an unknown key id.

    A file that is missing or does not parse on a re-read leaves the last good value in
    place (logged): a half-edited key file must not stop the service. The first read
    raises as before. ``clock`` is public so that tests can move time.
    """

    def __init__(self, path: str | os.PathLike, load: Callable[[str], T],
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = str(path)
        self.interval = interval
        self.clock = clock
        self._load = load
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._value = load(self.path)
        if self._signature is None:  # created by load()
            self._signature = self._stat()
        self._checked = self._reread = clock()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def expire(self) -> None:
        """Forget when the file was last checked: the next :meth:`get` stats it."""
        self._checked = self._reread = float("-inf")

    def get(self) -> T:
        """The value, re-read first if the file changed (checked at most every ``interval``)."""
        if self.clock() - self._checked < self.interval:
            return self._value
        with self._lock:
            if self.clock() - self._checked >= self.interval:
                self._checked = self.clock()
                signature = self._stat()
                if signature is not None and signature != self._signature:
                    self._reload(signature)
            return self._value

    def refresh(self) -> T:
        """Re-read the file now if it changed, or if it was last re-read ``interval`` ago."""
        with self._lock:
            now = self.clock()
            self._checked = now
            signature = self._stat()
            if signature is not None and (signature != self._signature
                                          or now - self._reread >= self.interval):
                self._reread = now
                self._reload(signature)
            return self._value

    def _reload(self, signature: tuple) -> None:
        try:
            value = self._load(self.path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("key file %s not reloaded, keeping the keys in memory: %s",
                      self.path, exc)
        else:
            self._value = value
            log.info("key file %s reloaded", self.path)
        self._signature = signature


def app_secret_key(app) -> str:
    """The app's ``SECRET_KEY``, else the key in ``SECRET_KEY_FILE`` (created on first use).

    Read when first needed, not when the app is created, so creating the app touches no
    file; two workers starting together agree on one key file.
    """
    if not app.secret_key:
        data = load_or_create_json(app.config["SECRET_KEY_FILE"],
                                   lambda: {"key": secrets.token_hex(32)})
        app.secret_key = data["key"]
    return app.secret_key
