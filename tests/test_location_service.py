"""The reactor-side location service: memory cache, batched durable writes, sweep, sync."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from gateway.registry.binding import Binding
from gateway.registry.service import LocationService
from gateway.registry.store import LocationStore, RegistryUnavailable

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


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def binding(aor: str, contact: str, ttl: float = 3600, **fields: Any) -> Binding:
    """A binding of ``aor`` that expires ``ttl`` seconds from now."""
    return Binding(aor=aor, contact=contact, expires=time.time() + ttl, **fields)


async def next_turn() -> None:
    """Let the reactor run one iteration."""
    await deferLater(_reactor(), 0, lambda: None)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the reactor run until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await deferLater(_reactor(), 0.01, lambda: None)


class RecordingStore:
    """Wraps a store: records every batch written, and can hold or fail writes."""

    def __init__(self, inner: LocationStore) -> None:
        self.inner = inner
        self.batches: list[dict[str, list[Binding]]] = []
        self.committed = 0
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()
        self.fail_with: Exception | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write_snapshots(self, snapshots: dict[str, list[Binding]], now: float) -> None:
        self.writing.set()
        assert self.gate.wait(30), "test never released the write"
        self.batches.append(dict(snapshots))
        if self.fail_with is not None:
            raise self.fail_with
        self.inner.write_snapshots(snapshots, now)
        self.committed += 1


def make_service(store: Any, **options: Any) -> LocationService:
    """A service with loops slow enough not to interfere unless a test asks."""
    options.setdefault("sweep_interval", 3600)
    options.setdefault("sync_interval", 3600)
    return LocationService(store, _reactor(), **options)


@pytest_twisted.ensureDeferred
async def test_replace_fires_after_commit_and_lookup_sees_only_committed(
    store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    recording = RecordingStore(store)
    service = make_service(recording)
    await service.start()
    try:
        alice = binding("sip:alice@x", "sip:alice@10.0.0.1")
        recording.gate.clear()
        done = service.replace("sip:alice@x", [alice])
        fired: list[int] = []
        done.addCallback(lambda _: fired.append(recording.committed))

        await wait_until(recording.writing.is_set)
        assert not fired
        assert service.current("sip:alice@x") == [alice]
        assert service.lookup("sip:alice@x") == []

        recording.gate.set()
        await done
        assert fired == [1]  # the write had returned when the Deferred fired
        assert service.lookup("sip:alice@x") == [alice]
        assert open_store().list_bindings("sip:alice@x", time.time()) == [alice]
    finally:
        recording.gate.set()
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_a_burst_of_replaces_in_one_turn_is_one_transaction(store: LocationStore) -> None:
    recording = RecordingStore(store)
    service = make_service(recording)
    await service.start()
    try:
        waiters = [
            service.replace(f"sip:u{i}@x", [binding(f"sip:u{i}@x", f"sip:u{i}@h")])
            for i in range(300)
        ]
        results = await DeferredList(waiters, consumeErrors=True)
        assert all(ok for ok, _ in results)
        assert len(recording.batches) == 1
        assert len(recording.batches[0]) == 300
        assert service.aor_count() == 300
        assert service.binding_count() == 300
        assert len(store.load_live(time.time())) == 300
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_a_burst_larger_than_max_batch_is_split_and_every_waiter_fires(
        store: LocationStore) -> None:
    recording = RecordingStore(store)
    service = make_service(recording)
    service.max_batch = 100
    await service.start()
    try:
        waiters = [
            service.replace(f"sip:u{i}@x", [binding(f"sip:u{i}@x", f"sip:u{i}@h")])
            for i in range(250)
        ]
        # a second snapshot of an early AoR moves it behind the others
        waiters.append(service.replace("sip:u0@x", []))
        results = await DeferredList(waiters, consumeErrors=True)
        assert all(ok for ok, _ in results)
        assert [len(batch) for batch in recording.batches] == [100, 100, 50]
        assert "sip:u0@x" in recording.batches[-1]
        assert service.aor_count() == 249
        assert len(store.load_live(time.time())) == 249
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_replaces_during_a_write_share_the_next_transaction(store: LocationStore) -> None:
    recording = RecordingStore(store)
    service = make_service(recording)
    await service.start()
    try:
        recording.gate.clear()
        first = service.replace("sip:a@x", [binding("sip:a@x", "sip:a@1")])
        await wait_until(recording.writing.is_set)
        later = []
        for i in range(20):
            later.append(service.replace(f"sip:u{i}@x", [binding(f"sip:u{i}@x", "sip:u@1")]))
            await next_turn()
        newest = binding("sip:a@x", "sip:a@2")
        later.append(service.replace("sip:a@x", [binding("sip:a@x", "sip:a@1.5")]))
        later.append(service.replace("sip:a@x", [newest]))
        assert service.current("sip:a@x") == [newest]
        recording.gate.set()

        await first
        results = await DeferredList(later, consumeErrors=True)
        assert all(ok for ok, _ in results)
        assert [len(batch) for batch in recording.batches] == [1, 21]
        assert recording.batches[1]["sip:a@x"] == [newest]  # the latest snapshot wins
        assert service.lookup("sip:a@x") == [newest]
        assert store.list_bindings("sip:a@x", time.time()) == [newest]
    finally:
        recording.gate.set()
        await service.stop()


@pytest.mark.parametrize(
    "error", [RegistryUnavailable("disk full"), RuntimeError("bug")], ids=["unavailable", "bug"]
)
@pytest_twisted.ensureDeferred
async def test_failed_commit_errbacks_and_memory_keeps_the_database_state(
    store: LocationStore, error: Exception
) -> None:
    recording = RecordingStore(store)
    service = make_service(recording)
    await service.start()
    try:
        old = binding("sip:a@x", "sip:a@old")
        await service.replace("sip:a@x", [old])

        recording.fail_with = error
        failed = service.replace("sip:a@x", [])
        also_failed = service.replace("sip:b@x", [binding("sip:b@x", "sip:b@1")])
        for waiter in (failed, also_failed):
            with pytest.raises(RegistryUnavailable):
                await waiter
        assert service.lookup("sip:a@x") == [old]
        assert service.current("sip:a@x") == [old]
        assert service.current("sip:b@x") == []
        assert service.binding_count() == 1
        assert service.commit_failures == 1
        assert store.list_bindings(None, time.time()) == [old]

        recording.fail_with = None
        await service.replace("sip:a@x", [])
        assert service.lookup("sip:a@x") == []
        assert store.list_bindings(None, time.time()) == []
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_restart_restores_live_bindings(
    registry_url: str, store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    first = make_service(open_store())
    await first.start()
    live = binding("sip:a@x", "sip:a@live", q=0.5)
    better = binding("sip:a@x", "sip:a@better", q=0.9)
    await first.replace("sip:a@x", [live, better, binding("sip:a@x", "sip:a@dead", ttl=-1)])
    await first.replace("sip:b@x", [binding("sip:b@x", "sip:b@dead", ttl=-5)])
    await first.stop()

    second = make_service(open_store())
    await second.start()
    try:
        assert second.lookup("sip:a@x") == [better, live]
        assert second.current("sip:b@x") == []
        assert second.binding_count() == 2
        assert second.aor_count() == 1
    finally:
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_stop_commits_queued_snapshots(
    store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    service = make_service(open_store())
    await service.start()
    alice = binding("sip:alice@x", "sip:alice@1")
    done = service.replace("sip:alice@x", [alice])
    await service.stop()
    assert done.called
    assert store.list_bindings(None, time.time()) == [alice]
    with pytest.raises(RegistryUnavailable):
        await service.replace("sip:alice@x", [])


@pytest_twisted.ensureDeferred
async def test_sync_picks_up_changes_made_through_other_stores(
    store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    service = make_service(store)
    await service.start()
    try:
        await service.replace("sip:a@x", [binding("sip:a@x", "sip:a@1")])
        assert await service.sync() == set()  # its own writes are not reloaded

        admin = open_store()
        assert admin.remove_aor("sip:a@x", time.time()) == 1
        other_gateway = open_store()
        bob = binding("sip:bob@x", "sip:bob@1")
        other_gateway.write_snapshots({"sip:bob@x": [bob]}, time.time())

        assert await service.sync() == {"sip:a@x", "sip:bob@x"}
        assert service.lookup("sip:a@x") == []
        assert service.current("sip:a@x") == []
        assert service.lookup("sip:bob@x") == [bob]
        assert service.binding_count() == 1
        assert await service.sync() == set()
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_sync_loop_makes_admin_removals_visible(
    store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    service = make_service(store, sync_interval=0.02)
    await service.start()
    try:
        await service.replace("sip:a@x", [binding("sip:a@x", "sip:a@1")])
        open_store().remove_aor("sip:a@x", time.time())
        await wait_until(lambda: service.lookup("sip:a@x") == [])
        assert service.aor_count() == 0
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_sweep_deletes_expired_bindings_from_database_and_memory(
    store: LocationStore,
) -> None:
    now = [time.time()]
    service = make_service(store, clock=lambda: now[0])
    await service.start()
    try:
        short = Binding("sip:a@x", "sip:a@short", expires=now[0] + 10)
        long = Binding("sip:a@x", "sip:a@long", expires=now[0] + 100)
        await service.replace("sip:a@x", [short, long])
        now[0] += 20
        assert service.lookup("sip:a@x") == [long]  # expired bindings are never served
        assert await service.sweep() == ["sip:a@x"]
        assert service.binding_count() == 1
        assert store.list_bindings(None, 0) == [long]
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_sweep_is_logged_and_the_loop_goes_on(store: LocationStore) -> None:
    calls: list[float] = []

    class FlakyStore(RecordingStore):
        def delete_expired(self, now: float) -> list[str]:
            calls.append(now)
            if len(calls) == 1:
                raise RuntimeError("first sweep fails")
            return self.inner.delete_expired(now)

    service = make_service(FlakyStore(store), sweep_interval=0.02)
    await service.start()
    try:
        await wait_until(lambda: len(calls) >= 3)
    finally:
        await service.stop()
    assert len(calls) >= 3


@pytest_twisted.ensureDeferred
async def test_start_fails_cleanly_without_schema(sqlite_url: str) -> None:
    bare = LocationStore(sqlite_url)
    service = make_service(bare)
    try:
        with pytest.raises(RegistryUnavailable, match="db upgrade"):
            await service.start()
        with pytest.raises(RegistryUnavailable):
            await service.replace("sip:a@x", [])
    finally:
        bare.close()


@pytest_twisted.ensureDeferred
async def test_long_sync_outage_reloads_everything(
    store: LocationStore, open_store: Callable[[], LocationStore]
) -> None:
    now = [time.time()]
    service = make_service(store, clock=lambda: now[0], change_retention=60)
    await service.start()
    try:
        await service.replace("sip:a@x", [binding("sip:a@x", "sip:a@1")])
        other = open_store()
        other.remove_aor("sip:a@x", now[0])
        other.prune_changes(now[0] + 1)  # the change log lost the removal
        now[0] += 120
        assert await service.sync() == {"sip:a@x"}
        assert service.lookup("sip:a@x") == []
    finally:
        await service.stop()


def test_current_prefers_queued_over_in_flight_over_committed() -> None:
    service = LocationService(None, _reactor())  # type: ignore[arg-type]
    committed = [binding("sip:a@x", "sip:a@c")]
    in_flight = [binding("sip:a@x", "sip:a@f")]
    queued = [binding("sip:a@x", "sip:a@q")]
    service._committed["sip:a@x"] = committed
    assert service.current("sip:a@x") == committed
    service._inflight["sip:a@x"] = in_flight
    assert service.current("sip:a@x") == in_flight
    service._queued["sip:a@x"] = queued
    assert service.current("sip:a@x") == queued
    assert service.lookup("sip:a@x") == committed


@pytest_twisted.ensureDeferred
async def test_committed_bindings_are_not_tracked_by_the_garbage_collector(
        store: LocationStore) -> None:
    import gc

    service = make_service(store)
    await service.start()
    try:
        await service.replace("sip:a@x", [binding("sip:a@x", "sip:a@h", path=("<sip:p@x>",)),
                                          binding("sip:a@x", "sip:a@g", q=0.5)])
        gc.collect()
        gc.collect()  # CPython untracks nested tuples one level per pass
        entry = service._committed["sip:a@x"]
        assert not gc.is_tracked(entry) and not any(gc.is_tracked(b) for b in entry)
        assert [b.contact for b in service.lookup("sip:a@x")] == ["sip:a@h", "sip:a@g"]
        assert all(isinstance(b, Binding) for b in service.current("sip:a@x"))
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_group_commit_spaces_transactions_while_registrations_are_concurrent(
        store: LocationStore) -> None:
    recording = RecordingStore(store)
    service = make_service(recording, commit_interval=0.3)
    await service.start()
    try:
        start = time.monotonic()
        await DeferredList([service.replace(f"sip:g{i}@x", [binding(f"sip:g{i}@x", "sip:h")])
                            for i in range(2)])
        late = [service.replace("sip:g2@x", [binding("sip:g2@x", "sip:h")]),
                service.replace("sip:g3@x", [binding("sip:g3@x", "sip:h")])]
        await DeferredList(late)
        assert time.monotonic() - start >= 0.29
        assert [sorted(batch) for batch in recording.batches] == [
            ["sip:g0@x", "sip:g1@x"], ["sip:g2@x", "sip:g3@x"]]
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_group_commit_does_not_delay_one_registration_at_a_time(
        store: LocationStore) -> None:
    recording = RecordingStore(store)
    service = make_service(recording, commit_interval=1.0)
    await service.start()
    try:
        start = time.monotonic()
        for i in range(3):
            await service.replace(f"sip:s{i}@x", [binding(f"sip:s{i}@x", "sip:h")])
        assert time.monotonic() - start < 0.9
        assert len(recording.batches) == 3
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_by_contact_finds_the_live_binding_and_forgets_removed_ones(
        store: LocationStore) -> None:
    service = make_service(store)
    await service.start()
    try:
        await service.replace("sip:a@x", [binding("sip:a@x", "sip:a@10.0.0.1:5060",
                                                  received="127.0.0.1:4000")])
        found = service.by_contact("sip:a@10.0.0.1:5060")
        assert found is not None and found.received == "127.0.0.1:4000"
        assert service.by_contact("sip:other@10.0.0.1:5060") is None
        await service.replace("sip:a@x", [])
        assert service.by_contact("sip:a@10.0.0.1:5060") is None
    finally:
        await service.stop()
