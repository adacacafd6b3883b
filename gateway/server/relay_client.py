"""Relaying for a gateway behind a NAT that nothing is forwarded through (its side).

When the overlay finds this gateway unreachable it asks the peers it joined through
for relays (``rpc_relay_offer``) and hands their SIP URIs to :meth:`RelayClient.use`.
The client opens a flow to the first that accepts: a REGISTER over TCP/TLS requiring
``p2psip-relay`` (``gateway/server/relay.py``). The relay's 200 carries a ``Path`` URI
with the flow's token: the route this gateway publishes in its overlay records and puts
in its Record-Route towards the outside. The REGISTER is refreshed every ``Flow-Timer``
seconds (which also keeps the connection and the NAT's mapping alive); when a refresh
fails the route is withdrawn and the next relay is tried.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

from gateway.log import get_logger
from gateway.server.relay import OPTION_TAG
from gateway.server.upstream import RequestSender
from gateway.sip.client_transaction import ClientEvent, ClientTransaction
from gateway.sip.errors import SipSyntaxError
from gateway.sip.forwarding import route_target, uri_address, via_value
from gateway.sip.message import Request, Response
from gateway.sip.responses import new_tag
from gateway.sip.uri import SipUri, bracketed, parse_uri

log = get_logger("gateway.server.relay")

#: Seconds asked for; the relay's Flow-Timer (or half of this) paces the refreshes.
REQUESTED_EXPIRES = 120
#: Seconds before the first relay is tried again once every one has failed.
RETRY_AFTER = 30.0


class RelayClient:
    """Keeps one relayed flow open while the overlay says this gateway needs one.

    ``on_route`` gets the relay URI when a flow is open, and "" when it is lost."""

    def __init__(self, sender: RequestSender, reactor: Any,
                 on_route: Callable[[str], None]) -> None:
        self.sender = sender
        self.reactor = reactor
        self.on_route = on_route
        self.candidates: list[str] = []
        #: The relay URI requests for this gateway take ("" when not relayed).
        self.route = ""
        #: The relay (its SIP URI) the current or last flow goes to.
        self.relay = ""
        self.last_error = ""
        self._index = 0
        self._call_id = ""
        self._from_tag = ""
        self._cseq = 0
        self._serial = itertools.count(1)
        self._timer: Any = None
        self._pending = False
        self._running = True

    def use(self, candidates: list[str]) -> None:
        """Relays to use, best first (from the overlay); keeps a working flow."""
        self.candidates = list(dict.fromkeys(candidates))
        if self.route and self.relay in self.candidates:
            return
        if self._pending:
            return
        self._index = 0
        self._try_next(first=True)

    def release(self) -> None:
        """No relay is needed any more (the gateway became reachable)."""
        self.candidates = []
        self._cancel_timer()
        self._set_route("")

    def stop(self) -> None:
        """Stop refreshing (the relay's flow ends with the connection)."""
        self._running = False
        self._cancel_timer()

    def status(self) -> dict[str, Any]:
        """For the overlay status."""
        return {"relay": self.relay, "route": self.route, "last_error": self.last_error}

    # --- registering ------------------------------------------------------------------

    def _try_next(self, first: bool = False) -> None:
        if not self._running:
            return
        if not first:
            self._index += 1
        if self._index >= len(self.candidates):
            self._index = 0
            if self.candidates:
                self._schedule(RETRY_AFTER)
            return
        relay = self.candidates[self._index]
        if relay != self.relay:
            self.relay = relay
            self._call_id = f"{uuid.uuid4().hex}@p2psip-gateway"
            self._from_tag = new_tag()
        self._send()

    def _send(self) -> None:
        self._timer = None
        try:
            uri = parse_uri(self.relay)
        except SipSyntaxError:
            uri = None
        destination = uri_address(uri) if isinstance(uri, SipUri) else None
        if not isinstance(uri, SipUri) or destination is None or destination.transport == "udp":
            self._failed(f"unusable relay URI {self.relay!r}")
            return
        local = self.sender.local_address(destination.transport, destination.host)
        if local is None:
            self._failed(f"no {destination.transport.upper()} transport to reach the relay")
            return
        self._cseq += 1
        branch = f"z9hG4bK{next(self._serial):x}r{uuid.uuid4().hex[:12]}"
        relay_aor = f"sip:relay@{bracketed(destination.host)}"
        request = Request("REGISTER", uri, [])
        for name, value in (
                ("Via", via_value(destination.transport, *local, branch)),
                ("Max-Forwards", "70"), ("From", f"<{relay_aor}>;tag={self._from_tag}"),
                ("To", f"<{relay_aor}>"), ("Call-ID", self._call_id),
                ("CSeq", f"{self._cseq} REGISTER"), ("Require", OPTION_TAG),
                ("Supported", "path, outbound"), ("Expires", str(REQUESTED_EXPIRES)),
                ("Content-Length", "0")):
            request.add_header(name, value)
        self._pending = True
        self.sender.send_request(request, destination, self, branch)

    def client_event(self, event: ClientEvent, txn: ClientTransaction,
                     response: Response | None) -> None:
        """A response (or timeout, transport error) of a relay REGISTER."""
        if event is ClientEvent.RESPONSE and response is not None and response.status < 200:
            return
        self._pending = False
        if not self._running:
            return
        if event is not ClientEvent.RESPONSE or response is None:
            self._failed(event.name.lower().replace("_", " "))
            return
        if response.status >= 300:
            self._failed(f"{response.status} {response.reason}")
            return
        route = _path_uri(response)
        if route is None:
            self._failed("200 without a relay Path")
            return
        self.last_error = ""
        if route != self.route:
            log.info("relayed through {relay}: others reach this gateway at {route}",
                     relay=self.relay, route=route)
        self._set_route(route)
        self._schedule(_refresh_interval(response))

    def _failed(self, why: str) -> None:
        self.last_error = f"{self.relay}: {why}"
        log.warn("relay {relay} failed: {why}", relay=self.relay, why=why)
        self._set_route("")
        self._try_next()

    def _set_route(self, route: str) -> None:
        if route != self.route:
            self.route = route
            self.on_route(route)

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        if self._running:
            self._timer = self.reactor.callLater(delay, self._refresh)

    def _refresh(self) -> None:
        self._timer = None
        if self._pending:
            return
        if self.route:
            self._send()
        else:
            self._index = 0
            self._try_next(first=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _path_uri(response: Response) -> str | None:
    for value in response.header_values("path"):
        try:
            uri = route_target(value).uri
        except SipSyntaxError:
            return None
        return str(uri) if isinstance(uri, SipUri) else None
    return None


def _refresh_interval(response: Response) -> float:
    """The relay's Flow-Timer, else half the granted Expires (at least 5 s)."""
    for name in ("flow-timer", "expires"):
        value = response.header(name)
        if value is not None and value.strip().isdigit():
            seconds = int(value.strip())
            return float(max(5, seconds if name == "flow-timer" else seconds // 2))
    return REQUESTED_EXPIRES / 2

