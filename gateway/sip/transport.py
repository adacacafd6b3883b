"""UDP, TCP, TLS and WebSocket transports (RFC 3261 §18, §26; RFC 7118): bytes in,
parsed messages to the core; bytes out.

Nothing here makes a routing decision. Unparseable requests are answered ``400`` (to the
packet's source, never to a Via host) or dropped; no exception escapes into the reactor.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IHandshakeListener, IReactorSocket
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.log import get_logger
from gateway.sip import icmp
from gateway.sip.address import Address, ListenAddress
from gateway.sip.message import Request, Response
from gateway.sip.overload import (
    OverloadGuard,
    acknowledges_shed,
    new_request_headers,
    unavailable_response,
)
from gateway.sip.parser import ParseError, StreamFramer, parse_message
from gateway.sip.responses import build_error_response
from gateway.sip.stun import binding_response, is_stun
from gateway.sip.tls import TlsContexts, describe_failure
from gateway.sip.uri import bracketed
from gateway.sip.websocket import Pages, SipWebSocketFactory, web_site

#: Transports over WebSocket: reached only over connections their peers opened.
WEBSOCKET = ("ws", "wss")

log = get_logger("gateway.sip.transport")

Receiver = Callable[..., None]  # (message, source, raw datagram or b"")
Absorber = Callable[[bytes, Address], bool]
SendError = Callable[[str], None]  # called with the reason when a send cannot happen
Unreachable = Callable[[Address, str], None]  # a destination answered with an ICMP error
#: Told of every message that could not be parsed (or was too big): the status it was
#: answered with, 0 when it was dropped or its connection closed.
Rejected = Callable[[int], None]


def _ignore_rejected(status: int) -> None:
    pass
UDP_BUFFER = 4 * 1024 * 1024


class ListenError(Exception):
    """A listener could not be opened; ``str()`` is a one-line message."""


def bind_socket(kind: str, address: ListenAddress) -> socket.socket:
    """Create and bind (and for TCP, listen on) a socket; IPv6 sockets are v6-only so
    ``0.0.0.0`` and ``::`` can share a port."""
    family = socket.AF_INET6 if address.is_ipv6 else socket.AF_INET
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, sock_type)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == "udp":
            grow_udp_buffers(sock)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        if kind != "udp":
            sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {kind} {address}: {exc.strerror}") from None
    return sock


def grow_udp_buffers(sock: socket.socket) -> None:
    """Give a UDP socket ``UDP_BUFFER`` bytes to receive and send into (beyond the
    system's limit when the process may: bursts must not be dropped by the kernel)."""
    _grow_buffer(sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None))
    _grow_buffer(sock, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None))


def _grow_buffer(sock: socket.socket, option: int, force_option: int | None) -> None:
    for opt in (force_option, option):
        if opt is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
            return
        except OSError:
            continue


def _host_of(addr: Any) -> tuple[str, int]:
    return addr[0], addr[1]


