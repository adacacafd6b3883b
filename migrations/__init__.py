"""Alembic environment of the registry schema (installed as ``gateway.migrations``)."""
