"""``flask --app server ...``: migrations, stores, devices, staff, and the demo set-up."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.accounts.cli import accounts_cli, statements_cli
from server.campaigns.cli import campaigns_cli
from server.cards.sun_keys import sun_cli
from server.devices import service as devices
from server.devices.auth import hash_key
from server.devices.models import ROLES as DEVICE_ROLES
from server.devices.models import Device
from server.keys.cli import keys_cli
from server.privacy.cli import privacy_cli
from server.staff import service as staff
from server.staff.models import ROLES as STAFF_ROLES
from server.staff.models import Staff
from server.stores import service as stores
from server.stores.models import Store
from server.stores.service import Refused
from server.tickets.cli import products_cli

# how the audit log names a change made from the command line, and where
CLI = "cli"


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
    app.cli.add_command(value_cli)
    app.cli.add_command(reports_cli)
    app.cli.add_command(import_cli)
    app.cli.add_command(privacy_cli)
    app.cli.add_command(sun_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(products_cli)
    app.cli.add_command(accounts_cli)
    app.cli.add_command(statements_cli)
    app.cli.add_command(campaigns_cli)


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


@contextmanager
def _change() -> Iterator[Session]:
    """A session for one administration change: a refusal becomes the CLI's error message."""
    with _main() as session:
        try:
            yield session
        except Refused as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()


@stores_cli.command("add")
@click.option("--code", required=True, help="Short unique code, e.g. PARIS-01")
@click.option("--name", required=True)
@click.option("--allow-uid-only/--no-allow-uid-only", default=False,
              help="Accept legacy cards identified by their UID alone (weak)")
@click.option("--country", type=click.Choice(["FR", "LT"], case_sensitive=False),
              default=None, help="How phone numbers typed without +33/+370 are read "
                                 "(default: DEFAULT_COUNTRY)")
@click.option("--region", default=None,
              help="The store's region, for segments (e.g. Vilnius); at most 80 characters")
def stores_add(code: str, name: str, allow_uid_only: bool, country: str | None,
               region: str | None) -> None:
    country = (country or current_app.config["DEFAULT_COUNTRY"]).upper()
    with _change() as session:
        stores.add(session, code=code, name=name, country=country,
                   allow_uid_only=allow_uid_only, actor=CLI, view=CLI, region=region)
    click.echo(f"store {code} added")


@stores_cli.command("edit", help="Change a store's name, country, region or UID-only setting.")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--country", type=click.Choice(["FR", "LT"], case_sensitive=False), default=None)
@click.option("--region", default=None, help='The store\'s region; --region "" removes it')
@click.option("--allow-uid-only/--no-allow-uid-only", default=None)
def stores_edit(code: str, name: str | None, country: str | None, region: str | None,
                allow_uid_only: bool | None) -> None:
    with _change() as session:
        store = stores.by_code(session, code)
        changed = stores.edit(
            session, store, name=store.name if name is None else name,
            country=store.country if country is None else country,
            allow_uid_only=store.allow_uid_only if allow_uid_only is None else allow_uid_only,
            actor=CLI, view=CLI, region=stores.KEEP if region is None else region)
    click.echo(f"store {code}: " + (", ".join(changed) + " changed" if changed
                                     else "nothing changed"))


@stores_cli.command("list", help="Stores (code, country, region or -, active devices, enabled "
                                 "staff, name).")
def stores_list() -> None:
    with _main() as session:
        rows = stores.list_stores(session)
    for row in rows:
        uid = "\tuid-only" if row.allow_uid_only else ""
        click.echo(f"{row.code}\t{row.country}\t{row.region or '-'}\t{row.devices} devices\t"
                   f"{row.staff} staff\t{row.name}{uid}")


def add_device(session: Session, store_code: str, role: str, name: str) -> str:
    """Register a device and commit; its key. For the set-up of tests (no audit key yet)."""
    try:
        _device, key = devices.register(session, store=stores.by_code(session, store_code),
                                        role=role, name=name, actor="")
    except Refused as exc:
        if exc.code == "store-unknown":
            raise click.ClickException(f"no store {store_code}; add it with 'stores add'") \
                from None
        raise click.ClickException(str(exc)) from None
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
    with _change() as session:
        try:
            store = stores.by_code(session, store_code)
        except Refused:
            raise click.ClickException(f"no store {store_code}; add it with 'stores add'") \
                from None
        _device, key = devices.register(session, store=store, role=role, name=name, actor=CLI,
                                        view=CLI)
    click.echo(f"{role} {name!r} added to {store_code}; its key is shown once, keep it safe:")
    click.echo(key)


