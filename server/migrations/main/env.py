"""Alembic environment of the main database; the connection comes from server.migrate."""

from alembic import context

import server.models  # noqa: F401 - registers every table
from server.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
