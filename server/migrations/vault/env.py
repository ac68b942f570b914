"""Alembic environment of the vault database; the connection comes from server.migrate."""

from alembic import context

import server.models  # noqa: F401 - registers every table
from server.db import VaultBase

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=VaultBase.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    version_table="alembic_version_vault",
)
with context.begin_transaction():
    context.run_migrations()
