"""The upstream conventional SIP server: third-party registration of local users there.

For every AoR with live bindings the gateway REGISTERs ``sip:<user>@<upstream domain>``
at the upstream registrar with the gateway itself as Contact, so users of the old
infrastructure reach local phones through the gateway. The Contact carries the local
AoR in a ``gw-aor`` URI parameter; a request the upstream sends to that Contact is then
routed by the local resolver to the AoR's bindings (``plugins/local.py``). When an AoR
loses its last binding it is unregistered upstream (Expires: 0). Registrations are
refreshed at half of ``expires``; a 401/407 is answered once with the configured digest
credentials.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from gateway.log import get_logger
from gateway.server.routing import ServerLocator
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent, ClientTransaction
from gateway.sip.digest import client_credentials, parse_challenge
from gateway.sip.errors import SipSyntaxError
from gateway.sip.forwarding import uri_address, via_value
from gateway.sip.locate import Located
from gateway.sip.message import Request, Response
from gateway.sip.responses import new_tag
from gateway.sip.uri import SipUri, bracketed, parse_uri

log = get_logger("gateway.server.upstream")
GW_AOR_PARAM = "gw-aor"


@dataclass(frozen=True)
class UpstreamSettings:
    """``[upstream]``."""

    uri: str
    domain: str
    register: bool
    username: str
    password: str
    expires: int


@dataclass
class _Registration:
    """One AoR's registration at the upstream server."""

    aor: str
    call_id: str
    from_tag: str
    cseq: int = 0
    registered: bool = False
    nc: int = 0
    challenge_tried: bool = False


@dataclass(frozen=True)
class UpstreamServer:
    """Where the upstream server is: its address (None when ``uri`` names a host that
    DNS locates, RFC 3263), the Route value that reaches it and the domain of our users'
    AoRs there. ``addresses`` are the (host, port) it was last located at."""

    settings: UpstreamSettings
    destination: Address | None
    domain: str
    #: The Route value that sends a request to the upstream server (loose routing).
    route: str
    uri: SipUri
    addresses: set[tuple[str, int]] = field(default_factory=set, compare=False)

    @classmethod
    def from_settings(cls, settings: UpstreamSettings) -> UpstreamServer:
        """Parse ``settings.uri``; ValueError names the setting when it is unusable."""
        uri = parse_uri(settings.uri)
        if not isinstance(uri, SipUri):
            raise ValueError(f"upstream.uri: {settings.uri!r} is not a SIP URI")
        address = uri_address(uri)
        if address is not None:
            route = (f"sip:{bracketed(address.host)}:{address.port}"
                     + ("" if address.transport == "udp"
                        else f";transport={address.transport}") + ";lr")
            return cls(settings, address, settings.domain or uri.host, route, uri,
                       {(address.host, address.port)})
        # A name: the proxy locates the Route's host, the registrations the URI's.
        route = (f"sip:{uri.host}" + (f":{uri.port}" if uri.port else "")
                 + (f";transport={uri.transport}" if uri.transport else "") + ";lr")
        return cls(settings, None, settings.domain or uri.host, route, uri)

    def is_upstream(self, host: str, port: int | None) -> bool:
        """Whether ``host``/``port`` (a source address or a Via's sent-by) is the
        upstream server (port 5060 when None)."""
        return (host, port or 5060) in self.addresses


class RequestSender(Protocol):
    """How the registrations send: a REGISTER in a client transaction whose events come
    back to the ``user``, and the gateway's address for a transport."""

    def send_request(self, request: Request, destination: Address, user: object,
                     branch: str) -> None:
        """Send ``request`` in a new client transaction."""

    def local_address(self, transport: str, toward: str | None = None,
                      ) -> tuple[str, int] | None:
        """(host, port) the gateway advertises for ``transport`` towards ``toward``."""


