"""Answers shared by the API's views."""

from __future__ import annotations

from flask import Response, jsonify


def created(result: dict, fresh: bool) -> Response:
    """201 with the result; a replayed event id says so (``Idempotent-Replayed: true``)."""
    response = jsonify(result)
    response.status_code = 201
    if not fresh:
        response.headers["Idempotent-Replayed"] = "true"
    return response
