"""Publishes the registry into the DHT: every binding change of an AoR becomes a new
signed record (or a tombstone) within ``delay`` seconds, and every live AoR is
re-published before its record expires and after the node (re)joins. Bindings that
merely run out publish nothing: each contact carries its expiry and a record lives no
longer than its longest contact, so the DHT forgets them by itself (a tombstone per
expiry would double the signing work of a registrar whose phones come and go).

Records are signed in a worker thread, in batches (an ECDSA signature costs ~50 µs and
OpenSSL releases the GIL while it works), and at most ``max_rate`` records a second are
signed: under a burst of registrations SIP keeps the CPU, and the AoRs waiting are
published (once each, with their latest bindings) as the budget allows."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from gateway.log import get_logger
from gateway.overlay.record import Contact, Record, Signer

log = get_logger("gateway.overlay.mirror")

Publish = Callable[[str, list[Record]], Awaitable[int]]
#: Publications running at once (a re-publish of many AoRs must not flood the overlay).
CONCURRENCY = 16


class RegistrationMirror:
    """Keeps this gateway's records in the DHT equal to its registry: of the AoRs it
    publishes for its site (``location.publishes``; all of them for one gateway)."""

    def __init__(self, location: Any, publish: Publish, signer: Signer, route: str,
                 reactor: Any, *, lifetime: float = 3600.0, delay: float = 0.1,
                 max_rate: float = 1000.0) -> None:
        self.location = location
        self.publish = publish
        self.signer = signer
        self.route = route
        self.reactor = reactor
        self.lifetime = lifetime
        self.delay = delay
        self.max_rate = max_rate
        self._dirty: dict[str, None] = {}  # insertion-ordered: oldest change first
        self._call: IDelayedCall | None = None
        self._republish: IDelayedCall | None = None
        self._running = False
        self._semaphore: asyncio.Semaphore | None = None
        self._pool = ThreadPool(1, 1, name="overlay-signer")
        #: Publications done and failed (for status and tests).
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        """Follow registry changes and re-publish everything periodically."""
        self._pool.start()
        self._running = True
        self._semaphore = asyncio.Semaphore(CONCURRENCY)
        self.location.watchers.append(self.changed)
        self.location.publisher_watchers.append(self.changed)
        self._schedule_republish()

    def stop(self) -> None:
        """Stop following changes (nothing is withdrawn: records expire on their own)."""
        was_running, self._running = self._running, False
        if was_running:  # stop() may come twice (service stop, then overlay stop)
            self._pool.stop()
        for watchers in (self.location.watchers, self.location.publisher_watchers):
            if self.changed in watchers:
                watchers.remove(self.changed)
        for call in (self._call, self._republish):
            if call is not None and call.active():
                call.cancel()

    def changed(self, aor: str) -> None:
        """The bindings of ``aor`` changed: publish soon, when this gateway publishes it
        for its site (several gateways sharing a registry publish each AoR once)."""
        if not self._running or not self.location.publishes(aor):
            return
        self._dirty[aor] = None
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._running and self._dirty and (self._call is None or not self._call.active()):
            self._call = self.reactor.callLater(self.delay, self._flush)

    @property
    def backlog(self) -> int:
        """AoRs whose change is not published yet."""
        return len(self._dirty)

    def set_route(self, route: str) -> None:
        """Sign records with ``route`` from now on, and re-publish them all when it
        changed; ``""`` holds publications (this gateway has no route others reach)."""
        if route == self.route:
            return
        self.route = route
        if route:
            self.republish_all()

    def republish_all(self) -> None:
        """Queue every AoR with live bindings for publication (after a join, and
        periodically); they go out at ``max_rate``."""
        publishes = self.location.publishes
        aors = [aor for aor in self.location.snapshot() if publishes(aor)]
        log.info("overlay: publishing {n} AoR(s)", n=len(aors))
        for aor in aors:
            self._dirty[aor] = None
        self._schedule_flush()

    def _flush(self) -> None:
        if not self.route:
            return  # held: the changes wait for a route (set_route re-publishes all)
        budget = max(1, int(self.max_rate * self.delay))
        aors = list(itertools.islice(self._dirty, budget))
        for aor in aors:
            del self._dirty[aor]
        d = self._publish_aors(aors)
        d.addErrback(lambda f: log.failure("overlay publication failed", f))
        d.addBoth(lambda _: self._schedule_flush())

    def _publish_aors(self, aors: list[str]) -> Deferred[None]:
        jobs = [(aor, self._contacts(aor)) for aor in aors]
        d = deferToThreadPool(self.reactor, self._pool, self._sign_all, jobs)
        d.addCallback(lambda records: Deferred.fromFuture(
            asyncio.ensure_future(self._publish_many(records))))
        return d

    def _schedule_republish(self) -> None:
        if not self._running:
            return
        self._republish = self.reactor.callLater(self.lifetime / 2, self._periodic)

    def _periodic(self) -> None:
        self.republish_all()
        self._schedule_republish()

    def _contacts(self, aor: str) -> list[Contact]:
        # Each contact carries its own expiry, so readers drop it on time; the record
        # lives ``lifetime`` and is re-published at half of it.
        return [Contact(b.contact, b.q, b.expires) for b in self.location.lookup(aor)]

    def _sign(self, aor: str, contacts: list[Contact]) -> Record:
        # The record lives as long as its longest-lived contact (at most ``lifetime``):
        # a phone that stops refreshing disappears from the DHT with its binding, and
        # a node keeps a superseded record no longer than that.
        lifetime = 0.0
        if contacts:
            remaining = max(c.expires for c in contacts) - time.time()
            lifetime = max(1.0, min(self.lifetime, remaining))
        return self.signer.sign_record(aor, contacts, self.route, lifetime)

    def _sign_all(self, jobs: list[tuple[str, list[Contact]]]) -> list[Record]:
        """Runs in the signer thread."""
        return [self._sign(aor, contacts) for aor, contacts in jobs]

    async def _publish_many(self, records: list[Record]) -> None:
        await asyncio.gather(*(self._publish_one(record) for record in records))

    async def _publish_one(self, record: Record) -> None:
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                stored = await self.publish(record.aor, [record])
            except Exception as exc:  # an overlay fault must not stop the mirror
                self.failures += 1
                log.warn("overlay: cannot publish {aor}: {error}", aor=record.aor,
                         error=str(exc))
                return
            self.published += 1
            log.debug("overlay: published {aor} ({kind}) on {n} node(s)", aor=record.aor,
                      kind="tombstone" if record.is_tombstone else "record", n=stored)