class UpstreamRegistrations:
    """Keeps the upstream registrar's bindings for our AoRs equal to our registry.

    ``sender`` sends the REGISTERs (the core's driver); ``location`` is the location
    service (``lookup``, ``snapshot``, ``watchers``, ``expiry_watchers``)."""

    def __init__(self, server: UpstreamServer, sender: RequestSender, location: Any,
                 reactor: Any, locator: ServerLocator | None = None) -> None:
        """``locator`` finds the server when ``upstream.uri`` names a host (RFC 3263)."""
        self.server = server
        self.settings = server.settings
        self.sender = sender
        self.location = location
        self.reactor = reactor
        self.locator = locator
        # Where REGISTERs go, best first; a failed one is dropped, none left: locate again.
        self._targets: list[Address] = [server.destination] if server.destination else []
        self._waiting: set[str] = set()
        self._locating = False
        self.domain = server.domain
        self.route = server.route
        self._registrations: dict[str, _Registration] = {}
        self._dirty: set[str] = set()
        self._flush_call: IDelayedCall | None = None
        self._refresh_call: IDelayedCall | None = None
        self._serial = itertools.count(1)
        self.running = False
        #: REGISTERs answered 2xx and failed (for status and tests).
        self.ok = 0
        self.failed = 0

    def start(self) -> None:
        """Register every AoR now and follow changes."""
        self.running = True
        self.location.watchers.append(self._changed)
        self.location.expiry_watchers.append(self._changed)  # withdraw the last one
        for aor in self.location.snapshot():
            self._changed(aor)
        self._schedule_refresh()

    def stop(self) -> None:
        """Stop following changes (registrations expire upstream on their own)."""
        self.running = False
        for watchers in (self.location.watchers, self.location.expiry_watchers):
            if self._changed in watchers:
                watchers.remove(self._changed)
        for call in (self._flush_call, self._refresh_call):
            if call is not None and call.active():
                call.cancel()

    # --- changes and refreshes --------------------------------------------------------

    def _changed(self, aor: str) -> None:
        if not self.running or not self.settings.register:
            return
        self._dirty.add(aor)
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.reactor.callLater(0.1, self._flush)

    def _flush(self) -> None:
        aors, self._dirty = sorted(self._dirty), set()
        for aor in aors:
            self._send(aor)

    def _schedule_refresh(self) -> None:
        if self.running:
            self._refresh_call = self.reactor.callLater(self.settings.expires / 2,
                                                        self._refresh)

    def _refresh(self) -> None:
        for aor, registration in list(self._registrations.items()):
            if registration.registered:
                self._dirty.add(aor)
        self._flush()
        self._schedule_refresh()

    # --- REGISTER ---------------------------------------------------------------------

    @property
    def destination(self) -> Address | None:
        """Where the next REGISTER goes (None until DNS located the server)."""
        return self._targets[0] if self._targets else None

    def _locate(self) -> None:
        if self._locating or self.locator is None:
            if self.locator is None:
                log.warn("upstream: {uri} names a host, but DNS is off (add dns to "
                         "proxy.resolvers)", uri=self.settings.uri)
            return
        self._locating = True
        d = Deferred.fromFuture(asyncio.ensure_future(self.locator.locate(self.server.uri)))
        d.addCallbacks(self._located, lambda f: self._located(Located((), f.getErrorMessage())))

    def _located(self, located: Located) -> None:
        self._locating = False
        self._targets = list(located.targets)
        self.server.addresses.update((t.host, t.port) for t in located.targets)
        if not self._targets:
            log.warn("upstream: cannot locate {uri}: {error}", uri=self.settings.uri,
                     error=located.error or "no address")
            return
        waiting, self._waiting = sorted(self._waiting), set()
        for aor in waiting:
            self._send(aor)

    def _send(self, aor: str, authorization: tuple[str, str] | None = None) -> None:
        destination = self.destination
        if destination is None:
            self._waiting.add(aor)
            self._locate()
            return
        live = bool(self.location.lookup(aor))
        registration = self._registrations.get(aor)
        if registration is None:
            if not live:
                return  # never registered upstream: nothing to withdraw
            registration = self._registrations[aor] = _Registration(
                aor, f"{uuid.uuid4().hex}@p2psip-gateway", new_tag())
        local = self.sender.local_address(destination.transport, destination.host)
        if local is None:
            log.warn("upstream: no {t} transport to reach {uri}",
                     t=destination.transport, uri=self.settings.uri)
            return
        if authorization is None:
            registration.challenge_tried = False
        registration.cseq += 1
        user = aor[len("sip:"):].rsplit("@", 1)[0]
        upstream_aor = f"sip:{user}@{self.domain}"
        contact = (f"<sip:{user}@{bracketed(local[0])}:{local[1]}"
                   + ("" if destination.transport == "udp"
                      else f";transport={destination.transport}")
                   + f";{GW_AOR_PARAM}={quote(aor, safe='')}>")
        branch = f"z9hG4bK{next(self._serial):x}u{uuid.uuid4().hex[:12]}"
        request = Request("REGISTER", parse_uri(f"sip:{self.domain}"), [])
        for name, value in (
                ("Via", via_value(destination.transport, *local, branch)),
                ("Max-Forwards", "70"), ("From", f"<{upstream_aor}>;tag={registration.from_tag}"),
                ("To", f"<{upstream_aor}>"), ("Call-ID", registration.call_id),
                ("CSeq", f"{registration.cseq} REGISTER"), ("Contact", contact),
                ("Expires", str(self.settings.expires if live else 0))):
            request.add_header(name, value)
        if authorization is not None:
            request.add_header(*authorization)
        request.add_header("Content-Length", "0")
        self.sender.send_request(request, destination, _Owner(self, aor, live), branch)

    def client_event(self, owner: _Owner, event: ClientEvent, txn: ClientTransaction,
                     response: Response | None) -> None:
        """A response (or timeout) of one of our REGISTERs."""
        registration = self._registrations.get(owner.aor)
        if registration is None:
            return
        if event is not ClientEvent.RESPONSE or response is None:
            self.failed += 1
            log.warn("upstream: REGISTER of {aor} at {host}:{port} failed ({event})",
                     aor=owner.aor, host=txn.destination.host, port=txn.destination.port,
                     event=event.name.lower())
            if (self.server.destination is None and self._targets
                    and self._targets[0] == txn.destination):
                # RFC 3263 §4.3: the next server DNS gave. With none left, DNS is asked
                # again at the next change or refresh, not at once (no tight loop
                # against servers that are all down).
                self._targets.pop(0)
                if self._targets:
                    self._send(owner.aor)
            return
        if response.status < 200:
            return
        if response.status < 300:
            self.ok += 1
            registration.registered = owner.live
            if not owner.live:
                del self._registrations[owner.aor]
            return
        if response.status in (401, 407) and not registration.challenge_tried:
            answer = self._answer(response, registration)
            if answer is not None:
                registration.challenge_tried = True
                header = "Authorization" if response.status == 401 else "Proxy-Authorization"
                self._send(owner.aor, (header, answer))
                return
        self.failed += 1
        log.warn("upstream: REGISTER of {aor} got {status} {reason}", aor=owner.aor,
                 status=response.status, reason=response.reason)

    def _answer(self, response: Response, registration: _Registration) -> str | None:
        if not self.settings.username:
            return None
        name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        for value in response.header_values(name):
            try:
                challenge = parse_challenge(value)
            except SipSyntaxError:
                continue
            registration.nc += 1
            answer = client_credentials(challenge, method="REGISTER", uri=f"sip:{self.domain}",
                                        username=self.settings.username,
                                        password=self.settings.password, nc=registration.nc,
                                        cnonce=uuid.uuid4().hex[:16])
            if answer is not None:
                return answer
        return None


@dataclass(frozen=True)
class _Owner:
    """The transaction user of one upstream REGISTER."""

    registrations: UpstreamRegistrations
    aor: str
    live: bool

    def client_event(self, event: ClientEvent, txn: ClientTransaction,
                     response: Response | None) -> None:
        """Passed on to :meth:`UpstreamRegistrations.client_event`."""
        self.registrations.client_event(self, event, txn, response)
