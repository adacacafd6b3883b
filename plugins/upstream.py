"""The ``upstream`` resolver: requests nobody else could place go to the configured
conventional SIP server ([upstream] uri), which may know the user."""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.server.routing import (
    IResolverFactory,
    ITargetResolver,
    Resolution,
    ResolverContext,
    Target,
    UpstreamRoute,
)
from gateway.sip.message import Request
from gateway.sip.uri import SipUri


@implementer(ITargetResolver)
class UpstreamResolver:
    """Forward to the upstream server, keeping the Request-URI (it is the authority for
    its own users). Requests that came from the upstream itself pass (no ping-pong)."""

    name = "upstream"

    def __init__(self, upstream: UpstreamRoute | None) -> None:
        self.upstream = upstream

    def resolve(self, uri: SipUri, request: Request) -> Resolution | None:
        """See :class:`gateway.server.routing.ITargetResolver`."""
        if self.upstream is None:
            return None
        top = request.vias[0]
        if self.upstream.is_upstream(top.host.strip("[]"), top.port):
            return None
        return Resolution(targets=(Target(str(uri), path=(f"<{self.upstream.route}>",)),))


@implementer(IPlugin, IResolverFactory)
class UpstreamResolverFactory:
    """Plugin: builds :class:`UpstreamResolver` for a gateway."""

    name = "upstream"

    def build(self, context: ResolverContext) -> UpstreamResolver:
        """The resolver over the upstream server (None when none is set)."""
        return UpstreamResolver(context.upstream)


upstream_resolver = UpstreamResolverFactory()
