"""Staff mode: reissue a lost, stolen or damaged card."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("staff", __name__, url_prefix="/staff")
