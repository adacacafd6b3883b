"""Where a request goes: target resolvers and the chain that asks them in order.

Modelled on ``twisted.names``' ``ResolverChain``: each resolver either answers
(targets, or an authoritative "no such user" status) or passes (``None``), and the next
one is asked. The local registry is authoritative for the gateway's own domains; the
overlay, an upstream server and DNS plug in after it (DESIGN.md, "Resolution order").
Resolvers are found as plugins (``gateway.plugins``, :class:`IResolverFactory`) and
ordered by ``proxy.resolvers``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from zope.interface import Attribute, Interface

from gateway.registry.binding import Binding
from gateway.sip.address import Address
from gateway.sip.locate import Located
from gateway.sip.message import Request
from gateway.sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.overlay.record import Record


@dataclass(frozen=True, slots=True)
class Target:
    """One place to forward a request to: ``uri`` becomes the Request-URI; ``flow``,
    when known, is where the UA's registration came from (NAT, connection reuse);
    ``path`` are Route values to put in front (RFC 3327); ``next_hop``, where the
    request goes whatever its Route set and Request-URI say (a relayed gateway's flow,
    named by ``relay_token``; a server DNS located); ``alternative``: another server for
    the same destination (RFC 3263 §4.3), tried only when the ones before it failed with
    a timeout, a transport error or 503."""

    uri: str
    q: float = 1.0
    flow: Address | None = None
    path: tuple[str, ...] = ()
    next_hop: Address | None = None
    relay_token: str = ""
    alternative: bool = False


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolver's answer: ``targets`` to try, or (none) a final ``status``. A
    resolution that is not ``final`` (e.g. "the overlay is unreachable") lets the rest of
    the chain try; it is the answer only when no later resolver has one."""

    targets: tuple[Target, ...] = ()
    status: int = 404
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())
    final: bool = True


def fallback_answer(status: int, reason: str, topic: str, detail: str) -> Resolution:
    """A non-final answer (a later resolver may still know better) that says why in a
    ``Warning: 399 p2psip-gateway "topic: detail"``; ``detail`` may come from the
    network, so quotes and control characters are dropped and it is cut at 160."""
    text = "".join(ch for ch in detail if ch.isprintable() and ch not in '"\\')[:160]
    return Resolution(status=status, reason=reason,
                      headers=(("Warning", f'399 p2psip-gateway "{topic}: {text}"'),),
                      final=False)


class ITargetResolver(Interface):
    """Finds targets for a Request-URI."""

    name = Attribute("Short name used in proxy.resolvers")

    def resolve(uri: SipUri, request: Request) -> Resolution | None | Deferred:  # noqa: N805
        """Targets or an authoritative answer, ``None`` to pass to the next resolver;
        may return a Deferred of either (it must never block)."""


class BindingLookup(Protocol):
    """The registry as resolvers read it (from memory)."""

    def lookup(self, aor: str, now: float | None = None) -> list[Binding]:
        """The live bindings of ``aor``."""

    def current(self, aor: str) -> list[Binding]:
        """Every binding of ``aor``, expired ones included."""

    def read_through(self, aor: str) -> Deferred[list[Binding]] | None:
        """The live bindings of ``aor`` as the database holds them now, for a registry
        shared with other gateways whose last changes memory may not hold yet (None:
        memory is all there is)."""

    def holder_route(self, binding: Binding) -> str | None:
        """The Route value to the gateway of the site that holds ``binding``'s flow,
        when that is another gateway and it is up (None: reach it from here)."""

    def flow_lost(self, binding: Binding) -> bool:
        """Whether ``binding``'s flow was held by a gateway of the site that is down."""


class OverlayLookup(Protocol):
    """The overlay as resolvers read it."""

    @property
    def joined(self) -> bool:
        """Whether lookups can be answered (joined, or alone)."""

    @property
    def last_error(self) -> str:
        """Why the overlay is not joined, if it is not."""

    def lookup(self, aor: str) -> Deferred[list[Record]]:
        """The trusted, live records of ``aor``."""

    def why_empty(self, aor: str) -> str:
        """After a lookup of ``aor`` found nothing usable: why, when that may be the
        overlay's fault rather than the user not existing ("" when not)."""


