"""The management commands, the migrations, the OpenAPI document and the problem types."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from argon2 import PasswordHasher
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from server.api.problems import PROBLEMS, TYPE_PREFIX
from server.db import Base, VaultBase
from server.devices.auth import hash_key
from server.devices.models import Device
from server.migrate import alembic_config
from server.staff.models import Staff
from server.stores.models import Store
from tests.support.fixtures_server import PgDatabases, app_config, assert_problem

KEY_LINE = re.compile(r"lk_[A-Za-z0-9_-]{40,}")


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _cli(app, *args, **kw):
    return app.test_cli_runner().invoke(args=list(args), **kw)


def _heads() -> dict[str, str]:
    return {name: ScriptDirectory.from_config(alembic_config(name)).get_current_head()
            for name in ("main", "vault")}


# --------------------------------------------------------------------------- migrations


def test_db_upgrade_twice_is_harmless(app, api):
    customer_id = api.enrol().get_json()["customer_id"]
    for _ in range(2):
        result = _cli(app, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "main: up to date" in result.output
        assert "vault: up to date" in result.output
    dbs = app.extensions["loyalty.db"]
    heads = _heads()
    with dbs.main.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() \
            == [heads["main"]]
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 1
    with dbs.vault.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version_vault")) \
            .scalars().all() == [heads["vault"]]
    # the data is still there and the service still works
    tapped = api.issue_card(customer_id)
    assert tapped.status_code == 201


def test_migrations_from_empty_match_the_models(db_backend, tmp_path, request):
    """The real migrations, run on empty databases, give exactly the models' schema."""
    from server import create_app

    overrides = {}
    pg = None
    if db_backend == "postgresql":
        pg = PgDatabases.create(request.getfixturevalue("postgres_server"))
        overrides = pg.urls
    app = create_app(app_config(tmp_path / "instance", **overrides))
    try:
        result = _cli(app, "db", "upgrade")
        assert result.exit_code == 0, result.output
        dbs = app.extensions["loyalty.db"]
        for engine, metadata, version_table in ((dbs.main, Base.metadata, "alembic_version"),
                                                (dbs.vault, VaultBase.metadata,
                                                 "alembic_version_vault")):
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={
                    "compare_type": True, "version_table": version_table})
                assert compare_metadata(context, metadata) == []
                assert context.get_current_revision() is not None
    finally:
        app.extensions["loyalty.db"].dispose()
        if pg is not None:
            pg.drop()


# --------------------------------------------------------------------------- stores, devices


def test_stores_add(app):
    result = _cli(app, "stores", "add", "--code", "LYON-01", "--name", "Lyon Part-Dieu")
    assert result.exit_code == 0, result.output
    legacy = _cli(app, "stores", "add", "--code", "KAUNAS", "--name", "Kaunas",
                  "--allow-uid-only")
    assert legacy.exit_code == 0, legacy.output
    again = _cli(app, "stores", "add", "--code", "LYON-01", "--name", "Lyon again")
    assert again.exit_code != 0
    assert "exists" in again.output
    with _main(app) as s:
        rows = {r.code: (r.name, r.allow_uid_only) for r in s.scalars(select(Store))}
    assert rows["LYON-01"] == ("Lyon Part-Dieu", False)
    assert rows["KAUNAS"] == ("Kaunas", True)
    assert len(rows) == 4  # TEST, UIDOK and the two new ones


def test_devices_add_prints_key_once_and_stores_its_hash(app, api):
    assert _cli(app, "stores", "add", "--code", "LYON-01", "--name", "Lyon").exit_code == 0
    result = _cli(app, "devices", "add", "--store", "LYON-01", "--role", "kiosk",
                  "--name", "welcome desk")
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").splitlines()
    key = lines[-1]
    assert KEY_LINE.fullmatch(key), lines
    assert all(key not in line for line in lines[:-1])

    with _main(app) as s:
        device = s.scalar(select(Device).where(Device.name == "welcome desk"))
        assert device.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert device.role == "kiosk" and device.revoked_at is None
        assert s.scalar(select(Store.code).where(Store.id == device.store_id)) == "LYON-01"
    with app.extensions["loyalty.db"].main.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                assert all(key not in str(v) for v in row), table.name

    enrolled = api.enrol(headers={"Authorization": f"Bearer {key}"})
    assert enrolled.status_code == 201, enrolled.get_json()

    listed = _cli(app, "devices", "list")
    assert "welcome desk" in listed.output and key not in listed.output
    unknown_store = _cli(app, "devices", "add", "--store", "NOPE", "--role", "till",
                         "--name", "x")
    assert unknown_store.exit_code != 0
    bad_role = _cli(app, "devices", "add", "--store", "TEST", "--role", "admin", "--name", "x")
    assert bad_role.exit_code != 0


