"""``flask --app server ...``: migrations, stores, devices, staff, and the demo set-up."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.cards.sun_keys import sun_cli
from server.devices.auth import hash_key, hash_password, new_device_key
from server.devices.models import ROLES as DEVICE_ROLES
from server.devices.models import Device
from server.keys.cli import keys_cli
from server.privacy.cli import privacy_cli
from server.staff.models import ROLES as STAFF_ROLES
from server.staff.models import Staff
from server.stores.models import Store


def _main() -> Session:
    return Session(current_app.extensions["loyalty.db"].main)


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(stores_cli)
    app.cli.add_command(devices_cli)
    app.cli.add_command(staff_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(programme_cli)
    app.cli.add_command(points_cli)
    app.cli.add_command(tiers_cli)
    app.cli.add_command(import_cli)
    app.cli.add_command(privacy_cli)
    app.cli.add_command(sun_cli)
    app.cli.add_command(keys_cli)


@click.group("db", cls=AppGroup, help="Database schema.")
def db_cli() -> None:
    pass


@db_cli.command("upgrade", help="Apply the migrations to the main database and the vault.")
def db_upgrade() -> None:
    from server.migrate import upgrade

    for name in upgrade(current_app):
        click.echo(f"{name}: up to date")


@click.group("stores", cls=AppGroup, help="Stores of the chain.")
def stores_cli() -> None:
    pass


@stores_cli.command("add")
@click.option("--code", required=True, help="Short unique code, e.g. PARIS-01")
@click.option("--name", required=True)
@click.option("--allow-uid-only/--no-allow-uid-only", default=False,
              help="Accept legacy cards identified by their UID alone (weak)")
@click.option("--country", type=click.Choice(["FR", "LT"], case_sensitive=False),
              default=None, help="How phone numbers typed without +33/+370 are read "
                                 "(default: DEFAULT_COUNTRY)")
def stores_add(code: str, name: str, allow_uid_only: bool, country: str | None) -> None:
    country = (country or current_app.config["DEFAULT_COUNTRY"]).upper()
    with _main() as session:
        if session.scalar(select(Store.id).where(Store.code == code)):
            raise click.ClickException(f"store {code} exists already")
        session.add(Store(code=code, name=name, allow_uid_only=allow_uid_only,
                          country=country))
        session.commit()
    click.echo(f"store {code} added")


def add_device(session: Session, store_code: str, role: str, name: str) -> str:
    store_id = session.scalar(select(Store.id).where(Store.code == store_code))
    if store_id is None:
        raise click.ClickException(f"no store {store_code}; add it with 'stores add'")
    key, digest = new_device_key()
    session.add(Device(store_id=store_id, role=role, name=name, key_hash=digest))
    session.commit()
    return key


@click.group("devices", cls=AppGroup, help="Kiosks and tills.")
def devices_cli() -> None:
    pass


@devices_cli.command("add", help="Register a device; prints its key, once, on the last line.")
@click.option("--store", "store_code", required=True)
@click.option("--role", type=click.Choice(DEVICE_ROLES), required=True)
@click.option("--name", required=True)
def devices_add(store_code: str, role: str, name: str) -> None:
    with _main() as session:
        key = add_device(session, store_code, role, name)
    click.echo(f"{role} {name!r} added to {store_code}; its key is shown once, keep it safe:")
    click.echo(key)


@devices_cli.command("revoke", help="Refuse a device key from now on.")
@click.argument("device_id", type=int)
def devices_revoke(device_id: int) -> None:
    from server.db import utcnow

    with _main() as session:
        device = session.get(Device, device_id)
        if device is None:
            raise click.ClickException(f"no device {device_id}")
        device.revoked_at = utcnow()
        session.commit()
    click.echo(f"device {device_id} revoked")


@devices_cli.command("list", help="Devices, when each was last seen (heartbeat) and how its "
                                    "readers and offline queue were then.")
def devices_list() -> None:
    with _main() as session:
        rows = session.execute(select(Device.id, Device.role, Device.name, Store.code,
                                      Device.revoked_at, Device.last_seen_at, Device.health)
                               .join(Store)).all()
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        seen = row.last_seen_at.isoformat(timespec="seconds") if row.last_seen_at else "never"
        health = row.health or {}
        readers = health.get("readers") or []
        ready = sum(1 for r in readers if r.get("status") == "ready")
        queue = health.get("queue") or {}
        report = f"readers {ready}/{len(readers)} ready" if readers else "-"
        if queue.get("depth") or queue.get("failed"):
            report += f", queue {queue.get('depth', 0)} waiting {queue.get('failed', 0)} refused"
        click.echo(f"{row.id}\t{row.role}\t{row.code}\t{state}\tseen {seen}\t{report}\t"
                   f"{row.name}")


@click.group("staff", cls=AppGroup, help="Staff accounts.")
def staff_cli() -> None:
    pass


@staff_cli.command("add")
@click.option("--username", required=True)
@click.option("--role", type=click.Choice(STAFF_ROLES), required=True)
@click.option("--store", "store_code", default=None)
@click.password_option("--password", prompt=True, confirmation_prompt=True,
                       help="Prompted for when not given; LOYALTY_STAFF_PASSWORD also works",
                       envvar="LOYALTY_STAFF_PASSWORD")
def staff_add(username: str, role: str, store_code: str | None, password: str) -> None:
    if len(password) < 10:
        raise click.ClickException("a staff password has at least 10 characters")
    with _main() as session:
        if session.scalar(select(Staff.id).where(Staff.username == username)):
            raise click.ClickException(f"staff member {username} exists already")
        store_id = None
        if store_code:
            store_id = session.scalar(select(Store.id).where(Store.code == store_code))
            if store_id is None:
                raise click.ClickException(f"no store {store_code}")
        session.add(Staff(username=username, role=role, store_id=store_id,
                          password_hash=hash_password(password)))
        session.commit()
    click.echo(f"staff member {username} ({role}) added")


def _staff_row(session, username: str) -> Staff:
    staff = session.scalar(select(Staff).where(Staff.username == username))
    if staff is None:
        raise click.ClickException(f"no staff member {username}")
    return staff


@staff_cli.command("pin")
@click.argument("username")
@click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="LOYALTY_STAFF_PIN", help="4 to 8 digits; prompted for when not given")
@click.option("--clear", is_flag=True, help="Remove the PIN: no staff mode by PIN")
def staff_pin(username: str, pin: str, clear: bool) -> None:
    """Set the PIN that opens staff mode on a kiosk (with the staff name)."""
    from server.staff.kiosk import PIN_PATTERN

    if not clear and not re.fullmatch(PIN_PATTERN, pin or ""):
        raise click.ClickException("a staff PIN has 4 to 8 digits")
    with _main() as session:
        staff = _staff_row(session, username)
        staff.pin_hash = None if clear else hash_password(pin)
        session.commit()
    click.echo(f"staff member {username}: PIN {'removed' if clear else 'set'}")


@staff_cli.command("card")
@click.argument("username")
@click.option("--uid", help="The staff card's UID in hex (as a till's reader shows it)")
@click.option("--clear", is_flag=True, help="Forget the staff card")
def staff_card(username: str, uid: str | None, clear: bool) -> None:
    """Register the staff card whose tap opens staff mode on a kiosk (stored hashed)."""
    from server.staff.kiosk import card_uid_hash

    if not clear and not re.fullmatch(r"[0-9A-Fa-f]{8,20}", uid or ""):
        raise click.ClickException("give --uid as 8 to 20 hex digits, or --clear")
    with _main() as session:
        staff = _staff_row(session, username)
        digest = None if clear else card_uid_hash(uid)
        if digest and session.scalar(select(Staff.id).where(Staff.card_uid_hash == digest,
                                                            Staff.id != staff.id)):
            raise click.ClickException("this card belongs to another staff member")
        staff.card_uid_hash = digest
        session.commit()
    click.echo(f"staff member {username}: staff card {'forgotten' if clear else 'registered'}")


@click.group("demo", cls=AppGroup, help="The embedded demo of `make run`.")
def demo_cli() -> None:
    pass


@demo_cli.command("init", help="Create the demo store, a kiosk, a till and an admin if missing; "
                               "write their keys to a private file for the local processes.")
@click.option("--credentials", "path", type=click.Path(dir_okay=False), default=None,
              help="Where to keep the device keys (default: <instance>/demo-credentials.json)")
def demo_init(path: str | None) -> None:
    path = Path(path or Path(current_app.config["INSTANCE_PATH"]) / "demo-credentials.json")
    saved = json.loads(path.read_text()) if path.exists() else {}
    with _main() as session:
        if not session.scalar(select(Store.id).where(Store.code == "DEMO")):
            session.add(Store(code="DEMO", name="Demo shop"))
            session.commit()
            click.echo("store DEMO added")
        for role in DEVICE_ROLES:
            key = saved.get(f"{role}_key")
            known = key and session.scalar(select(Device.id).where(
                Device.key_hash == hash_key(key), Device.revoked_at.is_(None)))
            if not known:
                saved[f"{role}_key"] = add_device(session, "DEMO", role, f"demo {role}")
                click.echo(f"{role} device added")
        if not session.scalar(select(Staff.id).where(Staff.username == "admin")):
            saved["admin_password"] = secrets.token_urlsafe(12)
            session.add(Staff(username="admin", role="admin",
                              password_hash=hash_password(saved["admin_password"])))
            session.commit()
            click.echo("staff member admin added")
        admin = session.scalar(select(Staff).where(Staff.username == "admin"))
        if admin.pin_hash is None or "admin_pin" not in saved:
            # staff mode on the demo kiosk: name "admin" and this PIN
            saved["admin_pin"] = f"{secrets.randbelow(10**6):06d}"
            admin.pin_hash = hash_password(saved["admin_pin"])
            session.commit()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh, indent=2)
    click.echo(f"demo credentials in {path}")


@click.group("programme", cls=AppGroup, help="The loyalty programme: rules, tiers, rewards.")
def programme_cli() -> None:
    pass


@programme_cli.command("load", help="Validate a programme file (TOML) and put it in force.")
@click.argument("path", type=click.File("r", encoding="utf-8"))
def programme_load(path) -> None:
    from server.api.problems import Problem
    from server.loyalty import programmes

    with _main() as session:
        try:
            version, programme = programmes.load(session, path.read(), "cli")
        except Problem as exc:
            # each problem with its path (tiers[1].threshold: ...), as the API answers them
            found = [f"  {e['field']}: {e['message']}" if e["field"] else f"  {e['message']}"
                     for e in exc.extra.get("errors", [])]
            raise click.ClickException("\n".join([f"not loaded: {exc.detail}", *found])) \
                from None
        session.commit()
    click.echo(f"programme version {version} in force: {len(programme.tiers)} tiers, "
               f"{len(programme.rewards)} rewards")


@programme_cli.command("show", help="Print the programme in force as JSON.")
def programme_show() -> None:
    from server.loyalty import programmes

    with _main() as session:
        version, programme = programmes.current(session)
    click.echo(json.dumps({"version": version, **programme.model_dump(mode="json")}, indent=2))


@click.group("points", cls=AppGroup, help="Points ledger jobs.")
def points_cli() -> None:
    pass


@points_cli.command("expire", help="Expire points past the programme's expiry (safe twice).")
def points_expire() -> None:
    from server.loyalty.jobs import expire_points

    with _main() as session:
        customers, points = expire_points(session)
    click.echo(f"{points} points expired for {customers} customers")


@click.group("tiers", cls=AppGroup, help="Tier jobs.")
def tiers_cli() -> None:
    pass


@tiers_cli.command("review", help="Apply the tier reviews that are due (downgrades happen here).")
def tiers_review() -> None:
    from server.loyalty.jobs import review_tiers

    with _main() as session:
        reviewed, changed = review_tiers(session)
    click.echo(f"{reviewed} customers reviewed, {changed} changed tier")


@click.group("import", cls=AppGroup, help="Bring data over from another system.")
def import_cli() -> None:
    pass


@import_cli.command("balances", help="Customers and opening balances from a CSV file "
                                     "(source_id, first_name, last_name, email, phone, "
                                     "language, points).")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", "store_code", required=True, help="Home store of these customers")
def import_balances(path: str, store_code: str) -> None:
    from server.loyalty.jobs import import_balances as run

    dbs = current_app.extensions["loyalty.db"]
    with Session(dbs.main) as main, Session(dbs.vault) as vault, \
            open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            report = run(main, vault, fh, store_code=store_code, source=Path(path).name)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    for line, reason in report.bad:
        click.echo(f"line {line}: {reason}", err=True)
    click.echo(f"{report.imported} imported, {report.already} already imported, "
               f"{len(report.bad)} rejected")
