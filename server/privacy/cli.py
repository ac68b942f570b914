"""``flask --app server privacy ...``: the retention job, the audit chain check, re-indexing."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.stores.models import Store


@click.group("privacy", cls=AppGroup, help="Retention, audit log, blind indexes.")
def privacy_cli() -> None:
    pass


@privacy_cli.command("retention", help="Tell, then erase, customers inactive for too long.")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
def retention_run(dry_run: bool) -> None:
    from server.privacy import retention

    report = retention.run(current_app.extensions["loyalty.db"], current_app.config,
                           dry_run=dry_run)
    click.echo(json.dumps({"dry_run": dry_run, **report.as_dict()}, indent=2))


@privacy_cli.command("verify-audit", help="Recompute the audit log's hash chain.")
def verify_audit() -> None:
    from server.privacy import audit

    with Session(current_app.extensions["loyalty.db"].main) as session:
        report = audit.verify(session)
    click.echo(json.dumps(report.as_dict(), indent=2))
    if not report.ok:
        raise SystemExit(1)


@privacy_cli.command("reindex", help="Recompute every email and phone blind index "
                                     "(after a change in how numbers are normalised).")
def reindex() -> None:
    from server.vault.models import VaultRecord
    from server.vault.service import index_columns, read_personal_data, vault_keys

    dbs = current_app.extensions["loyalty.db"]
    keys = vault_keys()
    default = current_app.config["DEFAULT_COUNTRY"]
    changed = 0
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        countries = dict(main.execute(
            select(Customer.id, Store.country).join(Store, Store.id == Customer.home_store_id)))
        rows = vault.execute(select(VaultRecord.customer_id, VaultRecord.email_index,
                                    VaultRecord.phone_index)).all()
        for row in rows:
            data = read_personal_data(vault, row.customer_id)
            if data is None:
                continue
            columns = index_columns(keys, data, countries.get(row.customer_id, default))
            if (row.email_index, row.phone_index) != (columns["email_index"],
                                                      columns["phone_index"]):
                vault.execute(update(VaultRecord)
                              .where(VaultRecord.customer_id == row.customer_id)
                              .values(**columns))
                changed += 1
        vault.commit()
    click.echo(f"{len(rows)} vault rows, {changed} re-indexed")
