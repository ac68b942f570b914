"""``flask --app server privacy ...``: the retention job, the audit chain check, re-indexing."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select
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


@privacy_cli.command("reindex", help="Recompute every blind index: email, phone and names "
                                     "(after a change in how values are normalised, or a "
                                     "new index).")
def reindex() -> None:
    from server.vault.service import reindex as reindex_vault

    dbs = current_app.extensions["loyalty.db"]
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        # .all(): a Result has keys(), which dict() would take for a mapping's
        countries = dict(main.execute(
            select(Customer.id, Store.country).join(Store, Store.id == Customer.home_store_id))
            .all())
        rows, changed = reindex_vault(vault, countries, current_app.config["DEFAULT_COUNTRY"])
        vault.commit()
    click.echo(f"{rows} vault rows, {changed} re-indexed")
