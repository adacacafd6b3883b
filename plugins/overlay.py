"""The ``overlay`` resolver: records found in the P2PSIP DHT."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.overlay.record import Record
from gateway.server.routing import (
    IResolverFactory,
    ITargetResolver,
    OverlayLookup,
    Resolution,
    ResolverContext,
    Target,
    fallback_answer,
)
from gateway.sip.errors import SipSyntaxError
from gateway.sip.forwarding import uri_address
from gateway.sip.message import Request
from gateway.sip.uri import SipUri, parse_uri


@implementer(ITargetResolver)
class OverlayResolver:
    """Targets from the trusted, live records of the Request-URI's AoR; passes when the
    overlay is off or knows nothing (the next resolver, or 404, decides).

    A record's ``route`` without a user part names a proxy (another gateway): the
    request keeps its Request-URI and gets that Route. A ``route`` with a user part is
    where the user itself is (an overlay peer): the request is retargeted to it.
    """

    name = "overlay"

    def __init__(self, overlay: OverlayLookup | None,
                 next_hop_dead: Callable[[str, int], bool] = lambda _h, _p: False) -> None:
        """``next_hop_dead``: whether a route's (host, port) stopped answering lately
        (its records are skipped then)."""
        self.overlay = overlay
        self.next_hop_dead = next_hop_dead

    def resolve(self, uri: SipUri, request: Request,
                ) -> Deferred[Resolution | None] | Resolution | None:
        """See :class:`gateway.server.routing.ITargetResolver`. While the overlay is not joined,
        or when a lookup fails, the answer is a non-final 480 (a later resolver, e.g.
        ``upstream``, may still know the user): fast, never a hang."""
        if self.overlay is None or not uri.user:
            return None
        if not self.overlay.joined:
            return _unreachable(self.overlay.last_error or "not joined yet")
        aor = uri.aor()
        overlay = self.overlay
        d = overlay.lookup(aor).addCallback(self._targets, uri)
        # Nothing found because of the overlay (records rejected, a partition): say
        # so with 480 rather than let the chain end in 404 "no such user".
        d.addCallback(lambda found: found if found is not None or not overlay.why_empty(aor)
                      else _unreachable(overlay.why_empty(aor), "no usable record"))
        d.addErrback(lambda failure: _unreachable(
            f"lookup failed: {failure.getErrorMessage() or failure.type.__name__}"))
        return d

    def _targets(self, records: list[Record], uri: SipUri) -> Resolution | None:
        targets = []
        silent = []
        for record in records:
            try:
                route = parse_uri(record.route)
            except SipSyntaxError:
                continue
            if not isinstance(route, SipUri):
                continue
            hop = uri_address(route)
            if hop is not None and self.next_hop_dead(hop.host, hop.port):
                silent.append(f"{hop.host}:{hop.port}")
                continue
            q = max((c.q for c in record.contacts), default=1.0)
            if route.user:
                targets.append(Target(record.route, q))
            else:
                targets.append(Target(str(uri), q, path=(f"<{record.route}>",)))
        if not targets and silent:
            return _unreachable(f"{', '.join(silent)} did not answer the last request sent "
                                "there", "the user's gateway does not answer")
        return Resolution(targets=tuple(targets)) if targets else None


def _unreachable(detail: str, what: str = "overlay unreachable") -> Resolution:
    """A non-final 480 naming the overlay problem in a Warning."""
    return fallback_answer(480, f"Temporarily Unavailable ({what})", what, detail)


@implementer(IPlugin, IResolverFactory)
class OverlayResolverFactory:
    """Plugin: builds :class:`OverlayResolver` for a gateway."""

    name = "overlay"

    def build(self, context: ResolverContext) -> OverlayResolver:
        """The resolver over the gateway's overlay (None when the overlay is off)."""
        return OverlayResolver(context.overlay, context.next_hop_dead)


overlay_resolver = OverlayResolverFactory()
