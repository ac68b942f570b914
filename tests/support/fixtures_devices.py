"""Fixtures for the device processes: kiosk and till agent over real HTTP, and Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "it"):
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def make_kiosk(live_server, tmp_path):
    """``make_kiosk(printer_uri, **config) -> Flask app`` talking to the live service."""
    apps = []

    def make(printer: str, **config):
        from kiosk_app import create_app

        app = create_app({"SERVER_URL": live_server.url,
                          "DEVICE_KEY": live_server.creds["kiosk_key"],
                          "PRINTER": printer, "INSTANCE_PATH": str(tmp_path / "kiosk"),
                          "SHOP_NAME": "Boutique Rivoli", "PRINT_TIMEOUT": 10.0, **config})
        apps.append(app)
        return app

    yield make
    from kiosk_app.issuing import shutdown

    for app in apps:
        shutdown(app)  # the NFC device, the heartbeat and the printer thread


@pytest.fixture
def make_agent(live_server, tmp_path):
    """``make_agent(readers, **config) -> Flask app``: readers running, taps to the service.

    Each agent has its own instance folder (its outbox): a tap one test queued must never be
    replayed by another, nor land in the repository's ``instance/``.
    """
    apps = []

    def make(readers: str, **config):
        from device_drivers.agent import create_app

        app = create_app({"INSTANCE_PATH": str(tmp_path / f"agent{len(apps)}"),
                          "SERVER_URL": live_server.url,
                          "DEVICE_KEY": live_server.creds["till_key"],
                          "READERS": readers, "REOPEN_DELAY": 0.5, **config})
        app.extensions["agent"].start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["agent"].stop()


def last_after(client, seq: int, timeout: float = 5.0) -> dict:
    """Wait until the agent's ``GET /last`` shows a tap newer than ``seq``; return it."""
    return wait_until(lambda: (lambda r: r if r["seq"] > seq else None)(client.get("/last").json),
                      timeout, "a new tap outcome at GET /last")


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    if not os.path.exists(CHROMIUM):
        message = "Chromium is missing: apt-get install chromium (make test does it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright gives each launch a fresh temporary profile of its own
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def screenshots() -> Path:
    path = ARTIFACTS / "screens"
    path.mkdir(parents=True, exist_ok=True)
    return path
