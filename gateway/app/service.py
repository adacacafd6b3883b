"""Assembles the gateway into one Twisted service.

:func:`prepare` does the start-up work that can fail because of the user's set-up — config,
data dir, schema upgrade, binding the listen sockets — before the reactor runs, so each
failure is one line and a non-zero exit. :class:`GatewayService` then loads the registry
(in a worker thread) and starts serving.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from gateway import __version__
from gateway.app.config import ConfigError, GatewayConfig, load_config
from gateway.app.gc_policy import tune_garbage_collector
from gateway.app.metrics import Metrics, process_memory
from gateway.app.secret import load_secret
from gateway.app.status_file import OVERLAY_STATUS_FILE, STATUS_FILE, write_status_file
from gateway.app.status_http import status_site
from gateway.app.values import is_ip_literal
from gateway.app.wiring import auth_policy, registrar_policy, tls_settings, upstream_settings
from gateway.log import get_logger, set_log_level
from gateway.overlay.dns_bootstrap import DnsBootstrap
from gateway.overlay.identity import load_node_id
from gateway.overlay.record import Signer
from gateway.overlay.service import OverlayService, OverlaySettings, run_async
from gateway.overlay.trust import RecordTrust
from gateway.registry.overlay_store import OverlayStore, PinDirectory
from gateway.registry.runner import ProcessStoreRunner, StoreRunner, ThreadStoreRunner
from gateway.registry.service import LocationService
from gateway.registry.store import LocationStore, RegistryUnavailable
from gateway.registry.users import UserDirectory, UserStore
from gateway.server.authenticator import Authenticator
from gateway.server.core import SipCore
from gateway.server.myself import LocalDomains, Myself
from gateway.server.proxy import Proxy
from gateway.server.ratelimit import SourceRateLimiter
from gateway.server.registrar import Registrar
from gateway.server.routing import available_resolvers, build_chain
from gateway.server.upstream import UpstreamRegistrations
from gateway.sip.address import Address, ListenAddress
from gateway.sip.client_transaction import ClientTransactionLayer
from gateway.sip.tls import (
    TlsContexts,
    TlsMaterial,
    TlsSetupError,
    load_material,
)
from gateway.sip.transaction import TransactionLayer
from gateway.sip.transport import ListenError, TransportManager, bind_socket
from gateway.sip.uri import bracketed

log = get_logger("gateway.app.service")


class StartupError(Exception):
    """A set-up problem; ``str()`` is the one-line message shown to the user."""


@dataclass
class Prepared:
    """Everything :func:`prepare` opened."""

    config: GatewayConfig
    store: LocationStore
    sockets: list[tuple[str, socket.socket]] = field(default_factory=list)
    tls: TlsContexts | None = None
    secret: bytes = b""
    material: TlsMaterial | None = None
    overlay_socket: socket.socket | None = None
    overlay_ca: list[Any] = field(default_factory=list)
    status_socket: socket.socket | None = None


def prepare(config_path: str | None, overrides: dict[str, str]) -> Prepared:
    """Load the config, create the data dir, upgrade the schema and bind the sockets."""
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    set_log_level(config.gateway.log_level)
    installed = available_resolvers()
    for name in config.proxy.resolvers:
        if name not in installed:
            raise StartupError(f"proxy.resolvers: unknown resolver {name!r} (installed: "
                               f"{', '.join(sorted(installed))})")
    try:
        os.makedirs(config.data_dir, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"gateway.data_dir: cannot create {config.data_dir}: "
                           f"{exc.strerror}") from None
    try:
        store = LocationStore(config.database.url)
    except RegistryUnavailable as exc:
        raise StartupError(f"database.url: {_first_line(exc)}") from None
    try:
        if config.database.auto_upgrade:
            store.upgrade_schema()
        elif not store.schema_is_current():
            raise StartupError("database schema is not current and database.auto_upgrade is "
                               "off: run `p2psip-admin db upgrade`")
    except StartupError:
        store.close()
        raise
    except Exception as exc:
        store.close()
        raise StartupError(f"database.url: cannot open the registry: {_first_line(exc)}"
                           ) from None
    store.close()  # no connection may cross a daemon fork; the worker thread reconnects
    prepared = Prepared(config, store)
    try:
        prepared.secret = load_secret(config.data_dir)
        if config.tls.listen or config.overlay.enabled:
            prepared.material = _tls_material(config)
        if config.tls.listen:
            assert prepared.material is not None
            prepared.tls = TlsContexts(tls_settings(config), prepared.material)
        if config.overlay.enabled and config.overlay.ca_file:
            prepared.overlay_ca = _certificates(config.overlay.ca_file, "overlay.ca_file")
    except (OSError, TlsSetupError) as exc:
        raise StartupError(str(exc)) from None
    try:
        for key, kind, addresses in (("sip.listen_udp", "udp", config.sip.listen_udp),
                                     ("sip.listen_tcp", "tcp", config.sip.listen_tcp),
                                     ("tls.listen", "tls", config.tls.listen)):
            for address in addresses:
                prepared.sockets.append((kind, _bind(key, kind, address)))
        if config.overlay.enabled and config.overlay.listen is not None:
            prepared.overlay_socket = _bind("overlay.listen", "udp", config.overlay.listen)
        if config.status.enabled and config.status.listen is not None:
            prepared.status_socket = _bind("status.listen", "tcp", config.status.listen)
    except ListenError as exc:
        for _, sock in prepared.sockets:
            sock.close()
        if prepared.overlay_socket is not None:
            prepared.overlay_socket.close()
        raise StartupError(str(exc)) from None
    return prepared


def _bind(key: str, kind: str, address: ListenAddress) -> socket.socket:
    """``bind_socket`` whose error names the setting (``sip.listen_udp: cannot ...``)."""
    try:
        return bind_socket(kind, address)
    except ListenError as exc:
        raise ListenError(f"{key}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tls_material(config: GatewayConfig) -> TlsMaterial:
    """The configured or the generated certificate (named for the configured domains
    first, then this host's names and addresses): for TLS and for signing overlay
    records."""
    names: list[str] = []
    addresses: list[str] = ["127.0.0.1", "::1"]
    for name in (*config.gateway.domains, socket.getfqdn(), socket.gethostname()):
        name = name.lower().rstrip(".")
        target = addresses if is_ip_literal(name) else names
        if name and name != "localhost" and name not in target:
            target.append(name)
    names.append("localhost")  # last: never the common name when there is another
    hosts = [a.host for a in config.tls.listen if a.host not in ("0.0.0.0", "::")]
    if config.sip.advertised_address:
        hosts.append(config.sip.advertised_address)
    if len(hosts) < len(config.tls.listen) or not hosts:
        with contextlib.suppress(OSError):
            hosts.append(socket.gethostbyname(socket.gethostname()))  # what we advertise
    addresses += [h for h in hosts if h not in addresses]
    return load_material(tls_settings(config), config.data_dir, names, addresses)



class GatewayService(service.Service):
    """The running gateway: registry cache, SIP core and listeners."""

    def __init__(self, prepared: Prepared, reactor: Any, *, tune_gc: bool = False) -> None:
        self.prepared = prepared
        self.reactor = reactor
        #: Apply :func:`gateway.app.gc_policy.tune_garbage_collector` once ready (a setting
        #: for the whole process: the twistd plugin turns it on).
        self.tune_gc = tune_gc
        config = prepared.config
        self.location = LocationService(prepared.store, reactor,
                                        sweep_interval=config.database.sweep_interval,
                                        sync_interval=config.database.sync_interval,
                                        commit_interval=config.database.commit_interval,
                                        runner=_store_runner(prepared, reactor))
        listen_hosts = [a.host for a in (*config.sip.listen_udp, *config.sip.listen_tcp)]
        self.local_domains = LocalDomains(config.gateway.domains,
                                          [*machine_addresses(), *listen_hosts],
                                          (socket.gethostname(), socket.getfqdn()))
        self._listen_hosts = listen_hosts
        t1 = config.sip.t1
        self.transactions = TransactionLayer(
            t1, config.sip.t2, config.sip.t4,
            invite_lifetime=config.proxy.timer_c + 64 * t1 + 32)
        self.clients = ClientTransactionLayer(t1, config.sip.t2, config.sip.t4)
        # The sockets are bound already (prepare): the gateway knows its own addresses.
        listeners = [(kind, *sock.getsockname()[:2]) for kind, sock in prepared.sockets]
        self.myself = Myself(self.local_domains, listeners,
                             advertised_host=config.sip.advertised_address,
                             wildcard_host=host_address())
        self.metrics = Metrics()
        self.transports = TransportManager(reactor, self._receive, config.sip.max_message_size,
                                           config.sip.max_tcp_connections,
                                           config.sip.tcp_idle_timeout,
                                           absorb=self._absorb, tls=prepared.tls,
                                           rejected=self.metrics.rejected)
        user_store = UserStore(config.database.url, engine=prepared.store.engine
                               if prepared.store.in_memory else None)
        self.users = UserDirectory(user_store, reactor, config.database.sync_interval)
        self.authenticator = Authenticator(auth_policy(config), self.users, prepared.secret,
                                           self.myself)
        self.location.on_commit = self.metrics.db_write.observe
        self.core = SipCore(Registrar(registrar_policy(config), self.local_domains), self.location,
                            self.transactions, self.transports.send, reactor,
                            force_rport=config.sip.force_rport, clients=self.clients,
                            myself=self.myself, authenticator=self.authenticator,
                            trusted_peer=self._trusted_peer, metrics=self.metrics)
        limits = config.limits
        if limits.source_rate > 0:
            exempt = self.authenticator.is_trusted if limits.exempt_trusted else (
                lambda _host: False)
            self.core.rate_limit = SourceRateLimiter(limits.source_rate, limits.source_burst,
                                                     reactor.seconds, exempt)
        self.overlay: OverlayService | None = None
        if prepared.overlay_socket is not None and prepared.material is not None:
            route = config.overlay.route or _own_route(self.myself)
            self.overlay = _overlay_service(prepared, self.location, route, self.metrics,
                                            reactor)
        self._status_port: Any = None
        self._status_loop = LoopingCall(self.write_status)
        self._status_loop.clock = reactor
        # Interfaces come and go (DHCP, VPN): what counts as this machine follows them.
        self._addresses_loop = LoopingCall(lambda: self.local_domains.set_addresses(
            [*machine_addresses(), *self._listen_hosts]))
        self._addresses_loop.clock = reactor
        self.upstream: UpstreamRegistrations | None = None
        upstream = upstream_settings(config)
        if upstream is not None:
            self.upstream = UpstreamRegistrations(
                upstream, self.core, self.location, reactor)
        self.proxy = Proxy(self.core, build_chain(config.proxy.resolvers, self), reactor,
                           timer_c=config.proxy.timer_c)
        self.core.proxy = self.proxy
        self.core.connections = self.transports.has_connection
        self.ready: Deferred[None] = Deferred()
        self._stopped = False  # the listeners are closed: status says "stopped"

    def _receive(self, message: Any, source: Any, raw: bytes = b"") -> None:
        self.core.receive(message, source, raw)

    def _absorb(self, data: bytes, source: Any) -> bool:
        return self.core.absorb_datagram(data, source)

    def _trusted_peer(self, source: Address) -> bool:
        # Mutual TLS: every TLS connection proved its certificate in the handshake.
        if (source.transport == "tls" and self.prepared.tls is not None
                and self.prepared.tls.require_client_cert):
            return True
        # The configured upstream server relays its own users' requests.
        return self.upstream is not None and self.upstream.is_upstream(source.host, source.port)

    def status(self) -> dict[str, Any]:
        """What ``/status``, ``status.json`` and ``p2psip-admin status`` show."""
        location = self.location
        return {
            "state": "stopped" if self._stopped else "running",
            "version": __version__, "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.metrics.started, 1),
            "updated": time.time(),
            "listeners": self.transports.listening_descriptions(),
            "domains": sorted(self.local_domains.names),
            "registry": {
                "database": self.prepared.store.safe_url,
                "state": "failing" if location.last_error else "ok",
                "last_error": location.last_error, "bindings": location.binding_count(),
                "aors": location.aor_count(), "commits": location.commits,
                "commit_failures": location.commit_failures,
                "last_commit_ms": round(1000 * location.last_commit_seconds, 2)},
            "transactions": {"server": len(self.transactions), "client": len(self.clients),
                             "proxied": len(self.proxy)},
            "overlay": self.overlay.status() if self.overlay is not None
            else {"state": "disabled"},
            "upstream": {"uri": self.upstream.settings.uri, "registered_ok": self.upstream.ok,
                         "failed": self.upstream.failed} if self.upstream is not None else None,
            "auth": {"users": len(self.users), "failures": self.authenticator.failures},
            "requests": dict(self.metrics.requests),
            "responses": dict(self.metrics.responses),
            "registrations": self.metrics.registrations,
            "rate_limited": self.metrics.rate_limited,
            "malformed": self.metrics.malformed,
            "memory": process_memory(),
        }

    def write_status(self) -> None:
        """Write :meth:`status` to ``<data_dir>/status.json`` (atomically)."""
        write_status_file(Path(self.prepared.config.data_dir) / STATUS_FILE, self.status())

    def _write_final_status(self) -> None:
        self._stopped = True
        self.write_status()

    def startService(self) -> None:  # noqa: N802 - Twisted API
        """Load the registry and the users, then open the listeners."""
        super().startService()
        d = self.location.start()
        d.addCallback(lambda _: Deferred.fromCoroutine(self.users.start()))
        d.addCallback(self._listen)
        d.addCallbacks(self.ready.callback, self._start_failed)

    def _listen(self, _: object) -> Deferred[None] | None:
        for kind, sock in self.prepared.sockets:
            self.transports.adopt(kind, sock)
        self.prepared.sockets = []
        for description in self.transports.listening_descriptions():
            log.info("listening on {listener}", listener=description)
        tls = self.prepared.tls
        if tls is not None:
            log.info("TLS certificate {subject} from {source}, SHA-256 fingerprint "
                     "{fingerprint}", subject=tls.material.subject,
                     source=tls.material.source, fingerprint=tls.material.fingerprint)
        log.info("gateway ready: {bindings} live bindings, {users} user credentials, "
                 "domains {domains}", bindings=self.location.binding_count(),
                 users=len(self.users), domains=", ".join(sorted(self.local_domains.names)))
        if self.tune_gc:
            tune_garbage_collector()
        if self.prepared.status_socket is not None:
            sock = self.prepared.status_socket
            self._status_port = self.reactor.adoptStreamPort(
                sock.fileno(), sock.family, status_site(self.metrics, self.status))
            sock.close()
            self.prepared.status_socket = None
            address = self._status_port.getHost()
            log.info("status endpoint on http://{host}:{port}/status and /metrics",
                     host=address.host, port=address.port)
        self._addresses_loop.start(30.0, now=False).addErrback(
            lambda f: log.failure("address refresh stopped", f))
        self._status_loop.start(5.0, now=True).addErrback(
            lambda f: log.failure("status file writer stopped", f))
        if self.upstream is not None:
            self.upstream.start()
            log.info("upstream server {uri}: registering local users as {domain}",
                     uri=self.upstream.settings.uri, domain=self.upstream.domain)
        if self.overlay is None:
            _write_disabled_status(Path(self.prepared.config.data_dir))
            return None
        # Ready once the node listens; joining goes on in the background.
        return run_async(self.overlay.start()).addErrback(
            lambda f: log.failure("the overlay failed to start; serving locally", f))

    def _start_failed(self, failure: Any) -> None:
        log.critical("gateway failed to start: {error}", error=failure.getErrorMessage())
        print(f"p2psip-gateway: failed to start: {failure.getErrorMessage()}", file=sys.stderr)
        self.ready.errback(failure)
        self.ready.addErrback(lambda _: None)
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:  # noqa: N802 - Twisted API
        """Graceful stop: refuse new calls and registrations (503), let the requests
        being proxied and the registry writes under way finish for at most
        ``sip.shutdown_grace`` seconds, then close the listeners and flush the registry."""
        super().stopService()
        for loop in (self._status_loop, self._addresses_loop):
            if loop.running:
                loop.stop()
        if self.overlay is not None:
            self.overlay.mirror.stop()  # publish nothing more while going down
        if self.upstream is not None:
            self.upstream.stop()
        self.core.draining = True
        grace = self.prepared.config.sip.shutdown_grace
        log.info("stopping: refusing new requests, up to {s:g} s for {n} request(s) "
                 "under way", s=grace, n=len(self.proxy))
        drained = Deferred.fromCoroutine(self._drain(grace))
        drained.addCallback(lambda _: self._close())
        return drained

    async def _drain(self, grace: float) -> None:
        deadline = self.reactor.seconds() + grace
        while self.reactor.seconds() < deadline and (len(self.proxy)
                                                     or self.location.pending_writes()):
            d: Deferred[None] = Deferred()
            self.reactor.callLater(0.05, d.callback, None)
            await d
        if len(self.proxy):
            log.warn("stopping with {n} request(s) still being proxied", n=len(self.proxy))

    def _close(self) -> Deferred[Any]:
        if self._status_port is not None:
            self._status_port.stopListening()
            self._status_port = None
        self.core.stop()
        for _, sock in self.prepared.sockets:
            sock.close()
        self.prepared.sockets = []
        stopped = DeferredList(self.transports.stop())
        if self.overlay is not None:
            overlay = self.overlay
            stopped.addCallback(lambda _: run_async(overlay.stop()))
            stopped.addErrback(lambda f: log.failure("overlay stop failed", f))
        stopped.addCallback(lambda _: self.users.stop())
        stopped.addCallback(lambda _: self.location.stop())
        stopped.addCallback(lambda _: self._write_final_status())
        return stopped


def machine_addresses() -> list[str]:
    """Every IP address of this machine's interfaces (what "this gateway" means in a
    URI, besides the names)."""
    addresses = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(entry.address.split("%", 1)[0])
    return addresses


def host_address() -> str:
    """This host's address by its name (what a wildcard listener advertises)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _write_disabled_status(data_dir: Path) -> None:
    """Tell ``p2psip-admin overlay status`` that the overlay is off here."""
    write_status_file(data_dir / OVERLAY_STATUS_FILE, {
        "state": "disabled", "since": time.time(), "updated": time.time(),
        "pid": os.getpid()})


