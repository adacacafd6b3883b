"""The ``local`` resolver: the gateway's own registry, authoritative for its domains."""

from __future__ import annotations

from collections.abc import Callable
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
from gateway.sip.forwarding import received_address
from gateway.sip.message import Request
from gateway.sip.uri import SipUri


@implementer(ITargetResolver)
class LocalResolver:
    """Live bindings of the AoR when the domain is served here.

    ``404`` when the AoR has no binding at all (in the database, when it is shared with
    other gateways), ``480`` when it has only expired ones (the registry forgets those
    at the next sweep); other domains pass.
    """

    name = "local"

    def __init__(self, location: BindingLookup, is_local: Callable[[str], bool]) -> None:
        self.location = location
        self.is_local = is_local

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
            return Resolution(targets=tuple(_target(b) for b in live))
        if self.location.current(aor):
            return Resolution(status=480, reason="Temporarily Unavailable (no live binding)")
        # A registry shared with other gateways: the user may have registered at another
        # one a moment ago. The database, not this gateway's memory, says 404.
        confirmed = self.location.read_through(aor)
        if confirmed is not None:
            return confirmed.addCallback(_answer)
        return _answer([])


def _answer(live: list[Binding]) -> Resolution:
    if live:
        return Resolution(targets=tuple(_target(b) for b in live))
    return Resolution(status=404, reason="Not Found")


def _target(binding: Binding) -> Target:
    return Target(binding.contact, binding.q,
                  received_address(binding.received, binding.transport), binding.path)


@implementer(IPlugin, IResolverFactory)
class LocalResolverFactory:
    """Plugin: builds :class:`LocalResolver` for a gateway."""

    name = "local"

    def build(self, context: ResolverContext) -> LocalResolver:
        """The resolver over the gateway's registry and domains."""
        return LocalResolver(context.location, context.is_local)


local_resolver = LocalResolverFactory()
