"""The overlay part of a running gateway: its node, joining, lookups with trust checks
and a short cache, and the registration mirror.

The node is joined in the background: until some bootstrap peer answers, the gateway
serves locally and overlay lookups fail fast (480); once joined (and every time it
re-joins) every live binding is re-published. Failed joins are retried with jittered
exponential back-off (1 s doubling up to ``join_retry``); a joined node that loses
every neighbour joins again at once, then retries at least every ``health_interval``
(a partition heals within one of them). The state is logged and written to
``<data_dir>/overlay-status.json`` for ``p2psip-admin overlay status``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from gateway.log import get_logger
from gateway.overlay.acceptance import RecordAcceptance
from gateway.overlay.dns_fingerprints import DomainFingerprints
from gateway.overlay.dns_publisher import DnsPublisher, PublishSettings
from gateway.overlay.identity import DEFAULT_DIFFICULTY, NodeIdentity
from gateway.overlay.lookup import PATHS, LookupResult
from gateway.overlay.mirror import RegistrationMirror
from gateway.overlay.nat import NatFinding, classify, observe
from gateway.overlay.node import OverlayNode, OverlayProtocol
from gateway.overlay.record import Record, Signer
from gateway.overlay.trust import RecordTrust
from gateway.registry.overlay_store import PinDirectory
from gateway.registry.runner import ThreadStoreRunner
from gateway.sip.errors import SipSyntaxError
from gateway.sip.uri import SipUri, parse_uri

log = get_logger("gateway.overlay")
T = TypeVar("T")


class RelayUser(Protocol):
    """The SIP side of relaying (:class:`gateway.server.relay_client.RelayClient`):
    keeps a flow to one of the relays offered, and says what route it gives."""

    route: str

    def use(self, candidates: list[str]) -> None:
        """Open (or keep) a flow to one of these relays (SIP URIs, best first)."""

    def release(self) -> None:
        """No relay is needed any more."""

    def status(self) -> dict[str, Any]:
        """What the status shows of the relay."""


@dataclass(frozen=True)
class OverlaySettings:
    """What the overlay service needs from ``[overlay]`` (the application builds it from
    its configuration; the fields with defaults are not settings but tuning constants)."""

    bootstrap: tuple[tuple[str, int], ...]
    k: int
    alpha: int
    rpc_timeout: float
    record_lifetime: float
    cache_seconds: float
    negative_cache_seconds: float
    health_interval: float
    publish_rate: float
    identity: NodeIdentity | None = None
    paths: int = PATHS
    id_difficulty: int = DEFAULT_DIFFICULTY
    ids_per_address: int = 2
    #: auto (a client when behind a NAT nothing is forwarded through), peer, client.
    mode: str = "auto"
    #: The configured external address (sip.external_address), if any.
    external_host: str | None = None
    #: This machine's own addresses (what other nodes see when there is no NAT).
    own_addresses: frozenset[str] = frozenset()
    #: The SIP URI NATed gateways may open a relay flow to ("": this one relays none).
    relay_offer: str = ""
    join_retry: float = 60.0  # longest wait between join attempts
    join_backoff: float = 1.0  # first wait; doubles up to join_retry
    lookup_timeout: float = 4.0


class OverlayService:
    """Node + mirror + verified lookups for one gateway."""

    def __init__(self, settings: OverlaySettings, sock: socket.socket, signer: Signer,
                 trust: RecordTrust, location: Any, route: str, reactor: Any,
                 runner: ThreadStoreRunner | None = None, *,
                 pins: PinDirectory | None = None,
                 dns_bootstrap: Callable[[], Deferred[list[tuple[str, int]]]] | None = None,
                 status_writer: Callable[[dict[str, Any]], None] | None = None,
                 lookup_observer: Callable[[float, str], None] | None = None,
                 warnings: tuple[str, ...] = (), relay: RelayUser | None = None,
                 publish: PublishSettings | None = None,
                 fingerprints: DomainFingerprints | None = None) -> None:
        """``route``: the SIP URI published in records (how the gateway is reached);
        ``runner``: runs the SQL node cache and pins (:class:`OverlayStore`; started and
        stopped here); ``pins``:
        the pin directory ``trust`` consults (loaded from ``store`` at start);
        ``dns_bootstrap``: extra bootstrap peers from DNS; ``status_writer`` gets
        :meth:`status` on every change; ``lookup_observer`` gets (seconds, outcome) of
        every lookup (outcome: found, not_found, error); ``warnings``: what the status
        says is wrong with this node's setup (e.g. a route others cannot reach);
        ``relay``: opens a relay flow when this node turns out to be unreachable (its
        route then goes to :meth:`relayed`); ``publish``: keep the bootstrap records in
        DNS up to date (RFC 2136, :mod:`gateway.overlay.dns_publisher`)."""
        self.settings = settings
        self._sock = sock
        self.signer = signer
        self.trust = trust
        self.route = route
        self.warnings = warnings
        self.reactor = reactor
        self.node = OverlayNode(settings.k, settings.alpha, settings.identity,
                                settings.rpc_timeout, client=settings.mode == "client",
                                difficulty=settings.id_difficulty,
                                ids_per_address=settings.ids_per_address,
                                paths=settings.paths)
        #: What other nodes see of this one (None until one answered).
        self.nat: NatFinding | None = None
        #: Behind a NAT nothing is forwarded through: others cannot reach this node.
        self.unreachable = False
        self.relay = relay
        #: How many NATed gateways the SIP side relays for (set by the application).
        self.relaying_for: Callable[[], int] = lambda: 0
        self.publisher = (DnsPublisher(publish, self._answers, self._reachable_address)
                          if publish is not None else None)
        self._publish_call: Any = None
        # The route is held ("") until the node knows whether others can reach it (the
        # address check when it joins; at once when it starts the overlay alone).
        self.mirror = RegistrationMirror(location, self.node.publish, signer, "", reactor,
                                         lifetime=settings.record_lifetime,
                                         max_rate=settings.publish_rate)
        self._runner = runner
        self.pins = pins
        #: joining (no peer answered yet), joined, or alone (no peer known: this node
        #: started an overlay).
        self.state = "joining"
        self.state_since = time.time()
        self.last_error = ""
        self._attempt = 0
        # Joined once: after a partition the peers are worth asking often (the wait
        # between attempts stops at health_interval, not join_retry).
        self._was_joined = False
        self._stopping = False
        self._join_call: Any = None
        self._health_call: Any = None
        self.dns_bootstrap = dns_bootstrap
        self._status_writer = status_writer
        self._lookup_observer = lookup_observer
        self._cache: dict[str, tuple[float, list[Record]]] = {}
        self.acceptance = RecordAcceptance(trust, own_signer=signer.signer_id)
        self.fingerprints = fingerprints
        self.lookups = 0
        self.rejected = 0
        # AoR -> why its last lookup's records were all rejected (bounded).
        self._rejections: dict[str, str] = {}
        self._saved_nodes: set[tuple[str, str, int]] = set()

    @property
    def joined(self) -> bool:
        """Lookups can be answered: joined, or alone (this node started the overlay)."""
        return self.state in ("joined", "alone")

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
        self.node.protocol.offered_relay = "" if self.node.client else self.settings.relay_offer
        self.node.refresh_table()  # the package's hourly bucket refresh and re-publish
        if self._runner is not None:
            self._runner.start()
            try:
                _, pins = await _wait(self._runner.call("load_pins"))
                if self.pins is not None:
                    self.pins.load(pins)
            except Exception as exc:
                log.warn("overlay: cannot read the pins: {error}", error=str(exc))
        self.mirror.start()
        host, port = self.node.address or ("?", 0)
        log.info("overlay node {id} listening on udp {host}:{port}",
                 id=self.node.node.id.hex()[:16], host=host, port=port)
        self._set_state("joining")
        self._schedule_join(0.0)
        if self.publisher is not None:
            self._schedule_publish(self.settings.health_interval)

    # --- the bootstrap records in DNS (RFC 2136) -----------------------------------------

    def _schedule_publish(self, delay: float) -> None:
        if not self._stopping and self.publisher is not None:
            self._publish_call = self.reactor.callLater(delay, self._publish_now)

    def _publish_now(self) -> None:
        self._publish_call = None
        assert self.publisher is not None
        if not self.joined and self._attempt == 0:
            # Before the first join attempt has failed, whether this node is the first
            # is not known yet.
            self._schedule_publish(self.publisher.next_delay())
            return
        # Joining after failed attempts: the listed nodes may all be dead (then this
        # node lists itself, as the first of the overlay did).
        d = run_async(self.publisher.round(joined=self.joined))
        d.addErrback(lambda f: log.failure("overlay DNS publication failed", f))
        d.addBoth(lambda _: (self.write_status(),
                             self._schedule_publish(self.publisher.next_delay())))

    async def _answers(self, address: tuple[str, int]) -> bool:
        """Whether the node at ``address`` answers an overlay ping."""
        if address == self.node.address:
            return True
        return await self.node.bootstrap_node(address) is not None

    def _reachable_address(self) -> tuple[str, int] | None:
        """This node's overlay address as others reach it; None behind a NAT nothing
        is forwarded through (such a node never lists itself)."""
        address = self.node.address
        if address is None or self.unreachable or self.node.client:
            return None
        host = self.settings.external_host or address[0]
        if host in ("0.0.0.0", "::"):
            try:
                route = parse_uri(self.route)
            except SipSyntaxError:
                return None
            host = route.host.strip("[]") if isinstance(route, SipUri) else ""
        return (host, address[1]) if host else None

    # --- joining, with back-off -------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        if self._stopping and state != "stopped":
            return  # a join or probe under way when the node stopped changes nothing
        if error is not None:
            self.last_error = error
        if state == "joined":
            self._was_joined = True
        if state != self.state:
            self.state = state
            self.state_since = time.time()
            log.info("overlay state: {state}", state=state)
            if (state in ("alone", "joined") and self._publish_call is not None
                    and self._publish_call.active()):
                # Now it is known whether this node is the first: check the records soon.
                self._publish_call.cancel()
                self._schedule_publish(0.1)
        self.write_status()

    def _schedule_join(self, delay: float) -> None:
        if self._stopping:
            return
        self._join_call = self.reactor.callLater(delay, self._join_now)

    def _join_now(self) -> None:
        self._join_call = None
        d = run_async(self._join())
        d.addErrback(lambda f: self._join_failed(f.getErrorMessage()))
        d.addBoth(lambda _: self._after_join())

    def _join_failed(self, error: str) -> None:
        log.warn("overlay: join failed: {error}", error=error)
        self._set_state("joining", error)

    def _after_join(self) -> None:
        if self._stopping:
            return
        if self.joined:
            self._attempt = 0
            self._health_call = self.reactor.callLater(self.settings.health_interval,
                                                       self._check_health)
            return
        self._attempt += 1
        longest = (min(self.settings.join_retry, self.settings.health_interval)
                   if self._was_joined else self.settings.join_retry)
        delay = min(longest, self.settings.join_backoff * 2 ** (self._attempt - 1))
        delay *= random.uniform(0.8, 1.2)  # jitter: gateways restarted together spread out
        log.info("overlay: next join attempt in {s:.1f} s", s=delay)
        self._schedule_join(delay)

    def _check_health(self) -> None:
        self._health_call = None
        if self._stopping:
            return
        d = run_async(self._probe())
        d.addErrback(lambda f: log.failure("overlay health check failed", f))
        d.addCallback(lambda rejoining: None if rejoining else self._reschedule_health())

    def _reschedule_health(self) -> None:
        if not self._stopping:
            self._health_call = self.reactor.callLater(self.settings.health_interval,
                                                       self._check_health)

    async def _probe(self) -> bool:
        """Ping a few neighbours (the unanswered ones leave the routing table); True
        when the node has to join again."""
        known: list[tuple[str, int]] = []
        if self.node.protocol is not None:
            nodes = [n for b in self.node.protocol.router.buckets for n in b.get_nodes()]
            known = [(n.ip, n.port) for n in nodes]
            sample = random.sample(nodes, min(3, len(nodes)))
            await asyncio.gather(*(self.node.protocol.call_ping(n) for n in sample),
                                 return_exceptions=True)
        count = self.node.contact_count()
        await self._reload_pins()
        self.write_status()
        if count:
            # From the first minute, not only after a join through others: the first
            # node of an overlay must find it again after a crash.
            await self._save_nodes(only_if_changed=True)
        if self.state in ("alone", "joining") and count:
            # Other nodes joined through us, or found us while we were joining (then
            # our records, lost with a restart, go out again).
            found_us = self.state == "joining"
            self._set_state("joined", "")
            if found_us:
                self._publish_all()
        elif self.state == "joined" and count == 0:
            log.warn("overlay: every neighbour is gone; joining again")
            self._set_state("joining", "every neighbour vanished")
            self._schedule_join(0.0)
            return True
        elif self.unreachable and self.relay is not None and not self.relay.route and count:
            await self._find_relays(random.sample(known, min(8, len(known))))
        elif self.state == "alone" and await self._bootstrap_peers():
            # Alone, keep trying every source (static peers, DNS, the node cache): two
            # overlays that formed apart merge as soon as one node reaches the other.
            self._schedule_join(0.0)
            return True
        return False

    async def _join(self) -> None:
        peers = await self._bootstrap_peers()
        if self._stopping:
            return  # stopped while the peers were looked up
        if not peers:
            if self.state != "alone":
                log.info("overlay: no bootstrap peers; this node starts the overlay")
                self._set_state("alone", "")
                self._publish_all()
            return
        # The address check comes first: it decides how this node joins, and the
        # peers that answer it are the ones worth joining through.
        answering = await self._check_nat(peers)
        answered = await self.node.join(answering) if answering else 0
        if self._stopping:
            return
        if answered:
            log.info("overlay joined: {n} of {m} bootstrap peer(s) answered, {c} contacts",
                     n=answered, m=len(peers), c=self.node.contact_count())
            self._set_state("joined", "")
            self._publish_all()
            await self._save_nodes()
        elif self.node.contact_count():
            # None of the known peers answered, but other nodes reached us meanwhile
            # (they still had us in their tables): we are part of their overlay.
            self._set_state("joined", "")
            self._publish_all()
        else:
            error = ("no bootstrap peer answered (" + ", ".join(f"{h}:{p}" for h, p in peers)
                     + ")")
            log.warn("overlay: {error}; serving locally", error=error)
            self._set_state("joining", error)

    async def _check_nat(self, peers: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Ask ``peers`` where this node's datagrams come from, before joining; returns
        those that answered. A node behind a NAT that nothing is forwarded through
        joins as a client (it cannot be reached, so it must not enter others' routing
        tables) and holds its records (their route could not be reached either)."""
        assert self.node.protocol is not None
        seen = await observe(self.node.protocol, peers)
        finding = classify(list(seen.values()), self.settings.own_addresses.__contains__,
                           self.settings.external_host)
        if finding.kind != "unknown" and finding != self.nat:
            self.nat = finding
            self.unreachable = finding.kind == "nat" and self.settings.external_host is None
            client = self.settings.mode == "client" or (self.settings.mode == "auto"
                                                        and self.unreachable)
            if finding.kind == "nat":
                log.warn("overlay: {detail}", detail=finding.detail)
            if client != self.node.client:
                log.info("overlay: joining as a {mode}", mode="client" if client else "peer")
                self.node.client = client
            # A client is not reached by others: it relays for nobody.
            self.node.protocol.offered_relay = "" if client else self.settings.relay_offer
            if not self.unreachable and self.relay is not None:
                self.relay.release()
            self._publish_route()
        if self.unreachable and self.relay is not None and not self.relay.route:
            await self._find_relays(list(seen))
        return list(seen)

    async def _find_relays(self, peers: list[tuple[str, int]]) -> None:
        """Ask ``peers`` which relay they offer and hand the offers to the relay user."""
        assert self.node.protocol is not None and self.relay is not None
        offers = await asyncio.gather(*(self.node.protocol.ask_relay_offer(p)
                                        for p in peers[:8]), return_exceptions=True)
        found = [o for o in offers if isinstance(o, str) and o]
        if found:
            self.relay.use(found)
        else:
            log.warn("overlay: none of {n} peer(s) offers a relay", n=len(peers[:8]))

    def relayed(self, route: str) -> None:
        """The relay flow is open with this route ("": lost): publish it."""
        self._publish_route()
        self.write_status()

    def _publish_all(self) -> None:
        """Publish every AoR again, under the route others can use."""
        self._publish_route()
        self.mirror.republish_all()

    def _publish_route(self) -> None:
        if not self.unreachable:
            self.mirror.set_route(self.route)
        else:
            self.mirror.set_route(self.relay.route if self.relay is not None else "")

    @property
    def reachability_warning(self) -> str:
        """Why others cannot call this gateway's users, or ""."""
        if self.nat is None or self.nat.kind != "nat":
            return ""
        if self.relay is not None and self.relay.route:
            return ""
        if self.settings.external_host is not None:
            return (f"{self.nat.detail}: calls from other sites may not reach this "
                    f"gateway")
        relay_error = self.relay.status().get("last_error") if self.relay is not None else ""
        why = (f"no relay could be used ({relay_error})" if relay_error
               else "no peer offers a relay" if self.relay is not None else "")
        return (f"{self.nat.detail}; nothing is forwarded to this gateway"
                + (f" and {why}" if why else "")
                + ", so its users cannot be called from other sites and its records are "
                "not published (it uses the overlay as a client). Forward the SIP and "
                "overlay ports to it and set sip.external_address, put it on a public "
                "address, or let it use a relay (a reachable gateway with overlay.relay)")

    async def _bootstrap_peers(self) -> list[tuple[str, int]]:
        """Static peers, then DNS, then the node cache: combined, in that order."""
        found: list[tuple[str, int]] = list(self.settings.bootstrap)
        if self.dns_bootstrap is not None:
            try:
                found += await _wait(self.dns_bootstrap())
            except Exception as exc:
                log.warn("overlay: DNS bootstrap failed: {error}", error=str(exc))
        if self._runner is not None:
            try:
                found += (await _wait(self._runner.call("load_nodes")))[1]
            except Exception as exc:
                log.warn("overlay: cannot read the node cache: {error}", error=str(exc))
        own = self.node.address
        return [p for p in dict.fromkeys(found) if p != own]

    def status(self) -> dict[str, Any]:
        """What ``p2psip-admin overlay status`` shows."""
        address = self.node.address
        return {
            "state": self.state, "since": self.state_since, "last_error": self.last_error,
            "node_id": self.node.node.id.hex(),
            "certificate": self.signer.signer_id,
            "rollover": self.signer.rollover is not None,
            "listen": f"{address[0]}:{address[1]}" if address else "",
            "contacts": self.node.contact_count(), "stored_keys": len(self.node.storage),
            "refused_contacts": getattr(self.node.protocol, "refused_contacts", 0),
            "bad_answers": getattr(self.node.protocol, "bad_answers", 0),
            "published": self.mirror.published, "publish_failures": self.mirror.failures,
            "backlog": self.mirror.backlog, "lookups": self.lookups,
            "rejected_records": self.rejected, "route": self.route,
            "published_route": self.mirror.route,
            "mode": "client" if self.node.client else "peer",
            "nat": self.nat.as_status() if self.nat is not None else None,
            "relay": self.relay.status() if self.relay is not None and self.unreachable
            else None,
            "relaying_for": self.relaying_for(),
            "dns_publish": self.publisher.status() if self.publisher is not None else None,
            "warnings": [*self.warnings, *filter(None, [self.reachability_warning])],
            "updated": time.time(), "pid": os.getpid(),
        }

    def write_status(self) -> None:
        """Write :meth:`status` to the status file (atomically), if there is one."""
        if self._status_writer is not None:
            self._status_writer(self.status())

    async def _reload_pins(self) -> None:
        """Pick up pins changed in the registry (``p2psip-admin overlay pins``)."""
        if self._runner is None or self.pins is None:
            return
        try:
            _, pins = await _wait(self._runner.call("load_pins"))
        except Exception as exc:
            log.warn("overlay: cannot read the pins: {error}", error=str(exc))
            return
        if pins != self.pins.pins():
            self.pins.reload(pins)
            self._cache.clear()  # answers given under the old pins
            self._rejections.clear()

    async def _save_nodes(self, only_if_changed: bool = False) -> None:
        if self._runner is None or self.node.protocol is None:
            return
        nodes = [(n.id.hex(), n.ip, n.port)
                 for n in self.node.protocol.router.find_neighbors(self.node.node)]
        if only_if_changed and set(nodes) == self._saved_nodes:
            return
        try:
            await _wait(self._runner.call("save_nodes", nodes))
            self._saved_nodes = set(nodes)
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
        started = time.monotonic()
        d = Deferred.fromFuture(asyncio.ensure_future(self._find(aor)))
        d.addCallback(lambda found: self._accept(found[0], aor,
                                                 found[1].served if found[1] else []))

        def measured(result: Any) -> Any:
            if self._lookup_observer is not None:
                outcome = ("error" if not isinstance(result, list)
                           else "found" if result else "not_found")
                self._lookup_observer(time.monotonic() - started, outcome)
            return result

        return d.addBoth(measured)

    async def _find(self, aor: str) -> tuple[list[Record], LookupResult | None]:
        """The overlay lookup, with the domain's DNS fingerprints read meanwhile (the
        records are judged once both are in)."""
        lookup = self.node.lookup_detail(aor, self.acceptance.acceptable,
                                         self.settings.lookup_timeout)
        if self.fingerprints is None:
            return await lookup
        return await self.fingerprints.during(aor, lookup)

    def _accept(self, records: list[Record], aor: str,
                served: list[tuple[int, bytes, list[str]]] | None = None) -> list[Record]:
        verdict = self.acceptance.judge(aor, records, served=served)
        for record, reason in verdict.rejected:
            self.rejected += 1
            log.warn("overlay: rejected a record for {aor} signed by {signer}: {why}",
                     aor=aor, signer=record.signer[:16], why=reason)
        accepted = verdict.accepted
        if verdict.rejected and not accepted:
            if len(self._rejections) > 10_000:
                self._rejections.clear()
            self._rejections[aor] = verdict.reason
        else:
            self._rejections.pop(aor, None)
        ttl = (self.settings.cache_seconds if accepted
               else self.settings.negative_cache_seconds)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[aor] = (time.monotonic() + ttl, accepted)
        return accepted

    def why_empty(self, aor: str) -> str:
        """Why a lookup of ``aor`` found nothing, when the overlay may be at fault: its
        records were all rejected, or this node has nobody to ask (alone, or every
        neighbour gone: a partition). "" when the overlay simply has no record."""
        rejection = self._rejections.get(aor)
        if rejection:
            return f"records found but none trusted ({rejection})"
        if self.state == "alone":
            return "this gateway is alone in the overlay (no other node reachable)"
        if self.node.contact_count() == 0:
            return "no overlay neighbour answers (partitioned?)"
        return ""

    async def stop(self) -> None:
        """Save the node cache and close the node."""
        self._stopping = True
        self.mirror.stop()
        for call in (self._join_call, self._health_call, self._publish_call):
            if call is not None and call.active():
                call.cancel()
        if self.publisher is not None:
            await self.publisher.withdraw()
        self._set_state("stopped")
        await self._save_nodes()
        self.node.stop()
        if self._runner is not None:
            await _wait(self._runner.stop())
            if self._runner.store is not None:
                self._runner.store.close()


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
