"""Fixtures for the registry tests: a fresh SQLite file or PostgreSQL database per test.

PostgreSQL tests create a uniquely named database through ``P2PSIP_TEST_POSTGRES_URL``
(default: the ``test`` database on 127.0.0.1:5432 as ``postgres``) and drop it afterwards.
When PostgreSQL cannot be reached they are skipped, or fail when
``P2PSIP_REQUIRE_POSTGRES=1`` (as in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import unavailable
from sqlalchemy.engine import URL, make_url

from gateway.registry.store import LocationStore

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _connect(url: URL) -> Any:
    import psycopg

    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname=url.database or "postgres",
        autocommit=True,
        connect_timeout=3,
    )


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """URL of a not yet existing SQLite registry in a not yet existing directory."""
    return f"sqlite:///{tmp_path / 'data' / 'registry.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    admin_url = make_url(os.environ.get("P2PSIP_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    try:
        admin = _connect(admin_url)
    except Exception as exc:
        unavailable(f"PostgreSQL at {admin_url.render_as_string()} is unreachable: {exc}",
                    "P2PSIP_REQUIRE_POSTGRES")
    name = f"p2psip_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with _connect(admin_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty registry database, once for SQLite and once for PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(registry_url: str) -> Iterator[LocationStore]:
    """A store on an empty, upgraded registry; closed after the test."""
    location_store = LocationStore(registry_url)
    location_store.upgrade_schema()
    yield location_store
    location_store.close()


@pytest.fixture
def open_store(registry_url: str) -> Iterator[Callable[[], LocationStore]]:
    """Factory of further stores on the same registry (e.g. another gateway, the admin)."""
    opened: list[LocationStore] = []

    def factory() -> LocationStore:
        opened.append(LocationStore(registry_url))
        return opened[-1]

    yield factory
    for location_store in opened:
        location_store.close()
