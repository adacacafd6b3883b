"""The one driver of the sans-IO core: it owns the reactor timer and the transports,
feeds every message, timer and result into :class:`~gateway.server.core.SipCore` and
executes the actions that come back.

Asynchronous actions (target lookups, registry writes, sends that may fail) report
back as the next event; a result that arrives at once (the local resolver answers
synchronously) is fed back at once, so nothing waits for the reactor needlessly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from gateway.log import get_logger
from gateway.registry.binding import Binding
from gateway.server.actions import Action, Deliver, Locate, Resolve, Send, Wake, WriteBindings
from gateway.server.core import SipCore
from gateway.server.routing import Resolution, ResolverChain, ServerLocator
from gateway.sip.address import Address
from gateway.sip.locate import Located
from gateway.sip.message import Request, Response
from gateway.sip.transport import TransportManager

log = get_logger("gateway.server.driver")


class BindingWriter(Protocol):
    """Where registrations are made durable (the location service)."""

    def replace(self, aor: str, bindings: Iterable[Binding]) -> Deferred[None]:
        """Make ``bindings`` the binding set of ``aor``; fires once committed."""


class MessageSink(Protocol):
    """What the transports deliver to (the driver)."""

    def receive(self, message: Request | Response, source: Address, raw: bytes = b"") -> None:
        """A parsed message."""

    def absorb(self, data: bytes, source: Address) -> bool:
        """Whether a datagram is a retransmission already handled."""

    def unreachable(self, destination: Address, reason: str) -> None:
        """``destination`` answered with an ICMP error."""


class CoreDriver:
    """Executes the core's actions with Twisted: the transports send, the resolver
    chain looks up, the location service writes, one reactor timer wakes the core."""

    def __init__(self, core: SipCore, reactor: IReactorTime, resolvers: ResolverChain,
                 registry: BindingWriter,
                 make_transports: Callable[[MessageSink], TransportManager],
                 locator: ServerLocator | None = None) -> None:
        """``make_transports`` builds the transports that deliver to this driver (they
        and the driver need each other: the driver builds them); ``locator`` finds next
        hops named by host names (None: they cannot be reached)."""
        self.core = core
        self.reactor = reactor
        self.resolvers = resolvers
        self.locator = locator
        self.registry = registry
        self.transports = make_transports(self)
        self._timer: IDelayedCall | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            Send: self._send, Wake: self._wake, WriteBindings: self._write,
            Resolve: self._resolve, Deliver: self._deliver, Locate: self._locate}

    # --- from the transports ------------------------------------------------------------

    def receive(self, message: Request | Response, source: Address, raw: bytes = b"") -> None:
        """A parsed message from a transport."""
        self.execute(self.core.receive(message, source, self.reactor.seconds(), raw))

    def absorb(self, data: bytes, source: Address) -> bool:
        """A datagram before parsing: True when it retransmits a live request."""
        absorbed, actions = self.core.absorb_datagram(data, source, self.reactor.seconds())
        self.execute(actions)
        return absorbed

    def unreachable(self, destination: Address, reason: str) -> None:
        """A UDP destination answered with an ICMP error."""
        self.execute(self.core.unreachable(destination, reason, self.reactor.seconds()))

    # --- for the upstream registrations (RequestSender) ----------------------------------

    def send_request(self, request: Request, destination: Address, user: object,
                     branch: str) -> None:
        """Send ``request`` in a client transaction whose events go to ``user``."""
        self.execute(self.core.send_request(request, destination, user, branch,
                                            self.reactor.seconds()))

    def local_address(self, transport: str, toward: str | None = None,
                      ) -> tuple[str, int] | None:
        """(host, port) the gateway advertises for ``transport`` towards ``toward``."""
        return self.core.myself.address(transport, toward)

    # --- executing ------------------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order; a failing one is logged, the rest go on."""
        handlers = self._handlers
        for action in actions:
            handler = handlers.get(type(action))
            if handler is None:
                log.error("unknown action {action!r}", action=action)
                continue
            try:
                handler(action)
            except Exception:
                log.failure("executing {action!r} failed", action=action)

    def _send(self, action: Send) -> None:
        key = action.client
        if key is None:
            self.transports.send(action.data, action.address)
        else:
            self.transports.send(action.data, action.address,
                                 lambda reason: self._send_failed(key, reason))

    def _wake(self, action: Wake) -> None:
        self._wake_at(action.at)

    def _write(self, action: WriteBindings) -> None:
        self.registry.replace(action.aor, action.bindings).addCallbacks(
            self._committed, self._write_failed, callbackArgs=(action.token,),
            errbackArgs=(action.token,))

    def _resolve(self, action: Resolve) -> None:
        maybeDeferred(self.resolvers.resolve, action.uri, action.request).addCallbacks(
            self._resolved, self._resolve_failed, callbackArgs=(action.token,),
            errbackArgs=(action.token,))

    def _locate(self, action: Locate) -> None:
        if self.locator is None:
            self._located(Located((), "DNS resolution is not enabled (add dns to "
                                      "proxy.resolvers)"), action.token)
            return
        d = Deferred.fromFuture(asyncio.ensure_future(self.locator.locate(action.uri)))
        d.addErrback(lambda failure: Located((), f"DNS lookup failed: "
                                                 f"{failure.getErrorMessage()}"))
        d.addCallback(self._located, action.token)

    def _located(self, located: Located, token: int) -> None:
        self.execute(self.core.located(token, located, self.reactor.seconds()))

    def _deliver(self, action: Deliver) -> None:
        action.user.client_event(action.event, action.txn, action.response)

    def _send_failed(self, key: tuple[str, str], reason: str) -> None:
        self.execute(self.core.send_failed(key, reason, self.reactor.seconds()))

    def _committed(self, _: object, token: int) -> None:
        self.execute(self.core.committed(token, self.reactor.seconds()))

    def _write_failed(self, failure: Failure, token: int) -> None:
        self.execute(self.core.write_failed(token, failure.getErrorMessage(),
                                            self.reactor.seconds()))

    def _resolved(self, resolution: Resolution, token: int) -> None:
        self.execute(self.core.resolved(token, resolution, self.reactor.seconds()))

    def _resolve_failed(self, failure: Failure, token: int) -> None:
        log.failure("target lookup {token} failed", failure, token=token)
        self.execute(self.core.resolve_failed(token, failure.getErrorMessage() or
                                              failure.type.__name__, self.reactor.seconds()))

    # --- the one timer --------------------------------------------------------------------

    def _wake_at(self, at: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, at - self.reactor.seconds()),
                                             self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.execute(self.core.timer_fired(self.reactor.seconds()))

    def stop(self) -> None:
        """Cancel the timer (on shutdown); the transports are stopped by their owner."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


