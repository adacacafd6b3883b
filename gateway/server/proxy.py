"""The stateful proxy (RFC 3261 §16): routing, Record-Route, forking, CANCEL, Timer C.

The proxy is a transaction user. :class:`SipCore` hands it each request it does not
answer itself (with the server transaction, or none for an ACK), every client
transaction event, the answers of the target lookups it asked for, Timer C when it is
due, and CANCELs that match an INVITE it is proxying. The proxy decides and asks its
:class:`ProxyIO` (the core) to send and to look up; it owns no socket, timer or
Deferred: Timer C is a deadline in its own heap that the core's driver fires.

One :class:`ResponseContext` per proxied request holds its branches. Targets are tried
by q value: all targets of the highest q in parallel, then the next group when that
group has only failed (RFC 3261 §16.6, §16.7). A 2xx is forwarded at once (every 2xx,
from every branch); a 6xx ends the search and cancels the rest; otherwise the best final
response goes upstream once no branch is left.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from dataclasses import dataclass, field, replace
from typing import Protocol

from gateway.log import get_logger
from gateway.server.flow_token import FLOW_PARAM
from gateway.server.relay import TOKEN_PARAM, relay_token
from gateway.server.routing import Resolution, Target
from gateway.sip import forwarding
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent, ClientTransaction, build_cancel
from gateway.sip.errors import SipSyntaxError
from gateway.sip.locate import Located
from gateway.sip.message import Request, Response
from gateway.sip.responses import build_response
from gateway.sip.transaction import ServerTransaction
from gateway.sip.uri import SipUri, parse_uri

log = get_logger("gateway.server.proxy")

_RELAY_GONE = "Temporarily Unavailable (relayed gateway not connected)"
_RELAY_GONE_WARNING = '399 - "the NATed gateway this relay served is gone"'
# Requests that may create a dialog: the proxy record-routes them (out of dialog).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


class ProxyIO(Protocol):
    """What the proxy needs from the core: the time, send requests and responses, start
    client transactions, look targets up, and know its own addresses."""

    @property
    def now(self) -> float:
        """The time of the event being handled."""

    def resolve(self, uri: SipUri, request: Request) -> int:
        """Ask for the targets of ``uri``; :meth:`Proxy.resolved` or
        :meth:`Proxy.resolve_failed` gets the answer with the token returned."""

    def locate(self, uri: SipUri) -> int:
        """Ask DNS where the next hop ``uri`` (a host name) is (RFC 3263);
        :meth:`Proxy.located` gets the answer with the token returned."""

    def respond(self, txn: ServerTransaction, response: Response) -> None:
        """Send a response in a server transaction."""

    def start_client(self, request: Request, destination: Address, owner: object,
                     branch: str | None = None) -> ClientTransaction:
        """Send a request in a new client transaction (``branch``: its top Via's)."""

    def send_stateless(self, request: Request, destination: Address) -> None:
        """Send a request without a transaction (an ACK for a 2xx)."""

    def is_me(self, host: str, port: int | None) -> bool:
        """Whether a URI host/port names this gateway."""

    def local_address(self, transport: str, toward: str | None = None,
                      ) -> tuple[str, int] | None:
        """(host, port) this gateway advertises for ``transport`` to the host
        ``toward`` (its external address beyond the NAT, its LAN one on the LAN), None if
        it has no listener for it."""

    def flow_alive(self, flow: Address) -> bool:
        """Whether a stream connection with that peer is open."""

    def contact_flow(self, contact: str) -> Address | None:
        """Where the phone that registered ``contact`` registered from, if one did."""

    def relay_flow(self, token: str) -> Address | None:
        """The connection of the NATed gateway this gateway relays for under ``token``
        (``gateway/server/relay.py``), None when unknown or expired."""

    def relay_route(self, toward: str) -> str:
        """The relay URI this gateway is reached through from ``toward`` when it is
        behind a NAT and relayed (for its Record-Route), else ""."""

    def next_hop_failed(self, destination: Address) -> None:
        """A request to ``destination`` timed out or could not be sent."""

    def next_hop_answered(self, destination: Address) -> None:
        """``destination`` answered a request."""

    def next_hop_dead(self, destination: Address) -> bool:
        """Whether ``destination`` failed lately (it is tried after the others)."""

    def flow_token(self, flow: Address) -> str:
        """``flow`` as a token for a Record-Route parameter
        (``gateway/server/flow_token.py``)."""

    def token_flow(self, token: str) -> Address | None:
        """The flow a token of :meth:`flow_token` names, None when it is not valid."""


@dataclass(eq=False)
class Branch:
    """One forwarded copy of a request (RFC 3261 §16.6): the owner of its client
    transaction. It points at its context, and the context points back only while the
    branch is pending, so a finished context and its branches hold no reference cycle
    and are freed by reference counting when their transactions end (cycles here piled
    up between the rare full garbage collections, see gateway/app/gc_policy.py)."""

    context: ResponseContext
    request: Request | None  # dropped once the branch has its final response
    destination: Address
    method: str = ""
    final: int = 0  # final status received (or synthesised), 0 while pending
    provisional: bool = False
    cancel_when_provisional: bool = False
    timer_c: float = 0.0  # Timer C's deadline; 0 when it is not running
    serial: int = 0  # names the branch in the Timer C heap

    @property
    def pending(self) -> bool:
        """No final response yet."""
        return self.final == 0


@dataclass(eq=False)
class ResponseContext:
    """The proxy's state for one request it forwards statefully."""

    server: ServerTransaction
    request: Request | None  # as received, Via stamped; dropped once answered
    loop_id: str  # its loop hash as received, carried in every branch (§16.3 step 4)
    groups: list[list[Target]]
    pending: list[Branch] = field(default_factory=list)  # branches without a final
    starting: bool = False  # branches being started: do not finish yet
    best: Response | None = None
    best_is_ours: bool = False  # ``best`` was made here (no next hop answered it)
    answered: bool = False  # a final response went upstream
    cancelled: bool = False
    got_2xx: bool = False
    locating: int = 0  # next hops being looked up in DNS: do not finish yet


class Proxy:
    """Stateful proxy decisions for one gateway."""

    def __init__(self, io: ProxyIO, *, timer_c: float = 180.0) -> None:
        self.io = io
        self.timer_c = timer_c
        self._contexts: dict[int, ResponseContext] = {}  # id(server txn) -> context
        # Lookups under way: token -> (server transaction, request, loop hash).
        self._lookups: dict[int, tuple[ServerTransaction, Request, str]] = {}
        # Next hops being located in DNS: token -> (context, target), or (None, ACK).
        self._locating: dict[int, tuple[ResponseContext | None, Target | Request]] = {}
        # Timer C: (deadline, serial) entries, one per branch whose timer runs; a reset
        # moves the branch's deadline and its entry is pushed again when it pops early.
        self._timer_heap: list[tuple[float, int]] = []
        self._timed: dict[int, Branch] = {}  # serial -> branch with a Timer C entry
        self._serials = itertools.count(1)

    def __len__(self) -> int:
        return len(self._contexts)

    # --- requests -------------------------------------------------------------------------

    def handle_request(self, txn: ServerTransaction, request: Request) -> None:
        """Proxy ``request`` (received in ``txn``): validate, route, forward or answer."""
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self.io.respond(txn, build_response(request, 483))
            return
        if forwarding.is_loop(request, self.io.is_me):
            self.io.respond(txn, build_response(request, 482))
            return
        loop_id = forwarding.loop_hash(request)
        if request.method == "INVITE":
            self.io.respond(txn, build_response(request, 100))
        forwarding.apply_strict_route(request, self.io.is_me)
        token = relay_token(request, self.io.is_me)
        phone_flow = forwarding.own_route_param(request, self.io.is_me, FLOW_PARAM)
        forwarding.pop_own_routes(request, self.io.is_me)
        if token is not None:
            flow = self._live_relay_flow(token)
            if flow is None:
                self.io.respond(txn, build_response(
                    request, 480, _RELAY_GONE, headers=[("Warning", _RELAY_GONE_WARNING)]))
                return
            if not flow.same_flow(txn.reply_to):
                # For the NATed gateway behind the flow: over its connection, whatever
                # else the Route set says (the rest is for that gateway).
                self._forward_all(ResponseContext(txn, request, loop_id, []), [
                    Target(str(request.uri), next_hop=flow, relay_token=token)])
                return
        uri = request.uri
        if forwarding.routes(request) or request.to.tag:
            # Routed (in-dialog, or preloaded route set): the Route set or the
            # Request-URI decides; the registry is not consulted (RFC 3261 §16.5).
            self._forward_all(ResponseContext(txn, request, loop_id, []),
                              [self._routed_target(request, phone_flow, txn.reply_to)])
            return
        if not isinstance(uri, SipUri):
            self.io.respond(txn, build_response(request, 416))
            return
        if self.io.contact_flow(str(uri)) is not None:
            # A Contact registered here (another gateway of the site routes requests for
            # the phones whose flows we hold this way): over the phone's flow, as an
            # RFC 5626 §5.3 edge proxy does, not through the registry again.
            self._forward_all(ResponseContext(txn, request, loop_id, []),
                              [self._routed_target(request, None, txn.reply_to)])
            return
        if uri.secure and self.io.local_address("tls") is None:
            # RFC 3261 §26.2.2: a sips: request only leaves over TLS; without a TLS
            # transport the scheme is not supported here at all.
            self.io.respond(txn, build_response(
                request, 416, "Unsupported URI Scheme (no TLS transport here)"))
            return
        self._lookups[self.io.resolve(uri, request)] = (txn, request, loop_id)

    def resolved(self, token: int, resolution: Resolution) -> None:
        """The targets (or the final answer) of the lookup ``token``."""
        pending = self._lookups.pop(token, None)
        if pending is None:
            return
        txn, request, loop_id = pending
        if txn.status >= 200:
            return  # answered while the lookup ran (a CANCEL: 487 already sent)
        if not resolution.targets:
            self.io.respond(txn, build_response(request, resolution.status,
                                                resolution.reason or None,
                                                headers=resolution.headers))
            return
        groups: dict[float, list[Target]] = {}
        for target in resolution.targets:
            groups.setdefault(target.q, []).append(target)
        ordered = [groups[q] for q in sorted(groups, reverse=True)]
        context = ResponseContext(txn, request, loop_id, ordered[1:])
        self._forward_all(context, ordered[0])

    def resolve_failed(self, token: int, reason: str) -> None:
        """The lookup ``token`` failed: 500."""
        pending = self._lookups.pop(token, None)
        if pending is None:
            return
        txn, request, _ = pending
        log.error("target lookup failed for {uri}: {reason}", uri=str(request.uri),
                  reason=reason)
        if txn.status < 200:
            self.io.respond(txn, build_response(request, 500, "Server Internal Error "
                                                "(target lookup failed)"))

    def _forward_all(self, context: ResponseContext, targets: list[Target]) -> None:
        self._contexts[id(context.server)] = context
        # A branch can fail while it starts (a transport error): the context must not
        # finish before the other targets of the group have their branches.
        context.starting = True
        for target in targets:
            self._forward(context, target)
        context.starting = False
        self._maybe_finish(context)

    def _forward(self, context: ResponseContext, target: Target) -> None:
        """Forward one copy of the request to ``target`` (RFC 3261 §16.6)."""
        original = context.request
        assert original is not None
        request = Request(original.method, original.uri, original.headers, original.body)
        try:
            request.uri = parse_uri(target.uri)
        except SipSyntaxError:
            self._synthesise(context, None, 502, f"Bad Gateway (bad target {target.uri!r})")
            return
        forwarding.decrement_max_forwards(request, original.max_forwards)
        if target.path:
            forwarding.set_routes(request, [*target.path, *forwarding.routes(request)])
            token = relay_token(request, self.io.is_me)
            if token is not None:
                # Published through this very gateway (it relays for the target's
                # gateway): straight over the flow, not round to itself.
                forwarding.pop_own_routes(request, self.io.is_me)
                flow = self._live_relay_flow(token)
                if flow is None:
                    self._synthesise(context, None, 480, _RELAY_GONE)
                    return
                target = replace(target, next_hop=flow, relay_token=token)
        destination = self._next_hop(request, target)
        if destination is None and _websocket_contact(request):
            # A browser listens nowhere: without its connection it cannot be reached.
            self._synthesise(context, None, 480, "Temporarily Unavailable (the WebSocket "
                             "connection of this contact is closed)")
            return
        if destination is None:
            named = _named_hop(request)
            if named is None:
                self._synthesise(context, None, 502, "Bad Gateway (unusable next hop)")
                return
            # A host name: DNS first (RFC 3263), then this target again for each server.
            context.locating += 1
            self._locating[self.io.locate(named)] = (context, target)
            return
        local = self.io.local_address(destination.transport, destination.host)
        if local is None:
            self._synthesise(context, None, 503, "Service Unavailable (no "
                             f"{destination.transport.upper()} transport for the next hop)")
            return
        if _secure(original) and not _secure_hop(request, destination):
            self._synthesise(context, None, 480, "Temporarily Unavailable (no TLS path to "
                             "this target; a sips: request is never downgraded)")
            return
        if request.method in DIALOG_CREATING and not original.to.tag:
            inbound = context.server.reply_to
            # The side of a phone behind NAT, whose flow goes into the Record-Route.
            phone_side = (destination if _flow_differs(request, target, destination)
                          else inbound if _through_nat(original, inbound) else None)
            self._record_route(request, inbound, destination, secure=_secure(original),
                               relay_token=target.relay_token, phone_side=phone_side)
        branch_id = forwarding.new_branch(context.loop_id)
        request.add_header("Via", forwarding.via_value(destination.transport, *local,
                                                       branch_id), first=True)
        branch = Branch(context, request, destination, method=request.method)
        context.pending.append(branch)
        if request.method == "INVITE":
            self._start_timer_c(branch)
        self.io.start_client(request, destination, branch, branch_id)

    def _live_relay_flow(self, token: str) -> Address | None:
        """The connection of the NATed gateway relayed under ``token``, None when the
        token is unknown or its connection closed."""
        flow = self.io.relay_flow(token)
        return flow if flow is not None and self.io.flow_alive(flow) else None

    def _routed_target(self, request: Request, flow_token: str | None = None,
                       source: Address | None = None) -> Target:
        """The target of a request routed by its Route set or Request-URI: when no Route
        is left, the flow of the phone it goes to (NAT, open connection) goes with it:
        its registration's when the Request-URI is a Contact it registered, else the one
        our Record-Route entry carries (``flow_token``), unless the request came over
        that very flow (from ``source``)."""
        uri = str(request.uri)
        if forwarding.routes(request):
            return Target(uri)
        flow = self.io.contact_flow(uri)
        if flow is None and flow_token:
            recorded = self.io.token_flow(flow_token)
            if recorded is not None and (source is None or not recorded.same_flow(source)):
                flow = recorded
        return Target(uri, flow=flow)

    def _next_hop(self, request: Request, target: Target) -> Address | None:
        if target.next_hop is not None:
            return target.next_hop
        values = forwarding.routes(request)
        if values:
            try:
                uri = forwarding.route_target(values[0]).uri
            except SipSyntaxError:
                return None
            return forwarding.uri_address(uri) if isinstance(uri, SipUri) else None
        uri = request.uri
        named = forwarding.uri_address(uri) if isinstance(uri, SipUri) else None
        flow = target.flow
        if flow is not None and (flow.transport == "udp" or self.io.flow_alive(flow)) and not (
                named is not None and named.transport == "tls" and flow.transport != "tls"):
            # Where the UA registered from: its NAT binding (UDP) or its open
            # connection (TCP/TLS). A closed connection leaves the Contact to reach it,
            # and so does a Contact that asks for TLS when the flow is not TLS.
            return flow
        return named

    def _record_route(self, request: Request, inbound: Address, outbound: Address,
                      secure: bool = False, relay_token: str = "",
                      phone_side: Address | None = None) -> None:
        # Two entries when the transport or the address changes (RFC 5658; the LAN and
        # the external address behind NAT): the top one is the side the next hop talks
        # to, the other the side the previous hop talks to. A relay marks its entries
        # with the flow's token, so in-dialog requests take the flow too; a relayed
        # gateway names its relay towards the outside, which cannot reach it directly.
        # The entry facing a phone behind NAT carries its flow (RFC 5626 §5.3).
        entries: list[str] = []
        bases: list[str] = []
        for side in (outbound, inbound):
            relayed = self.io.relay_route(side.host)
            local = self.io.local_address(side.transport, side.host)
            params: list[str] = []
            if relayed:
                base = f"<{relayed}>"
            elif local is not None:
                base = forwarding.record_route_value(*local, side.transport, secure)
                if relay_token:
                    params.append(f"{TOKEN_PARAM}={relay_token}")
                if side is phone_side:
                    params.append(f"{FLOW_PARAM}={self.io.flow_token(side)}")
            else:
                continue
            entry = f"{base[:-1]};{';'.join(params)}>" if params else base
            if base in bases:
                if params:  # the same address for both sides: one entry, with the flow
                    entries[bases.index(base)] = entry
                continue
            bases.append(base)
            entries.append(entry)
        # Above any Record-Route already there, below the Via lines (kept together).
        headers = request.headers
        at = next((i for i, h in enumerate(headers) if h[0] == "record-route"), None)
        if at is None:
            at = max((i + 1 for i, h in enumerate(headers) if h[0] == "via"), default=0)
        for value in reversed(entries):
            request.insert_header(at, "Record-Route", value)

    # --- ACK for a 2xx --------------------------------------------------------------------

    def forward_ack(self, request: Request, source: Address | None = None) -> None:
        """Forward an ACK that matched no server transaction (the ACK of a 2xx) along
        its Route set, without state (RFC 3261 §16.11); ``source``: where it came from
        (a relayed flow's own ACKs are routed on, not sent back over it)."""
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            return
        forwarding.apply_strict_route(request, self.io.is_me)
        token = relay_token(request, self.io.is_me)
        phone_flow = forwarding.own_route_param(request, self.io.is_me, FLOW_PARAM)
        forwarding.pop_own_routes(request, self.io.is_me)
        uri = request.uri
        if not isinstance(uri, SipUri):
            return
        target = self._routed_target(request, phone_flow, source)
        if token is not None:
            flow = self._live_relay_flow(token)
            if flow is None:
                return
            if source is None or not flow.same_flow(source):
                target = Target(str(uri), next_hop=flow)
        if target.next_hop is None and not forwarding.routes(request) and self.io.is_me(
                uri.host, uri.port):
            return  # for the gateway itself: nothing to do
        destination = self._next_hop(request, target)
        if destination is None:
            named = _named_hop(request)
            if named is not None:
                self._locating[self.io.locate(named)] = (None, request)
            return
        self._send_ack(request, destination, max_forwards)

    def _send_ack(self, request: Request, destination: Address,
                  max_forwards: int | None) -> None:
        local = self.io.local_address(destination.transport, destination.host)
        if local is None:
            return
        forwarding.decrement_max_forwards(request, max_forwards)
        request.add_header("Via", forwarding.via_value(
            destination.transport, *local, forwarding.stateless_branch(request)), first=True)
        self.io.send_stateless(request, destination)

    # --- next hops located in DNS ---------------------------------------------------------

    def located(self, token: int, located: Located) -> None:
        """Where the next hop of the lookup ``token`` is: forward to the first server,
        keep the others as alternatives (tried after a timeout, transport error or 503)."""
        pending = self._locating.pop(token, None)
        if pending is None:
            return
        context, item = pending
        if context is None:
            assert isinstance(item, Request)
            if located.targets:  # an ACK for a 2xx: to the first server, statelessly
                self._send_ack(item, located.targets[0], item.max_forwards)
            return
        assert isinstance(item, Target)
        context.locating -= 1
        if context.cancelled or context.answered or context.request is None:
            self._maybe_finish(context)
            return
        if not located.targets:
            self._synthesise(context, None, 503, "Service Unavailable (cannot resolve the "
                             f"next hop: {located.error or 'no address'})")
            self._maybe_finish(context)
            return
        # A server that failed lately goes last (RFC 3263 §4.3: avoid it for a while).
        ordered = sorted(located.targets, key=self.io.next_hop_dead)
        first, *rest = [replace(item, next_hop=address, alternative=True)
                        for address in ordered]
        context.groups[0:0] = [[alternative] for alternative in rest]
        self._forward_all(context, [first])

    # --- CANCEL from upstream -------------------------------------------------------------

    def cancel(self, invite_txn: ServerTransaction) -> bool:
        """The caller cancelled the INVITE of ``invite_txn``; False when the proxy has
        no context for it (then the core answers the INVITE itself)."""
        context = self._contexts.get(id(invite_txn))
        if context is None:
            return False
        context.cancelled = True
        context.groups = []
        for branch in list(context.pending):
            self._cancel_branch(branch)
        self._maybe_finish(context)
        return True

    def _cancel_branch(self, branch: Branch) -> None:
        if branch.method != "INVITE" or branch.request is None:
            return
        if branch.provisional:
            cancel = build_cancel(branch.request)
            self.io.start_client(cancel, branch.destination, None)
            self._stop_timer_c(branch)
        else:
            # RFC 3261 §9.1: no CANCEL before a provisional response; send it if one
            # comes. Upstream does not wait for this branch any longer.
            branch.cancel_when_provisional = True
            self._settle(branch, 487)
            self._stop_timer_c(branch)

    # --- responses ------------------------------------------------------------------------

    def client_event(self, event: ClientEvent, txn: ClientTransaction,
                     response: Response | None) -> None:
        """A response, timeout or transport error of one of the proxy's client
        transactions."""
        branch = txn.owner
        if not isinstance(branch, Branch):
            return  # a CANCEL's own transaction: its outcome changes nothing
        destination = branch.destination
        if event is ClientEvent.RESPONSE:
            assert response is not None
            self.io.next_hop_answered(destination)
            self._on_response(branch, response)
            return
        why = ("no answer (timeout)" if event is ClientEvent.TIMEOUT
               else _reason_text(txn.error) or "transport error")
        # Worth a warning: a next hop that stopped answering (a dead gateway, a phone
        # gone without unregistering) is skipped for a while from now on.
        log.warn("{method} to {transport} {host}:{port} failed: {why}", method=branch.method,
                 transport=destination.transport, host=destination.host,
                 port=destination.port, why=why)
        self.io.next_hop_failed(destination)
        if event is ClientEvent.TIMEOUT:
            self._branch_failed(branch, 408, "Request Timeout")
        else:
            self._branch_failed(branch, 503, f"Service Unavailable ({why})")

    def _on_response(self, branch: Branch, response: Response) -> None:
        context = branch.context
        status = response.status
        if status < 200:
            if status == 100:
                return
            if branch.cancel_when_provisional:
                if not branch.provisional:  # the CANCEL we owed this branch
                    branch.provisional = True
                    self.io.start_client(build_cancel(branch.request), branch.destination,
                                         None)
                return
            branch.provisional = True
            if branch.method == "INVITE":
                self._start_timer_c(branch)  # reset on every provisional (§16.7 step 2)
            if not context.answered:
                self.io.respond(context.server, forwarding.without_top_via(response))
            return
        self._stop_timer_c(branch)
        if status < 300:
            self._settle(branch, status)
            context.got_2xx = True
            context.answered = True
            self.io.respond(context.server, forwarding.without_top_via(response))
            branch.request = None
            if branch.method == "INVITE":
                self._cancel_others(context, branch)
            self._maybe_finish(context)
            return
        if branch.final and branch.cancel_when_provisional:
            return  # this branch was given up on already
        self._settle(branch, status)
        branch.request = None
        self._consider(context, forwarding.without_top_via(response))
        if status >= 600:
            context.groups = []
            self._cancel_others(context, branch)
        self._maybe_finish(context)

    def _consider(self, context: ResponseContext, response: Response,
                  ours: bool = False) -> None:
        """Keep the best final response so far (RFC 3261 §16.7 step 6)."""
        best = context.best
        if best is None or _rank(response.status) < _rank(best.status):
            context.best = response
            context.best_is_ours = ours

    def _cancel_others(self, context: ResponseContext, winner: Branch) -> None:
        for branch in list(context.pending):
            if branch is not winner:
                self._cancel_branch(branch)

    @staticmethod
    def _settle(branch: Branch, status: int) -> None:
        """``branch`` has its final status (received, synthesised or given up on)."""
        if branch.final == 0:
            branch.context.pending.remove(branch)
        branch.final = status

    def _branch_failed(self, branch: Branch, status: int, reason: str) -> None:
        self._stop_timer_c(branch)
        if not branch.pending:
            return
        self._synthesise(branch.context, branch, status, reason)
        self._maybe_finish(branch.context)

    def _synthesise(self, context: ResponseContext, branch: Branch | None, status: int,
                    reason: str) -> None:
        """A final response of our own for a branch (timeout, transport error, bad
        target), considered like a received one."""
        if branch is not None:
            self._settle(branch, status)
        if context.request is not None:
            self._consider(context, build_response(context.request, status, reason), ours=True)

    def _maybe_finish(self, context: ResponseContext) -> None:
        if context.pending or context.starting or context.locating:
            return
        if context.groups and not context.cancelled and not context.got_2xx:
            if not _worth_failover(context.best):
                # Alternatives (other servers of one destination, RFC 3263 §4.3) are
                # only for a destination that did not answer: a busy or declining
                # callee is not asked again elsewhere.
                context.groups = [g for g in context.groups
                                  if not all(t.alternative for t in g)]
            if context.groups:
                self._forward_all_group(context)
                return
        self._contexts.pop(id(context.server), None)
        request, context.request = context.request, None  # nothing needs it any more
        if context.answered or request is None:
            return
        context.answered = True
        if context.cancelled:
            response = build_response(request, 487)
        elif context.best is not None:
            response = _upstream(context.best, request, context.best_is_ours)
        else:
            response = build_response(request, 408)
        context.best = None
        self.io.respond(context.server, response)

    def _forward_all_group(self, context: ResponseContext) -> None:
        self._forward_all(context, context.groups.pop(0))

    # --- Timer C (RFC 3261 §16.8) ---------------------------------------------------------

    def _start_timer_c(self, branch: Branch) -> None:
        """Start (or reset) Timer C of ``branch``."""
        deadline = self.io.now + self.timer_c
        if branch.serial == 0:
            branch.serial = next(self._serials)
        if branch.serial not in self._timed:
            self._timed[branch.serial] = branch
            heapq.heappush(self._timer_heap, (deadline, branch.serial))
        branch.timer_c = deadline  # a later reset: the entry is pushed again when it pops

    def _stop_timer_c(self, branch: Branch) -> None:
        branch.timer_c = 0.0
        self._timed.pop(branch.serial, None)  # its heap entry pops later as a no-op

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` next has work (maybe a no-op), or None."""
        return self._timer_heap[0][0] if self._timer_heap else None

    def on_timer(self, now: float) -> None:
        """Fire every Timer C due at ``now``."""
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            _, serial = heapq.heappop(heap)
            branch = self._timed.get(serial)
            if branch is None:
                continue  # stopped
            if branch.timer_c > now:
                heapq.heappush(heap, (branch.timer_c, serial))  # reset meanwhile
                continue
            del self._timed[serial]
            branch.timer_c = 0.0
            self._timer_c_fired(branch)

    def _timer_c_fired(self, branch: Branch) -> None:
        if not branch.pending:
            return
        if branch.provisional and branch.request is not None:
            self.io.start_client(build_cancel(branch.request), branch.destination, None)
        self._synthesise(branch.context, branch, 408, "Request Timeout")
        self._maybe_finish(branch.context)


def _secure(request: Request) -> bool:
    """Whether ``request``'s Request-URI is a SIPS URI."""
    uri = request.uri
    return isinstance(uri, SipUri) and uri.secure


def _secure_hop(request: Request, destination: Address) -> bool:
    """Whether forwarding ``request`` (already retargeted) to ``destination`` keeps a
    sips: request secure (RFC 3261 §26.2.2, RFC 5630): the hop is TLS (or WSS) and, unless a
    Route decides the hop, the new Request-URI is a SIPS URI too (a phone that wants
    sips: calls registers a sips: Contact, RFC 5630 §4.1)."""
    if destination.transport not in ("tls", "wss"):
        return False
    return bool(forwarding.routes(request)) or _secure(request)


def _rank(status: int) -> tuple[int, int]:
    """Lower is better: 6xx first (they end the search), then the lowest class, with
    503 last within 5xx (RFC 3261 §16.7 step 6)."""
    klass = status // 100
    if klass == 6:
        return (0, status)
    return (klass, 999 if status == 503 else status)


def _reason_text(text: str) -> str:
    """``text`` fit for a reason phrase: one line, no control characters, not too long."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:160]


def _upstream(best: Response, request: Request, ours: bool) -> Response:
    """The best response as it goes upstream (received ones are kept with our Via
    already removed). A 503 received from a next hop becomes 500 (RFC 3261 §16.7 step
    6: it says nothing about this proxy's load); a 503 of our own (the next hop could
    not be reached, or its certificate was refused) goes up as it is, with its reason."""
    if best.status == 503 and not ours:
        return build_response(request, 500, "Server Internal Error (next hop unavailable)")
    return best


def _websocket_contact(request: Request) -> bool:
    """Whether ``request`` (no Route left) goes to a WebSocket client's Contact
    (``transport=ws``/``wss``, or the ``.invalid`` host browsers use, RFC 7118 §5.2),
    which only its own connection reaches."""
    uri = request.uri
    if forwarding.routes(request) or not isinstance(uri, SipUri):
        return False
    return (uri.transport or "") in ("ws", "wss") or uri.host.lower().endswith(".invalid")


def _named_hop(request: Request) -> SipUri | None:
    """The next hop's URI when it names a host (the top Route, else the Request-URI)
    that DNS must locate, else None."""
    values = forwarding.routes(request)
    try:
        uri = forwarding.route_target(values[0]).uri if values else request.uri
    except SipSyntaxError:
        return None
    if not isinstance(uri, SipUri):
        return None
    host = (uri.param("maddr") or uri.host).strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return uri if host else None
    return None


def _worth_failover(best: Response | None) -> bool:
    """Whether the answers so far allow trying another server of the same destination:
    none, or a timeout, a transport error (ours) or 503 (RFC 3263 §4.3)."""
    return best is None or best.status in (408, 503)


def _through_nat(request: Request, source: Address) -> bool:
    """Whether ``request`` came from a phone behind NAT: its top Via names another
    address (or UDP port) than the one it came from (RFC 3581)."""
    top = request.vias[0]
    if top.host.strip("[]") != source.host:
        return True
    return not source.reliable and (top.port or 5060) != source.port


def _flow_differs(request: Request, target: Target, destination: Address) -> bool:
    """Whether ``request`` goes to a phone's flow that is not where its Request-URI
    (the registered Contact) points: a NAT mapping or a connection."""
    if target.flow is None or destination != target.flow:
        return False
    named = forwarding.uri_address(request.uri) if isinstance(request.uri, SipUri) else None
    return named is None or (named.host, named.port) != (destination.host, destination.port)
