"""Relaying for gateways behind a NAT that nothing is forwarded through (the relay side).

A gateway that cannot be reached from outside its NAT (it found so when joining the
overlay, see ``gateway/overlay/nat.py``) keeps a TCP or TLS connection open to a
reachable gateway, its relay, as P2PP's relay peers and RFC 5626's edge proxies do.
It asks for the relay with a REGISTER addressed to the relay itself that requires the
``p2psip-relay`` option tag; the relay keeps the connection as a *flow*, names it by a
random token, and answers 200 with a ``Path`` whose URI carries the token::

    Path: <sip:203.0.113.5:5060;transport=tcp;lr;relay=4f0c...>

The NATed gateway publishes that URI as the route of its overlay records and puts it in
its Record-Route towards the outside. A request reaching the relay with a Route of the
relay's own that carries a live token (and not coming over that flow itself) is sent
over the flow, whatever else its Route set says; an unknown or expired token gets
``480`` with a Warning. The flow lives as long as its registration (``Expires``,
refreshed by the NATed gateway) and its connection.

Any gateway may ask (a relay only carries requests to the gateway that opened the flow,
so it is not an open SIP relay); the number of flows is bounded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gateway.sip import forwarding
from gateway.sip.address import Address
from gateway.sip.message import Request, Response
from gateway.sip.responses import build_response
from gateway.sip.uri import bracketed

#: The option tag a NATed gateway requires in its relay REGISTER.
OPTION_TAG = "p2psip-relay"
#: The URI parameter of Route/Record-Route/Path values that names a relayed flow.
TOKEN_PARAM = "relay"
DEFAULT_EXPIRES = 600
MIN_EXPIRES = 30
MAX_EXPIRES = 3600


@dataclass
class RelayFlow:
    """One NATed gateway's connection, as the relay keeps it."""

    token: str
    flow: Address
    call_id: str
    expires_at: float


def asks_for_relay(request: Request) -> bool:
    """Whether ``request`` is a relay registration (REGISTER requiring the tag)."""
    return request.method == "REGISTER" and OPTION_TAG in request.option_tags("require")


def relay_token(request: Request, is_me: Callable[[str, int | None], bool]) -> str | None:
    """The relay token of the Route values at the top of ``request`` that name this
    gateway (before they are popped), or None."""
    return forwarding.own_route_param(request, is_me, TOKEN_PARAM)


class RelayFlows:
    """The flows this gateway relays to (sans-IO: the caller passes the time).

    ``address(transport)`` gives the (host, port) others reach this gateway at on that
    transport (its external address); ``max_flows`` 0 turns relaying off (a relay
    REGISTER then gets 420, as from any server that does not know the extension)."""

    def __init__(self, address: object, max_flows: int) -> None:
        self._address = address
        self.max_flows = max_flows
        self._by_token: dict[str, RelayFlow] = {}
        self._by_call_id: dict[str, RelayFlow] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def register(self, request: Request, source: Address, now: float) -> Response:
        """Answer a relay REGISTER from ``source``: a flow (new, refreshed, or released
        with ``Expires: 0``) and its Path, or why not."""
        if self.max_flows <= 0:
            return build_response(request, 420, headers=[("Unsupported", OPTION_TAG)])
        if source.transport not in ("tcp", "tls"):
            return build_response(request, 403, "Forbidden (a relay flow needs a TCP or "
                                  "TLS connection)")
        self._expire(now)
        expires = _expires(request)
        call_id = request.call_id
        current = self._by_call_id.get(call_id)
        if expires == 0:
            if current is not None:
                self._drop(current)
            return build_response(request, 200, headers=[("Expires", "0")])
        expires = min(max(expires, MIN_EXPIRES), MAX_EXPIRES)
        if current is None:
            if len(self._by_token) >= self.max_flows:
                return build_response(request, 503, "Service Unavailable (relay full)",
                                      headers=[("Retry-After", "300")])
            current = RelayFlow(secrets.token_hex(12), source, call_id, now + expires)
            self._by_token[current.token] = current
            self._by_call_id[call_id] = current
        else:
            # A refresh, possibly over a new connection after a reconnect: the token,
            # and so the route the NATed gateway published, stays.
            current.flow = source
            current.expires_at = now + expires
        local = self._address(source.transport)  # type: ignore[operator]
        if local is None:
            return build_response(request, 500, "Server Internal Error (no "
                                  f"{source.transport.upper()} address to advertise)")
        path = relay_uri(local[0], local[1], source.transport, current.token)
        return build_response(request, 200, headers=[
            ("Path", f"<{path}>"), ("Expires", str(expires)), ("Require", OPTION_TAG),
            ("Flow-Timer", str(max(MIN_EXPIRES, expires // 2)))])

    def flow(self, token: str, now: float) -> Address | None:
        """The connection named by ``token``, None when unknown or expired."""
        current = self._by_token.get(token)
        if current is None:
            return None
        if current.expires_at <= now:
            self._drop(current)
            return None
        return current.flow

    def _expire(self, now: float) -> None:
        for current in [f for f in self._by_token.values() if f.expires_at <= now]:
            self._drop(current)

    def _drop(self, current: RelayFlow) -> None:
        self._by_token.pop(current.token, None)
        self._by_call_id.pop(current.call_id, None)


def relay_uri(host: str, port: int, transport: str, token: str) -> str:
    """The URI that routes a request over the flow ``token`` of the relay at
    ``host:port`` (loose routing)."""
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{bracketed(host)}:{port}{suffix};lr;{TOKEN_PARAM}={token}"


def _expires(request: Request) -> int:
    value = request.header("expires")
    if value is None:
        return DEFAULT_EXPIRES
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return DEFAULT_EXPIRES
