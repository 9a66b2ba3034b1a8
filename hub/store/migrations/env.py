"""Alembic environment: runs hub's migrations against the URL given by hub.store.db.alembic_config."""

from __future__ import annotations

from alembic import context

from hub.store.db import migrations_engine
from hub.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = migrations_engine(config.get_main_option("sqlalchemy.url") or "")
    with connectable.connect() as connection:
        # one transaction for the whole run on SQLite as on PostgreSQL (alembic takes SQLite's DDL to be outside
        # transactions, which it is only with the driver's defaults; migrations_engine takes them away)
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True, transactional_ddl=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