class UdpTransport(DatagramProtocol):
    """One UDP listener."""

    noisy = False

    def __init__(self, receive: Receiver, max_message_size: int,
                 absorb: Absorber | None = None,
                 rejected: Rejected = _ignore_rejected,
                 unreachable: Unreachable | None = None,
                 overload: OverloadGuard | None = None) -> None:
        """``unreachable`` hears of every destination that answered a datagram with an
        ICMP error (as the :class:`Address` it was sent to from this socket);
        ``overload`` sheds new requests past capacity."""
        self.receive = receive
        self.absorb = absorb
        self.rejected = rejected
        self.max_message_size = max_message_size
        self.on_unreachable = unreachable
        self.overload = overload if overload is not None and overload.enabled else None
        self.ident = id(self)

    def unreachable(self, host: str, port: int, reason: str) -> None:
        """An ICMP error for a datagram sent to ``host``:``port``."""
        if self.on_unreachable is not None:
            self.on_unreachable(Address("udp", host, port, self.ident), reason)

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 - Twisted API
        """Parse one datagram and hand it to the core; answer 400 to bad requests."""
        self.datagram_waited(data, addr, None, 0.0)

    def datagram_waited(self, data: bytes, addr: Any, waited: float | None,
                        now: float) -> None:
        """:meth:`datagramReceived` for a datagram read at ``now`` (``time.time()``)
        after ``waited`` seconds in the socket's queue (None: not known). Past capacity
        (:mod:`gateway.sip.overload`) new requests are answered 503 or dropped here,
        before they are parsed."""
        host, port = _host_of(addr)
        guard = self.overload
        if guard is not None and waited is not None:
            guard.observe(waited, now)
        try:
            if len(data) <= 4 and not data.strip(b"\r\n\x00 "):
                return  # keep-alive
            if is_stun(data):  # a STUN keep-alive (RFC 5626 §4.4.1)
                response = binding_response(data, host, port)
                if response is not None and self.transport is not None:
                    self.transport.write(response, addr)
                return
            if len(data) > self.max_message_size:
                log.warn("dropped a {size}-byte datagram from {host}:{port}", size=len(data),
                         host=host, port=port)
                self.rejected(0)
                return
            source = Address("udp", host, port, self.ident)
            if self.absorb is not None and self.absorb(data, source):
                return
            if guard is not None and (guard.shedding and self._shed(data, host, port)
                                      or acknowledges_shed(data)):
                return
            try:
                message = parse_message(data)
            except ParseError as exc:
                self._reject(exc, host, port)
                return
            self.receive(message, source, data)
        except Exception:
            log.failure("error on a datagram from {host}:{port}", host=host, port=port)

    def _shed(self, data: bytes, host: str, port: int) -> bool:
        """Whether ``data``, a new request the overload guard does not admit, was shed
        (answered 503 from its bytes, or dropped)."""
        guard = self.overload
        assert guard is not None
        lines = new_request_headers(data)
        if lines is None or guard.admit():
            return False
        response = None if guard.dropping else unavailable_response(
            lines, guard.settings.retry_after)
        if response is None:
            guard.dropped += 1
        else:
            guard.shed += 1
            if self.transport is not None:
                self.transport.write(response, (host, port))
        return True

    def _reject(self, exc: ParseError, host: str, port: int) -> None:
        log.info("unparseable message from udp {host}:{port}: {reason}", host=host, port=port,
                 reason=exc.reason)
        response = (build_error_response(exc.headers, exc.status, exc.response_reason)
                    if exc.is_request else None)
        if response is not None and self.transport is not None:
            self.transport.write(response.serialize(), (host, port))
            self.rejected(exc.status)
        else:
            self.rejected(0)

    def send(self, data: bytes, host: str, port: int) -> None:
        """Send one datagram."""
        if self.transport is not None:
            self.transport.write(data, (host, port))


class ListenerPort(udp.Port):
    """A SIP UDP port: reads the socket's ICMP errors (:mod:`gateway.sip.icmp`) before
    each read when ``icmp_errors`` (every unreachable destination is reported to its
    :class:`UdpTransport`), and reads each datagram with the kernel's receive time, so
    the transport knows how long it waited in the queue (overload control)."""

    protocol: UdpTransport
    icmp_errors = False
    timestamps = False

    def doRead(self) -> None:  # noqa: N802 - Twisted API
        """Drain the ICMP errors first, then read datagrams as Twisted's port does."""
        if self.icmp_errors:
            icmp.drain(self.socket, self.protocol.unreachable)
        if not self.timestamps:
            super().doRead()
            return
        read = 0
        sock, protocol, size = self.socket, self.protocol, self.maxPacketSize
        while read < self.maxThroughput:
            try:
                data, ancillary, _, addr = sock.recvmsg(size, _STAMP_SPACE)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return
                if exc.errno == errno.ECONNREFUSED:
                    return  # an unconnected socket: the error queue says where
                raise
            read += len(data)
            now = time.time()
            stamp = _stamp(ancillary)
            try:
                protocol.datagram_waited(data, addr[:2], None if stamp is None
                                         else max(0.0, now - stamp), now)
            except BaseException:
                log.failure("error on a datagram")


#: SO_TIMESTAMPNS (Linux): each datagram comes with the time the kernel received it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_STAMP = struct.Struct("qq")  # struct timespec
_STAMP_SPACE = socket.CMSG_SPACE(_STAMP.size)


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram of ``sock`` with its arrival time; False
    where it cannot (then nothing is known of queueing, and overload control waits)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _STAMP.size:
            seconds, nanoseconds = _STAMP.unpack_from(value)
            return seconds + nanoseconds / 1e9
    return None


