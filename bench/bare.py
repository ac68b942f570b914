"""The framework's own ceiling: a bare Flask JSON endpoint, served by the same gunicorn
configuration as the service (``bench/run.py`` compares the tap with it).

It reads the JSON body of a tap and answers a small JSON document: no database, no auth.
"""

from __future__ import annotations

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/api/v1/taps")
    def tap():
        body = request.get_json()
        return jsonify({"event_id": body.get("event_id"), "ok": True})

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
