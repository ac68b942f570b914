"""``flask --app server products import FILE.csv``: the catalogue that gives warranty months."""

from __future__ import annotations

import csv

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from server.tickets.products import COLUMNS, import_products


@click.group("products", cls=AppGroup, help="The products catalogue (warranty months).")
def products_cli() -> None:
    pass


@products_cli.command("import", help=f"Add or update products from a CSV file with the "
                                     f"columns {','.join(COLUMNS)} (safe twice).")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def products_import(path: str) -> None:
    with Session(current_app.extensions["loyalty.db"].main) as main, \
            open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            report = import_products(main, fh)
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise click.ClickException(str(exc)) from None
        main.commit()
    for line, reason in report.bad:
        click.echo(f"line {line}: {reason}", err=True)
    click.echo(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
               f"{len(report.bad)} rejected")