@implementer(IHandshakeListener)
class StreamTransport(Protocol, TimeoutMixin):
    """One TCP or TLS connection: frames by Content-Length, answers CRLF keep-alives
    (RFC 5626 §3.5.1), closes on garbage or oversize input, and times out when idle."""

    factory: StreamFactory

    def __init__(self) -> None:
        self.framer: StreamFramer | None = None
        self.peer: Address | None = None
        #: For a connection the gateway opened: told when it is ready or failed.
        self.outgoing: _OutgoingFactory | None = None
        self.secure = False  # TLS handshake done
        #: Who the TLS client proved it is with its certificate (one of the known
        #: client names, e.g. a gateway of the site); "" for anyone else.
        self.identity = ""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        """Register the connection so responses and requests can reuse it."""
        peer = self.transport.getPeer()
        self.peer = Address(self.factory.transport_name, peer.host, peer.port, id(self))
        self.framer = StreamFramer(self.factory.max_message_size)
        self.factory.connections[id(self)] = self
        self.setTimeout(self.factory.idle_timeout)
        if self.factory.transport_name == "tls" and self.outgoing is not None:
            return  # usable (and reusable) once the peer's certificate is verified
        self.factory.by_peer[(peer.host, peer.port)] = self
        if self.outgoing is not None:
            self.outgoing.connected(self)

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted API
        """TLS is up (for an outgoing connection: the peer's certificate verified)."""
        if getattr(self.transport, "disconnecting", False):
            return  # verification failed during the handshake: connectionLost follows
        self.secure = True
        if self.outgoing is None and self.factory.identify is not None:
            self.identity = self.factory.identify(self.transport.getHandle())
        if self.outgoing is not None and self.peer is not None:
            self.factory.by_peer[(self.peer.host, self.peer.port)] = self
            self.outgoing.connected(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        """Feed bytes to the framer; every complete message goes to the core."""
        assert self.framer is not None and self.peer is not None
        self.resetTimeout()
        try:
            items = self.framer.feed(data)
        except ParseError as exc:
            log.info("closing {peer}: {reason}", peer=self.peer, reason=exc.reason)
            self.factory.rejected(0)
            self.transport.loseConnection()
            return
        for item in items:
            if item == b"\r\n\r\n":
                self.transport.write(b"\r\n")
                continue
            try:
                message = parse_message(item, framed=True)
            except ParseError as exc:
                log.info("bad message from {peer}: {reason}", peer=self.peer,
                         reason=exc.reason)
                response = (build_error_response(exc.headers, exc.status, exc.response_reason)
                            if exc.is_request else None)
                if response is not None:
                    self.transport.write(response.serialize())
                self.factory.rejected(exc.status if response is not None else 0)
                continue
            try:
                self.factory.receive(message, self.peer)
            except Exception:
                log.failure("error on a message from {peer}", peer=self.peer)

    def timeoutConnection(self) -> None:  # noqa: N802 - Twisted API
        """Idle for too long."""
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted API
        """Forget the connection (an outgoing one that never got ready fails its queue)."""
        self.setTimeout(None)
        self.factory.connections.pop(id(self), None)
        if self.peer is not None and self.factory.by_peer.get(
                (self.peer.host, self.peer.port)) is self:
            del self.factory.by_peer[(self.peer.host, self.peer.port)]
        if self.outgoing is not None and self.outgoing.queue:
            self.outgoing.failed(describe_failure(reason) if reason is not None
                                 else "connection closed")
        elif self.factory.transport_name == "tls" and not self.secure and reason is not None:
            log.info("TLS handshake with {peer} failed: {why}", peer=self.peer,
                     why=describe_failure(reason))


class StreamFactory(Factory):
    """Accepts TCP connections, up to ``max_connections`` at once."""

    protocol = StreamTransport
    noisy = False

    def __init__(self, receive: Receiver, max_message_size: int, max_connections: int,
                 idle_timeout: float, transport_name: str = "tcp",
                 rejected: Rejected = _ignore_rejected,
                 by_peer: dict[tuple[str, int], StreamTransport] | None = None,
                 identify: Callable[[Any], str] | None = None) -> None:
        """``identify``: for TLS, who an accepted connection's client certificate
        proves its peer is (see :meth:`TlsContexts.client_identity`)."""
        self.receive = receive
        self.identify = identify
        self.rejected = rejected
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.transport_name = transport_name
        self.connections: dict[int, StreamTransport] = {}
        # The newest connection with each peer (host, port), accepted or opened by us.
        self.by_peer: dict[tuple[str, int], StreamTransport] = (
            by_peer if by_peer is not None else {})

    def buildProtocol(self, addr: Any) -> StreamTransport | None:  # noqa: N802 - Twisted API
        """Refuse connections beyond the limit."""
        if len(self.connections) >= self.max_connections:
            log.warn("refused a connection from {addr}: {n} connections open", addr=addr,
                     n=len(self.connections))
            return None
        return super().buildProtocol(addr)


class _TlsServerFactory(TLSMemoryBIOFactory):
    """TLS around a :class:`StreamFactory`; a connection the stream factory refuses
    (too many open) is refused before any handshake."""

    noisy = False

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted API
        """None when the wrapped factory refuses."""
        if len(self.wrappedFactory.connections) >= self.wrappedFactory.max_connections:
            return self.wrappedFactory.buildProtocol(addr)  # logs the refusal, None
        return super().buildProtocol(addr)


class _OutgoingFactory(ClientFactory):
    """Opens one connection to a next hop and sends what was queued for it once it is
    up (for TLS: once the peer's certificate is verified)."""

    noisy = False

    def __init__(self, streams: StreamFactory, key: tuple[str, int],
                 pending: dict[tuple[str, str, int], _OutgoingFactory]) -> None:
        self.streams = streams
        self.key = key
        self.pending_key = (streams.transport_name, *key)
        self.pending = pending
        self.queue: list[tuple[bytes, SendError | None]] = []

    def buildProtocol(self, addr: Any) -> StreamTransport:  # noqa: N802 - Twisted API
        """A stream protocol served by the listening side's factory."""
        protocol = StreamTransport()
        protocol.factory = self.streams
        protocol.outgoing = self
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        """Every queued message fails."""
        self.failed(reason.getErrorMessage())

    def failed(self, why: str) -> None:
        """The connection could not be made or verified: every queued message fails."""
        self.pending.pop(self.pending_key, None)
        message = (f"cannot connect to {self.streams.transport_name} "
                   f"{bracketed(self.key[0])}:{self.key[1]}: {why}")
        if self.streams.transport_name == "tls":
            log.warn("{message}", message=message)
        else:
            log.info("{message}", message=message)
        queue, self.queue = self.queue, []
        for _, on_error in queue:
            if on_error is not None:
                on_error(message)

    def connected(self, protocol: StreamTransport) -> None:
        """Flush the queue over the new connection."""
        self.pending.pop(self.pending_key, None)
        queue, self.queue = self.queue, []
        for data, _ in queue:
            protocol.transport.write(data)


class OpenConnections:
    """The newest open stream connection with each peer, per transport: written by the
    transports, read by whoever decides where a request goes (the proxy reuses the
    connection a phone registered over). Built before both, so neither needs the other."""

    def __init__(self) -> None:
        self.by_transport: dict[str, dict[tuple[str, int], Any]] = {
            "tcp": {}, "tls": {}, "ws": {}, "wss": {}}

    def is_open(self, address: Address) -> bool:
        """Whether a connection of ``address``'s transport with its host and port is
        open."""
        peers = self.by_transport.get(address.transport)
        connection = peers.get((address.host, address.port)) if peers is not None else None
        return connection is not None and connection.transport is not None

    def identity(self, source: Address) -> str:
        """Who the TLS client that sent from ``source`` proved it is ("" when nobody
        known, or not TLS)."""
        connection = self.by_transport["tls"].get((source.host, source.port))
        if connection is None or (source.connection and source.connection != id(connection)):
            return ""
        return connection.identity


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """``[websocket]`` as the transports use it."""

    keepalive: float = 30.0
    allowed_origins: tuple[str, ...] = ("*",)
    #: Served over HTTP(S) on the same listeners (the browser phone), by name.
    pages: Pages = field(default_factory=dict)


class TransportManager:
    """Owns the listeners and sends messages out of the right one."""

    def __init__(self, reactor: IReactorSocket, receive: Receiver, max_message_size: int,
                 max_connections: int, idle_timeout: float,
                 absorb: Absorber | None = None, tls: TlsContexts | None = None,
                 rejected: Rejected = _ignore_rejected,
                 connections: OpenConnections | None = None,
                 unreachable: Unreachable | None = None,
                 websocket: WebSocketOptions | None = None,
                 overload: OverloadGuard | None = None) -> None:
        self.reactor = reactor
        self.overload = overload
        self.receive = receive
        self.absorb = absorb
        self.rejected = rejected
        self.unreachable = unreachable
        self.max_message_size = max_message_size
        self.udp: dict[int, UdpTransport] = {}
        self.udp_by_family: dict[int, UdpTransport] = {}
        self.connections = connections if connections is not None else OpenConnections()
        self.stream_factory = StreamFactory(self._receive, max_message_size, max_connections,
                                            idle_timeout, rejected=rejected,
                                            by_peer=self.connections.by_transport["tcp"])
        self.tls = tls
        self.tls_factory = StreamFactory(self._receive, max_message_size, max_connections,
                                         idle_timeout, transport_name="tls", rejected=rejected,
                                         by_peer=self.connections.by_transport["tls"],
                                         identify=tls.client_identity if tls else None)
        options = websocket or WebSocketOptions()
        self.websockets = {
            name: SipWebSocketFactory(self._receive, name, max_message_size, max_connections,
                                      options.keepalive, options.allowed_origins, rejected,
                                      by_peer=self.connections.by_transport[name])
            for name in WEBSOCKET}
        self.web_sites = {name: web_site(factory, options.pages)
                          for name, factory in self.websockets.items()}
        self.ports: list[tuple[str, Any]] = []
        self._connecting: dict[tuple[str, str, int], _OutgoingFactory] = {}
        #: Seconds an outgoing TCP connection may take to open.
        self.connect_timeout = 10.0

    def _receive(self, message: Request | Response, source: Address, raw: bytes = b"") -> None:
        self.receive(message, source, raw)

    def adopt(self, kind: str, sock: socket.socket) -> None:
        """Start serving on an already bound socket (closed here after adoption)."""
        family = sock.family
        if kind == "udp":
            protocol = UdpTransport(self._receive, self.max_message_size, self.absorb,
                                    self.rejected, self.unreachable, self.overload)
            port = ListenerPort._fromListeningDescriptor(  # noqa: SLF001 - as adopt does
                self.reactor, sock.fileno(), family, protocol,
                maxPacketSize=self.max_message_size + 1)
            port.icmp_errors = icmp.enable(sock)  # options of the socket, not of the fd
            # Receive times only feed overload control: without it, Twisted's own read.
            port.timestamps = protocol.overload is not None and enable_timestamps(sock)
            port.startListening()
            self.udp[protocol.ident] = protocol
            self.udp_by_family.setdefault(family, protocol)
        elif kind == "tls":
            if self.tls is None:
                raise ListenError("a TLS listener needs a certificate")
            factory = _TlsServerFactory(self.tls.sip_server, False, self.tls_factory)
            port = self.reactor.adoptStreamPort(sock.fileno(), family, factory)
        elif kind == "ws":
            port = self.reactor.adoptStreamPort(sock.fileno(), family, self.web_sites["ws"])
        elif kind == "wss":
            if self.tls is None:
                raise ListenError("a WSS listener needs a certificate")
            wrapped = TLSMemoryBIOFactory(self.tls.server, False, self.web_sites["wss"])
            port = self.reactor.adoptStreamPort(sock.fileno(), family, wrapped)
        else:
            port = self.reactor.adoptStreamPort(sock.fileno(), family, self.stream_factory)
        sock.close()
        self.ports.append((kind, port))

    def send(self, data: bytes, address: Address, on_error: SendError | None = None) -> None:
        """Send ``data`` to ``address``: UDP from the socket the message came in on (or
        one of the address family); TCP over the connection named by ``address``, else
        the newest connection with that peer, else a new one. ``on_error`` hears of a
        message that cannot be sent (no socket, connection refused or timed out)."""
        if address.transport == "udp":
            protocol = self.udp.get(address.connection) or self.udp_by_family.get(
                socket.AF_INET6 if ":" in address.host else socket.AF_INET)
            if protocol is None:
                _fail(on_error, f"no UDP socket to reach {address.host}:{address.port}")
                return
            protocol.send(data, address.host, address.port)
            return
        if address.transport in WEBSOCKET:
            self._send_websocket(data, address, on_error)
            return
        streams = self._streams(address.transport)
        if streams is None:
            _fail(on_error, f"no {address.transport.upper()} transport")
            return
        connection = streams.connections.get(address.connection) if address.connection else None
        if connection is None:
            connection = streams.by_peer.get((address.host, address.port))
        if connection is not None and connection.transport is not None:
            connection.transport.write(data)
            return
        if address.connection and not on_error:
            # A response on a connection that closed: RFC 3261 §18.2.2 would try a new
            # one to the Via; the peer's source port rarely listens, so it is dropped.
            log.info("connection to {address} is gone; response dropped", address=address)
            return
        self._connect(address, data, on_error)

    def _send_websocket(self, data: bytes, address: Address,
                        on_error: SendError | None) -> None:
        # Over the connection the peer opened: a browser listens nowhere, so there is
        # nothing to connect to when it is gone.
        factory = self.websockets[address.transport]
        connection = (factory.connections.get(address.connection) if address.connection
                      else None) or factory.by_peer.get((address.host, address.port))
        if connection is not None:
            connection.write(data)
        elif on_error is not None:
            on_error(f"no {address.transport.upper()} connection with "
                     f"{bracketed(address.host)}:{address.port} (a WebSocket peer is "
                     "reached only over the connection it opened)")
        else:
            log.info("WebSocket connection to {address} is gone; message dropped",
                     address=address)

    def _streams(self, transport: str) -> StreamFactory | None:
        if transport == "tcp":
            return self.stream_factory
        if transport == "tls" and self.tls is not None:
            return self.tls_factory
        return None

    def has_connection(self, address: Address) -> bool:
        """Whether a stream connection of ``address``'s transport with its host and port
        is open."""
        return self.connections.is_open(address)

    def _connect(self, address: Address, data: bytes, on_error: SendError | None) -> None:
        streams = self._streams(address.transport)
        assert streams is not None
        pending = self._connecting.get((address.transport, address.host, address.port))
        if pending is None:
            pending = _OutgoingFactory(streams, (address.host, address.port), self._connecting)
            self._connecting[pending.pending_key] = pending
            factory: Any = pending
            if address.transport == "tls":
                assert self.tls is not None
                # The name checked in the peer's certificate: the host the target URI
                # named (RFC 5922), or its IP address.
                factory = TLSMemoryBIOFactory(self.tls.client(address.name or address.host),
                                              True, pending)
            self.reactor.connectTCP(address.host, address.port, factory,
                                    timeout=self.connect_timeout)
        pending.queue.append((data, on_error))

    def listening_addresses(self) -> list[tuple[str, str, int]]:
        """``(kind, host, port)`` of every open listener."""
        result = []
        for kind, port in self.ports:
            host = port.getHost()
            result.append((kind, host.host, host.port))
        return result

    def listening_descriptions(self) -> list[str]:
        """``"udp [::]:5060"``-style descriptions of the open listeners, for logs."""
        result = []
        for kind, host, port in self.listening_addresses():
            result.append(f"{kind} {bracketed(host)}:{port}")
        return result

    def stop(self) -> list[Any]:
        """Stop listening and close stream connections; returns Deferreds to wait for."""
        deferreds = [port.stopListening() for _, port in self.ports]
        self.ports = []
        for streams in (self.stream_factory, self.tls_factory):
            for connection in list(streams.connections.values()):
                connection.transport.loseConnection()
        for factory in self.websockets.values():
            for websocket in list(factory.connections.values()):
                websocket.close()
        return [d for d in deferreds if d is not None]


def _fail(on_error: SendError | None, reason: str) -> None:
    if on_error is not None:
        on_error(reason)
    else:
        log.warn("{reason}", reason=reason)
