"""SIP over WebSocket (RFC 7118), on autobahn's Twisted WebSocket server.

One SIP message per WebSocket message, text or binary, in both directions; the
subprotocol must be ``sip`` (a handshake without it is refused with 400). Browsers
cannot be reached any other way: they listen nowhere, and their Contact names an
``.invalid`` host, so every request for them goes over the connection they registered
on (the proxy's flow), and a closed connection means the browser is gone until it
registers again. Limits as for TCP/TLS: at most ``max_connections`` connections, and
messages (and frames) over ``max_message_size`` bytes close the connection (1009).
Keep-alives are WebSocket pings (``keepalive`` seconds; a peer that does not answer
within as long again is dropped). Pages from origins outside ``allowed_origins`` are
refused in the handshake with 403 (a client that sends no Origin is not a browser page
and is let in: the digest decides the rest).

WS and WSS share this code; WSS is the same factory behind TLS (the ``[tls]``
certificate), as the transport manager wires it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from gateway.log import get_logger
from gateway.sip.address import Address
from gateway.sip.message import Request, Response
from gateway.sip.parser import ParseError, parse_message
from gateway.sip.responses import build_error_response

log = get_logger("gateway.websocket")

#: ``receive(message, source, raw)``, as the other transports call the core.
Receiver = Callable[[Request | Response, Address, bytes], None]
#: Told of every message or connection refused (status sent, or 0 for none).
Rejected = Callable[[int], None]

SUBPROTOCOL = "sip"
_CLOSE_TOO_BIG = 1009


class SipWebSocket(WebSocketServerProtocol):
    """One browser's (or other WebSocket client's) connection."""

    factory: SipWebSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self.sip_peer: Address | None = None  # autobahn's self.peer is a string

    def onConnect(self, request: Any) -> str:  # noqa: N802 - autobahn API
        """Accept only the ``sip`` subprotocol (RFC 7118 §4.1)."""
        if SUBPROTOCOL not in request.protocols:
            log.info("WebSocket from {peer} refused: subprotocol {offered!r} is not sip",
                     peer=request.peer, offered=",".join(request.protocols))
            self.factory.rejected(0)
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST,
                                 "the WebSocket subprotocol must be sip (RFC 7118)")
        if not self.factory.origin_allowed(request.origin):
            log.info("WebSocket from {peer} refused: origin {origin!r} not allowed",
                     peer=request.peer, origin=request.origin)
            self.factory.rejected(0)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN,
                                 "this page's origin may not use the gateway")
        return SUBPROTOCOL

    def failHandshake(self, reason: str, code: int = 400,  # noqa: N802 - autobahn API
                      responseHeaders: Any = None) -> None:  # noqa: N803
        """A refused handshake (bad origin, not WebSocket, too many connections): counted
        and logged, then autobahn answers it."""
        log.info("WebSocket handshake refused ({code}): {reason}", code=code, reason=reason)
        self.factory.rejected(0)
        super().failHandshake(reason, code, responseHeaders)

    def onOpen(self) -> None:  # noqa: N802 - autobahn API
        """The connection is up: it can carry requests for its peer from now on."""
        peer = self.transport.getPeer()
        self.sip_peer = Address(self.factory.transport_name, peer.host, peer.port, id(self))
        self.factory.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        """One SIP message; a malformed request gets 400 on the same connection."""
        assert self.sip_peer is not None
        try:
            message = parse_message(payload)
        except ParseError as exc:
            log.info("bad message over WebSocket from {peer}: {reason}", peer=self.sip_peer,
                     reason=exc.reason)
            response = (build_error_response(exc.headers, exc.status, exc.response_reason)
                        if exc.is_request else None)
            if response is not None:
                self.write(response.serialize())
            self.factory.rejected(exc.status if response is not None else 0)
            return
        try:
            self.factory.receive(message, self.sip_peer, b"")
        except Exception:
            log.failure("error on a message from {peer}", peer=self.sip_peer)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        """Forget the connection (its peer is unreachable until it connects again)."""
        if code == _CLOSE_TOO_BIG:
            log.info("WebSocket {peer} closed: message over the size limit", peer=self.sip_peer)
            self.factory.rejected(0)
        self.factory.closed(self)

    def write(self, data: bytes) -> None:
        """Send one SIP message (a text frame when it is UTF-8, else binary)."""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self.sendMessage(data, isBinary=True)
        else:
            self.sendMessage(data, isBinary=False)

    def close(self) -> None:
        """Close it: the gateway stops."""
        self.sendClose(1000, "server stopping")  # autobahn lets us send only 1000 or 3000-4999


def _normal_origin(origin: str) -> str:
    """``scheme://host:port`` in lower case, the scheme's default port filled in."""
    origin = origin.strip().lower().rstrip("/")
    scheme, _, rest = origin.partition("://")
    if not rest.rsplit(":", 1)[-1].isdigit() or rest.endswith("]"):
        rest = f"{rest}:{443 if scheme == 'https' else 80}"
    return f"{scheme}://{rest}"


