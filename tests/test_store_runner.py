"""Where registry calls run: the worker process (the gateway's default) and the thread."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from typing import Any

import pytest
import pytest_twisted

from gateway.registry.binding import Binding
from gateway.registry.runner import ProcessStoreRunner, ThreadStoreRunner
from gateway.registry.service import LocationService
from gateway.registry.store import LocationStore, RegistryUnavailable

try:
    from tests.location_fixtures import postgres_url, registry_url, sqlite_url  # noqa: F401
except ImportError:
    from location_fixtures import (  # type: ignore[no-redef]  # noqa: F401
        postgres_url,
        registry_url,
        sqlite_url,
    )


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _binding(user: str, ttl: float = 3600) -> Binding:
    aor = f"sip:{user}@example.com"
    return Binding(aor=aor, contact=f"sip:{user}@127.0.0.1:5999", expires=time.time() + ttl)


def _upgraded(url: str) -> str:
    store = LocationStore(url)
    try:
        store.upgrade_schema()
    finally:
        store.close()
    return url


@pytest_twisted.ensureDeferred
async def test_process_runner_runs_calls_in_another_process_in_order(registry_url: str) -> None:
    runner = ProcessStoreRunner(_upgraded(registry_url), _reactor())
    runner.start()
    try:
        assert runner._worker is not None
        assert runner._worker.transport.pid not in (None, os.getpid())
        alice = _binding("alice")
        write = runner.call("write_snapshots", {alice.aor: [alice]}, time.time(), stamp="after")
        load = runner.call("load_live", time.time(), stamp="before")
        (written_at, nothing), (loaded_at, live) = await write, await load
        assert nothing is None
        assert live == {alice.aor: [alice]}
        assert written_at <= loaded_at  # the load began after the commit
    finally:
        await runner.stop()


@pytest_twisted.ensureDeferred
async def test_process_runner_reports_store_errors_as_registry_unavailable(
        sqlite_url: str) -> None:
    runner = ProcessStoreRunner(sqlite_url, _reactor())  # no schema installed
    runner.start()
    try:
        with pytest.raises(RegistryUnavailable, match="db upgrade"):
            await runner.call("load_live", time.time())
        with pytest.raises(RegistryUnavailable, match="no call '_guard'"):
            await runner.call("_guard", "x", None)
        assert await runner.call("schema_is_current") is not None  # still serving
    finally:
        await runner.stop()


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_fails_its_calls_and_is_replaced(sqlite_url: str) -> None:
    runner = ProcessStoreRunner(_upgraded(sqlite_url), _reactor())
    runner.start()
    try:
        first = runner._worker
        assert first is not None
        await runner.call("current_change_id")
        os.kill(first.transport.pid, signal.SIGKILL)
        pending = runner.call("current_change_id")  # may already be on its way
        with pytest.raises(RegistryUnavailable, match="worker process ended"):
            await pending
        await first.ended
        _, change_id = await runner.call("current_change_id")
        assert change_id == 0
        assert runner._worker is not first
    finally:
        await runner.stop()


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_queued_calls_then_ends_the_worker(sqlite_url: str) -> None:
    runner = ProcessStoreRunner(_upgraded(sqlite_url), _reactor())
    runner.start()
    worker = runner._worker
    assert worker is not None
    bob = _binding("bob")
    write = runner.call("write_snapshots", {bob.aor: [bob]}, time.time())
    await runner.stop()
    await write
    assert not worker.alive
    with pytest.raises(RegistryUnavailable, match="not running"):
        await runner.call("current_change_id")
    check = LocationStore(sqlite_url)
    try:
        assert check.load_live(time.time()) == {bob.aor: [bob]}
    finally:
        check.close()


@pytest_twisted.ensureDeferred
async def test_location_service_over_the_worker_process_commits_before_firing(
        registry_url: str) -> None:
    url = _upgraded(registry_url)
    service = LocationService(None, _reactor(), sweep_interval=3600, sync_interval=3600,
                              runner=ProcessStoreRunner(url, _reactor()))
    await service.start()
    try:
        carol = _binding("carol")
        await service.replace(carol.aor, [carol])
        assert service.lookup(carol.aor) == [carol]
        check = LocationStore(url)
        try:
            assert check.load_live(time.time()) == {carol.aor: [carol]}
        finally:
            check.close()
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_thread_runner_stamps_like_the_process_runner(sqlite_url: str) -> None:
    store = LocationStore(_upgraded(sqlite_url))
    runner = ThreadStoreRunner(store, _reactor())
    runner.start()
    try:
        before = time.monotonic_ns()
        stamp, change_id = await runner.call("current_change_id", stamp="after")
        assert change_id == 0 and before <= stamp <= time.monotonic_ns()
    finally:
        await runner.stop()
        store.close()


def test_background_checkpoints_move_the_wal_into_the_database(sqlite_url: str) -> None:
    store = LocationStore(_upgraded(sqlite_url), background_checkpoints=True)
    try:
        assert store.checkpointer is not None
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        now = time.time()
        store.write_snapshots({b.aor: [b] for b in (_binding(f"u{i}") for i in range(300))}, now)
        deadline = time.monotonic() + 10
        while store.checkpointer.frames == 0:
            assert time.monotonic() < deadline, "no checkpoint moved any frame"
            time.sleep(0.05)
    finally:
        store.close()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM bindings").fetchone()[0] == 300


def test_a_plain_store_keeps_sqlite_autocheckpoints(sqlite_url: str) -> None:
    store = LocationStore(_upgraded(sqlite_url))
    try:
        assert store.checkpointer is None
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    finally:
        store.close()