def _certificates(path: str, key: str) -> list[Any]:
    try:
        with open(path, "rb") as handle:
            certificates = x509.load_pem_x509_certificates(handle.read())
    except OSError as exc:
        raise TlsSetupError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise TlsSetupError(f"{key}: no PEM certificate in {path}") from None
    return certificates


def _own_route(myself: Myself) -> str:
    """This gateway's SIP URI for overlay records: its UDP (else TCP) address."""
    for transport in ("udp", "tcp"):
        address = myself.address(transport)
        if address is not None:
            suffix = "" if transport == "udp" else ";transport=tcp"
            return f"sip:{bracketed(address[0])}:{address[1]}{suffix};lr"
    return ""


def _overlay_service(prepared: Prepared, location: LocationService, route: str,
                     metrics: Metrics, reactor: Any) -> OverlayService:
    """The overlay node, its signer (the gateway's certificate) and trust policy."""
    config = prepared.config
    overlay = config.overlay
    material = prepared.material
    assert material is not None and prepared.overlay_socket is not None
    signer = Signer(material.private_key, material.certificate)
    pins: dict[str, set[str]] = {}
    for domain, fingerprint in overlay.pins:
        pins.setdefault(domain, set()).add(fingerprint)
    store = OverlayStore(config.database.url, engine=prepared.store.engine
                         if prepared.store.in_memory else None)
    runner = ThreadStoreRunner(store, reactor)
    pin_directory = PinDirectory(runner)
    trust = RecordTrust(overlay.trust, ca_certificates=prepared.overlay_ca, pins=pins,
                        own_signer=signer.signer_id, pin_store=pin_directory)
    settings = OverlaySettings(
        bootstrap=tuple((a.host, a.port) for a in overlay.bootstrap), k=overlay.k,
        alpha=overlay.alpha, rpc_timeout=overlay.rpc_timeout,
        record_lifetime=overlay.record_lifetime, cache_seconds=overlay.cache,
        negative_cache_seconds=min(overlay.cache, 2.0),
        node_id=load_node_id(config.data_dir), publish_rate=overlay.publish_rate,
        health_interval=overlay.health_interval)
    dns = None
    if overlay.bootstrap_dns:
        servers = [(a.host, a.port) for a in overlay.dns_servers] or None
        dns = DnsBootstrap(overlay.bootstrap_dns, servers)
    return OverlayService(settings, prepared.overlay_socket, signer, trust, location, route,
                          reactor, runner, pins=pin_directory, dns_bootstrap=dns,
                          status_writer=partial(write_status_file,
                                                Path(config.data_dir) / OVERLAY_STATUS_FILE),
                          lookup_observer=metrics.observe_overlay_lookup)


def _store_runner(prepared: Prepared, reactor: Any) -> StoreRunner:
    """``database.worker``: a worker process, except for an in-memory SQLite database
    (which only exists inside this process)."""
    if prepared.config.database.worker == "process" and not prepared.store.in_memory:
        return ProcessStoreRunner(prepared.config.database.url, reactor)
    return ThreadStoreRunner(prepared.store, reactor)


def make_gateway_service(config_path: str | None, overrides: dict[str, str],
                         reactor: Any, *, tune_gc: bool = False) -> GatewayService:
    """:func:`prepare` plus the service; raises :class:`StartupError`."""
    return GatewayService(prepare(config_path, overrides), reactor, tune_gc=tune_gc)
