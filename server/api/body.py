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
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise Problem("validation-error", f"{len(errors)} field(s) are not valid",
                      errors=errors) from None