class SipWebSocketFactory(WebSocketServerFactory):
    """Accepts SIP WebSocket connections (``transport_name`` ``ws`` or ``wss``) and keeps
    the open ones by id and by peer (host, port)."""

    protocol = SipWebSocket

    def __init__(self, receive: Receiver, transport_name: str, max_message_size: int,
                 max_connections: int, keepalive: float,
                 allowed_origins: tuple[str, ...] = ("*",),
                 rejected: Rejected = lambda _status: None,
                 by_peer: dict[tuple[str, int], SipWebSocket] | None = None) -> None:
        super().__init__()
        self.noisy = False
        self.receive = receive
        self.rejected = rejected
        self.transport_name = transport_name
        self.isSecure = transport_name == "wss"
        self.connections: dict[int, SipWebSocket] = {}
        self.by_peer: dict[tuple[str, int], SipWebSocket] = (
            by_peer if by_peer is not None else {})
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size, maxFramePayloadSize=max_message_size,
            maxConnections=max_connections, openHandshakeTimeout=10,
            closeHandshakeTimeout=5, webStatus=False,
            failByDrop=False,  # a peer that breaks the rules gets a close frame saying why
            autoPingInterval=keepalive or None, autoPingTimeout=keepalive or None,
            allowedOrigins=["*"], allowNullOrigin=True)  # origins are checked here
        self.allowed_origins = (None if "*" in allowed_origins
                                else frozenset(_normal_origin(o) for o in allowed_origins))

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a page from ``origin`` may connect; a client that sends no Origin
        (not a browser, so no page to protect) may."""
        if self.allowed_origins is None or not origin:
            return True
        return origin != "null" and _normal_origin(origin) in self.allowed_origins

    def opened(self, connection: SipWebSocket) -> None:
        """A connection finished its handshake."""
        peer = connection.sip_peer
        assert peer is not None
        self.connections[id(connection)] = connection
        self.by_peer[(peer.host, peer.port)] = connection

    def closed(self, connection: SipWebSocket) -> None:
        """A connection is gone."""
        self.connections.pop(id(connection), None)
        peer = connection.sip_peer
        if peer is not None and self.by_peer.get((peer.host, peer.port)) is connection:
            del self.by_peer[(peer.host, peer.port)]


#: A page the WebSocket listeners serve over plain HTTP(S): name → (content, type).
Pages = dict[str, tuple[bytes, str]]


class SipWebRoot(Resource):
    """The HTTP side of a WebSocket listener: a WebSocket upgrade on any path is SIP
    (RFC 7118 names no path); any other request gets one of ``pages`` (the browser
    phone, when it is served) or 404."""

    def __init__(self, websocket: Resource, pages: Pages) -> None:
        super().__init__()
        self.websocket = websocket
        self.pages = pages

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:  # noqa: N802
        """The WebSocket for upgrades, else the page named (``/`` is ``index.html``)."""
        if (request.getHeader(b"upgrade") or b"").lower() == b"websocket":
            return self.websocket
        page = self.pages.get(name.decode("utf-8", "replace") or "index.html")
        if page is None or request.postpath:
            return notFound()
        return _Page(*page)


class _Page(Resource):
    """One page from memory (GET and HEAD)."""

    isLeaf = True

    def __init__(self, content: bytes, content_type: str) -> None:
        super().__init__()
        self.content, self.content_type = content, content_type

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - twisted.web API
        """The page, not to be cached (it changes with the gateway)."""
        request.setHeader(b"content-type", self.content_type.encode())
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self.content


def web_site(factory: SipWebSocketFactory, pages: Pages | None = None) -> Site:
    """The HTTP server in front of ``factory``: WebSocket upgrades anywhere, and
    ``pages``."""
    site = Site(SipWebRoot(WebSocketResource(factory), pages or {}))
    site.noisy = False
    site.displayTracebacks = False
    return site
