"""Publishes the registry into the DHT: every binding change of an AoR becomes a new
signed record (or a tombstone) within ``delay`` seconds, and every live AoR is
re-published before its record expires and after the node (re)joins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from gateway.location.binding import Binding
from gateway.log import get_logger
from gateway.overlay.record import Contact, Record, Signer, decode_bundle

log = get_logger("gateway.overlay.mirror")

Publish = Callable[[str, list[Record]], Awaitable[int]]
#: Publications running at once (a re-publish of many AoRs must not flood the overlay).
CONCURRENCY = 16


class RegistrationMirror:
    """Keeps this gateway's records in the DHT equal to its registry."""

    def __init__(self, location: Any, publish: Publish, signer: Signer, route: str,
                 reactor: Any, *, lifetime: float = 3600.0, delay: float = 0.1) -> None:
        self.location = location
        self.publish = publish
        self.signer = signer
        self.route = route
        self.reactor = reactor
        self.lifetime = lifetime
        self.delay = delay
        self._dirty: set[str] = set()
        self._call: IDelayedCall | None = None
        self._republish: IDelayedCall | None = None
        self._running = False
        self._semaphore: asyncio.Semaphore | None = None
        #: Publications done and failed (for status and tests).
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        """Follow registry changes and re-publish everything periodically."""
        self._running = True
        self._semaphore = asyncio.Semaphore(CONCURRENCY)
        self.location.watchers.append(self.changed)
        self._schedule_republish()

    def stop(self) -> None:
        """Stop following changes (nothing is withdrawn: records expire on their own)."""
        self._running = False
        if self.changed in self.location.watchers:
            self.location.watchers.remove(self.changed)
        for call in (self._call, self._republish):
            if call is not None and call.active():
                call.cancel()

    def changed(self, aor: str) -> None:
        """The bindings of ``aor`` changed: publish soon."""
        if not self._running:
            return
        self._dirty.add(aor)
        if self._call is None or not self._call.active():
            self._call = self.reactor.callLater(self.delay, self._flush)

    def republish_all(self) -> Deferred[None]:
        """:meth:`publish_all` as a Deferred."""
        return Deferred.fromFuture(asyncio.ensure_future(self.publish_all()))

    async def publish_all(self) -> None:
        """Publish every AoR with live bindings now (after a join, and periodically)."""
        aors = list(self.location.snapshot())
        log.info("overlay: publishing {n} AoR(s)", n=len(aors))
        await self._publish_many(aors)

    def _flush(self) -> None:
        aors, self._dirty = list(self._dirty), set()
        d = Deferred.fromFuture(asyncio.ensure_future(self._publish_many(aors)))
        d.addErrback(lambda f: log.failure("overlay publication failed", f))

    def _schedule_republish(self) -> None:
        if not self._running:
            return
        self._republish = self.reactor.callLater(self.lifetime / 2, self._periodic)

    def _periodic(self) -> None:
        d = self.republish_all()
        d.addErrback(lambda f: log.failure("overlay re-publication failed", f))
        d.addBoth(lambda _: self._schedule_republish())

    def record_for(self, aor: str, bindings: list[Binding]) -> Record:
        """The signed record (a tombstone when no binding is live) of ``aor``."""
        # Each contact carries its own expiry, so readers drop it on time; the record
        # lives ``lifetime`` and is re-published at half of it.
        contacts = [Contact(b.contact, b.q, b.expires) for b in bindings]
        data = self.signer.sign(aor, contacts, self.route, self.lifetime if contacts else 0)
        return decode_bundle(data)[0]

    async def _publish_many(self, aors: list[str]) -> None:
        await asyncio.gather(*(self._publish_one(aor) for aor in aors))

    async def _publish_one(self, aor: str) -> None:
        assert self._semaphore is not None
        async with self._semaphore:
            record = self.record_for(aor, self.location.lookup(aor))
            try:
                stored = await self.publish(aor, [record])
            except Exception as exc:  # an overlay fault must not stop the mirror
                self.failures += 1
                log.warn("overlay: cannot publish {aor}: {error}", aor=aor, error=str(exc))
                return
            self.published += 1
            log.debug("overlay: published {aor} ({kind}) on {n} node(s)", aor=aor,
                      kind="tombstone" if record.is_tombstone else "record", n=stored)