class ServerLocator(Protocol):
    """RFC 3263 server location as resolvers use it."""

    async def locate(self, uri: SipUri) -> Located:
        """Where ``uri`` leads: addresses in the order to try, or why none."""


class UpstreamRoute(Protocol):
    """The upstream server as resolvers see it."""

    @property
    def route(self) -> str:
        """The Route value that sends a request there."""

    def is_upstream(self, host: str, port: int | None) -> bool:
        """Whether an address is the upstream server."""


@dataclass(frozen=True)
class ResolverContext:
    """What a resolver plugin may use of the running gateway: the registry, which hosts
    are ours, the overlay and the upstream server (None when off), and whether a next
    hop (host, port) stopped answering lately (``gateway/server/next_hops.py``)."""

    location: BindingLookup
    is_local: Callable[[str], bool]
    overlay: OverlayLookup | None = None
    upstream: UpstreamRoute | None = None
    next_hop_dead: Callable[[str, int], bool] = field(default=lambda _host, _port: False)
    #: RFC 3263 server location (:class:`gateway.sip.locate.SipLocator`), None: no DNS.
    locator: ServerLocator | None = None


class IResolverFactory(Interface):
    """A plugin that builds a resolver for a running gateway."""

    name = Attribute("Short name used in proxy.resolvers")

    def build(context: ResolverContext) -> ITargetResolver:  # noqa: N805
        """The resolver over ``context``."""


class ResolverChain:
    """Asks each resolver in turn; the first final answer wins. Without one, the first
    non-final answer does, carrying the Warnings of the non-final answers after it; when
    every resolver passes, the answer is ``404`` (no resolver knows the domain)."""

    def __init__(self, resolvers: Iterable[ITargetResolver]) -> None:
        self.resolvers = list(resolvers)

    def resolve(self, uri: SipUri, request: Request) -> Deferred[Resolution]:
        """The first final answer of the chain (or the first non-final one, or 404)."""
        return self._ask(0, uri, request, None)

    def _ask(self, index: int, uri: SipUri, request: Request,
             fallback: Resolution | None) -> Deferred[Resolution]:
        if index >= len(self.resolvers):
            return succeed(fallback or Resolution(
                status=404, reason="Not Found (domain not served here)"))
        d = maybeDeferred(self.resolvers[index].resolve, uri, request)

        def next_or_answer(result: Resolution | None) -> Resolution | Deferred[Resolution]:
            if result is None:
                return self._ask(index + 1, uri, request, fallback)
            if not result.final:
                # The earliest non-final answer stands; the later ones add their
                # Warnings, so the caller learns what each resolver found.
                kept = result if fallback is None else replace(
                    fallback, headers=fallback.headers + result.headers)
                return self._ask(index + 1, uri, request, kept)
            return result

        return d.addCallback(next_or_answer)


def plugins_package() -> ModuleType:
    """The ``gateway.plugins`` package: installed from ``plugins/``, or, in a source
    checkout (where ``plugins/`` lies beside the ``gateway`` package), loaded from there
    under that name."""
    try:
        return importlib.import_module("gateway.plugins")
    except ModuleNotFoundError:
        pass
    directory = Path(__file__).resolve().parents[2] / "plugins"
    spec = importlib.util.spec_from_file_location(
        "gateway.plugins", directory / "__init__.py",
        submodule_search_locations=[str(directory)])
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("gateway.plugins: no plugins/ directory found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gateway.plugins"] = module
    spec.loader.exec_module(module)
    sys.modules["gateway"].plugins = module  # type: ignore[attr-defined]
    return module


def available_resolvers() -> dict[str, IResolverFactory]:
    """Resolver plugins of ``gateway.plugins``, by name."""
    from twisted.plugin import getPlugins

    package = plugins_package()
    return {factory.name: factory for factory in getPlugins(IResolverFactory, package)}


def build_chain(names: Iterable[str], context: ResolverContext,
                factories: Callable[[], dict[str, IResolverFactory]] = available_resolvers,
                ) -> ResolverChain:
    """The chain of the resolvers named (config order); unknown names raise KeyError."""
    known = factories()
    return ResolverChain(known[name].build(context) for name in names)
