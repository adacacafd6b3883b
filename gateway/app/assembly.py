"""The gateway's parts, built once and wired by their constructors.

:func:`assemble` builds everything bottom-up — registry, addresses, authentication, the
overlay, the sans-IO core, its driver (which builds the transports), the upstream
registrations — so no part learns a collaborator after it is made. The service
(:mod:`gateway.app.service`) only starts and stops them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from gateway.app.config import GatewayConfig
from gateway.app.metrics import Metrics
from gateway.app.reachability import host_address, route_problem
from gateway.app.startup import Prepared, machine_addresses, machine_networks
from gateway.app.status_file import OVERLAY_STATUS_FILE, write_status_file
from gateway.app.web_phone import phone_pages
from gateway.app.wiring import (
    auth_policy,
    overlay_settings,
    publish_settings,
    registrar_policy,
    upstream_settings,
)
from gateway.log import get_logger
from gateway.overlay.dns_bootstrap import DnsBootstrap
from gateway.overlay.dns_fingerprints import DomainFingerprints
from gateway.overlay.identity import load_identity
from gateway.overlay.record import Signer
from gateway.overlay.rollover import remember_signer
from gateway.overlay.service import OverlayService
from gateway.overlay.trust import RecordTrust
from gateway.registry.change_feed import ChangeFeed
from gateway.registry.overlay_store import OverlayStore, PinDirectory
from gateway.registry.runner import ProcessStoreRunner, StoreRunner, ThreadStoreRunner
from gateway.registry.service import LocationService
from gateway.registry.users import UserDirectory, UserStore
from gateway.server.authenticator import Authenticator
from gateway.server.core import SipCore
from gateway.server.driver import CoreDriver, MessageSink
from gateway.server.myself import LocalDomains, Myself
from gateway.server.ratelimit import SourceRateLimiter
from gateway.server.registrar import Registrar
from gateway.server.relay import RelayFlows
from gateway.server.relay_client import RelayClient
from gateway.server.routing import ResolverContext, build_chain
from gateway.server.upstream import UpstreamRegistrations, UpstreamServer
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientTransactionLayer
from gateway.sip.dns import DnsClient
from gateway.sip.locate import SipLocator
from gateway.sip.overload import OverloadGuard, OverloadSettings
from gateway.sip.transaction import TransactionLayer
from gateway.sip.transport import OpenConnections, TransportManager, WebSocketOptions
from gateway.sip.uri import bracketed

log = get_logger("gateway.app.assembly")

SITE_WITHOUT_CERTIFICATE = (
    "site.uri is set but overlay.certificate is not: this gateway signs the site's "
    "overlay records with its own certificate, and overlay peers that pinned another "
    "gateway's refuse them; give every gateway of the site the site's certificate")


@dataclass
class Gateway:
    """Every part of one gateway."""

    prepared: Prepared
    metrics: Metrics
    location: LocationService
    local_domains: LocalDomains
    listen_hosts: list[str]
    myself: Myself
    users: UserDirectory
    authenticator: Authenticator
    overlay: OverlayService | None
    upstream_server: UpstreamServer | None
    core: SipCore
    driver: CoreDriver
    upstream: UpstreamRegistrations | None
    relay_client: RelayClient | None

    @property
    def transports(self) -> TransportManager:
        """The listeners and outgoing connections (built by the driver)."""
        return self.driver.transports


def assemble(prepared: Prepared, reactor: Any) -> Gateway:
    """Build every part of the gateway from a prepared start-up."""
    config = prepared.config
    metrics = Metrics()
    location = LocationService(prepared.store, reactor, site_uri=config.site.uri,
                               sweep_interval=config.database.sweep_interval,
                               sync_interval=config.database.sync_interval,
                               commit_interval=config.database.commit_interval,
                               runner=_store_runner(prepared, reactor),
                               on_commit=metrics.db_write.observe,
                               heartbeat_interval=config.database.heartbeat_interval,
                               name=f"{socket.gethostname()} pid {os.getpid()} "
                                    f"{config.data_dir}")
    if prepared.store.is_postgres:
        location.change_feed = ChangeFeed(config.database.url, location.changed_elsewhere)
        location.on_sync_delay = metrics.sync_delay.observe
    listen_hosts = [a.host for a in (*config.sip.listen_udp, *config.sip.listen_tcp)]
    external = config.sip.external_address
    # The names in a configured certificate are this gateway's too: phones use them in
    # their outbound proxy (and Route), and TLS clients check them.
    certificate_names = (prepared.material.dns_names if prepared.material is not None
                         and not prepared.material.generated else ())
    local_domains = LocalDomains(config.gateway.domains,
                                 [*machine_addresses(), *listen_hosts,
                                  *([external[0]] if external else [])],
                                 (socket.gethostname(), socket.getfqdn(), *certificate_names))
    # The sockets are bound already (prepare): the gateway knows its own addresses.
    listeners = [(kind, *sock.getsockname()[:2]) for kind, sock in prepared.sockets]
    myself = Myself(local_domains, listeners, advertised_host=config.sip.advertised_address,
                    wildcard_host=host_address(), external=external,
                    local_networks=[*config.sip.local_networks, *machine_networks()])
    user_store = UserStore(config.database.url, engine=prepared.store.engine
                           if prepared.store.in_memory else None)
    users = UserDirectory(user_store, reactor, config.database.sync_interval)
    authenticator = Authenticator(auth_policy(config), users, prepared.secret, myself)
    settings = upstream_settings(config)
    upstream_server = UpstreamServer.from_settings(settings) if settings is not None else None
    overlay = None
    if prepared.overlay_socket is not None and prepared.material is not None:
        route = config.overlay.route or _own_route(myself)
        problem = route_problem(route, [a.host for a in config.overlay.bootstrap])
        if problem is not None:
            log.warn("{problem}", problem=problem)
        warnings = (problem,) if problem else ()
        if config.site.uri and not config.overlay.certificate:
            # Each gateway would sign the site's records with its own certificate:
            # overlay peers pin one and refuse the others'.
            warnings += (SITE_WITHOUT_CERTIFICATE,)
            log.warn("{problem}", problem=SITE_WITHOUT_CERTIFICATE)
        overlay = _overlay_service(prepared, location, route, metrics, reactor,
                                   warnings=warnings, relay_offer=_relay_offer(config, myself))
    limits = config.limits
    rate_limit = None
    if limits.source_rate > 0:
        exempt = authenticator.is_trusted if limits.exempt_trusted else (lambda _host: False)
        rate_limit = SourceRateLimiter(limits.source_rate, limits.source_burst, exempt)
    overload = OverloadGuard(OverloadSettings(
        target=limits.overload_delay, drop_delay=limits.overload_drop_delay,
        retry_after=limits.overload_retry_after))
    t1 = config.sip.t1
    transactions = TransactionLayer(t1, config.sip.t2, config.sip.t4,
                                    invite_lifetime=config.proxy.timer_c + 64 * t1 + 32)
    connections = OpenConnections()
    core = SipCore(Registrar(registrar_policy(config), local_domains, location.gateway_id),
                   location, transactions,
                   ClientTransactionLayer(t1, config.sip.t2, config.sip.t4), myself,
                   timer_c=config.proxy.timer_c, force_rport=config.sip.force_rport,
                   authenticator=authenticator,
                   trusted_peer=partial(_trusted_peer, prepared, upstream_server,
                                        connections),
                   counters=metrics, rate_limit=rate_limit, flow_alive=connections.is_open,
                   relay=RelayFlows(myself.external_address, config.overlay.relay)
                   if overlay is not None else None)
    next_hops = core.next_hops
    locator = SipLocator(
        DnsClient([(a.host, a.port) for a in config.dns.servers] or None,
                  timeout=config.dns.timeout),
        [t for t in ("udp", "tcp", "tls") if myself.address(t) is not None])
    resolvers = build_chain(config.proxy.resolvers, ResolverContext(
        location, local_domains, overlay, upstream_server,
        lambda host, port: next_hops.dead(host, port, reactor.seconds()), locator))

    web_options = WebSocketOptions(
        config.websocket.keepalive, config.websocket.allowed_origins,
        phone_pages(config.websocket.jssip) if config.websocket.page else {})

    def make_transports(sink: MessageSink) -> TransportManager:
        return TransportManager(reactor, sink.receive, config.sip.max_message_size,
                                config.sip.max_tcp_connections, config.sip.tcp_idle_timeout,
                                absorb=sink.absorb, tls=prepared.tls, rejected=metrics.rejected,
                                connections=connections, unreachable=sink.unreachable,
                                websocket=web_options, overload=overload)

    # Next hops named by host names are located in DNS only when the dns resolver is on:
    # taking it out of proxy.resolvers keeps the SIP path off DNS altogether.
    dns_on = "dns" in config.proxy.resolvers
    driver = CoreDriver(core, reactor, resolvers, location, make_transports,
                        locator if dns_on else None)
    upstream = (UpstreamRegistrations(upstream_server, driver, location, reactor,
                                      locator if dns_on else None)
                if upstream_server is not None else None)
    relay_client = None
    if overlay is not None:
        relay_client = RelayClient(driver, reactor, partial(_relayed, core, overlay))
        overlay.relay = relay_client
        relays = core.relay
        overlay.relaying_for = (lambda: len(relays)) if relays is not None else (lambda: 0)
    return Gateway(prepared, metrics, location, local_domains, listen_hosts, myself, users,
                   authenticator, overlay, upstream_server, core, driver, upstream,
                   relay_client)


def _relayed(core: SipCore, overlay: OverlayService, route: str) -> None:
    """The relay flow gives this gateway ``route`` ("": lost): the proxy record-routes
    through it and the overlay publishes it."""
    core.relayed_through = route
    overlay.relayed(route)


def _relay_offer(config: GatewayConfig, myself: Myself) -> str:
    """The URI NATed gateways open relay flows to: this gateway's TCP address beyond
    any NAT ("" when it relays for none or has no TCP listener)."""
    address = myself.external_address("tcp")
    if config.overlay.relay <= 0 or address is None:
        return ""
    return f"sip:{bracketed(address[0])}:{address[1]};transport=tcp"


def _trusted_peer(prepared: Prepared, upstream: UpstreamServer | None,
                  connections: OpenConnections, source: Address) -> bool:
    """Whether ``source`` proved who it is at the transport, so digest is not asked."""
    # Mutual TLS: every TLS connection proved its certificate in the handshake; or
    # this one's certificate names a gateway of the site ([site] peers).
    if source.transport == "tls" and prepared.tls is not None and (
            prepared.tls.require_client_cert or connections.identity(source)):
        return True
    # The configured upstream server relays its own users' requests.
    return upstream is not None and upstream.is_upstream(source.host, source.port)


def _own_route(myself: Myself) -> str:
    """This gateway's SIP URI for overlay records: its UDP (else TCP) address, the
    external one behind NAT."""
    for transport in ("udp", "tcp"):
        address = myself.external_address(transport)
        if address is not None:
            suffix = "" if transport == "udp" else ";transport=tcp"
            return f"sip:{bracketed(address[0])}:{address[1]}{suffix};lr"
    return ""


def _overlay_service(prepared: Prepared, location: LocationService, route: str,
                     metrics: Metrics, reactor: Any, warnings: tuple[str, ...] = (),
                     relay_offer: str = "") -> OverlayService:
    """The overlay node, its signer (the site's certificate, else the gateway's) and
    trust policy."""
    config = prepared.config
    overlay = config.overlay
    material = prepared.signing or prepared.material
    assert material is not None and prepared.overlay_socket is not None
    signer = Signer(material.private_key, material.certificate,
                    remember_signer(config.data_dir, material.private_key, material.certificate))
    pins: dict[str, set[str]] = {}
    for domain, fingerprint in overlay.pins:
        pins.setdefault(domain, set()).add(fingerprint)
    store = OverlayStore(config.database.url, engine=prepared.store.engine
                         if prepared.store.in_memory else None)
    runner = ThreadStoreRunner(store, reactor)
    pin_directory = PinDirectory(runner)
    dns_client = DnsClient([(a.host, a.port)
                            for a in overlay.dns_servers or config.dns.servers] or None,
                           timeout=config.dns.timeout)
    fingerprints = (DomainFingerprints(dns_client)
                    if overlay.trust == "tofu" and overlay.dns_fingerprints else None)
    trust = RecordTrust(overlay.trust, ca_certificates=prepared.overlay_ca, pins=pins,
                        own_signer=signer.signer_id, pin_store=pin_directory,
                        published=fingerprints.get if fingerprints is not None else None,
                        first_pin=overlay.first_pin)
    settings = overlay_settings(config, load_identity(config.data_dir, overlay.id_difficulty),
                                frozenset(machine_addresses()), relay_offer)
    dns = None
    # The domain this overlay publishes itself under is read like the others.
    bootstrap_domains = list(dict.fromkeys(
        [*overlay.bootstrap_dns, *([overlay.publish_dns] if overlay.publish_dns else [])]))
    if bootstrap_domains:
        dns = DnsBootstrap(bootstrap_domains, client=dns_client)
    return OverlayService(settings, prepared.overlay_socket, signer, trust, location, route,
                          reactor, runner, pins=pin_directory, dns_bootstrap=dns,
                          status_writer=partial(write_status_file,
                                                Path(config.data_dir) / OVERLAY_STATUS_FILE),
                          lookup_observer=metrics.observe_overlay_lookup,
                          warnings=warnings, publish=publish_settings(config, signer),
                          fingerprints=fingerprints)


def _store_runner(prepared: Prepared, reactor: Any) -> StoreRunner:
    """``database.worker``: a worker process, except for an in-memory SQLite database
    (which only exists inside this process)."""
    if prepared.config.database.worker == "process" and not prepared.store.in_memory:
        return ProcessStoreRunner(prepared.config.database.url, reactor)
    return ThreadStoreRunner(prepared.store, reactor)


