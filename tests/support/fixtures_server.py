"""Fixtures for the central service: a throwaway PostgreSQL, the app on both backends, a live
server for the agent, kiosk, printer and browser tests.

Fixture API:

- ``postgres_server`` (session): base URL ``postgresql://postgres@127.0.0.1:PORT/`` of a
  private PostgreSQL cluster, started once and deleted at the end.
- ``pg_migrated_template`` (session): main and vault databases migrated once by the real
  migrations; each PostgreSQL test gets new databases cloned from them.
- ``db_backend``: ``"sqlite"`` or ``"postgresql"`` (marked ``postgres``); every test using
  ``app`` runs on both.
- ``app``: a migrated app in a fresh instance folder (``server.migrate.upgrade`` run on it),
  seeded with stores ``TEST`` and ``UIDOK`` (UID-only cards allowed), devices and staff.
- ``creds``: the keys and passwords of that seed: ``creds.kiosk``, ``creds.kiosk2``
  (TEST), ``creds.till`` (TEST), ``creds.till_uid`` (UIDOK), ``creds.passwords``
  (``desk1``, ``cashier1``), ``creds.device_ids``; headers ``creds.h(name, staff=None)``
  (Bearer, plus X-Staff-Authorization), ``creds.staff_h(user, pw=None)``
  (X-Staff-Authorization), ``creds.staff_auth(user, pw=None)`` (Authorization: Basic).
- ``client``: the Flask test client; ``api``: ``enrol(headers=None, **overrides)``,
  ``issue_card(customer_id, kind="qr", headers=None, **kw)``, ``tap(headers=None, **kw)``,
  ``customer_with_card(kind="qr", **card)``.
- ``manager``: adds the staff account ``manager1`` (role manager, store TEST) to the seeded app
  and its password to ``creds.passwords``; returns the username.
- ``Api`` also builds loyalty requests: ``line(...)``, ``purchase_body(lines, **kw)``,
  ``purchase(lines, headers=None, **kw)``, ``refund(headers=None, **kw)``,
  ``redeem(reward, headers=None, **kw)``, ``adjust(customer_id, points, headers, **kw)``,
  ``put_programme(text, headers)``.
- ``live_server`` (session, SQLite): ``.url``, ``.app``, ``.creds``, ``.instance_path``.

Helpers: ``row_counts(app)``, ``assert_problem(response, status, slug)``,
``app_config(instance, **overrides)``, ``PgDatabases``.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

PG_PACKAGE = "postgresql"
STORE = "TEST"
UID_STORE = "UIDOK"
PASSWORDS = {"desk1": "desk1-secret-pw", "cashier1": "cashier1-secret-pw"}
STAFF_ROLES = {"desk1": "desk", "cashier1": "cashier"}
# added on demand by the ``manager`` fixture only (the seed stays two staff members)
MANAGER, MANAGER_PASSWORD = "manager1", "manager1-secret-pw"
ADMIN, ADMIN_PASSWORD = "admin1", "admin1-secret-pw"
EXTRA = {MANAGER: MANAGER_PASSWORD, ADMIN: ADMIN_PASSWORD}


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path | None:
    """The bin folder of the highest PostgreSQL under /usr/lib/postgresql, or None."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        bindir = Path(candidate)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scratch_dir() -> str | None:
    """A RAM disk for the throwaway cluster when there is one (CREATE DATABASE copies files)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        free = shutil.disk_usage(shm).free
        if free > 512 * 1024 * 1024:
            return str(shm)
    return None


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Run PostgreSQL tools as ``postgres`` when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _missing(message: str):
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster for the whole session; yields its base URL."""
    bindir = _pg_bindir()
    if bindir is None:
        _missing("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                 f"install the Debian package '{PG_PACKAGE}'")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _missing("running as root needs 'runuser' to start PostgreSQL as user postgres")
    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="loyalty-pg-", dir=_scratch_dir()))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data = tmp / "data"
    port = _free_port()
    log = tmp / "server.log"
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(_as_pg_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                                    "-U", "postgres", "-E", "UTF8", "--no-sync"]), **run)
        options = (f"-k {tmp} -h 127.0.0.1 -p {port} -F -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                                    "-w", "-t", "60", "-o", options, "start"]), **run)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr or exc.stdout
        if log.exists():
            detail += log.read_text()
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL from {bindir}: {detail}", pytrace=False)

    url = f"postgresql://postgres@127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url + "postgres", connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                pytest.fail("PostgreSQL did not accept connections: " + log.read_text(),
                            pytrace=False)
            time.sleep(0.1)
    try:
        yield url
    finally:
        subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                    "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def _pg_admin(base_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(base_url + "postgres", autocommit=True) as conn:
        conn.execute(statement)


