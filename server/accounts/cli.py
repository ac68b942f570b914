"""``flask --app server statements run`` and ``flask --app server accounts open|close``."""

from __future__ import annotations

import json
from decimal import Decimal

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from server.api.problems import Problem

ACTOR = "cli"


@click.group("statements", cls=AppGroup, help="Monthly statements of account customers.")
def statements_cli() -> None:
    pass


@statements_cli.command("run", help="Build the month's statements and send the unsent ones "
                                    "(safe to run twice; resumes after a crash).")
@click.option("--month", default=None, metavar="YYYY-MM",
              help="Default: last month, in the programme's time zone.")
def statements_run(month: str | None) -> None:
    from server.accounts import statements

    try:
        report = statements.run(current_app.extensions["loyalty.db"], current_app.config,
                                month=month)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from exc
    click.echo(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        raise SystemExit(1)


@statements_cli.command("stuck", help="List statements claimed by a run more than "
                                      "--older-than minutes ago and never marked sent (the "
                                      "run was interrupted); with --release, send them again "
                                      "or mark them failed. They may have been delivered.")
@click.option("--older-than", "minutes", type=click.IntRange(1), default=30, show_default=True,
              help="Minutes since the claim.")
@click.option("--release", "to", type=click.Choice(["pending", "failed"]), default=None,
              help="pending: the next 'statements run' sends them (same Message-ID, so a "
                   "mail client that has one drops the copy); failed: never sent again.")
def statements_stuck(minutes: int, to: str | None) -> None:
    from datetime import timedelta

    from server.accounts import statements

    older_than = timedelta(minutes=minutes)
    with Session(current_app.extensions["loyalty.db"].main) as main:
        rows = statements.stuck(main, older_than)
        for st in rows:
            click.echo(f"{st.id}\t{st.customer_id}\t{st.month}\t"
                       f"claimed {st.claimed_at.isoformat()}\tattempts {st.send_attempts}")
        if not rows:
            click.echo(f"no statement claimed for more than {minutes} minutes")
            return
        click.echo("warning: an interrupted statement may have been delivered before the "
                   "interruption: releasing it to pending may send it a second time",
                   err=True)
        if to is None:
            click.echo("nothing released: add --release pending or --release failed", err=True)
            return
        released = statements.release(main, ACTOR, ACTOR, [st.id for st in rows], to,
                                      older_than)
        main.commit()
    click.echo(f"{len(released)} statement(s) released to {to}")


@click.group("accounts", cls=AppGroup, help="Customers who buy on account.")
def accounts_cli() -> None:
    pass


@accounts_cli.command("open", help="Open an account (or change its limit and terms).")
@click.argument("customer_id")
@click.option("--credit-limit", required=True, type=Decimal, help="In the currency, e.g. 500")
@click.option("--terms-days", default=30, show_default=True, type=click.IntRange(0, 365))
def accounts_open(customer_id: str, credit_limit: Decimal, terms_days: int) -> None:
    from server.accounts import service

    with Session(current_app.extensions["loyalty.db"].main) as main:
        try:
            service.open_account(main, ACTOR, customer_id,
                                 credit_limit_cents=int(credit_limit * 100),
                                 terms_days=terms_days)
        except Problem as exc:
            raise click.ClickException(exc.slug) from None
        main.commit()
    click.echo(f"account {customer_id}: limit {credit_limit}, {terms_days} days")


@accounts_cli.command("close", help="No more purchases on account (payments still taken).")
@click.argument("customer_id")
def accounts_close(customer_id: str) -> None:
    from server.accounts import service

    with Session(current_app.extensions["loyalty.db"].main) as main:
        try:
            service.close_account(main, customer_id)
        except Problem as exc:
            raise click.ClickException(exc.slug) from None
        main.commit()
    click.echo(f"account {customer_id} closed")
