"""The staff back office at ``/backoffice``: finding a customer, their personal data and
consents, access exports, erasure, the audit log and the retention list.

Pages over the same services as the API (``server.privacy``): every read of personal data is
audited, naming the screen. Staff log in with their argon2 password; the session cookie is
HttpOnly and SameSite=Strict; every form carries a CSRF token (``security``).

``blueprint`` holds the blueprint, its hooks and the header's sections (``nav``); each feature
is a module adding its pages: ``session_views`` (login, language), ``customers``,
``privacy_pages``, ``tickets``, ``admin``, ``reports``. A later feature adds a module and a line to
``create_blueprint()`` below; ``nav(..., order=)`` places its header section.
"""

from __future__ import annotations

from flask import Blueprint


def create_blueprint() -> Blueprint:
    """The back office with all its pages (the modules add their routes when imported)."""
    from server.backoffice import (  # noqa: F401
        accounts,
        admin,
        campaigns,
        customers,
        privacy_pages,
        reports,
        segments,
        session_views,
        tickets,
        value,
    )
    from server.backoffice.blueprint import bp

    return bp
