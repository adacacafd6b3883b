"""The SIP core: validates requests, runs them through the transaction layers and hands
them to the registrar or the proxy (or answers OPTIONS to the gateway and CANCEL itself).

Sans-IO in the shape of h11's ``Connection``: every entry point takes one event and the
current time and returns the :mod:`actions <gateway.server.actions>` it caused —
messages to send, the next timer deadline, target lookups and registry writes to run.
Lookups and writes come back as events (:meth:`SipCore.resolved`,
:meth:`SipCore.committed`, …) with the token of the action that asked for them. The core
owns no socket, timer, thread or Deferred; :class:`gateway.server.driver.CoreDriver`
executes its actions. It is also the :class:`~gateway.server.proxy.ProxyIO` of the proxy
it builds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from gateway.log import debug_enabled, get_logger
from gateway.registry.binding import Binding
from gateway.server.actions import (
    Action,
    Deliver,
    Locate,
    Resolve,
    Send,
    Wake,
    WriteBindings,
)
from gateway.server.authenticator import Authenticator
from gateway.server.flow_token import FlowTokens
from gateway.server.myself import Myself
from gateway.server.next_hops import NextHopHealth
from gateway.server.proxy import Proxy
from gateway.server.ratelimit import SourceRateLimiter
from gateway.server.registrar import SUPPORTED_EXTENSIONS, Registrar
from gateway.server.relay import RelayFlows, asks_for_relay, relay_token
from gateway.server.routing import Resolution
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientTransaction, ClientTransactionLayer
from gateway.sip.errors import IllegalTransition, SipSyntaxError
from gateway.sip.forwarding import received_address
from gateway.sip.locate import Located
from gateway.sip.message import Request, Response
from gateway.sip.responses import build_response
from gateway.sip.transaction import ServerTransaction, State, TransactionLayer, transaction_key
from gateway.sip.uri import SipUri

log = get_logger("gateway.server.core")

# What the gateway answers itself; everything else it proxies (RFC 3261 §16: a proxy
# forwards methods it does not know, too).
ALLOWED_METHODS = ("REGISTER", "OPTIONS", "ACK", "CANCEL")
# Methods a UA may send the gateway itself that it knows but does not serve: 405.
KNOWN_METHODS = frozenset({"INVITE", "BYE", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
                           "INFO", "REFER", "MESSAGE", "UPDATE"})


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


class BindingView(Protocol):
    """What the core reads of the registry (from memory; writes are actions)."""

    def current(self, aor: str) -> list[Binding]:
        """Every binding of ``aor``, expired ones included."""

    def lookup(self, aor: str, now: float | None = None) -> list[Binding]:
        """The live bindings of ``aor``."""

    def by_contact(self, contact: str) -> Binding | None:
        """The live binding with this Contact URI."""


def validate_request(request: Request) -> None:
    """Raise :class:`SipSyntaxError` unless ``request`` has the mandatory headers of RFC
    3261 §8.1.1 in a valid form: Via, From, To, Call-ID, a CSeq whose method is the
    request's, and a valid Max-Forwards when present."""
    if not request.vias:
        raise SipSyntaxError("missing Via header")
    request.from_, request.to, request.call_id  # noqa: B018 - parsing validates them
    if request.cseq.method != request.method:
        raise SipSyntaxError("CSeq method does not match the request method")
    request.max_forwards  # noqa: B018


