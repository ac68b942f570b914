"""Parse and validate a JSON body against a pydantic model, or raise a Problem."""

from __future__ import annotations

from typing import Annotated, TypeVar

from flask import request
from pydantic import BaseModel, Field, ValidationError

from server.api.problems import Problem

M = TypeVar("M", bound=BaseModel)

# The largest row id: the tables' keys are PostgreSQL ``integer`` (and SQLite refuses integers
# over 64 bits), so a larger number sent as an id must be a validation error, not a 500.
ROW_ID_MAX = 2**31 - 1
RowId = Annotated[int, Field(ge=1, le=ROW_ID_MAX)]


def _nul_at(value: object, where: str = "") -> str | None:
    """Where the JSON holds a NUL character (PostgreSQL text cannot store one), or ``None``."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        name = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and "\x00" in key:
            return name
        found = _nul_at(item, name)
        if found is not None:
            return found
    return None


def parse_body(model: type[M]) -> M:
    """Return the validated body.

    Raises:
        Problem: ``unsupported-media-type``, ``malformed-json`` or ``validation-error`` (whose
            ``errors`` name each field and what is wrong, never echoing the value sent).
    """
    if not request.is_json:
        raise Problem("unsupported-media-type")
    data = request.get_json(silent=True)
    if data is None:
        raise Problem("malformed-json")
    nul = _nul_at(data)
    if nul is not None:
        raise Problem("validation-error", "1 field(s) are not valid", errors=[
            {"field": nul or "(body)", "message": "text cannot contain the NUL character"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise Problem("validation-error", f"{len(errors)} field(s) are not valid",
                      errors=errors) from None