def test_staff_add_from_environment_stores_argon2(app, api, creds):
    password = "correct horse battery"
    result = _cli(app, "staff", "add", "--username", "desk2", "--role", "desk",
                  "--store", "TEST", env={"LOYALTY_STAFF_PASSWORD": password})
    assert result.exit_code == 0, result.output
    assert password not in result.output
    with _main(app) as s:
        member = s.scalar(select(Staff).where(Staff.username == "desk2"))
    assert member.role == "desk"
    assert member.password_hash.startswith("$argon2id$")
    assert password not in member.password_hash
    assert PasswordHasher().verify(member.password_hash, password)

    # the account works: a desk member replaces a card from a kiosk
    customer_id, _ = api.customer_with_card()
    replaced = api.issue_card(customer_id, replace=True, reason="damaged",
                              headers=creds.h("kiosk") | creds.staff_h("desk2", password))
    assert replaced.status_code == 201, replaced.get_json()

    short = _cli(app, "staff", "add", "--username", "desk3", "--role", "desk",
                 env={"LOYALTY_STAFF_PASSWORD": "short"})
    assert short.exit_code != 0
    twice = _cli(app, "staff", "add", "--username", "desk2", "--role", "desk",
                 env={"LOYALTY_STAFF_PASSWORD": password})
    assert twice.exit_code != 0
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(Staff)) == 3


def test_demo_init_twice_keeps_the_keys(app, api):
    path = Path(app.config["INSTANCE_PATH"]) / "demo-credentials.json"
    first = _cli(app, "demo", "init")
    assert first.exit_code == 0, first.output
    saved = json.loads(path.read_text())
    assert set(saved) >= {"kiosk_key", "till_key", "admin_password"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with _main(app) as s:
        devices = s.scalar(select(func.count()).select_from(Device))

    second = _cli(app, "demo", "init")
    assert second.exit_code == 0, second.output
    assert json.loads(path.read_text()) == saved
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(Device)) == devices
        assert s.scalar(select(func.count()).select_from(Staff)
                        .where(Staff.username == "admin")) == 1
        for role in ("kiosk", "till"):
            stored = s.scalar(select(Device.role).where(
                Device.key_hash == hash_key(saved[f"{role}_key"])))
            assert stored == role

    bearer = {"Authorization": f"Bearer {saved['kiosk_key']}"}
    enrolled = api.enrol(headers=bearer)
    assert enrolled.status_code == 201
    card = api.issue_card(enrolled.get_json()["customer_id"], headers=bearer).get_json()
    tapped = api.tap(headers={"Authorization": f"Bearer {saved['till_key']}"}, url=card["url"])
    assert tapped.status_code == 200
    admin = api.issue_card("C-0000-0000", headers={
        "Authorization": api.creds.basic("admin", saved["admin_password"])})
    assert_problem(admin, 404, "customer-not-found")  # authenticated, then no customer


# --------------------------------------------------------------------------- the document


def _refs(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.append(value)
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _refs(item, found)
    return found


def _resolve(document: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable {ref}"
        node = node[part]
    return node


def test_openapi_document(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    assert {"/enrolments", "/customers/{customer_id}/cards", "/taps"} <= set(document["paths"])
    refs = _refs(document, [])
    assert len(refs) > 10
    for ref in refs:
        assert isinstance(_resolve(document, ref), dict)
    schemas = document["components"]["schemas"]
    assert {"EnrolmentIn", "CardIn", "TapIn", "CustomerRecord", "Problem"} <= set(schemas)
    enrol_fields = set(schemas["EnrolmentIn"]["properties"])
    assert {"event_id", "first_name", "last_name", "email", "phone", "language",
            "consents"} <= enrol_fields
    assert {"event_id", "url", "qr", "uid"} <= set(schemas["TapIn"]["properties"])
    assert {"customer_id", "display_name", "tier", "points", "card", "recent_purchases",
            "open_tickets", "flags"} <= set(schemas["CustomerRecord"]["properties"])
    assert {"/purchases", "/refunds", "/redemptions", "/programme"} <= set(document["paths"])
    assert "application/toml" in document["paths"]["/programme"]["put"]["requestBody"]["content"]
    for path, item in document["paths"].items():
        if path == "/programme" or "post" not in item or "Roles:" not in item["post"].get(
                "description", "") or "audit log" in item["post"]["description"]:
            continue
        operation = item["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        # events answer 201; reads and state changes that are not events, 200
        success = "200" if path in {"/taps", "/cards/{card_id}/activation", "/cards/{card_id}/void",
                                    "/cards/lookup", "/customers/lookup"} else "201"
        assert success in operation["responses"], path
        assert "401" in operation["responses"] and "422" in operation["responses"]
    assert set(schemas["Problem"]["properties"]["type"]["enum"]) == \
        {TYPE_PREFIX + slug for slug in PROBLEMS}


def test_every_api_route_is_in_the_document(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint in {
                "api.openapi_document", "api.problem_type"}:
            continue
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)


def test_every_problem_type_resolves(client):
    document = client.get("/api/v1/openapi.json").get_json()
    types = document["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert len(types) == len(PROBLEMS)
    for type_url in types:
        response = client.get(type_url)
        assert response.status_code == 200, type_url
        body = response.get_json()
        slug = type_url.rsplit("/", 1)[-1]
        assert body["type"] == type_url
        assert (body["status"], body["title"]) == PROBLEMS[slug]
    assert_problem(client.get(TYPE_PREFIX + "no-such-problem"), 404, "not-found")


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/c/{token}", "/C/{token}"])
def test_card_page_shows_no_personal_data(client, api, path):
    _, card = api.customer_with_card()
    response = client.get(path.format(token=card["token"]))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Élodie" not in page and "Durand" not in page and "@example.org" not in page