@devices_cli.command("revoke", help="Refuse a device key from now on.")
@click.argument("device_id", type=int)
def devices_revoke(device_id: int) -> None:
    with _change() as session:
        devices.revoke(session, devices.get(session, device_id), actor=CLI, view=CLI)
    click.echo(f"device {device_id} revoked")


@devices_cli.command("list", help="Devices, when each was last seen (heartbeat) and how its "
                                    "readers and offline queue were then.")
def devices_list() -> None:
    with _main() as session:
        rows = devices.list_devices(session)
    for row in rows:
        state = "revoked" if row.revoked_at else ("stale" if row.stale else "active")
        seen = row.last_seen_at.isoformat(timespec="seconds") if row.last_seen_at else "never"
        click.echo(f"{row.id}\t{row.role}\t{row.store_code}\t{state}\tseen {seen}\t"
                   f"{row.report()}\t{row.name}")


@click.group("staff", cls=AppGroup, help="Staff accounts.")
def staff_cli() -> None:
    pass


def _store_or_none(session: Session, store_code: str | None):
    return stores.by_code(session, store_code) if store_code else None


@staff_cli.command("add")
@click.option("--username", required=True)
@click.option("--role", type=click.Choice(STAFF_ROLES), required=True)
@click.option("--store", "store_code", default=None)
@click.password_option("--password", prompt=True, confirmation_prompt=True,
                       help="Prompted for when not given; LOYALTY_STAFF_PASSWORD also works",
                       envvar="LOYALTY_STAFF_PASSWORD")
def staff_add(username: str, role: str, store_code: str | None, password: str) -> None:
    with _change() as session:
        staff.add(session, username=username, role=role,
                  store=_store_or_none(session, store_code), password=password, actor=CLI,
                  view=CLI)
    click.echo(f"staff member {username} ({role}) added")


@staff_cli.command("list", help="Staff accounts, their role, store, PIN and card.")
def staff_list() -> None:
    with _main() as session:
        rows = staff.list_staff(session)
    for row in rows:
        state = "disabled" if row.disabled_at else "active"
        extras = ", ".join(x for x, has in (("PIN", row.has_pin), ("card", row.has_card))
                           if has) or "-"
        click.echo(f"{row.username}\t{row.role}\t{row.store_code or '-'}\t{state}\t{extras}")


@staff_cli.command("change", help="Give a staff member another role or store.")
@click.argument("username")
@click.option("--role", type=click.Choice(STAFF_ROLES), default=None)
@click.option("--store", "store_code", default=None, help="A store code; '-' for none")
def staff_change(username: str, role: str | None, store_code: str | None) -> None:
    with _change() as session:
        member = staff.by_username(session, username)
        store = (None if store_code == "-" else stores.by_code(session, store_code)) \
            if store_code else (stores.get(session, member.store_id) if member.store_id
                                else None)
        changed = staff.change(session, member, role=role or member.role, store=store,
                               actor=CLI, view=CLI)
    click.echo(f"staff member {username}: " + (", ".join(changed) + " changed" if changed
                                                else "nothing changed"))


@staff_cli.command("disable", help="Disable an account: out at once, everywhere.")
@click.argument("username")
def staff_disable(username: str) -> None:
    with _change() as session:
        staff.set_enabled(session, staff.by_username(session, username), False, actor=CLI,
                          view=CLI)
    click.echo(f"staff member {username} disabled")


@staff_cli.command("enable", help="Enable a disabled account again.")
@click.argument("username")
def staff_enable(username: str) -> None:
    with _change() as session:
        staff.set_enabled(session, staff.by_username(session, username), True, actor=CLI,
                          view=CLI)
    click.echo(f"staff member {username} enabled")


@staff_cli.command("password", help="Give a staff member a new password (lifts a lockout).")
@click.argument("username")
@click.password_option("--password", prompt=True, confirmation_prompt=True,
                       help="Prompted for when not given; LOYALTY_STAFF_PASSWORD also works",
                       envvar="LOYALTY_STAFF_PASSWORD")
def staff_password(username: str, password: str) -> None:
    with _change() as session:
        staff.reset_password(session, staff.by_username(session, username), password,
                             actor=CLI, view=CLI)
    click.echo(f"staff member {username}: password changed")


