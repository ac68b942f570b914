"""Making the customer's cards: the NFC write and the printed slip, with their progress."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("issuing", __name__, url_prefix="/issue")


def init_app(app: Flask) -> None:
    """Set up the device workers and the heartbeat (started lazily, not here)."""


def on_reset() -> None:
    """Called before the session is wiped: give up any card still being made."""
