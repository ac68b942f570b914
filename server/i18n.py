"""The service's screens and documents in French, Lithuanian and English (Flask-Babel).

The language is, in order: ``?lang=``, the staff member's choice in the back office session,
then the browser's preference. A document in the customer's own language (their data
export) uses ``flask_babel.force_locale``.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, request, session
from flask_babel import Babel

LANGUAGES = ("fr", "lt", "en")
HERE = Path(__file__).resolve().parent
babel = Babel()


def _locale() -> str:
    for candidate in (request.args.get("lang"), session.get("lang")):
        if candidate in LANGUAGES:
            return candidate
    return request.accept_languages.best_match(list(LANGUAGES)) or "en"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(HERE / "translations"))
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    babel.init_app(app, locale_selector=_locale)
