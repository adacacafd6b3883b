"""Alembic environment for the registry schema.

Used two ways:

* by the gateway and ``p2psip-admin db upgrade``, which build an ``alembic.config.Config``
  in code and pass an open connection in ``config.attributes["connection"]``;
* by developers running ``alembic`` by hand from the repository root (``alembic.ini``);
  ``alembic -x url=postgresql+psycopg://... upgrade head`` overrides the URL there.
"""

from __future__ import annotations

from alembic import context

from gateway.registry.models import Base
from gateway.registry.store import create_registry_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url", ""
    )


def run_migrations_offline() -> None:
    """Emit the SQL of the migrations to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_registry_engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
