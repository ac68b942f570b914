"""``flask --app server keys ...``: see and rotate the vault master keys and the card keys.

Nothing here prints key material: only key ids and counts. docs/KEYS.md has the procedure.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from server.keys import rotation
from server.keys.rotation import RotationError


def _main() -> Session:
    return Session(current_app.extensions["loyalty.db"].main)


def _vault() -> Session:
    return Session(current_app.extensions["loyalty.db"].vault)


def _ids(ids) -> str:
    return ", ".join(str(i) for i in ids) or "none"


def _counts(counts: dict[int, int]) -> str:
    return ", ".join(f"key {kid}: {n}" for kid, n in counts.items()) or "none"


@click.group("keys", cls=AppGroup, help="Vault master keys and card keys: status, rotation, "
                                        "retirement (docs/KEYS.md).")
def keys_cli() -> None:
    pass


@keys_cli.command("status", help="Key ids in use, rows and cards per key; no key material. "
                                 "Exits 1 when something needs attention.")
def keys_status() -> None:
    vault_file = current_app.config["VAULT_KEY_FILE"]
    card_file = current_app.config["CARD_KEYS_FILE"]
    problems = []
    try:
        with _vault() as vault:
            v = rotation.vault_status(vault, vault_file)
        click.echo(f"vault key file: {vault_file}")
        click.echo(f"  master keys: {_ids(v.key_ids)} (current {v.current})")
        click.echo(f"  vault rows per master key: {_counts(v.rows)}")
        if v.not_current:
            click.echo(f"  {v.not_current} rows are not on the current key yet: "
                       "'keys rotate-vault --rewrap-only'")
        if v.missing:
            problems.append(f"vault rows use master keys missing from the file: "
                            f"{_ids(v.missing)}; those rows cannot be opened")
        click.echo("  blind-index key: never rotated (docs/KEYS.md)")
    except RotationError as exc:
        problems.append(str(exc))
    try:
        with _main() as main:
            c = rotation.card_status(main, card_file)
        click.echo(f"card key file: {card_file}")
        click.echo(f"  card keys: {_ids(c.key_ids)} (current {c.current}); "
                   f"retired: {_ids(c.retired)}; free ids: {len(c.free)}")
        click.echo(f"  active cards per card key: {_counts(c.active_cards)}")
        if c.unusable:
            problems.append(f"active cards whose key is retired or missing (their taps are "
                            f"refused): {_counts(c.unusable)}")
    except RotationError as exc:
        problems.append(str(exc))
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if problems:
        raise SystemExit(1)


def _rewrap(batch_size: int, settle: float) -> None:
    path = current_app.config["VAULT_KEY_FILE"]

    def progress(report: rotation.RewrapReport) -> None:
        click.echo(f"pass {report.passes}: {report.rewrapped} rows re-wrapped so far")

    try:
        report = rotation.rewrap_vault(_vault, path, batch_size=batch_size, settle=settle,
                                       progress=progress)
    except RotationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{report.rewrapped} rows re-wrapped to master key {report.current}"
               + (f", {report.raced} changed meanwhile and looked at again" if report.raced
                  else ""))
    for customer_id, reason in sorted(report.failed.items())[:20]:
        click.echo(f"  {customer_id}: {reason}", err=True)
    if report.remaining:
        raise click.ClickException(
            f"rows not on master key {report.current} yet: {_counts(report.remaining)}; "
            "run 'keys rotate-vault --rewrap-only' again (rows that do not open are listed)")
    click.echo(f"every vault row is on master key {report.current}")


@keys_cli.command("rotate-vault", help="Add a new vault master key, make it current, and "
                                       "re-wrap every row's data key with it (batches).")
@click.option("--rewrap-only", is_flag=True,
              help="Add no key: finish re-wrapping onto the current key (after a crash).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=rotation.BATCH_SIZE,
              show_default=True, help="Rows per transaction")
@click.option("--settle", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Seconds between the key file change and the first row re-wrapped, so "
                   "every worker has the new key first")
def rotate_vault(rewrap_only: bool, batch_size: int, settle: float) -> None:
    from server.vault.crypto import VaultKeys

    path = current_app.config["VAULT_KEY_FILE"]
    try:
        rotation.read_key_file(path)
        with _vault() as vault:
            rotation.check_vault_keys(vault, VaultKeys.load(path))
        if not rewrap_only:
            new_id = rotation.add_vault_key(path)
            click.echo(f"master key {new_id} added to {path} and made current "
                       "(older keys kept until retired)")
    except RotationError as exc:
        raise click.ClickException(str(exc)) from None
    _rewrap(batch_size, settle)


@keys_cli.command("retire-vault", help="Remove an old vault master key from the key file, "
                                       "once no row is wrapped with it.")
@click.argument("key_id", type=int)
def retire_vault(key_id: int) -> None:
    path = current_app.config["VAULT_KEY_FILE"]
    try:
        with _vault() as vault:
            rotation.retire_vault_key(vault, path, key_id)
    except RotationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"master key {key_id} removed from {path}; backups of the vault database "
               "made before the rotation need a backup of the old key file")


@keys_cli.command("rotate-cards", help="Add a new card key and make it current; cards "
                                       "issued before keep working.")
def rotate_cards() -> None:
    path = current_app.config["CARD_KEYS_FILE"]
    try:
        new_id = rotation.add_card_key(path)
    except RotationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"card key {new_id} added to {path} and made current; older keys keep "
               "verifying until retired")


@keys_cli.command("retire-card", help="Refuse tokens signed with an old card key from now on.")
@click.argument("key_id", type=int)
@click.option("--force", is_flag=True, help="Retire even though active cards still use it "
                                            "(those cards stop working).")
def retire_card(key_id: int, force: bool) -> None:
    path = current_app.config["CARD_KEYS_FILE"]
    try:
        with _main() as main:
            refused = rotation.retire_card_key(main, path, key_id, force=force)
    except RotationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"card key {key_id} retired: its tokens are refused from now on"
               + (f"; {refused} active cards signed with it stop working" if refused else ""))