class SipCore:
    """Request handling for one gateway, sans-IO."""

    def __init__(self, registrar: Registrar, location: BindingView,
                 transactions: TransactionLayer, clients: ClientTransactionLayer,
                 myself: Myself, *, timer_c: float = 180.0, force_rport: bool = True,
                 authenticator: Authenticator | None = None,
                 trusted_peer: Callable[[Address], bool] | None = None,
                 counters: CoreCounters | None = None,
                 rate_limit: SourceRateLimiter | None = None,
                 flow_alive: Callable[[Address], bool] | None = None,
                 relay: RelayFlows | None = None) -> None:
        """``authenticator`` None lets every request through (tools, tests);
        ``trusted_peer`` tells whether a source proved its identity at the transport
        (mutual TLS, the upstream server); ``flow_alive`` whether a stream connection
        with a peer is open (the proxy reuses a phone's connection); ``relay``: the
        flows of NATed gateways this one relays for (None: it relays for none)."""
        self.registrar = registrar
        self.location = location
        self.transactions = transactions
        self.clients = clients
        self.myself = myself
        self.force_rport = force_rport
        self.authenticator = authenticator
        self.trusted_peer = trusted_peer or (lambda _source: False)
        self.counters: CoreCounters = counters or NoCounters()
        self.rate_limit = rate_limit
        self._flow_alive = flow_alive or (lambda _flow: False)
        self.relay = relay
        #: The relay URI this gateway is reached through from beyond its NAT ("" when
        #: it is not relayed; set by :class:`gateway.server.relay_client.RelayClient`).
        self.relayed_through = ""
        self.flow_tokens = FlowTokens()
        #: Next hops that stopped answering (the overlay resolver skips them).
        self.next_hops = NextHopHealth()
        self.proxy = Proxy(self, timer_c=timer_c)
        #: Set while the gateway shuts down: new dialogs and registrations get 503.
        self.draining = False
        self._out: list[Action] = []
        self._now = 0.0
        self._armed: float | None = None  # the deadline of the last Wake
        self._tokens = itertools.count(1)
        self._writes: dict[int, tuple[ServerTransaction, Request, tuple[Binding, ...]]] = {}

    # --- events -----------------------------------------------------------------------

    def absorb_datagram(self, data: bytes, source: Address,
                        now: float) -> tuple[bool, list[Action]]:
        """Whether ``data`` is a byte-identical retransmission of a request in a live
        transaction (it is then handled, the last response re-sent, without parsing)."""
        absorbed, sends = self.transactions.absorb_datagram(data, source)
        if not absorbed:
            return False, []  # nothing changed: no actions, no new deadline
        self._now = now
        self._send_all(sends)
        return True, self._flush()

    def receive(self, message: Request | Response, source: Address, now: float,
                raw: bytes = b"") -> list[Action]:
        """One parsed message from ``source`` (``raw``: its datagram, for the
        retransmission fast path); never raises."""
        self._now = now
        try:
            if isinstance(message, Request):
                self._receive_request(message, source, raw)
            else:
                self._receive_response(message)
        except Exception:
            log.failure("unhandled error while handling {message!r} from {source}",
                        message=message, source=source)
        return self._flush()

    def timer_fired(self, now: float) -> list[Action]:
        """The deadline of the last :class:`Wake` (or a later time) has come."""
        self._now = now
        self._armed = None
        try:
            self._send_all(self.transactions.on_timer(now))
            self._send_all(self.clients.on_timer(now))
            self._dispatch_client_events()
            self.proxy.on_timer(now)
        except Exception:
            log.failure("transaction timer failed")
        return self._flush()

    def resolved(self, token: int, resolution: Resolution, now: float) -> list[Action]:
        """The resolver chain answered the :class:`Resolve` ``token``."""
        self._now = now
        self._guarded(self.proxy.resolved, token, resolution)
        return self._flush()

    def located(self, token: int, located: Located, now: float) -> list[Action]:
        """DNS answered the :class:`Locate` ``token``."""
        self._now = now
        self._guarded(self.proxy.located, token, located)
        return self._flush()

    def resolve_failed(self, token: int, reason: str, now: float) -> list[Action]:
        """The resolver chain failed on the :class:`Resolve` ``token``."""
        self._now = now
        self._guarded(self.proxy.resolve_failed, token, reason)
        return self._flush()

    def committed(self, token: int, now: float) -> list[Action]:
        """The :class:`WriteBindings` ``token`` is durable: the REGISTER gets its 200."""
        self._now = now
        pending = self._writes.pop(token, None)
        if pending is not None:
            txn, request, bindings = pending
            self.counters.registered()
            self._respond(txn, self.registrar.ok_response(request, bindings, now))
        return self._flush()

    def write_failed(self, token: int, reason: str, now: float) -> list[Action]:
        """The :class:`WriteBindings` ``token`` failed: 500 with Retry-After."""
        self._now = now
        pending = self._writes.pop(token, None)
        if pending is not None:
            txn, request, _ = pending
            log.error("registry write failed for {aor}: {error}",
                      aor=self.registrar.aor_of(request), error=reason)
            self._respond(txn, build_response(request, 500, "Server Internal Error "
                                              "(registry unavailable)",
                                              headers=[("Retry-After", "5")]))
        return self._flush()

    def send_failed(self, key: tuple[str, str], reason: str, now: float) -> list[Action]:
        """The request of client transaction ``key`` could not be sent."""
        self._now = now
        txn = self.clients.find(key)
        if txn is not None:
            log.warn("cannot send {method} to {host}:{port}: {reason}", method=txn.method,
                     host=txn.destination.host, port=txn.destination.port, reason=reason)
            self.clients.transport_error(txn, reason)
            self._dispatch_client_events()
        return self._flush()

    def unreachable(self, destination: Address, reason: str, now: float) -> list[Action]:
        """``destination`` answered a datagram with an ICMP error: every transaction
        still waiting for it ends with a transport error now (RFC 3261 §18.4), instead
        of running out Timer B/F."""
        self._now = now
        waiting = self.clients.sent_to(destination)
        if not waiting:
            return []  # nothing was waiting for it: no actions, no new deadline
        log.warn("{host}:{port} is unreachable ({reason}): {n} request(s) to it fail now",
                 host=destination.host, port=destination.port, reason=reason,
                 n=len(waiting))
        for txn in waiting:
            self.clients.transport_error(txn, f"{destination.host}:{destination.port} "
                                              f"unreachable, {reason}")
        self._dispatch_client_events()
        return self._flush()

    def send_request(self, request: Request, destination: Address, user: object,
                     branch: str, now: float) -> list[Action]:
        """Send ``request`` in a new client transaction whose events go to ``user``
        (through :class:`Deliver`): the upstream registrations' REGISTERs."""
        self._now = now
        self.start_client(request, destination, None, branch, user)
        return self._flush()

    def drain(self) -> None:
        """From now on new dialogs and registrations get 503 (the gateway is stopping)."""
        self.draining = True

    def next_deadline(self) -> float | None:
        """When :meth:`timer_fired` next has work, or None."""
        earliest = self.transactions.next_deadline()
        for deadline in (self.clients.next_deadline(), self.proxy.next_deadline()):
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    # --- requests ---------------------------------------------------------------------

    def _receive_request(self, request: Request, source: Address, raw: bytes) -> None:
        try:
            validate_request(request)
        except SipSyntaxError as exc:
            # Malformed like what the transports cannot parse: counted with them.
            if request.method != "ACK" and request.has_header("via"):
                self._send_all([(build_response(request, 400, f"Bad Request ({exc})")
                                 .serialize(), source)])
                self.counters.rejected(400)
            else:
                self.counters.rejected(0)
            return
        method = request.method
        if (self.rate_limit is not None and method != "ACK"
                and not self.rate_limit.allow(source.host, self._now)):
            self.counters.limited()
            self._unavailable(request, source, "too many requests from this address",
                              self.rate_limit.retry_after(source.host, self._now))
            return
        if self.draining and method not in ("ACK", "CANCEL") and not request.to.tag:
            self._unavailable(request, source, "shutting down", 5)
            return
        reply_to = self._stamp_via(request, source)
        now = self._now
        self.counters.request(method)
        if debug_enabled():
            log.debug("{method} {uri} from {transport} {host}:{port} (Call-ID {call_id})",
                      method=method, uri=str(request.uri), transport=source.transport,
                      host=source.host, port=source.port, call_id=request.call_id)
        if method == "ACK":
            if not self.transactions.absorb_ack(request, source, now):
                self._drop_own_credentials(request)
                self.proxy.forward_ack(request, source)  # the ACK of a 2xx
            return
        txn, sends = self.transactions.receive_request(request, source, reply_to, now)
        self._send_all(sends)
        if txn is None:
            return
        if raw:
            self.transactions.remember_datagram(txn, raw, source)
        try:
            if asks_for_relay(request) and self.myself.is_for_me(request):
                relay = self.relay if self.relay is not None else RelayFlows(lambda _t: None, 0)
                self._respond(txn, relay.register(request, source, now))
                return
            if (self.authenticator is not None and method != "CANCEL"
                    and not self._for_relayed_gateway(request, source)):
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
            elif not (self.myself.is_for_me(request) and not request.has_header("route")):
                self._drop_own_credentials(request)
                self.proxy.handle_request(txn, request)
            else:
                # Addressed to the gateway itself (not a strict-routed request): it is
                # the UAS, and serves only REGISTER and OPTIONS (RFC 3261 §8.2.1).
                status = 405 if method in KNOWN_METHODS else 501
                self._respond(txn, build_response(request, status, headers=[
                    ("Allow", ", ".join(ALLOWED_METHODS))]))
        except SipSyntaxError as exc:
            self._respond(txn, build_response(request, 400, f"Bad Request ({exc})"))

    def _drop_own_credentials(self, request: Request) -> None:
        if self.authenticator is not None:
            self.authenticator.remove_own_credentials(request)

    def _receive_response(self, response: Response) -> None:
        try:
            response.top_via, response.cseq  # noqa: B018 - validates them
        except SipSyntaxError:
            return  # a response that cannot be matched is dropped (RFC 3261 §18.1.2)
        taken, sends = self.clients.receive_response(response, self._now)
        self._send_all(sends)
        if taken:
            self._dispatch_client_events()

    def _dispatch_client_events(self) -> None:
        for event, txn, response in self.clients.take_events():
            if txn.user is not None:
                self._out.append(Deliver(txn.user, event, txn, response))  # type: ignore[arg-type]
                continue
            self._guarded(self.proxy.client_event, event, txn, response)

    def _guarded(self, handler: Callable[..., None], *args: object) -> None:
        try:
            handler(*args)
        except Exception:
            log.failure("{handler} failed", handler=getattr(handler, "__name__", handler))

    def _for_relayed_gateway(self, request: Request, source: Address) -> bool:
        """Whether ``request`` goes over the flow of a NATed gateway this one relays for:
        not ours to authenticate (that gateway applies its own policy). What comes *from*
        the flow is checked like any request, so a flow is no open relay."""
        token = relay_token(request, self.myself.is_me)
        if token is None or self.relay is None:
            return False
        # An unknown or expired token goes nowhere (the proxy answers 480).
        flow = self.relay.flow(token, self._now)
        return flow is None or not flow.same_flow(source)

    def _register(self, txn: ServerTransaction, request: Request, source: Address) -> None:
        now = self._now
        aor = self.registrar.aor_of(request)
        current = self.location.current(aor) if aor else []
        decision = self.registrar.decide(request, source, current, now)
        if decision.response is not None:
            self._respond(txn, decision.response)
            return
        assert decision.aor is not None and decision.bindings is not None
        bindings = tuple(decision.bindings)
        if not request.contacts and _same(current, self.location.lookup(decision.aor, now)):
            self._respond(txn, self.registrar.ok_response(request, bindings, now))
            return
        token = next(self._tokens)
        self._writes[token] = (txn, request, bindings)
        self._out.append(WriteBindings(token, decision.aor, bindings))

    def _cancel(self, txn: ServerTransaction, request: Request) -> None:
        invite = self.transactions.find(transaction_key(request, for_method="INVITE"))
        if invite is None:
            self._respond(txn, build_response(request, 481))
            return
        self._respond(txn, build_response(request, 200))
        if invite.state is not State.PROCEEDING or invite.request is None:
            return  # already answered: the CANCEL changes nothing (RFC 3261 §9.2)
        if not self.proxy.cancel(invite):
            self._respond(invite, build_response(invite.request, 487))

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", "application/sdp"),
                ("Accept-Encoding", "identity"), ("Accept-Language", "en"),
                ("Supported", ", ".join(SUPPORTED_EXTENSIONS))]

    # --- ProxyIO ----------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The time of the event being handled (for the proxy)."""
        return self._now

    def respond(self, txn: ServerTransaction, response: Response) -> None:
        """Send ``response`` in ``txn`` (for the proxy)."""
        self._respond(txn, response)

    def start_client(self, request: Request, destination: Address, owner: object,
                     branch: str | None = None, user: object = None) -> ClientTransaction:
        """Send ``request`` in a new client transaction (for the proxy)."""
        txn, sends = self.clients.send(request, destination, owner, self._now, branch, user)
        for data, address in sends:
            self._out.append(Send(data, address, txn.key))
        return txn

    def send_stateless(self, request: Request, destination: Address) -> None:
        """Send ``request`` without a transaction (for the proxy)."""
        self._out.append(Send(request.serialize(), destination))

    def resolve(self, uri: SipUri, request: Request) -> int:
        """Ask the resolver chain for targets; the answer comes with the returned token
        (for the proxy)."""
        token = next(self._tokens)
        self._out.append(Resolve(token, uri, request))
        return token

    def locate(self, uri: SipUri) -> int:
        """Ask DNS for the servers of a next hop named by a host name (for the proxy)."""
        token = next(self._tokens)
        self._out.append(Locate(token, uri))
        return token

    def is_me(self, host: str, port: int | None) -> bool:
        """Whether ``host``/``port`` name this gateway (for the proxy)."""
        return self.myself.is_me(host, port)

    def local_address(self, transport: str, toward: str | None = None,
                      ) -> tuple[str, int] | None:
        """The advertised (host, port) for ``transport`` towards ``toward`` (for the
        proxy)."""
        return self.myself.address(transport, toward)

    def contact_flow(self, contact: str) -> Address | None:
        """The registration flow of the phone with this Contact (for the proxy)."""
        binding = self.location.by_contact(contact)
        if binding is None:
            return None
        return received_address(binding.received, binding.transport)

    def flow_alive(self, flow: Address) -> bool:
        """Whether a connection with ``flow``'s peer is open (for the proxy)."""
        return self._flow_alive(flow)

    def relay_flow(self, token: str) -> Address | None:
        """The relayed flow named ``token`` (for the proxy)."""
        return self.relay.flow(token, self._now) if self.relay is not None else None

    def next_hop_failed(self, destination: Address) -> None:
        """A forward to ``destination`` failed (for the proxy)."""
        self.next_hops.failed(destination.host, destination.port, self._now)

    def next_hop_answered(self, destination: Address) -> None:
        """``destination`` answered (for the proxy)."""
        self.next_hops.answered(destination.host, destination.port)

    def next_hop_dead(self, destination: Address) -> bool:
        """Whether ``destination`` failed lately (for the proxy)."""
        return self.next_hops.dead(destination.host, destination.port, self._now)

    def flow_token(self, flow: Address) -> str:
        """``flow`` as a Record-Route token (for the proxy)."""
        return self.flow_tokens.token(flow)

    def token_flow(self, token: str) -> Address | None:
        """The flow of a Record-Route token (for the proxy)."""
        return self.flow_tokens.flow(token)

    def relay_route(self, toward: str) -> str:
        """The relay URI for Record-Route towards ``toward``, "" on the LAN or when not
        relayed (for the proxy)."""
        if not self.relayed_through or self.myself.on_lan(toward):
            return ""
        return self.relayed_through

    # --- output -----------------------------------------------------------------------

    def _respond(self, txn: ServerTransaction, response: Response) -> None:
        try:
            sends = self.transactions.respond(txn, response, self._now)
        except IllegalTransition as exc:
            # A late response (a 2xx retransmission forwarded after Timer L, a response
            # to a transaction that timed out): not sent, but never silently.
            log.warn("response not sent: {error} (Call-ID {call_id})", error=str(exc),
                     call_id=response.header("call-id"))
            return
        self.counters.response(response.status)
        self._send_all(sends)

    def _send_all(self, sends: list[tuple[bytes, Address]]) -> None:
        out = self._out
        for data, address in sends:
            out.append(Send(data, address))

    def _flush(self) -> list[Action]:
        """The actions of this event, with a :class:`Wake` when the next deadline is
        earlier than the one already asked for."""
        deadline = self.next_deadline()
        if deadline is not None and (self._armed is None or deadline < self._armed):
            self._armed = deadline
            self._out.append(Wake(deadline))
        out, self._out = self._out, []
        return out

    # --- Via handling (RFC 3261 §18.2.1, RFC 3581) --------------------------------------

    def _unavailable(self, request: Request, source: Address, why: str,
                     retry_after: int) -> None:
        """A stateless 503 with Retry-After (no transaction is created), sent where a
        response to ``request`` goes (RFC 3581)."""
        self.counters.response(503)
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

