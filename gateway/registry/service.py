"""The location service: bindings in memory for lookups, written durably in batches.

The registrar asks :meth:`LocationService.current` for the bindings to build its next
decision on, hands the new set to :meth:`LocationService.replace`, and sends its 200 OK
only when the returned Deferred fires, i.e. once the transaction holding that set has
committed. Lookups (:meth:`LocationService.lookup`) see committed bindings only, so what
the proxy routes to is always what the database holds.

All database work runs through a :mod:`store runner <gateway.registry.runner>` (a worker
thread, or a worker process in the gateway), never on the reactor thread. One call runs
at a time; a sync never lets data it loaded overwrite a commit that happened after that
load began.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.registry.binding import Binding
from gateway.registry.change_feed import ChangeFeed
from gateway.registry.runner import Stamp, StoreRunner, ThreadStoreRunner
from gateway.registry.site import SiteView
from gateway.registry.store import LocationStore, RegistryUnavailable

__all__ = ["LocationService"]

#: Notified changes whose sync delay is measured at once (more are synced, unmeasured).
MAX_FEED_STAMPS = 10_000

#: Database reads for AoRs memory does not know, in flight at most (shared registry).
MAX_READ_THROUGH = 16

def _by_q(bindings: Iterable[Binding]) -> list[Binding]:
    bindings = list(bindings)
    if len(bindings) > 1:
        bindings.sort(key=lambda b: -b.q)
    return bindings


# The committed bindings are held as plain tuples: CPython's collector stops tracking a
# tuple of plain values (not a NamedTuple), so a registry of hundreds of thousands of
# bindings adds nothing to the collector's pauses (gateway/app/gc_policy.py).
Frozen = tuple[tuple[Any, ...], ...]
_EXPIRES = Binding._fields.index("expires")
_CONTACT = Binding._fields.index("contact")


def _freeze(bindings: Iterable[Binding]) -> Frozen:
    return tuple(tuple(b) for b in _by_q(bindings))


def _thaw(entry: Iterable[tuple[Any, ...]]) -> list[Binding]:
    return [Binding._make(t) for t in entry]


class LocationService:
    """In-memory registry cache in front of a :class:`LocationStore`, with batched writes.

    ``reactor`` must provide ``IReactorTime`` and ``IReactorFromThreads``. The store's
    methods run through ``runner`` (default: one worker thread calling ``store``);
    the gateway passes a :class:`~gateway.registry.runner.ProcessStoreRunner`.
    Every ``sweep_interval`` seconds expired bindings are deleted (database and memory);
    every ``sync_interval`` seconds the change log is polled and AoRs changed by someone
    else (``p2psip-admin``, another gateway sharing the database) are reloaded. Change-log
    entries older than ``change_retention`` seconds are pruned; a gateway whose sync has
    failed for half that long reloads everything once the database is back.
    """

    log = Logger()

    def __init__(
        self,
        store: LocationStore | None,
        reactor: Any,
        sweep_interval: float = 30.0,
        sync_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        change_retention: float = 3600.0,
        max_batch: int = 500,
        runner: StoreRunner | None = None,
        commit_interval: float = 0.0,
        on_commit: Callable[[float], None] | None = None,
        change_feed: ChangeFeed | None = None,
        heartbeat_interval: float = 5.0,
        name: str = "",
        site_uri: str = "",
    ) -> None:
        """``on_commit`` is told the duration of every committed transaction;
        ``change_feed`` (a shared PostgreSQL registry) says at once when another writer
        committed, and a sync follows then rather than at the next poll. Every
        ``heartbeat_interval`` seconds the gateway (``name``, for people) says in the
        registry that it is alive (reached by the others at ``site_uri``), and learns
        which gateways of the site are (:attr:`site`)."""
        self._runner = runner if runner is not None else ThreadStoreRunner(store, reactor)
        #: Most AoRs written in one transaction.
        self.max_batch = max_batch
        #: Least time between the starts of two transactions while registrations arrive
        #: concurrently (group commit): each commit then carries more AoRs, which saves
        #: the writer most of its per-transaction work. After a transaction of a single
        #: AoR (an idle registry, or one client at a time) the next starts at once.
        self.commit_interval = commit_interval
        self._last_flush = float("-inf")
        self._last_batch_size = 0
        self._reactor = reactor
        self._sweep_interval = sweep_interval
        self._sync_interval = sync_interval
        self._clock = clock
        self._retention = change_retention

        self._committed: dict[str, Frozen] = {}
        # Contact URI -> AoR of the committed binding with that contact (the newest).
        self._by_contact: dict[str, str] = {}
        self._count = 0
        # Snapshots waiting for the next transaction (latest per AoR) and their callers.
        self._queued: dict[str, list[Binding]] = {}
        self._queued_waiters: dict[str, list[Deferred[None]]] = {}
        # The batch of the transaction under way.
        self._inflight: dict[str, list[Binding]] = {}
        self._writing = False
        self._flush_call: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []

        self._running = False
        self._loops: list[tuple[LoopingCall, Deferred[Any]]] = []
        self._change_id = 0
        self._last_sync_ok = 0.0
        # Commits during a sync, by AoR, with their runner stamps (monotonic ns): a load
        # must not overwrite an AoR whose commit came after the load began.
        self._committed_during_sync: dict[str, int] | None = None
        self.change_feed = change_feed
        #: This gateway in the registry's ``site_gateways`` (random per run).
        self.gateway_id = uuid.uuid4().hex
        self.name = name
        self.site_uri = site_uri
        self._heartbeat_interval = heartbeat_interval
        self._started_at = 0.0
        #: The site's gateways as the last heartbeat read them, and who holds which flow.
        self.site_view = SiteView(self.gateway_id, clock, self._read_site)
        # One sync at a time; a request during one runs another right after it.
        self._sync_busy = False
        self._sync_again = False
        self._pushed_sync: Deferred[None] | None = None
        self._feed_stamps: list[float] = []  # when the changes notified were written
        #: Seconds from another gateway's commit to this one's memory having it, for
        #: the latest notified changes (status); each one also goes to on_sync_delay.
        self.sync_delays: deque[float] = deque(maxlen=1000)
        self.on_sync_delay: Callable[[float], None] | None = None
        self._reading_through = 0

        #: Called with an AoR whenever its committed bindings change (the overlay mirror,
        #: the upstream registrations) ...
        self.watchers: list[Callable[[str], None]] = []
        #: ... except when the change is only that bindings ran out (the sweep): those
        #: who care about that too (the upstream) are here as well. The mirror is not:
        #: a published record expires with its contacts by itself.
        self.expiry_watchers: list[Callable[[str], None]] = []
        #: Called with each AoR whose overlay publication falls to this gateway when
        #: the site changes (:meth:`publishes`; the gateway that published it is gone).
        self.publisher_watchers: list[Callable[[str], None]] = []
        #: Transactions committed and failed so far (for status reporting).
        self.last_commit_seconds = 0.0
        self.last_error = ""
        #: Called with each transaction's duration (seconds) once it committed.
        self.on_commit = on_commit
        self.commits = 0
        self.commit_failures = 0

    # -- queries (reactor thread, never block) ---------------------------------------

    def read_through(self, aor: str) -> Deferred[list[Binding]] | None:
        """The live bindings of ``aor`` read from the database, when it is shared (a
        change feed is set) — another gateway may have committed them a moment ago; a
        difference from memory makes a sync follow at once. None when not shared."""
        if (self.change_feed is None or not self._running
                or self._reading_through >= MAX_READ_THROUGH):
            # Past the bound (a flood of requests for unknown users) memory answers:
            # the database calls queue behind the registrations' commits.
            return None
        now = self._clock()
        self._reading_through += 1

        def compare(loaded: dict[str, list[Binding]]) -> list[Binding]:
            self._reading_through -= 1
            fresh = [b for b in loaded.get(aor, []) if b.is_live(now)]
            if fresh:
                self.changed_elsewhere()
            return fresh

        def unavailable(failure: Failure) -> list[Binding]:
            self._reading_through -= 1
            self.log.warn("Registry read for {aor} failed, answering from memory: {error}",
                          aor=aor, error=failure.getErrorMessage())
            return []

        return self._call("load_aors", [aor], now).addCallbacks(compare, unavailable)

    @property
    def site(self) -> list[dict[str, Any]]:
        """The site's gateways as the last heartbeat read them (id, name, uri, state…)."""
        return self.site_view.gateways

    def publishes(self, aor: str) -> bool:
        """Whether this gateway publishes ``aor`` in the overlay for the site (one
        gateway per AoR, see :meth:`SiteView.publisher`)."""
        if len(self.site_view.up) == 1:
            return True  # alone: no owners to sort (the REGISTER path of one gateway)
        return self.site_view.publisher(aor, self._owners(aor)) == self.gateway_id

    def _owners(self, aor: str) -> list[str]:
        live = sorted(self.lookup(aor), key=lambda b: (b.registered_at, b.contact),
                      reverse=True)
        return [b.owner for b in live if b.owner]

    def _site_read(self, gateways: list[dict[str, Any]]) -> None:
        """A new view of the site: AoRs another gateway published until now that fall to
        this one (that gateway went down) are handed to :attr:`publisher_watchers`."""
        before = self.site_view.up
        self.site_view.update(gateways)
        after = self.site_view.up
        if before == after or not self.publisher_watchers:
            return
        me, view = self.gateway_id, self.site_view
        taken = []
        for aor in self._committed:
            owners = self._owners(aor)
            if view.publisher(aor, owners, after) == me != view.publisher(aor, owners, before):
                taken.append(aor)
        if taken:
            self.log.info("Registry: {n} AoR(s) now published by this gateway (the site "
                          "changed)", n=len(taken))
        for aor in taken:
            for watcher in self.publisher_watchers:
                watcher(aor)

    def flow_lost(self, binding: Binding) -> bool:
        """Whether ``binding`` was registered at another gateway of the site that is
        down: its phone's NAT binding or connection went with that gateway."""
        return self.site_view.flow_lost(binding.owner, self.site_uri)

    def holder_route(self, binding: Binding) -> str | None:
        """The Route value to the gateway of the site that holds ``binding``'s flow,
        when that is another gateway and it is up; None: reach it from here."""
        return self.site_view.holder_route(binding.owner)

    def current(self, aor: str) -> list[Binding]:
        """The newest bindings of ``aor``, committed or not: the registrar's input."""
        for layer in (self._queued, self._inflight):
            if aor in layer:
                return list(layer[aor])
        return _thaw(self._committed.get(aor, ()))

    def lookup(self, aor: str, now: float | None = None) -> list[Binding]:
        """Committed, live bindings of ``aor``, highest q first."""
        if now is None:
            now = self._clock()
        return [Binding._make(t) for t in self._committed.get(aor, ()) if t[_EXPIRES] > now]

    def by_contact(self, contact: str, now: float | None = None) -> Binding | None:
        """The committed, live binding registered with this Contact URI (exactly as
        stored), if any: how an in-dialog request to a phone's Contact finds the flow
        the phone registered from."""
        aor = self._by_contact.get(contact)
        if aor is None:
            return None
        for binding in self.lookup(aor, now):
            if binding.contact == contact:
                return binding
        return None

    def snapshot(self, now: float | None = None) -> dict[str, list[Binding]]:
        """Committed, live bindings of every AoR (e.g. to republish into the overlay)."""
        if now is None:
            now = self._clock()
        result = {}
        for aor, entry in self._committed.items():
            live = [Binding._make(t) for t in entry if t[_EXPIRES] > now]
            if live:
                result[aor] = live
        return result

    def pending_writes(self) -> int:
        """AoRs queued or being written (0 when the registry is idle)."""
        return len(self._queued) + len(self._inflight)

    def binding_count(self) -> int:
        """Committed bindings held in memory (expired ones leave at the next sweep)."""
        return self._count

    def aor_count(self) -> int:
        """AoRs with at least one committed binding in memory."""
        return len(self._committed)

    # -- writes ----------------------------------------------------------------------

    def replace(self, aor: str, bindings: Iterable[Binding]) -> Deferred[None]:
        """Make ``bindings`` the bindings of ``aor`` (an empty list removes them all).

        The Deferred fires once the transaction containing this snapshot has committed;
        it errbacks with :class:`RegistryUnavailable` if that transaction failed, in
        which case the memory keeps the bindings the database still has.
        """
        if not self._running:
            return fail(RegistryUnavailable("the location service is not running"))
        waiter: Deferred[None] = Deferred()
        self._queued.pop(aor, None)  # re-insert: a batch takes the oldest AoRs first
        self._queued[aor] = list(bindings)
        self._queued_waiters.setdefault(aor, []).append(waiter)
        self._schedule_flush()
        return waiter

    def _schedule_flush(self) -> None:
        if self._writing or self._flush_call is not None or not self._queued:
            return
        # Next reactor turn at the earliest: every replace() of this turn goes into one
        # transaction; later if the last one began less than commit_interval ago.
        wait = 0.0
        if self._last_batch_size > 1:
            wait = max(0.0, self._last_flush + self.commit_interval - self._reactor.seconds())
        self._flush_call = self._reactor.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._writing or not self._queued:
            return
        if len(self._queued) <= self.max_batch:
            batch, by_aor = self._queued, self._queued_waiters
            self._queued, self._queued_waiters = {}, {}
        else:
            # Bounded transactions keep each commit, and the burst of responses that
            # follows it, short; the rest goes in the next transaction.
            aors = list(itertools.islice(self._queued, self.max_batch))
            batch = {aor: self._queued.pop(aor) for aor in aors}
            by_aor = {aor: self._queued_waiters.pop(aor) for aor in aors}
        waiters = [waiter for group in by_aor.values() for waiter in group]
        self._last_flush = self._reactor.seconds()
        self._last_batch_size = len(batch)
        self._inflight = batch
        self._writing = True
        d = self._runner.call("write_snapshots", batch, self._clock(), stamp="after")
        d.addCallbacks(
            self._batch_committed,
            self._batch_failed,
            callbackArgs=(batch, waiters),
            errbackArgs=(batch, waiters),
        )

    def _batch_committed(
        self,
        stamped: tuple[int, None],
        batch: dict[str, list[Binding]],
        waiters: list[Deferred[None]],
    ) -> None:
        for aor, bindings in batch.items():
            self._set_committed(aor, bindings)
        if self._committed_during_sync is not None:
            self._committed_during_sync.update(dict.fromkeys(batch, stamped[0]))
        self.commits += 1
        self.last_commit_seconds = self._reactor.seconds() - self._last_flush
        if self.on_commit is not None:
            self.on_commit(self.last_commit_seconds)
        self.last_error = ""
        self._inflight, self._writing = {}, False
        for waiter in waiters:
            waiter.callback(None)
        self._write_done()

    def _batch_failed(
        self, failure: Failure, batch: dict[str, list[Binding]], waiters: list[Deferred[None]]
    ) -> None:
        self.commit_failures += 1
        error = failure.value
        self.last_error = failure.getErrorMessage()
        if isinstance(error, RegistryUnavailable):
            self.log.error(
                "Registry write of {aors} AoR(s) failed: {error}", aors=len(batch), error=error
            )
        else:
            self.log.failure("Registry write of {aors} AoR(s) failed", failure, aors=len(batch))
            error = RegistryUnavailable(f"registry write failed: {error!r}")
        self._inflight, self._writing = {}, False
        for waiter in waiters:
            waiter.errback(Failure(error))
        self._write_done()

    def _write_done(self) -> None:
        # After the callers' callbacks, which may have queued more.
        if self._queued:
            self._schedule_flush()
        else:
            idle, self._idle_waiters = self._idle_waiters, []
            for d in idle:
                d.callback(None)

    def _set_committed(self, aor: str, bindings: list[Binding], *,
                       expired_only: bool = False) -> None:
        old = self._committed.pop(aor, None)
        if old:
            self._count -= len(old)
            for entry in old:
                if self._by_contact.get(entry[_CONTACT]) == aor:
                    del self._by_contact[entry[_CONTACT]]
        if bindings:
            self._committed[aor] = _freeze(bindings)
            self._count += len(bindings)
            for binding in bindings:
                self._by_contact[binding.contact] = aor
        for watcher in self.expiry_watchers if expired_only else self.watchers:
            try:
                watcher(aor)
            except Exception:
                self.log.failure("a registry watcher failed on {aor}", aor=aor)

    def _drained(self) -> Deferred[None]:
        if not self._writing and not self._queued:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start the store runner, load the live bindings and start sweep and sync."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self._running:
            raise RuntimeError("the location service is already running")
        self._runner.start()
        try:
            # Id first: a change racing with the load is then replayed by the next sync.
            self._change_id = await self._call("current_change_id")
            now = self._clock()
            live = await self._call("load_live", now)
        except BaseException:
            await self._runner.stop()
            raise
        self._committed, self._count, self._by_contact = {}, 0, {}
        for aor, bindings in live.items():
            self._set_committed(aor, bindings)
        self._last_sync_ok = now
        self._running = True
        self._started_at = now
        await self._guarded("heartbeat", self.heartbeat)
        self.log.info(
            "Registry loaded: {bindings} binding(s) of {aors} AoR(s)",
            bindings=self._count,
            aors=len(self._committed),
        )
        for name, step, interval in (
            ("sweep", self.sweep, self._sweep_interval),
            ("sync", self.sync, self._sync_interval),
            ("heartbeat", self.heartbeat, self._heartbeat_interval),
        ):
            loop = LoopingCall(self._guarded, name, step)
            loop.clock = self._reactor
            self._loops.append((loop, loop.start(interval, now=False)))
        if self.change_feed is not None:
            self.change_feed.start(await self._call("writer_origin"))

    def changed_elsewhere(self, written_at: float | None = None) -> None:
        """Another writer committed (at ``written_at``, by its clock, when known: the
        change feed says so): sync now."""
        if not self._running:
            return
        if written_at is not None and len(self._feed_stamps) < MAX_FEED_STAMPS:
            self._feed_stamps.append(written_at)
        if self._sync_busy:
            self._sync_again = True
            return
        self._pushed_sync = self._guarded("sync", self.sync)

    def stop(self) -> Deferred[None]:
        """Stop sweep and sync, commit every queued snapshot, stop the store runner."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self.change_feed is not None:
            await Deferred.fromFuture(asyncio.ensure_future(self.change_feed.stop()))
        if self._pushed_sync is not None:
            await self._pushed_sync
        loops, self._loops = self._loops, []
        for loop, _ in loops:
            if loop.running:
                loop.stop()
        # Each loop's Deferred fires once a sweep or sync under way has finished.
        await DeferredList([done for _, done in loops], consumeErrors=True)
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        self._flush()
        await self._drained()
        try:
            await self._call("gateway_stopped", self.gateway_id, self._clock())
        except Exception as exc:  # the database is down: the others will see it silent
            self.log.warn("Registry: cannot record this gateway's stop: {error}", error=exc)
        await self._runner.stop()

    def _guarded(self, name: str, step: Callable[[], Deferred[Any]]) -> Deferred[None]:
        def report(failure: Failure) -> None:
            if failure.check(RegistryUnavailable):
                self.log.error(
                    "Registry {name} failed, will retry: {error}", name=name, error=failure.value
                )
            else:
                self.log.failure("Registry {name} failed, will retry", failure, name=name)

        return maybeDeferred(step).addCallbacks(lambda _: None, report)

    # -- maintenance -----------------------------------------------------------------

    def sweep(self) -> Deferred[list[str]]:
        """Delete expired bindings from the database and memory; fire with their AoRs."""
        return Deferred.fromCoroutine(self._sweep())

    async def _sweep(self) -> list[str]:
        now = self._clock()
        aors = await self._call("delete_expired", now)
        # The memory equals the database, so its expired bindings belong to these AoRs.
        for aor in aors:
            if aor in self._committed:
                self._set_committed(aor, self.lookup(aor, now), expired_only=True)
        await self._call("prune_changes", now - self._retention)
        return aors

    def heartbeat(self) -> Deferred[None]:
        """Say in the registry that this gateway is alive; read the site's gateways."""
        return self._call("heartbeat", self.gateway_id, self.name, self._started_at,
                          self._heartbeat_interval, self._clock(), self.site_uri,
                          ).addCallback(self._site_read)

    def _read_site(self) -> None:
        """Read the site's gateways now (a binding named a gateway not known yet)."""
        if self._running:
            self._guarded("site read", lambda: self._call(
                "site_gateways", self._clock()).addCallback(self._site_read))

    def sync(self) -> Deferred[set[str]]:
        """Reload the AoRs others changed since the last sync; fire with those AoRs."""
        return Deferred.fromCoroutine(self._sync())

    async def _sync(self) -> set[str]:
        if self._sync_busy:  # the poll and the feed met: one more round after this one
            self._sync_again = True
            return set()
        self._sync_busy = True
        changed: set[str] = set()
        try:
            while True:
                self._sync_again = False
                # Changes notified before this round are in memory once it is done.
                stamps, self._feed_stamps = self._feed_stamps, []
                changed |= await self._sync_once()
                synced = self._clock()
                for written in stamps:
                    self.sync_delays.append(max(0.0, synced - written))
                    if self.on_sync_delay is not None:
                        self.on_sync_delay(max(0.0, synced - written))
                if not (self._sync_again and self._running):
                    return changed
        finally:
            self._sync_busy = False

    async def _sync_once(self) -> set[str]:
        now = self._clock()
        self._committed_during_sync = {}
        try:
            if now - self._last_sync_ok > self._retention / 2:
                changed = await self._reload_all(now)
            else:
                newest, changed = await self._call("changes_since", self._change_id, True)
                if changed:
                    ticket, fresh = await self._runner.call(
                        "load_aors", changed, now, stamp="before"
                    )
                    for aor, bindings in fresh.items():
                        if not self._newer_commit(aor, ticket):
                            self._set_committed(aor, bindings)
                self._change_id = newest
        finally:
            self._committed_during_sync = None
        self._last_sync_ok = now
        return changed

    async def _reload_all(self, now: float) -> set[str]:
        # The change log may have been pruned past our last id: start from scratch.
        self.log.warn("Registry sync was interrupted for long; reloading every binding")
        change_id = await self._call("current_change_id")
        ticket, live = await self._runner.call("load_live", now, stamp="before")
        changed = set()
        for aor in set(self._committed) | set(live):
            if self._newer_commit(aor, ticket):
                continue
            fresh = live.get(aor)
            if self._committed.get(aor) != (_freeze(fresh) if fresh else None):
                self._set_committed(aor, live.get(aor, []))
                changed.add(aor)
        self._change_id = change_id
        return changed

    def _newer_commit(self, aor: str, load_ticket: int) -> bool:
        commits = self._committed_during_sync or {}
        return commits.get(aor, 0) > load_ticket

    def _call(self, method: str, *args: Any, stamp: Stamp = None) -> Deferred[Any]:
        """The result of ``store.<method>(*args)`` through the runner (stamp dropped)."""
        return self._runner.call(method, *args, stamp=stamp).addCallback(lambda r: r[1])
