"""The welcome-desk kiosk: a local web app shown by Chromium in kiosk mode.

It enrols customers through the central service and prints their card on the printer it
owns (one thread, see ``printing``). It keeps nothing of a customer beyond their session, which
lives in this process's memory (``memory_session``) and ends after ``IDLE_TIMEOUT`` seconds
without a request: run one process (gunicorn ``-w 1 --threads N``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from flask import Flask, session
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

from device_drivers.forwarder import ServiceClient
from device_drivers.settings import configure_logging, load_settings
from kiosk_app import survey
from kiosk_app.memory_session import MemorySessionInterface
from kiosk_app.printing import PrinterWorker

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE.parent / "templates"
LANGUAGES = {"fr": "Français", "lt": "Lietuvių", "en": "English"}

DEFAULTS: dict[str, Any] = {
    "SERVER_URL": "http://127.0.0.1:8000",
    "LOG_LEVEL": "INFO",
    "DEVICE_KEY": "",
    "PRINTER": "file:instance/printer-output.bin",
    # the NFC card writer (pcsc:NAME, nfcpy:PATH, sim:); empty = no NFC cards, QR only
    "WRITER": "sim:",
    # the reader used in staff mode (staff card, old card); empty = the writer's device
    "STAFF_READER": "",
    "CARD_LOCK": False,           # make written NFC cards permanently read-only
    "WRITE_TIMEOUT": 30.0,        # seconds to wait for a card on the writer
    "SHOP_LOGO": "",              # an image file printed at the top of the card slip
    "SURVEY_FILE": "",            # the shop's survey questions (TOML); empty = the default
    "HEARTBEAT_INTERVAL": 30.0,   # seconds between heartbeats to the service (0 = none)
    "SHOP_NAME": "Demo shop",
    "DEFAULT_LANGUAGE": "fr",
    "CONSENT_VERSION": "2026-11",
    "IDLE_TIMEOUT": 60,           # seconds without a touch before the kiosk starts over
    "PRINT_TIMEOUT": 15.0,
    "REQUEST_TIMEOUT": 5.0,
    "SERVER_CA": "",  # a CA file the service's HTTPS certificate must chain to (pinned)
    # show the card's QR on screen too (the demo, where the printer is a file)
    "SHOW_CARD_ON_SCREEN": False,
    "INSTANCE_PATH": "instance",
    "SECRET_KEY": "",
}

csrf = CSRFProtect()
babel = Babel()


def _locale() -> str:
    from flask import current_app

    lang = session.get("lang")
    if lang in LANGUAGES:
        return lang
    # the browser's Accept-Language is the kiosk machine's, not the customer's: each new
    # customer starts in the shop's language
    return current_app.config["DEFAULT_LANGUAGE"]


def _secret_key(instance: Path) -> str:
    path = instance / "kiosk-secret.key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the kiosk app; the printer thread starts with the first print.

    Raises:
        SurveyError: the survey file (``SURVEY_FILE``) is missing or wrong; the message says
            where.
    """
    settings = load_settings(DEFAULTS, config)
    configure_logging(settings["LOG_LEVEL"])
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(HERE / "static"))
    app.config.update(settings)
    app.config["SECRET_KEY"] = settings["SECRET_KEY"] or _secret_key(
        Path(settings["INSTANCE_PATH"]))
    app.config.update(
        BABEL_TRANSLATION_DIRECTORIES=str(HERE / "translations"),
        BABEL_DEFAULT_LOCALE=settings["DEFAULT_LANGUAGE"],
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=None,  # the form may stay on screen; the session expires instead
    )
    # sessions outlive the idle timeout a little, so an expired one is still there to be
    # wiped properly (kiosk.views checks the idle time itself and hands over to issuing)
    app.session_interface = MemorySessionInterface(float(settings["IDLE_TIMEOUT"]) + 300)
    app.extensions["kiosk.survey"] = survey.load(settings["SURVEY_FILE"])
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_locale)
    app.extensions["kiosk.client"] = ServiceClient(
        settings["SERVER_URL"], settings["DEVICE_KEY"], float(settings["REQUEST_TIMEOUT"]),
        str(settings["SERVER_CA"]))
    app.extensions["kiosk.printer"] = PrinterWorker(settings["PRINTER"])

    from kiosk_app import issuing, staff
    from kiosk_app.views import bp

    app.register_blueprint(bp)
    app.register_blueprint(issuing.bp)
    app.register_blueprint(staff.bp)
    issuing.init_app(app)

    @app.context_processor
    def _globals():
        from flask_babel import get_locale

        return {"languages": LANGUAGES, "current_language": str(get_locale()),
                "shop_name": app.config["SHOP_NAME"],
                "idle_timeout": app.config["IDLE_TIMEOUT"]}

    @app.after_request
    def _headers(response):
        # scripts and styles from static files only (no inline script, no on...= handler)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
