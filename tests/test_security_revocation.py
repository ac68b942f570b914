"""A revoked device key is refused at once, by every worker of a running gunicorn.

The service runs as deployed (gunicorn, two workers). Both workers first answer the key (so
any cache a worker kept would be warm), then the key is revoked, by ``flask devices revoke``
in another process or by an admin in the back office, and the very next request on every
worker gets 401 ``invalid-credentials``. There is no key cache to empty: each request looks
the key's hash up with ``revoked_at IS NULL`` (``server.devices.auth.authenticate``).
"""

from __future__ import annotations

import re
import sqlite3

import requests

from tests.support.services import flask, on_every_worker

TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def device_id(server, role: str) -> str:
    """The demo device of ``role`` (read from the database: a CLI call costs seconds)."""
    path = server.folder / "instance" / "loyalty.db"
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT id FROM devices WHERE role = ? ORDER BY id",
                              (role,)).fetchone()[0])


def asker(server, key: str):
    headers = {"Authorization": f"Bearer {key}"}
    return lambda: requests.get(server.url + "/api/v1/programme", headers=headers, timeout=10)


def assert_refused_everywhere(server, send) -> None:
    answers = on_every_worker(server, send)
    assert [r.status_code for r in answers] == [401] * len(answers)
    assert answers[0].json()["type"] == "/api/v1/problems/invalid-credentials"


def test_a_key_revoked_with_the_cli_is_refused_by_every_worker_at_once(gunicorn_service):
    server, creds = gunicorn_service()
    till, kiosk = asker(server, creds["till_key"]), asker(server, creds["kiosk_key"])
    assert {r.status_code for r in on_every_worker(server, till)} == {200}

    flask(server.env, "devices", "revoke", device_id(server, "till"))

    assert_refused_everywhere(server, till)
    assert kiosk().status_code == 200  # only that key


def test_a_key_revoked_in_the_back_office_is_refused_by_every_worker_at_once(gunicorn_service):
    server, creds = gunicorn_service()
    kiosk = asker(server, creds["kiosk_key"])
    assert {r.status_code for r in on_every_worker(server, kiosk)} == {200}

    admin = requests.Session()
    page = admin.get(server.url + "/backoffice/login", timeout=10).text
    r = admin.post(server.url + "/backoffice/login", timeout=10, allow_redirects=False, data={
        "csrf_token": TOKEN.search(page)[1], "username": "admin",
        "password": creds["admin_password"]})
    assert r.status_code == 303, r.text[:300]
    revoke = f"{server.url}/backoffice/admin/devices/{device_id(server, 'kiosk')}/revoke"
    page = admin.get(revoke, timeout=10).text
    r = admin.post(revoke, data={"csrf_token": TOKEN.search(page)[1]}, timeout=10,
                   allow_redirects=False)
    assert r.status_code == 303, r.text[:300]

    assert_refused_everywhere(server, kiosk)
