"""The overlay part of a running gateway: its node, joining, lookups with trust checks
and a short cache, and the registration mirror.

The node is joined in the background: until some bootstrap peer answers, the gateway
serves locally and lookups find nothing; once joined (and every time it re-joins) every
live binding is re-published. ``join_retry`` seconds apart, the join is tried again while
the node knows no other node.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from gateway.location.runner import ThreadStoreRunner
from gateway.log import get_logger
from gateway.overlay.mirror import RegistrationMirror
from gateway.overlay.node import OverlayNode, OverlayProtocol
from gateway.overlay.record import Record, Signer
from gateway.overlay.store import OverlayStore, PinDirectory
from gateway.overlay.trust import RecordTrust

log = get_logger("gateway.overlay")
T = TypeVar("T")


@dataclass(frozen=True)
class OverlaySettings:
    """What the overlay service needs from ``[overlay]``."""

    bootstrap: tuple[tuple[str, int], ...] = ()
    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 1.0
    record_lifetime: float = 3600.0
    cache_seconds: float = 5.0
    negative_cache_seconds: float = 2.0
    join_retry: float = 30.0
    node_id: bytes | None = None
    publish_rate: float = 1000.0


class OverlayService:
    """Node + mirror + verified lookups for one gateway."""

    def __init__(self, settings: OverlaySettings, sock: socket.socket, signer: Signer,
                 trust: RecordTrust, location: Any, route: str, reactor: Any,
                 store: OverlayStore | None = None) -> None:
        self.settings = settings
        self._sock = sock
        self.signer = signer
        self.trust = trust
        self.route = route
        self.reactor = reactor
        self.node = OverlayNode(settings.k, settings.alpha, settings.node_id,
                                settings.rpc_timeout)
        self.mirror = RegistrationMirror(location, self.node.publish, signer, route, reactor,
                                         lifetime=settings.record_lifetime,
                                         max_rate=settings.publish_rate)
        self._store = store
        self._runner = ThreadStoreRunner(store, reactor) if store is not None else None
        self.pins = PinDirectory(self._runner)
        if trust.pin_store is None:
            trust.pin_store = self.pins
        self.joined = False
        self._join_loop: LoopingCall | None = None
        self._cache: dict[str, tuple[float, list[Record]]] = {}
        # Highest seq accepted per (AoR, signer): an older record is a replay.
        self._seen_seq: dict[tuple[str, str], int] = {}
        self.lookups = 0
        self.rejected = 0

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the node listens."""
        return self.node.address

    async def start(self) -> None:
        """Open the node on its socket, start the mirror, and begin joining."""
        loop = asyncio.get_running_loop()
        self.node.transport, self.node.protocol = await loop.create_datagram_endpoint(
            self.node._create_protocol, sock=self._sock)  # noqa: SLF001 - the node's factory
        assert isinstance(self.node.protocol, OverlayProtocol)
        self.node.refresh_table()  # the package's hourly bucket refresh and re-publish
        if self._runner is not None:
            self._runner.start()
            try:
                _, pins = await _wait(self._runner.call("load_pins"))
                self.pins.load(pins)
            except Exception as exc:
                log.warn("overlay: cannot read the pins: {error}", error=str(exc))
        self.mirror.start()
        host, port = self.node.address or ("?", 0)
        log.info("overlay node {id} listening on udp {host}:{port}",
                 id=self.node.node.id.hex()[:16], host=host, port=port)
        self._join_loop = LoopingCall(self._try_join)
        self._join_loop.clock = self.reactor
        self._join_loop.start(self.settings.join_retry, now=True).addErrback(
            lambda f: log.failure("overlay join loop stopped", f))

    def _try_join(self) -> Deferred[None] | None:
        if self.joined and self.node.contact_count() > 0:
            return None
        return run_async(self._join())

    async def _join(self) -> None:
        cached: list[tuple[str, int]] = []
        if self._runner is not None:
            try:
                _, cached = await _wait(self._runner.call("load_nodes"))
            except Exception as exc:
                log.warn("overlay: cannot read the node cache: {error}", error=str(exc))
        peers = list(dict.fromkeys([*self.settings.bootstrap, *cached]))
        if not peers:
            if not self.joined:
                log.info("overlay: no bootstrap peers; this node starts the overlay")
                self.joined = True
                self.mirror.republish_all()
            return
        answered = await self.node.join(peers)
        if answered:
            log.info("overlay joined: {n} of {m} bootstrap peer(s) answered, {c} contacts",
                     n=answered, m=len(peers), c=self.node.contact_count())
            self.joined = True
            self.mirror.republish_all()
            await self._save_nodes()
        else:
            log.warn("overlay: no bootstrap peer answered ({peers}); serving locally, "
                     "retrying in {s:g} s", peers=", ".join(f"{h}:{p}" for h, p in peers),
                     s=self.settings.join_retry)

    async def _save_nodes(self) -> None:
        if self._runner is None or self.node.protocol is None:
            return
        nodes = [(n.id.hex(), n.ip, n.port)
                 for n in self.node.protocol.router.find_neighbors(self.node.node)]
        try:
            await _wait(self._runner.call("save_nodes", nodes))
        except Exception as exc:
            log.warn("overlay: cannot save the node cache: {error}", error=str(exc))

    def lookup(self, aor: str) -> Deferred[list[Record]]:
        """The trusted, live records of ``aor`` (cached ``cache_seconds``; an empty
        answer ``negative_cache_seconds``)."""
        now = time.monotonic()
        cached = self._cache.get(aor)
        if cached is not None and cached[0] > now:
            return Deferred.fromFuture(_done(cached[1]))
        self.lookups += 1
        d = Deferred.fromFuture(asyncio.ensure_future(self.node.lookup(aor)))
        d.addCallback(self._accept, aor)
        return d

    def _accept(self, records: list[Record], aor: str) -> list[Record]:
        now = time.time()
        accepted = []
        for record in records:
            if record.aor != aor:
                continue
            reason = self.trust.check(record)
            key = (aor, record.signer)
            if reason is None and record.seq < self._seen_seq.get(key, 0):
                reason = "older than a record already seen (replay)"
            if reason is not None:
                self.rejected += 1
                log.warn("overlay: rejected a record for {aor} signed by {signer}: {why}",
                         aor=aor, signer=record.signer[:16], why=reason)
                continue
            self._seen_seq[key] = record.seq
            if (record.live(now) and record.signer != self.signer.signer_id
                    and any(c.expires > now for c in record.contacts)):
                accepted.append(record)
        if len(self._seen_seq) > 100_000:
            self._seen_seq.clear()  # bounded; the DHT's own merge still orders by seq
        ttl = (self.settings.cache_seconds if accepted
               else self.settings.negative_cache_seconds)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[aor] = (time.monotonic() + ttl, accepted)
        return accepted

    def forget(self, aor: str) -> None:
        """Drop ``aor`` from the lookup cache."""
        self._cache.pop(aor, None)

    async def stop(self) -> None:
        """Save the node cache and close the node."""
        self.mirror.stop()
        if self._join_loop is not None and self._join_loop.running:
            self._join_loop.stop()
        await self._save_nodes()
        self.node.stop()
        if self._runner is not None:
            await _wait(self._runner.stop())
        if self._store is not None:
            self._store.close()


def run_async(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run an asyncio coroutine (the overlay's are: kademlia is asyncio) as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


async def _wait(d: Deferred[T]) -> T:
    """Await a Deferred from an asyncio coroutine."""
    return await d.asFuture(asyncio.get_running_loop())


def _done(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
    future.set_result(value)
    return future


def parse_peers(items: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """``host:port`` strings (IP addresses) to tuples."""
    peers = []
    for item in items:
        host, _, port = item.strip().rpartition(":")
        peers.append((host.strip("[]"), int(port)))
    return tuple(peers)
