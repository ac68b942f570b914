"""The database connection dies under a request (PostgreSQL restarted, a backend terminated).

Found by the fault injection run (tests/test_faults.py): when PostgreSQL went away between a
view's work and the request's commit, the commit (or the rollback of a refused request) raised
in the ``after_request`` hook, outside the error handlers: Flask logged it as an unhandled
exception with a full traceback ("Exception on /api/v1/taps"), and a refused request's 4xx
became a 503. Here the request's own backend is terminated with ``pg_terminate_backend``
from another connection, the way a restart cuts it, at the exact point that matters.
"""

from __future__ import annotations

import logging

import psycopg
import pytest
from flask import jsonify
from sqlalchemy import text

from server.api.problems import Problem
from server.db import main_session
from tests.support.fixtures_server import assert_problem

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_backend() -> str:
    return "postgresql"  # terminating a backend is PostgreSQL's; SQLite has no connection


def _terminate_own_backend(app) -> None:
    """Cut the request's connection to the main database, as a restart would."""
    pid = main_session().execute(text("SELECT pg_backend_pid()")).scalar_one()
    url = app.config["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def cut_app(app):
    """Two routes that lose their connection after the work, before the commit."""

    def success():
        main_session().execute(text("SELECT 1"))
        _terminate_own_backend(app)
        return jsonify({"ok": True}), 201

    def refused():
        main_session().execute(text("SELECT 1"))
        _terminate_own_backend(app)
        raise Problem("insufficient-points", "nothing to spend")

    # GET: no CSRF token needed; a GET commits like any other successful request
    app.add_url_rule("/test/cut-before-commit", "cut_success", success, methods=["GET"])
    app.add_url_rule("/test/cut-before-rollback", "cut_refused", refused, methods=["GET"])
    return app


def _tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info and r.exc_info[0] is not None]


def test_a_commit_on_a_dead_connection_is_a_503_and_one_log_line(cut_app, caplog):
    client = cut_app.test_client()
    with caplog.at_level(logging.INFO):
        response = client.get("/test/cut-before-commit")
    assert_problem(response, 503, "service-unavailable")
    assert _tracebacks(caplog) == []
    assert any("database unavailable" in r.getMessage() for r in caplog.records)
    # the pool has its connection back (invalidated) and the next request gets a new one
    assert cut_app.extensions["loyalty.db"].main.pool.checkedout() == 0
    assert client.get("/healthz").status_code == 200


def test_a_refused_request_keeps_its_answer_when_the_rollback_finds_no_connection(
        cut_app, caplog):
    client = cut_app.test_client()
    with caplog.at_level(logging.INFO):
        response = client.get("/test/cut-before-rollback")
    # nothing was to be written, and nothing was: the refusal stands
    assert_problem(response, 409, "insufficient-points")
    assert _tracebacks(caplog) == []
    assert cut_app.extensions["loyalty.db"].main.pool.checkedout() == 0
    assert client.get("/healthz").status_code == 200
