"""The ``dns`` resolver: the servers of other SIP domains, located by DNS (RFC 3263).

For a Request-URI whose host is not served here, the resolver asks the locator
(NAPTR → SRV → A/AAAA) and answers with one target per located address, in the order to
try them: each in a group of its own (decreasing q), marked as an *alternative* so the
proxy moves to the next only when one did not answer (timeout, transport error or 503,
RFC 3263 §4.3). The Request-URI is kept; only the next hop is the located address.

When DNS has nothing (no such domain, no records) or fails, the answer is not final: an
earlier resolver's answer (e.g. the overlay's 480 while it is unreachable) wins, and
only when there is none does the caller get 404 (nothing in DNS) or 503 (DNS failed),
with a Warning naming what DNS said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.server.routing import (
    IResolverFactory,
    ITargetResolver,
    Resolution,
    ResolverContext,
    ServerLocator,
    Target,
    fallback_answer,
)
from gateway.sip.locate import Located
from gateway.sip.message import Request
from gateway.sip.uri import SipUri


@implementer(ITargetResolver)
class DnsResolver:
    """Targets located by DNS for domains not served here."""

    name = "dns"

    def __init__(self, locator: ServerLocator | None, is_local: Callable[[str], bool],
                 next_hop_dead: Callable[[str, int], bool] = lambda _h, _p: False) -> None:
        """``next_hop_dead``: whether a server failed lately (it is tried last)."""
        self.locator = locator
        self.is_local = is_local
        self.next_hop_dead = next_hop_dead

    def resolve(self, uri: SipUri, request: Request) -> Deferred[Resolution] | None:
        """See :class:`gateway.server.routing.ITargetResolver`."""
        if self.locator is None or self.is_local(uri.host):
            return None
        d = Deferred.fromFuture(asyncio.ensure_future(self.locator.locate(uri)))
        d.addCallback(self._targets, uri)
        d.addErrback(lambda failure: _not_found(
            f"lookup failed: {failure.getErrorMessage() or failure.type.__name__}", 503))
        return d

    def _targets(self, located: Located, uri: SipUri) -> Resolution:
        if not located.targets:
            nothing = any(word in located.error for word in ("NXDOMAIN", "no records"))
            return _not_found(located.error or "no address", 404 if nothing else 503)
        # A server that failed lately goes last (RFC 3263 §4.3: avoid it for a while).
        ordered = sorted(located.targets, key=lambda a: self.next_hop_dead(a.host, a.port))
        count = len(ordered)
        return Resolution(targets=tuple(
            Target(str(uri), q=round(1.0 - index / (count + 1), 4), next_hop=address,
                   alternative=True)
            for index, address in enumerate(ordered)))


def _not_found(detail: str, status: int) -> Resolution:
    reason = ("Not Found (not in DNS)" if status == 404
              else "Service Unavailable (DNS lookup failed)")
    return fallback_answer(status, reason, "DNS", detail)


@implementer(IPlugin, IResolverFactory)
class DnsResolverFactory:
    """Plugin: builds :class:`DnsResolver` for a gateway."""

    name = "dns"

    def build(self, context: ResolverContext) -> DnsResolver:
        """The resolver over the gateway's locator (passes when it has none)."""
        return DnsResolver(context.locator, context.is_local, context.next_hop_dead)


dns_resolver = DnsResolverFactory()
