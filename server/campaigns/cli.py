"""``flask --app server campaigns ...``: send what is queued, run the daily triggers."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup


@click.group("campaigns", cls=AppGroup, help="Email and SMS campaigns.")
def campaigns_cli() -> None:
    pass


@campaigns_cli.command("send", help="Send the queued messages (of campaign ID, or of all); "
                                    "safe to run again: nothing is sent twice.")
@click.argument("campaign_id", type=int, required=False)
def send(campaign_id: int | None) -> None:
    from server.campaigns import service

    report = service.process(current_app._get_current_object(),
                             [campaign_id] if campaign_id is not None else None)
    click.echo(json.dumps(report.as_dict()))


@campaigns_cli.command("triggers", help="Welcome, birthday, points expiring, no visit: queue "
                                        "and send today's messages (daily; safe twice).")
def triggers() -> None:
    from server.campaigns import service

    click.echo(json.dumps(service.run_triggers(current_app._get_current_object())))


@campaigns_cli.command("stuck", help="List messages left 'sending' by an interrupted run "
                                     "(claimed more than --older-than minutes ago); with "
                                     "--release, put them back in the queue or mark them "
                                     "failed. A stuck message may have been delivered.")
@click.option("--older-than", "minutes", type=click.IntRange(1), default=30, show_default=True,
              help="Minutes since the claim.")
@click.option("--release", "to", type=click.Choice(["pending", "failed"]), default=None,
              help="pending: the next 'campaigns send' sends them (again, if they had "
                   "left); failed: never sent again.")
def stuck(minutes: int, to: str | None) -> None:
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from server.campaigns import service

    older_than = timedelta(minutes=minutes)
    with Session(current_app.extensions["loyalty.db"].main) as main:
        rows = service.stuck(main, older_than)
        for m in rows:
            click.echo(f"{m.id}\tcampaign {m.campaign_id}\t{m.channel}\t{m.customer_id}\t"
                       f"{m.trigger_key or '-'}\tclaimed {m.updated_at.isoformat()}\t"
                       f"attempts {m.attempts}")
        if not rows:
            click.echo(f"no message sending for more than {minutes} minutes")
            return
        click.echo(f"warning: {service.MAY_HAVE_LEFT}", err=True)
        if to is None:
            click.echo("nothing released: add --release pending or --release failed", err=True)
            return
        released = service.release(main, "cli", "cli", [m.id for m in rows], to, older_than)
        main.commit()
    click.echo(f"{len(released)} message(s) released to {to}")
