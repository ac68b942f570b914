"""Alembic for both databases, driven from code (``flask --app server db upgrade``).

Each database has its own migration folder: ``server/migrations/main`` and
``server/migrations/vault``. The app's engines are handed to Alembic, so the URLs come from
the same configuration as everything else.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask

HERE = Path(__file__).resolve().parent / "migrations"
DATABASES = ("main", "vault")


def alembic_config(name: str, connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / name))
    cfg.attributes["connection"] = connection
    cfg.attributes["database"] = name
    return cfg


def upgrade(app: Flask, revision: str = "head") -> list[str]:
    """Apply the migrations of both databases; returns their names."""
    dbs = app.extensions["loyalty.db"]
    for name in DATABASES:
        engine = dbs.main if name == "main" else dbs.vault
        with engine.begin() as conn:
            command.upgrade(alembic_config(name, conn), revision)
    return list(DATABASES)


def revision(app: Flask, name: str, message: str) -> None:
    """Autogenerate a new migration for one database (a developer's command)."""
    dbs = app.extensions["loyalty.db"]
    engine = dbs.main if name == "main" else dbs.vault
    with engine.begin() as conn:
        command.revision(alembic_config(name, conn), message=message, autogenerate=True)
