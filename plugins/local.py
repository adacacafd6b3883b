"""The ``local`` resolver: the gateway's own registry, authoritative for its domains."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from urllib.parse import unquote

from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.registry.binding import Binding
from gateway.server.routing import (
    BindingLookup,
    IResolverFactory,
    ITargetResolver,
    Resolution,
    ResolverContext,
    Target,
)
from gateway.server.upstream import GW_AOR_PARAM
from gateway.sip.address import Address
from gateway.sip.errors import SipSyntaxError
from gateway.sip.forwarding import received_address, route_target, uri_address
from gateway.sip.message import Request
from gateway.sip.uri import SipUri, parse_uri


@implementer(ITargetResolver)
class LocalResolver:
    """Live bindings of the AoR when the domain is served here.

    ``404`` when the AoR has no binding at all (in the database, when it is shared with
    other gateways), ``480`` when it has only expired ones (the registry forgets those
    at the next sweep); other domains pass. A binding registered at another gateway of
    the site that is up is reached through that gateway, which holds its flow.
    """

    name = "local"

    def __init__(self, location: BindingLookup, is_local: Callable[[str], bool],
                 next_hop_dead: Callable[[str, int], bool] = lambda _h, _p: False) -> None:
        """``next_hop_dead``: whether a (host, port) failed lately; a gateway of the site
        that did is not routed through (its phones are tried from here)."""
        self.location = location
        self.is_local = is_local
        self.next_hop_dead = next_hop_dead

    def resolve(self, uri: SipUri, request: Request) -> Resolution | None:
        """See :class:`gateway.server.routing.ITargetResolver`."""
        if not self.is_local(uri.host):
            return None
        if not uri.user:
            return Resolution(status=404, reason="Not Found (no user part)")
        aor = uri.aor()
        registered_as = uri.param(GW_AOR_PARAM)
        if registered_as:
            # A Contact this gateway registered at the upstream server on behalf of one
            # of its AoRs (gateway.server.upstream): the request is for that AoR.
            aor = unquote(registered_as)
        live = self.location.lookup(aor)
        if live:
            return self._answer(live)
        if self.location.current(aor):
            return Resolution(status=480, reason="Temporarily Unavailable (no live binding)")
        # A registry shared with other gateways: the user may have registered at another
        # one a moment ago. The database, not this gateway's memory, says 404.
        confirmed = self.location.read_through(aor)
        if confirmed is not None:
            return confirmed.addCallback(self._answer)
        return self._answer([])

    def _answer(self, live: list[Binding]) -> Resolution:
        if not live:
            return Resolution(status=404, reason="Not Found")
        targets = tuple(t for t in map(self._target, live) if t is not None)
        if not targets:
            return Resolution(status=480, reason=_FLOW_LOST)
        return Resolution(targets=targets)

    def _target(self, binding: Binding) -> Target | None:
        """Where to send for ``binding``; None when it cannot be reached for now."""
        holder = self.location.holder_route(binding)
        if holder is not None:
            hop = _hop(holder)
            if hop is None or not self.next_hop_dead(hop.host, hop.port):
                # Its flow (NAT binding, connection) is that gateway's: through it,
                # which finds the flow by the Contact (RFC 5626 §5.3 style).
                return Target(binding.contact, binding.q, None, (holder, *binding.path))
            lost = True  # that gateway stopped answering a moment ago
        else:
            lost = self.location.flow_lost(binding)
        if lost and binding.transport == "udp" and _behind_nat(binding):
            # Registered over UDP from behind NAT at a gateway of the site that died:
            # the NAT lets in only that gateway's packets, so trying from here would
            # cost the caller Timer B (32 s) for nothing. Until it registers again.
            return None
        return Target(binding.contact, binding.q,
                      received_address(binding.received, binding.transport), binding.path)


_FLOW_LOST = ("Temporarily Unavailable (the gateway this phone registered at is down; "
              "it has not registered again)")


def _behind_nat(binding: Binding) -> bool:
    """Whether the binding's REGISTER came from another address than its Contact names."""
    try:
        uri = parse_uri(binding.contact)
    except SipSyntaxError:
        return True
    received = received_address(binding.received, binding.transport)
    return not isinstance(uri, SipUri) or received is None or (
        uri.host.strip("[]"), uri.port or 5060) != (received.host, received.port)


@lru_cache(maxsize=64)
def _hop(route: str) -> Address | None:
    """Where a site gateway's Route value leads (None: a name, located in DNS)."""
    try:
        uri = route_target(route).uri
    except SipSyntaxError:
        return None
    return uri_address(uri) if isinstance(uri, SipUri) else None


@implementer(IPlugin, IResolverFactory)
class LocalResolverFactory:
    """Plugin: builds :class:`LocalResolver` for a gateway."""

    name = "local"

    def build(self, context: ResolverContext) -> LocalResolver:
        """The resolver over the gateway's registry and domains."""
        return LocalResolver(context.location, context.is_local, context.next_hop_dead)


local_resolver = LocalResolverFactory()
