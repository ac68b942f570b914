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
