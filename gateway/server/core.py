"""The SIP core: validates requests, runs them through the transaction layers and hands
them to the registrar or the proxy (or answers OPTIONS to the gateway and CANCEL itself).

It never touches sockets: it gets ``(message, source)`` from the transports and gives bytes
back through the ``send`` callable. The only Twisted parts are the Deferreds of the
location service and the one timer that drives both transaction layers. It is also the
proxy's :class:`~gateway.server.proxy.ProxyIO`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from gateway.log import debug_enabled, get_logger
from gateway.registry.binding import Binding
from gateway.server.authenticator import Authenticator
from gateway.server.myself import Myself
from gateway.server.ratelimit import SourceRateLimiter
from gateway.server.registrar import SUPPORTED_EXTENSIONS, Registrar
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientTransaction, ClientTransactionLayer
from gateway.sip.errors import SipSyntaxError
from gateway.sip.forwarding import received_address
from gateway.sip.message import Request, Response
from gateway.sip.responses import build_response
from gateway.sip.transaction import (
    Send,
    ServerTransaction,
    State,
    TransactionLayer,
    transaction_key,
)

if TYPE_CHECKING:
    from gateway.server.proxy import Proxy

log = get_logger("gateway.server.core")

# What the gateway answers itself; everything else it proxies (RFC 3261 §16: a proxy
# forwards methods it does not know, too).
ALLOWED_METHODS = ("REGISTER", "OPTIONS", "ACK", "CANCEL")
# Methods a UA may send the gateway itself that it knows but does not serve: 405.
KNOWN_METHODS = frozenset({"INVITE", "BYE", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
                           "INFO", "REFER", "MESSAGE", "UPDATE"})
SendWithError = Callable[..., None]  # (data, address, on_error=None)


class CoreCounters(Protocol):
    """What the core counts (the application's metrics implement it)."""

    def request(self, method: str) -> None:
        """A request arrived."""

    def response(self, status: int) -> None:
        """A response was sent."""

    def rejected(self, status: int) -> None:
        """A message lacked valid mandatory headers: answered ``status`` or dropped (0)."""

    def limited(self) -> None:
        """A request was refused by the per-source rate limit."""

    def registered(self) -> None:
        """A REGISTER was answered 200 after its commit."""


class NoCounters:
    """Counts nothing (tools and tests that do not look)."""

    def request(self, method: str) -> None:
        """Ignored."""

    def response(self, status: int) -> None:
        """Ignored."""

    def rejected(self, status: int) -> None:
        """Ignored."""

    def limited(self) -> None:
        """Ignored."""

    def registered(self) -> None:
        """Ignored."""


class LocationLike:
    """What the core needs of :class:`gateway.registry.service.LocationService`."""

    def current(self, aor: str) -> list[Binding]: ...  # pragma: no cover
    def lookup(self, aor: str, now: float | None = None) -> list[Binding]: ...  # pragma: no cover
    def replace(self, aor: str, bindings: list[Binding]): ...  # pragma: no cover
    def by_contact(self, contact: str) -> Binding | None: ...  # pragma: no cover


class SipCore:
    """Request handling for one gateway."""

    def __init__(self, registrar: Registrar, location: LocationLike,
                 transactions: TransactionLayer, send: SendWithError,
                 reactor: IReactorTime, *, force_rport: bool = True,
                 wall_clock: Callable[[], float] = time.time,
                 clients: ClientTransactionLayer | None = None,
                 myself: Myself | None = None,
                 authenticator: Authenticator | None = None,
                 trusted_peer: Callable[[Address], bool] | None = None,
                 metrics: CoreCounters | None = None) -> None:
        self.registrar = registrar
        self.location = location
        self.transactions = transactions
        # Not ``clients or ...``: an empty layer is falsy (it has a length).
        self.clients = clients if clients is not None else ClientTransactionLayer(
            transactions.t1, transactions.t2, transactions.t4)
        self.send = send
        self.reactor = reactor
        self.force_rport = force_rport
        self.wall_clock = wall_clock
        self.myself = myself or Myself(registrar.is_local, {})
        #: Digest authentication; None lets every request through (tests, tools).
        self.authenticator = authenticator
        #: Whether a source proved its identity at the transport (mutual TLS).
        self.trusted_peer = trusted_peer or (lambda _source: False)
        self.metrics: CoreCounters = metrics or NoCounters()
        #: Per-source request rate limit (set by the service).
        self.rate_limit: SourceRateLimiter | None = None
        #: Set while the gateway shuts down: new dialogs and registrations get 503.
        self.draining = False
        #: The transaction user for everything not answered here (set by the service).
        self.proxy: Proxy | None = None
        #: Tells whether a stream connection to an address is open (set by the service).
        self.connections: Callable[[Address], bool] | None = None
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0

    # --- entry point from the transports --------------------------------------------------

    def absorb_datagram(self, data: bytes, source: Address) -> bool:
        """True when ``data`` is a byte-identical retransmission of a request in a live
        transaction; it is then handled (last response re-sent) without parsing."""
        absorbed, sends = self.transactions.absorb_datagram(data, source)
        self._send_all(sends)
        return absorbed

    def receive(self, message: Request | Response, source: Address, raw: bytes = b"") -> None:
        """Handle one parsed message from ``source`` (``raw``: its datagram, for the
        retransmission fast path); never raises."""
        try:
            if isinstance(message, Request):
                self._receive_request(message, source, raw)
            else:
                self._receive_response(message)
        except Exception:
            log.failure("unhandled error while handling {message!r} from {source}",
                        message=message, source=source)

    def _receive_request(self, request: Request, source: Address, raw: bytes) -> None:
        try:
            vias = request.vias
            if not vias:
                raise SipSyntaxError("missing Via header")
            request.from_, request.to, request.call_id  # noqa: B018 - validates them
            cseq = request.cseq
            if cseq.method != request.method:
                raise SipSyntaxError("CSeq method does not match the request method")
            request.max_forwards  # noqa: B018
        except SipSyntaxError as exc:
            # Malformed like what the transports cannot parse: counted with them.
            if request.method != "ACK" and request.has_header("via"):
                self._send_all([(build_response(request, 400, f"Bad Request ({exc})")
                                 .serialize(), source)])
                self.metrics.rejected(400)
            else:
                self.metrics.rejected(0)
            return
        method = request.method
        if (self.rate_limit is not None and method != "ACK"
                and not self.rate_limit.allow(source.host)):
            self.metrics.limited()
            self._unavailable(request, source, "too many requests from this address",
                              self.rate_limit.retry_after(source.host))
            return
        if self.draining and method not in ("ACK", "CANCEL") and not request.to.tag:
            self._unavailable(request, source, "shutting down", 5)
            return
        reply_to = self._stamp_via(request, source)
        now = self.reactor.seconds()
        self.metrics.request(method)
        if debug_enabled():
            log.debug("{method} {uri} from {transport} {host}:{port} (Call-ID {call_id})",
                      method=method, uri=str(request.uri), transport=source.transport,
                      host=source.host, port=source.port, call_id=request.call_id)
        if method == "ACK":
            absorbed = self.transactions.absorb_ack(request, source, now)
            if not absorbed and self.proxy is not None:
                self.proxy.forward_ack(request)  # the ACK of a 2xx
            self._arm_timer()
            return
        txn, sends = self.transactions.receive_request(request, source, reply_to, now)
        self._send_all(sends)
        self._arm_timer()
        if txn is None:
            return
        if raw:
            self.transactions.remember_datagram(txn, raw, source)
        try:
            if self.authenticator is not None and method != "CANCEL":
                denial = self.authenticator.check(request, source, self.trusted_peer(source))
                if denial is not None:
                    self._respond(txn, denial)
                    return
            if method == "REGISTER":
                self._register(txn, request, source)
            elif method == "OPTIONS" and self.myself.is_for_me(request):
                self._respond(txn, build_response(request, 200, headers=self._capabilities()))
            elif method == "CANCEL":
                self._cancel(txn, request)
            elif self.proxy is not None and not (self.myself.is_for_me(request)
                                                 and not request.has_header("route")):
                self.proxy.handle_request(txn, request)
            else:
                # Addressed to the gateway itself (not a strict-routed request): it is
                # the UAS, and serves only REGISTER and OPTIONS (RFC 3261 §8.2.1).
                status = 405 if method in KNOWN_METHODS else 501
                self._respond(txn, build_response(request, status, headers=[
                    ("Allow", ", ".join(ALLOWED_METHODS))]))
        except SipSyntaxError as exc:
            self._respond(txn, build_response(request, 400, f"Bad Request ({exc})"))

    def _receive_response(self, response: Response) -> None:
        try:
            response.top_via, response.cseq  # noqa: B018 - validates them
        except SipSyntaxError:
            return  # a response that cannot be matched is dropped (RFC 3261 §18.1.2)
        taken, sends = self.clients.receive_response(response, self.reactor.seconds())
        self._send_all(sends)
        if taken:
            self._dispatch_client_events()
        self._arm_timer()

    def _dispatch_client_events(self) -> None:
        for event, txn, response in self.clients.take_events():
            # A transaction's owner that handles its own events (the upstream
            # registrations) gets them; the proxy gets the rest.
            handler = getattr(txn.owner, "client_event", None)
            if handler is None and self.proxy is not None:
                handler = self.proxy.client_event
            if handler is None:
                continue
            try:
                handler(event, txn, response)
            except Exception:
                log.failure("failed on {event} of {key}", event=event, key=txn.key)

    # --- methods --------------------------------------------------------------------------

    def _register(self, txn: ServerTransaction, request: Request, source: Address) -> None:
        now = self.wall_clock()
        aor = self.registrar.aor_of(request)
        current = self.location.current(aor) if aor else []
        decision = self.registrar.decide(request, source, current, now)
        if decision.response is not None:
            self._respond(txn, decision.response)
            return
        assert decision.aor is not None and decision.bindings is not None
        bindings = list(decision.bindings)
        if not request.contacts and _same(current, self.location.lookup(decision.aor, now)):
            self._respond(txn, self.registrar.ok_response(request, bindings, now))
            return

        def committed(_: object) -> None:
            self.metrics.registered()
            self._respond(txn, self.registrar.ok_response(request, bindings,
                                                          self.wall_clock()))

        def failed(failure: Failure) -> None:
            log.error("registry write failed for {aor}: {error}", aor=decision.aor,
                      error=failure.getErrorMessage())
            self._respond(txn, build_response(request, 500, "Server Internal Error "
                                              "(registry unavailable)",
                                              headers=[("Retry-After", "5")]))

        self.location.replace(decision.aor, bindings).addCallbacks(committed, failed)

    def _cancel(self, txn: ServerTransaction, request: Request) -> None:
        invite = self.transactions.find(transaction_key(request, for_method="INVITE"))
        if invite is None:
            self._respond(txn, build_response(request, 481))
            return
        self._respond(txn, build_response(request, 200))
        if invite.state is not State.PROCEEDING or invite.request is None:
            return  # already answered: the CANCEL changes nothing (RFC 3261 §9.2)
        if self.proxy is None or not self.proxy.cancel(invite):
            self._respond(invite, build_response(invite.request, 487))

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", "application/sdp"),
                ("Accept-Encoding", "identity"), ("Accept-Language", "en"),
                ("Supported", ", ".join(SUPPORTED_EXTENSIONS))]

    # --- ProxyIO --------------------------------------------------------------------------

    def respond(self, txn: ServerTransaction, response: Response) -> None:
        """Send ``response`` in ``txn`` (for the proxy)."""
        self._respond(txn, response)

    def start_client(self, request: Request, destination: Address, owner: object,
                     branch: str | None = None) -> ClientTransaction:
        """Send ``request`` in a new client transaction (for the proxy)."""
        txn, sends = self.clients.send(request, destination, owner, self.reactor.seconds(),
                                       branch)

        def failed(reason: str) -> None:
            log.info("cannot send {method} to {destination}: {reason}",
                     method=request.method, destination=destination, reason=reason)
            self.clients.transport_error(txn, reason)
            self._dispatch_client_events()

        for data, address in sends:
            self.send(data, address, failed)
        self._arm_timer()
        return txn

    def send_stateless(self, request: Request, destination: Address) -> None:
        """Send ``request`` without a transaction (for the proxy)."""
        self._send_all([(request.serialize(), destination)])

    def is_me(self, host: str, port: int | None) -> bool:
        """Whether ``host``/``port`` name this gateway (for the proxy)."""
        return self.myself.is_me(host, port)

    def local_address(self, transport: str) -> tuple[str, int] | None:
        """The advertised (host, port) for ``transport`` (for the proxy)."""
        return self.myself.address(transport)

    def contact_flow(self, contact: str) -> Address | None:
        """The registration flow of the phone with this Contact (for the proxy)."""
        binding = self.location.by_contact(contact)
        if binding is None:
            return None
        return received_address(binding.received, binding.transport)

    def flow_alive(self, flow: Address) -> bool:
        """Whether a connection with ``flow``'s peer is open (for the proxy)."""
        return self.connections is not None and self.connections(flow)

    # --- sending and timers ---------------------------------------------------------------

    def _respond(self, txn: ServerTransaction, response: Response) -> None:
        self.metrics.response(response.status)
        self._send_all(self.transactions.respond(txn, response, self.reactor.seconds()))
        self._arm_timer()

    def _send_all(self, sends: list[Send]) -> None:
        for data, address in sends:
            try:
                self.send(data, address)
            except Exception:
                log.failure("sending to {address} failed", address=address)

    def _arm_timer(self) -> None:
        deadlines = [d for d in (self.transactions.next_deadline(),
                                 self.clients.next_deadline()) if d is not None]
        if not deadlines:
            return
        deadline = min(deadlines)
        if self._timer is not None and self._timer.active():
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()),
                                             self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.reactor.seconds()
        try:
            self._send_all(self.transactions.on_timer(now))
            self._send_all(self.clients.on_timer(now))
            self._dispatch_client_events()
        except Exception:
            log.failure("transaction timer failed")
        self._arm_timer()

    def stop(self) -> None:
        """Cancel the pending timers (on shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.proxy is not None:
            self.proxy.stop()

    # --- Via handling (RFC 3261 §18.2.1, RFC 3581) -----------------------------------------

    def _unavailable(self, request: Request, source: Address, why: str,
                     retry_after: int) -> None:
        """A stateless 503 with Retry-After (no transaction is created), sent where a
        response to ``request`` goes (RFC 3581)."""
        self.metrics.response(503)
        response = build_response(request, 503, f"Service Unavailable ({why})",
                                  headers=[("Retry-After", str(retry_after))])
        self._send_all([(response.serialize(), self._stamp_via(request, source))])

    def _stamp_via(self, request: Request, source: Address) -> Address:
        """Add ``received``/``rport`` to the top Via and return where responses go."""
        top = request.vias[0]
        host = top.host.strip("[]")
        params: list[tuple[str, str | None]] = []
        if host != source.host:
            params.append(("received", source.host))
        has_rport = top.rport is not None
        if has_rport:
            params.append(("rport", str(source.port)))
        if params:
            kept = tuple(p for p in top.params if p[0].lower() not in ("received", "rport"))
            request.replace_top_via(replace(top, params=kept + tuple(params)))
        if source.reliable:
            return source
        if has_rport or self.force_rport:
            return source
        return Address(source.transport, source.host, top.port or 5060, source.connection)


def _same(a: list[Binding], b: list[Binding]) -> bool:
    return len(a) == len(b) and set(a) == set(b)
