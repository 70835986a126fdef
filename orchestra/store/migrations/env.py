"""Alembic environment. `SqlStore` passes its open connection in ``config.attributes["connection"]`` and runs
the upgrade inside its own transaction; run standalone, the URL comes from ``sqlalchemy.url`` or
``$ORCHESTRA_DB_URL``."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from orchestra.store.sql import metadata

config = context.config
target_metadata = metadata


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: future revisions rebuild tables in batch mode there
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or os.environ["ORCHESTRA_DB_URL"],
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or os.environ["ORCHESTRA_DB_URL"])
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
