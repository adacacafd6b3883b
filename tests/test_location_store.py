"""The blocking registry store, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from gateway.registry.binding import Binding
from gateway.registry.models import Base
from gateway.registry.store import LocationStore, RegistryUnavailable, migrations_directory

try:
    from tests.location_fixtures import (  # noqa: F401
        open_store,
        postgres_url,
        registry_url,
        sqlite_url,
        store,
    )
except ImportError:
    from location_fixtures import (  # type: ignore[no-redef]  # noqa: F401
        open_store,
        postgres_url,
        registry_url,
        sqlite_url,
        store,
    )

REPO = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.0
TABLES = {"bindings", "users", "overlay_nodes", "overlay_pins", "registry_changes",
          "alembic_version"}


def binding(aor: str, contact: str, expires: float = NOW + 3600, **fields: object) -> Binding:
    """A binding of ``aor`` with every field but those given left at its default."""
    return Binding(aor=aor, contact=contact, expires=expires, **fields)  # type: ignore[arg-type]


def test_upgrade_creates_the_tables_and_is_idempotent(registry_url: str) -> None:
    location_store = LocationStore(registry_url)
    try:
        assert not location_store.schema_is_current()
        location_store.upgrade_schema()
        assert location_store.schema_is_current()
        location_store.upgrade_schema()
        assert location_store.schema_is_current()
    finally:
        location_store.close()
    engine = create_engine(registry_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_models_match_the_migrations(store: LocationStore, registry_url: str) -> None:
    engine = create_engine(registry_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_sqlite_registry_is_created_with_wal_and_durable_commits(sqlite_url: str) -> None:
    location_store = LocationStore(sqlite_url)
    try:
        location_store.upgrade_schema()
        database = Path(sqlite_url.removeprefix("sqlite:///"))
        assert database.is_file()
        with location_store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        location_store.close()


def test_write_snapshots_replaces_the_bindings_of_each_given_aor(store: LocationStore) -> None:
    store.write_snapshots(
        {
            "sip:alice@example.com": [
                binding("sip:alice@example.com", "sip:alice@10.0.0.1"),
                binding("sip:alice@example.com", "sip:alice@10.0.0.2"),
            ],
            "sip:bob@example.com": [binding("sip:bob@example.com", "sip:bob@10.0.0.3")],
        },
        NOW,
    )
    store.write_snapshots(
        {"sip:alice@example.com": [binding("sip:alice@example.com", "sip:alice@10.0.0.9")]}, NOW
    )
    live = store.load_live(NOW)
    assert [b.contact for b in live["sip:alice@example.com"]] == ["sip:alice@10.0.0.9"]
    assert [b.contact for b in live["sip:bob@example.com"]] == ["sip:bob@10.0.0.3"]

    store.write_snapshots({"sip:alice@example.com": []}, NOW)
    assert set(store.load_live(NOW)) == {"sip:bob@example.com"}


def test_write_snapshots_round_trips_every_field(store: LocationStore) -> None:
    original = Binding(
        aor="sip:alice@example.com",
        contact="sip:alice@192.0.2.10:5070;transport=tcp;ob",
        expires=NOW + 600.25,
        q=0.7,
        call_id="a84b4c76e66710@pc33",
        cseq=314159,
        path=("<sip:edge1.example.com;lr>", '"Edge, two" <sip:edge2.example.com;lr>'),
        received="198.51.100.7:40022",
        transport="tcp",
        instance_id="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
        reg_id=1,
        user_agent="Softphone/1.0",
        source="overlay",
        registered_at=NOW - 5,
    )
    store.write_snapshots({original.aor: [original]}, NOW)
    [loaded] = store.load_live(NOW)[original.aor]
    assert loaded == original
    assert loaded.registered_at == original.registered_at
    assert loaded.path == original.path


def test_write_snapshots_commits_a_batch_of_1000_aors_in_one_go(store: LocationStore) -> None:
    before = store.current_change_id()
    snapshots = {
        f"sip:user{i}@example.com": [
            binding(f"sip:user{i}@example.com", f"sip:user{i}@10.0.{i // 250}.{i % 250}:{port}")
            for port in (5060, 5062)
        ]
        for i in range(1000)
    }
    started = time.monotonic()
    store.write_snapshots(snapshots, NOW)
    store.write_snapshots(snapshots, NOW + 1)
    elapsed = time.monotonic() - started

    live = store.load_live(NOW)
    assert len(live) == 1000
    assert sum(len(bindings) for bindings in live.values()) == 2000
    newest, changed = store.changes_since(before)
    assert changed == set(snapshots)
    assert newest - before == 2000  # one change-log row per AoR per batch
    assert elapsed < 20, f"two batches of 1000 AoRs took {elapsed:.1f}s"


def test_a_failing_batch_changes_nothing(store: LocationStore) -> None:
    store.write_snapshots({"sip:a@x": [binding("sip:a@x", "sip:a@1")]}, NOW)
    before = store.current_change_id()
    broken = binding("sip:b@x", None)  # type: ignore[arg-type]  # violates NOT NULL
    with pytest.raises(RegistryUnavailable, match="cannot write"):
        store.write_snapshots({"sip:a@x": [], "sip:b@x": [broken]}, NOW)
    assert [b.contact for b in store.load_live(NOW)["sip:a@x"]] == ["sip:a@1"]
    assert store.current_change_id() == before


def test_duplicate_contacts_in_a_snapshot_keep_the_last(store: LocationStore) -> None:
    store.write_snapshots(
        {"sip:a@x": [binding("sip:a@x", "sip:a@1", q=0.1), binding("sip:a@x", "sip:a@1", q=0.9)]},
        NOW,
    )
    assert [b.q for b in store.load_live(NOW)["sip:a@x"]] == [0.9]


def test_load_live_drops_expired_bindings_and_sorts_by_q(store: LocationStore) -> None:
    store.write_snapshots(
        {
            "sip:a@x": [
                binding("sip:a@x", "sip:a@low", q=0.1),
                binding("sip:a@x", "sip:a@old", expires=NOW - 1),
                binding("sip:a@x", "sip:a@high", q=0.9),
                binding("sip:a@x", "sip:a@edge", expires=NOW),
            ],
            "sip:gone@x": [binding("sip:gone@x", "sip:gone@1", expires=NOW - 60)],
        },
        NOW,
    )
    live = store.load_live(NOW)
    assert list(live) == ["sip:a@x"]
    assert [b.contact for b in live["sip:a@x"]] == ["sip:a@high", "sip:a@low"]


def test_delete_expired_removes_rows_and_logs_their_aors(store: LocationStore) -> None:
    store.write_snapshots(
        {
            "sip:a@x": [binding("sip:a@x", "sip:a@1", expires=NOW + 10)],
            "sip:b@x": [
                binding("sip:b@x", "sip:b@1", expires=NOW + 100),
                binding("sip:b@x", "sip:b@2", expires=NOW + 5),
            ],
        },
        NOW,
    )
    before = store.current_change_id()
    assert store.delete_expired(NOW + 20) == ["sip:a@x", "sip:b@x"]
    assert store.changes_since(before)[1] == {"sip:a@x", "sip:b@x"}
    assert [b.contact for b in store.list_bindings(None, 0)] == ["sip:b@1"]
    assert store.delete_expired(NOW + 20) == []
    assert store.current_change_id() == before + 2


def test_changes_since_reports_aors_changed_after_an_id(
    store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    assert store.current_change_id() == 0
    assert store.changes_since(0) == (0, set())
    store.write_snapshots({"sip:a@x": [binding("sip:a@x", "sip:a@1")]}, NOW)
    first = store.current_change_id()
    assert first > 0
    store.write_snapshots({"sip:b@x": [], "sip:c@x": []}, NOW)
    newest, changed = store.changes_since(first)
    assert newest == store.current_change_id() > first
    assert changed == {"sip:b@x", "sip:c@x"}
    assert store.changes_since(newest) == (newest, set())

    other = open_store()
    assert other.changes_since(0)[1] == {"sip:a@x", "sip:b@x", "sip:c@x"}
    # A store leaves its own changes out on request, but still reports the newest id.
    assert store.changes_since(0, exclude_own=True) == (newest, set())
    other.remove_aor("sip:a@x", NOW)
    assert store.changes_since(newest, exclude_own=True)[1] == {"sip:a@x"}


def test_change_ids_keep_increasing_after_pruning_the_whole_log(store: LocationStore) -> None:
    store.write_snapshots({"sip:a@x": [], "sip:b@x": []}, NOW)
    last_seen = store.current_change_id()
    assert store.prune_changes(NOW + 1) == 2
    assert store.changes_since(last_seen) == (last_seen, set())
    store.write_snapshots({"sip:c@x": []}, NOW + 2)
    assert store.changes_since(last_seen) == (last_seen + 1, {"sip:c@x"})


def test_prune_changes_keeps_recent_entries(store: LocationStore) -> None:
    store.write_snapshots({"sip:old@x": []}, NOW)
    store.write_snapshots({"sip:new@x": []}, NOW + 100)
    assert store.prune_changes(NOW + 50) == 1
    assert store.changes_since(0)[1] == {"sip:new@x"}


def test_list_bindings_and_remove_aor(store: LocationStore) -> None:
    store.write_snapshots(
        {
            "sip:a@x": [binding("sip:a@x", "sip:a@1"), binding("sip:a@x", "sip:a@2", NOW - 1)],
            "sip:b@x": [binding("sip:b@x", "sip:b@1")],
        },
        NOW,
    )
    assert [b.contact for b in store.list_bindings(None, NOW)] == ["sip:a@1", "sip:b@1"]
    assert [b.contact for b in store.list_bindings("sip:b@x", NOW)] == ["sip:b@1"]
    assert store.list_bindings("sip:nobody@x", NOW) == []

    before = store.current_change_id()
    assert store.remove_aor("sip:a@x", NOW) == 2  # the expired row goes too
    assert store.changes_since(before)[1] == {"sip:a@x"}
    assert store.remove_aor("sip:a@x", NOW) == 0
    assert store.current_change_id() == before + 1


def test_load_aors_returns_every_asked_aor(store: LocationStore) -> None:
    store.write_snapshots(
        {"sip:a@x": [binding("sip:a@x", "sip:a@1"), binding("sip:a@x", "sip:a@2", NOW - 1)]},
        NOW,
    )
    loaded = store.load_aors(["sip:a@x", "sip:none@x"], NOW)
    assert {aor: [b.contact for b in bs] for aor, bs in loaded.items()} == {
        "sip:a@x": ["sip:a@1"],
        "sip:none@x": [],
    }
    assert len(store.load_aors(["sip:a@x"])["sip:a@x"]) == 2
    many = [f"sip:u{i}@x" for i in range(1500)] + ["sip:a@x"]
    assert len(store.load_aors(many, NOW)) == 1501


def test_unreachable_database_raises_registry_unavailable() -> None:
    location_store = LocationStore("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(RegistryUnavailable, match="cannot load the bindings"):
            location_store.load_live(NOW)
    finally:
        location_store.close()


def test_missing_schema_error_suggests_the_upgrade(registry_url: str) -> None:
    location_store = LocationStore(registry_url)
    try:
        with pytest.raises(RegistryUnavailable, match="p2psip-admin db upgrade"):
            location_store.list_bindings(None, NOW)
    finally:
        location_store.close()


def test_invalid_url_raises_registry_unavailable() -> None:
    with pytest.raises(RegistryUnavailable, match="URL"):
        LocationStore("not a url")


def test_migrations_render_offline_sql(sqlite_url: str) -> None:
    buffer = io.StringIO()
    config = Config(output_buffer=buffer)
    config.set_main_option("script_location", str(migrations_directory()))
    config.set_main_option("sqlalchemy.url", "postgresql+psycopg://u@h/db")
    command.upgrade(config, "head", sql=True)
    sql = buffer.getvalue()
    assert "CREATE TABLE bindings" in sql
    assert "CREATE TABLE registry_changes" in sql


def test_alembic_ini_upgrades_a_database_by_hand(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'by-hand.sqlite3'}"
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
    finally:
        engine.dispose()


def test_a_closed_store_reconnects_on_next_use(store: LocationStore) -> None:
    store.write_snapshots({"sip:a@x": [binding("sip:a@x", "sip:a@1")]}, NOW)
    store.close()  # e.g. before a daemon forks: no connection may cross it
    assert [b.contact for b in store.list_bindings("sip:a@x", NOW)] == ["sip:a@1"]