# --------------------------------------------------------------------------- the app


@dataclass
class Creds:
    """Device keys and staff passwords of the seeded app."""

    kiosk: str
    kiosk2: str
    till: str
    till_uid: str
    device_ids: dict[str, int]
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))

    def key(self, name: str) -> str:
        return getattr(self, name)

    def h(self, name: str, staff: str | None = None) -> dict[str, str]:
        """``Authorization: Bearer`` of device ``name``, plus a confirming staff member."""
        headers = {"Authorization": f"Bearer {self.key(name)}"}
        if staff:
            headers.update(self.staff_h(staff))
        return headers

    @staticmethod
    def basic(username: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def staff_h(self, username: str, password: str | None = None) -> dict[str, str]:
        """``X-Staff-Authorization`` for a staff member confirming on a device."""
        pw = self.passwords.get(username, "") if password is None else password
        return {"X-Staff-Authorization": self.basic(username, pw)}

    def staff_auth(self, username: str, password: str | None = None) -> dict[str, str]:
        """``Authorization: Basic`` for a staff client without a device."""
        pw = self.passwords.get(username, "") if password is None else password
        return {"Authorization": self.basic(username, pw)}


_HASHES: dict[str, str] = {}


def _password_hash(username: str) -> str:
    # argon2 is slow on purpose: hash each test password once per session
    from server.devices.auth import hash_password

    if username not in _HASHES:
        _HASHES[username] = hash_password(EXTRA.get(username) or PASSWORDS[username])
    return _HASHES[username]


def seed(app) -> Creds:
    """Stores, devices and staff of the test app, made with the project's own code."""
    from server.cli import add_device
    from server.devices.auth import hash_key
    from server.devices.models import Device
    from server.staff.models import Staff
    from server.stores.models import Store

    keys: dict[str, str] = {}
    with Session(app.extensions["loyalty.db"].main) as session:
        session.add_all([Store(code=STORE, name="Test shop"),
                         Store(code=UID_STORE, name="Legacy UID shop", allow_uid_only=True)])
        session.commit()
        for name, store, role in (("kiosk", STORE, "kiosk"), ("till", STORE, "till"),
                                  ("till_uid", UID_STORE, "till"), ("kiosk2", STORE, "kiosk")):
            keys[name] = add_device(session, store, role, f"test {name}")
        test_store = session.scalar(select(Store.id).where(Store.code == STORE))
        for username, role in STAFF_ROLES.items():
            session.add(Staff(username=username, role=role, store_id=test_store,
                              password_hash=_password_hash(username)))
        session.commit()
        ids = {name: session.scalar(select(Device.id).where(Device.key_hash == hash_key(key)))
               for name, key in keys.items()}
    return Creds(device_ids=ids, **keys)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                ids=["sqlite", "postgresql"])
def db_backend(request) -> str:
    """The database of the test: ``-m "not postgres"`` keeps to SQLite."""
    return request.param


