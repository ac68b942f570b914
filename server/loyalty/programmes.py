"""The programme in force: the newest loaded version, or the default file on a fresh install.

Each process keeps the parsed programme for a few seconds, so that every node of a chain
picks up a new version quickly without a query per tap.
"""

from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.loyalty.models import ProgrammeVersion
from server.loyalty.programme import Programme, ProgrammeError, default_programme, load_programme

CACHE_SECONDS = 5.0


def parse(text: str) -> Programme:
    """Parse a TOML programme.

    Raises:
        Problem: ``invalid-programme`` listing every error with its path.
    """
    try:
        return load_programme(text, "toml")
    except ProgrammeError as exc:
        raise Problem("invalid-programme", f"{len(exc.problems) or 1} problem(s) in the programme",
                      errors=[{"field": path, "message": message}
                              for path, message in exc.problems] or
                      [{"field": "(document)", "message": str(exc)}]) from None


def current(main: Session) -> tuple[int, Programme]:
    """``(version, programme)`` in force; version 0 is the built-in default."""
    cache = current_app.extensions.setdefault("loyalty.programme", {})
    if cache.get("until", 0) > time.monotonic():
        return cache["version"], cache["programme"]
    row = main.execute(select(ProgrammeVersion.id, ProgrammeVersion.document)
                       .order_by(ProgrammeVersion.id.desc()).limit(1)).first()
    if row is None:
        version, programme = 0, default_programme()
    elif cache.get("version") == row.id:
        version, programme = row.id, cache["programme"]
    else:
        version, programme = row.id, load_programme(row.document, "json")
    cache.update(version=version, programme=programme, until=time.monotonic() + CACHE_SECONDS)
    return version, programme


def load(main: Session, text: str, loaded_by: str) -> tuple[int, Programme]:
    """Validate and store a new version; it is in force at once in this process."""
    programme = parse(text)
    row = ProgrammeVersion(document=programme.model_dump(mode="json"), source=text,
                           loaded_by=loaded_by)
    main.add(row)
    main.flush()
    current_app.extensions["loyalty.programme"] = {
        "version": row.id, "programme": programme, "until": time.monotonic() + CACHE_SECONDS}
    return row.id, programme
