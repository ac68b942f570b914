"""Key files created on first use: written once, atomically, readable by their owner only."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


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