def app_config(instance: Path, **overrides) -> dict[str, Any]:
    """A test configuration: every path in ``instance`` whatever the environment says."""
    config: dict[str, Any] = {
        "INSTANCE_PATH": str(instance),
        # None means "the default in the instance folder", even if LOYALTY_* is set
        "DATABASE_URL": None, "VAULT_URL": None, "VAULT_KEY_FILE": None,
        "CARD_KEYS_FILE": None,
        "CARD_BASE_URL": "https://shop.example",
        "KIOSK_ISSUE_WINDOW": 3600,
        # the tests enrol and tap as fast as they can through one kiosk and one till; the
        # request rate limits themselves are tested in tests/test_security_ratelimit.py
        "RATELIMIT_TAPS": "", "RATELIMIT_ENROLMENTS": "",
    }
    config.update(overrides)
    return config


@dataclass
class PgDatabases:
    """Two new, empty PostgreSQL databases (main, vault) for one test."""

    base_url: str
    names: tuple[str, str]

    @classmethod
    def create(cls, base_url: str, template: tuple[str, str] | None = None) -> PgDatabases:
        stem = "t" + uuid.uuid4().hex[:16]
        names = (f"{stem}_main", f"{stem}_vault")
        for i, name in enumerate(names):
            clause = f' TEMPLATE "{template[i]}"' if template else ""
            _pg_admin(base_url, f'CREATE DATABASE "{name}"{clause}')
        return cls(base_url, names)

    @property
    def urls(self) -> dict[str, str]:
        return {"DATABASE_URL": self.base_url + self.names[0],
                "VAULT_URL": self.base_url + self.names[1]}

    def drop(self) -> None:
        for name in self.names:
            _pg_admin(self.base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_migrated_template(postgres_server, tmp_path_factory):
    """Main and vault databases migrated once by the real migrations, cloned by each test.

    Migrating costs ~0.2 s per test on PostgreSQL and cloning ~0.04 s; each test still runs
    ``upgrade`` on its clone (a no-op at head that checks the stamp), and
    test_cli_and_openapi.py migrates empty PostgreSQL databases from scratch.
    """
    from server import create_app
    from server.migrate import upgrade

    dbs = PgDatabases.create(postgres_server)
    flask_app = create_app(app_config(tmp_path_factory.mktemp("pg-template"), **dbs.urls))
    try:
        upgrade(flask_app)
    finally:
        flask_app.extensions["loyalty.db"].dispose()  # a template must have no connections
    yield dbs.names
    dbs.drop()


@pytest.fixture(scope="session")
def sqlite_migrated_template(tmp_path_factory) -> tuple[Path, Path]:
    """The main and vault SQLite files migrated once by the real migrations, copied by each
    test, as ``pg_migrated_template`` is cloned (migrating them took most of a test's setup,
    about 0.2 s of 0.3; test_cli_and_openapi.py migrates empty files from scratch)."""
    import sqlite3

    from server import create_app
    from server.migrate import upgrade

    folder = tmp_path_factory.mktemp("sqlite-template")
    flask_app = create_app(app_config(folder))
    try:
        upgrade(flask_app)
    finally:
        flask_app.extensions["loyalty.db"].dispose()
    files = (folder / "loyalty.db", folder / "vault.db")
    for path in files:  # everything in the file itself, nothing left in a write-ahead log
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return files


@pytest.fixture
def app(db_backend, tmp_path, request):
    """A migrated, seeded app on ``db_backend``, in a fresh instance folder."""
    from server import create_app
    from server.migrate import upgrade

    config = app_config(tmp_path / "instance")
    pg = None
    if db_backend == "postgresql":
        base_url = request.getfixturevalue("postgres_server")
        template = request.getfixturevalue("pg_migrated_template")
        pg = PgDatabases.create(base_url, template)
        config.update(pg.urls)
    else:
        instance = tmp_path / "instance"
        instance.mkdir(parents=True, exist_ok=True)
        for path in request.getfixturevalue("sqlite_migrated_template"):
            shutil.copyfile(path, instance / path.name)
            (instance / path.name).chmod(0o600)
    flask_app = create_app(config)
    try:
        upgrade(flask_app)
        flask_app.extensions["test.creds"] = seed(flask_app)
        yield flask_app
    finally:
        flask_app.extensions["loyalty.db"].dispose()
        if pg is not None:
            pg.drop()


@pytest.fixture
def creds(app) -> Creds:
    return app.extensions["test.creds"]


def _add_staff(app, creds: Creds, username: str, role: str) -> str:
    from server.staff.models import Staff
    from server.stores.models import Store

    with Session(app.extensions["loyalty.db"].main) as session:
        store_id = session.scalar(select(Store.id).where(Store.code == STORE))
        session.add(Staff(username=username, role=role, store_id=store_id,
                          password_hash=_password_hash(username)))
        session.commit()
    creds.passwords[username] = EXTRA[username]
    return username


@pytest.fixture
def manager(app, creds) -> str:
    """A manager account ``manager1`` in store TEST (programme, adjustments); its username."""
    return _add_staff(app, creds, MANAGER, "manager")


@pytest.fixture
def admin(app, creds) -> str:
    """An admin account ``admin1`` in store TEST (audit log); its username."""
    return _add_staff(app, creds, ADMIN, "admin")


@pytest.fixture
def server_url(app):
    """``app`` served by a threaded HTTP server of its own, for requests that must run at the
    same time (a Flask test client runs one at a time)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="loyalty-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def client(app):
    return app.test_client()


class Api:
    """Valid requests by default; each call gets a fresh event id unless one is given."""

    def __init__(self, client, creds: Creds) -> None:
        self.client = client
        self.creds = creds

    @staticmethod
    def enrolment(**overrides) -> dict:
        body = {
            "event_id": str(uuid.uuid4()),
            "first_name": "Élodie",
            "last_name": "Durand",
            "email": f"elodie.durand.{uuid.uuid4().hex[:8]}@example.org",
            "language": "fr",
            "consents": {"terms": True}, "consent_version": "2026-11",
        }
        body.update(overrides)
        return body

    def enrol(self, headers: dict | None = None, **overrides):
        return self.client.post("/api/v1/enrolments", json=self.enrolment(**overrides),
                                headers=self.creds.h("kiosk") if headers is None else headers)

    def issue_card(self, customer_id: str, kind: str = "qr", headers: dict | None = None, **kw):
        body = {"event_id": str(uuid.uuid4()), "kind": kind, **kw}
        return self.client.post(f"/api/v1/customers/{customer_id}/cards", json=body,
                                headers=self.creds.h("kiosk") if headers is None else headers)

    def tap(self, headers: dict | None = None, **kw):
        body = {"event_id": str(uuid.uuid4()), **kw}
        return self.client.post("/api/v1/taps", json=body,
                                headers=self.creds.h("till") if headers is None else headers)

    def customer_with_card(self, kind: str = "qr", **card) -> tuple[str, dict]:
        """Enrol a customer and issue their first card; returns ``(customer_id, card)``."""
        enrolled = self.enrol()
        assert enrolled.status_code == 201, enrolled.get_json()
        customer_id = enrolled.get_json()["customer_id"]
        issued = self.issue_card(customer_id, kind, **card)
        assert issued.status_code == 201, issued.get_json()
        return customer_id, issued.get_json()

    # -- loyalty

    @staticmethod
    def line(sku: str, quantity, unit_price, *, category: str | None = None, discount=None,
             redemption_id: int | None = None, name: str | None = None) -> dict:
        """One purchase line; amounts as given (str or int), sent as strings."""
        body: dict[str, Any] = {"sku": sku, "name": name or sku.title(),
                                "quantity": str(quantity), "unit_price": str(unit_price)}
        if category is not None:
            body["category"] = category
        if discount is not None:
            body["discount"] = str(discount)
        if redemption_id is not None:
            body["redemption_id"] = redemption_id
        return body

    @staticmethod
    def purchase_body(lines: list[dict], **overrides) -> dict:
        """A purchase of ``lines`` paid now in EUR, whose total is the sum of the lines."""
        from datetime import UTC, datetime
        from decimal import Decimal

        total = sum((Decimal(ln["quantity"]) * Decimal(ln["unit_price"])
                     - Decimal(ln.get("discount", "0")) for ln in lines), Decimal(0))
        body = {"event_id": str(uuid.uuid4()), "paid_at": datetime.now(UTC).isoformat(),
                "currency": "EUR", "total": str(total.quantize(Decimal("0.01"))),
                "lines": lines}
        body.update(overrides)
        return body

    def purchase(self, lines: list[dict], headers: dict | None = None, **overrides):
        """POST /purchases (the TEST till by default); give ``card`` or ``customer_id``."""
        return self.client.post("/api/v1/purchases", json=self.purchase_body(lines, **overrides),
                                headers=self.creds.h("till") if headers is None else headers)

    def refund(self, headers: dict | None = None, **body):
        """POST /refunds; give ``purchase_id`` (or ``purchase_event_id``) and maybe lines."""
        body = {"event_id": str(uuid.uuid4()), **body}
        return self.client.post("/api/v1/refunds", json=body,
                                headers=self.creds.h("till") if headers is None else headers)

    def redeem(self, reward: str, headers: dict | None = None, **body):
        """POST /redemptions; give ``card`` or ``customer_id``."""
        body = {"event_id": str(uuid.uuid4()), "reward": reward, **body}
        return self.client.post("/api/v1/redemptions", json=body,
                                headers=self.creds.h("till") if headers is None else headers)

    def adjust(self, customer_id: str, points: int, headers: dict, reason: str = "goodwill",
               **body):
        """POST /customers/<id>/points: a manual adjustment (a manager's ``headers``)."""
        body = {"event_id": str(uuid.uuid4()), "points": points, "reason": reason, **body}
        return self.client.post(f"/api/v1/customers/{customer_id}/points", json=body,
                                headers=headers)

    def put_programme(self, text: str, headers: dict):
        """PUT /programme with a TOML document."""
        return self.client.put("/api/v1/programme", data=text.encode(),
                               headers={**headers, "Content-Type": "application/toml"})


@pytest.fixture
def api(client, creds) -> Api:
    return Api(client, creds)


# --------------------------------------------------------------------------- helpers

COUNTED = ("customers", "cards", "visits", "consents", "audit_log")


def row_counts(app) -> dict[str, int]:
    """Rows in the tables a write may touch, main and vault: to prove nothing was half-written."""
    from sqlalchemy import func

    from server.db import Base, VaultBase

    dbs = app.extensions["loyalty.db"]
    counts = {}
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        for name in COUNTED:
            counts[name] = main.scalar(select(func.count()).select_from(Base.metadata.tables[name]))
        counts["vault_records"] = vault.scalar(
            select(func.count()).select_from(VaultBase.metadata.tables["vault_records"]))
    return counts


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    """The response is an RFC 9457 problem with ``status`` (and ``slug``); returns its body."""
    assert response.status_code != 500, response.get_data(as_text=True)
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json", response.mimetype
    body = response.get_json(force=True)
    assert body["type"].startswith("/api/v1/problems/"), body
    assert body["status"] == status
    assert body["title"]
    if slug is not None:
        assert body["type"] == "/api/v1/problems/" + slug, body
    return body


# --------------------------------------------------------------------------- live server


@dataclass
class LiveServer:
    url: str
    app: Any
    creds: dict
    instance_path: Path


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """The service over real HTTP (SQLite), with the demo store, kiosk, till and admin."""
    from werkzeug.serving import make_server

    from server import create_app
    from server.migrate import upgrade

    instance = tmp_path_factory.mktemp("live") / "instance"
    flask_app = create_app(app_config(instance))
    upgrade(flask_app)
    result = flask_app.test_cli_runner().invoke(args=["demo", "init"])
    assert result.exit_code == 0, result.output
    creds = json.loads((instance / "demo-credentials.json").read_text())

    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    flask_app.config["CARD_BASE_URL"] = url
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    with urllib.request.urlopen(url + "/healthz", timeout=10) as response:  # noqa: S310
        assert response.status == 200
    try:
        yield LiveServer(url=url, app=flask_app, creds=creds, instance_path=instance)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        flask_app.extensions["loyalty.db"].dispose()
