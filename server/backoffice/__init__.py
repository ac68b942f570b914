"""The staff back office at ``/backoffice``: finding a customer, their personal data and
consents, access exports, erasure, the audit log and the retention list.

Pages over the same services as the API (``server.privacy``): every read of personal data is
audited, naming the screen. Staff log in with their argon2 password; the session cookie is
HttpOnly and SameSite=Strict; every form carries a CSRF token (``security``).

``blueprint`` holds the blueprint, its hooks and the header's sections (``nav``); each feature
is a module adding its pages: ``session_views`` (login, language), ``customers``,
``privacy_pages``. A later feature adds a module and a line to ``create_blueprint()`` below.
"""

from __future__ import annotations

from flask import Blueprint


def create_blueprint() -> Blueprint:
    """The back office with all its pages (the modules add their routes when imported)."""
    import server.backoffice.admin  # noqa: F401
    from server.backoffice import customers, privacy_pages, session_views  # noqa: F401
    from server.backoffice import tickets as _tickets  # noqa: F401 - after customers (nav order)
    from server.backoffice.blueprint import bp

    return bp
