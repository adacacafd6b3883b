"""The gateway as one Twisted service: it starts and stops the parts that
:func:`gateway.app.assembly.assemble` built (the registry cache, the users, the
listeners, status, the upstream registrations and the overlay), in order.

:func:`gateway.app.startup.prepare` has done everything that can fail because of the
user's set-up before; :class:`GatewayService` then loads the registry (in its worker)
and starts serving.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from gateway.app.assembly import Gateway, assemble
from gateway.app.gc_policy import tune_garbage_collector
from gateway.app.startup import Prepared, StartupError, machine_addresses, prepare
from gateway.app.status import gateway_status
from gateway.app.status_file import OVERLAY_STATUS_FILE, STATUS_FILE, write_status_file
from gateway.app.status_http import status_site
from gateway.log import get_logger
from gateway.overlay.service import run_async

log = get_logger("gateway.app.service")

__all__ = ["GatewayService", "StartupError", "make_gateway_service", "prepare"]


class GatewayService(service.Service):
    """The running gateway: starts and stops its parts."""

    def __init__(self, prepared: Prepared, reactor: Any, *, tune_gc: bool = False) -> None:
        """``tune_gc``: apply :func:`gateway.app.gc_policy.tune_garbage_collector` once
        ready (a setting for the whole process: the twistd plugin turns it on)."""
        self.prepared = prepared
        self.reactor = reactor
        self.tune_gc = tune_gc
        self.parts: Gateway = assemble(prepared, reactor)
        parts = self.parts
        # The parts tests and tools look at.
        self.location, self.users, self.metrics = parts.location, parts.users, parts.metrics
        self.local_domains, self.myself = parts.local_domains, parts.myself
        self.core, self.driver, self.transports = parts.core, parts.driver, parts.transports
        self.proxy, self.overlay, self.upstream = parts.core.proxy, parts.overlay, parts.upstream
        self.authenticator = parts.authenticator
        self._status_port: Any = None
        self._status_loop = LoopingCall(self.write_status)
        self._status_loop.clock = reactor
        # Interfaces come and go (DHCP, VPN): what counts as this machine follows them.
        self._addresses_loop = LoopingCall(lambda: self.local_domains.set_addresses(
            [*machine_addresses(), *parts.listen_hosts]))
        self._addresses_loop.clock = reactor
        self.ready: Deferred[None] = Deferred()
        self._stopped = False  # the listeners are closed: status says "stopped"

    def status(self) -> dict[str, Any]:
        """What ``/status``, ``status.json`` and ``p2psip-admin status`` show."""
        return gateway_status(self.parts, stopped=self._stopped)

    def write_status(self) -> None:
        """Write :meth:`status` to ``<data_dir>/status.json`` (atomically), and the
        overlay's status beside it (so a gateway waiting between join attempts is not
        taken for a dead one)."""
        write_status_file(Path(self.prepared.config.data_dir) / STATUS_FILE, self.status())
        if self.overlay is not None and not self._stopped and self.overlay.state != "stopped":
            self.overlay.write_status()

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
        if self.parts.relay_client is not None:
            self.parts.relay_client.stop()
        self.core.drain()
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
        self.driver.stop()
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


def _write_disabled_status(data_dir: Path) -> None:
    """Tell ``p2psip-admin overlay status`` that the overlay is off here."""
    write_status_file(data_dir / OVERLAY_STATUS_FILE, {
        "state": "disabled", "since": time.time(), "updated": time.time(),
        "pid": os.getpid()})


def make_gateway_service(config_path: str | None, overrides: dict[str, str],
                         reactor: Any, *, tune_gc: bool = False) -> GatewayService:
    """:func:`prepare` plus the service; raises :class:`StartupError`."""
    return GatewayService(prepare(config_path, overrides), reactor, tune_gc=tune_gc)