@staff_cli.command("pin")
@click.argument("username")
@click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="LOYALTY_STAFF_PIN", help="4 to 8 digits; prompted for when not given")
@click.option("--clear", is_flag=True, help="Remove the PIN: no staff mode by PIN")
def staff_pin(username: str, pin: str, clear: bool) -> None:
    """Set the PIN that opens staff mode on a kiosk (with the staff name)."""
    with _change() as session:
        staff.set_pin(session, staff.by_username(session, username), None if clear else pin,
                      actor=CLI, view=CLI)
    click.echo(f"staff member {username}: PIN {'removed' if clear else 'set'}")


@staff_cli.command("card")
@click.argument("username")
@click.option("--uid", help="The staff card's UID in hex (as a till's reader shows it)")
@click.option("--clear", is_flag=True, help="Forget the staff card")
def staff_card(username: str, uid: str | None, clear: bool) -> None:
    """Register the staff card whose tap opens staff mode on a kiosk (stored hashed)."""
    if not clear and not uid:
        raise click.ClickException("give --uid as 8 to 20 hex digits, or --clear")
    with _change() as session:
        staff.set_card(session, staff.by_username(session, username), None if clear else uid,
                       actor=CLI, view=CLI)
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
    with _change() as session:
        if not session.scalar(select(Store.id).where(Store.code == "DEMO")):
            stores.add(session, code="DEMO", name="Demo shop",
                       country=current_app.config["DEFAULT_COUNTRY"], actor=CLI, view=CLI)
            click.echo("store DEMO added")
        demo = stores.by_code(session, "DEMO")
        for role in DEVICE_ROLES:
            key = saved.get(f"{role}_key")
            known = key and session.scalar(select(Device.id).where(
                Device.key_hash == hash_key(key), Device.revoked_at.is_(None)))
            if not known:
                _device, saved[f"{role}_key"] = devices.register(
                    session, store=demo, role=role, name=f"demo {role}", actor=CLI, view=CLI)
                click.echo(f"{role} device added")
        admin = session.scalar(select(Staff).where(Staff.username == "admin"))
        if admin is None:
            saved["admin_password"] = secrets.token_urlsafe(12)
            admin = staff.add(session, username="admin", role="admin", store=None,
                              password=saved["admin_password"], actor=CLI, view=CLI)
            click.echo("staff member admin added")
        if admin.pin_hash is None or "admin_pin" not in saved:
            # staff mode on the demo kiosk: name "admin" and this PIN
            saved["admin_pin"] = f"{secrets.randbelow(10**6):06d}"
            staff.set_pin(session, admin, saved["admin_pin"], actor=CLI, view=CLI)
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
            version, programme = programmes.load(session, path.read(), CLI)
        except Problem as exc:
            # each problem with its path (tiers[1].threshold: ...), as the API answers them
            found = [f"  {e['field']}: {e['message']}" if e["field"] else f"  {e['message']}"
                     for e in exc.extra.get("errors", [])]
            raise click.ClickException("\n".join([f"not loaded: {exc.detail}", *found])) \
                from None
        stores.record_change(session, CLI, "programme.load", CLI, {"version": version})
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


@click.group("value", cls=AppGroup, help="The customer value score.")
def value_cli() -> None:
    pass


@value_cli.command("refresh", help="Compute every active customer's value score now and "
                                   "replace the snapshot the pages read (nightly).")
def value_refresh() -> None:
    import time

    from server.value.service import refresh

    started = time.monotonic()
    with _main() as session:
        found = refresh(session, actor=CLI)
        active, live, version = found.active, found.live, found.programme_version
        session.commit()
    click.echo(f"{active} active customers of {live} scored with programme version {version} "
               f"in {time.monotonic() - started:.1f} s")


@click.group("reports", cls=AppGroup, help="The sales reports' daily figures.")
def reports_cli() -> None:
    pass


@reports_cli.command("rebuild", help="Compute the reports' aggregates again (daily and monthly "
                                     "sales, customers' days, visits; PostgreSQL; after a "
                                     "change of the programme's time zone).")
def reports_rebuild() -> None:
    from server.reports.aggregates import rebuild

    with _main() as session:
        if session.get_bind().dialect.name != "postgresql":
            raise click.ClickException("SQLite: the reports read the purchases, nothing to do")
        rows = rebuild(session)
        session.commit()
    click.echo(f"sales_days rebuilt: {rows} rows")


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
