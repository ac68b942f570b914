"""The central loyalty service: ``create_app`` builds it; ``flask --app server`` manages it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, request
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from server import db, i18n, ratelimit
from server.api.body import ROW_ID_MAX
from server.api.problems import Problem, from_problem, problem_response
from server.config import load_config

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# headers an error answer made at commit time keeps from the answer it replaces
_KEPT_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
                 "Cache-Control")
_HTTP_SLUGS = {400: "bad-request", 404: "not-found", 405: "method-not-allowed",
               413: "payload-too-large", 415: "unsupported-media-type"}


class RowIdConverter(IntegerConverter):
    """``<int:...>`` bounded to the row ids the databases can hold (``ROW_ID_MAX``)."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=ROW_ID_MAX, signed=False):
        super().__init__(url_map, fixed_digits, min, max, signed)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the service. ``config`` overrides the environment (tests pass their databases).

    Creating the app touches no database and no file: migrations run by ``flask db upgrade``
    and key files are created on first use.
    """
    app = Flask(__name__, template_folder=str(TEMPLATES))
    # every <int:...> in a URL is a row id: one beyond the integer keys is no page (404),
    # not a database error (PostgreSQL's integer overflows at 2**31)
    app.url_map.converters["int"] = RowIdConverter
    app.config.update(load_config(config))
    # to stderr (the journal) unless something already handles logs; never personal data
    logging.basicConfig(level=str(app.config["LOG_LEVEL"]).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app.json.sort_keys = False
    db.Databases.init_app(app)
    i18n.init_app(app)
    ratelimit.init_app(app)

    from server.api.views import api
    from server.backoffice import create_blueprint as backoffice_blueprint
    from server.backoffice import security
    from server.campaigns.views import public as campaigns_public
    from server.cards.views import public
    from server.cli import register_cli

    app.register_blueprint(api)
    app.register_blueprint(public)
    app.register_blueprint(campaigns_public)
    app.register_blueprint(backoffice_blueprint())
    # sessions, CSRF and login for the back office; the API authenticates by header instead
    security.init_app(app, csrf_exempt=api)
    # the unsubscribe link: a mail client posts to it without any cookie (RFC 8058); the
    # signed token in its URL is the authority
    security.csrf.exempt(campaigns_public)
    register_cli(app)
    _register_errors(app)

    @app.after_request
    def _finish(response):
        # the one commit of the request: vault first, then main; nothing on an error
        try:
            db.finish_request(success=response.status_code < 400)
        except OperationalError as exc:
            # the database went away between the view and its commit (a restart): the same
            # answer as when it goes in the view (503, one line in the log), not an unhandled
            # exception with a traceback; the client sends the same event id again
            failed = app.make_response(app.handle_user_exception(exc))
            for name in _KEPT_HEADERS:  # the back office's security headers, already set
                if name in response.headers:
                    failed.headers.setdefault(name, response.headers[name])
            return failed
        return response

    _security_headers(app)

    @app.get("/healthz")
    def healthz():
        dbs = db.databases()
        try:
            for engine in (dbs.main, dbs.vault):
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
        except OperationalError:
            return problem_response("service-unavailable")
        return jsonify({"status": "ok"})

    return app


# every response's policy unless its blueprint set a narrower one (the back office adds the
# desk reader's connect-src, the export page its style block's hash): no inline script, no
# plugin, no framing, forms only to this site
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


def _security_headers(app: Flask) -> None:
    """Security headers on every response; HSTS and the proxy's headers as configured.

    ``PROXY_FIX`` is the number of reverse proxies in front (docs/DEPLOY.md): exactly that
    many ``X-Forwarded-*`` values are believed, so ``request.is_secure`` and the client's
    address (the sign-in lockout, the login rate limit) are right behind TLS termination.
    ``HSTS_MAX_AGE`` > 0 sends Strict-Transport-Security on requests that came over HTTPS.
    """
    proxies = int(app.config.get("PROXY_FIX") or 0)
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies,  # type: ignore
                                x_host=proxies)
    hsts = int(app.config.get("HSTS_MAX_AGE") or 0)

    @app.after_request
    def _headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")  # browsers without frame-ancestors
        headers.setdefault("Referrer-Policy", "same-origin")  # card URLs carry tokens
        if hsts and request.is_secure:
            headers.setdefault("Strict-Transport-Security",
                               f"max-age={hsts}; includeSubDomains")
        return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem):
        principal = g.get("principal")
        log.info("%s %s -> %s (%s)", request.method, request.path, exc.slug,
                 principal.actor if principal else "anonymous")
        return from_problem(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        slug = _HTTP_SLUGS.get(exc.code or 500)
        if slug is None:
            return exc
        return problem_response(slug)

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError):
        log.error("database unavailable: %s", exc.orig.__class__.__name__ if exc.orig else exc)
        return problem_response("service-unavailable")

    @app.errorhandler(500)
    def _internal(exc):
        original = getattr(exc, "original_exception", None)
        if isinstance(original, OperationalError):
            return _db_down(original)
        log.error("internal error on %s %s", request.method, request.path, exc_info=original)
        return problem_response("internal-error")
