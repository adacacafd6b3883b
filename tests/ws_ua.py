"""A SIP user agent over WebSocket (RFC 7118), as a browser's SIP library behaves: it
connects to the gateway with the ``sip`` subprotocol, says ``transport=ws`` (or
``wss``) and an ``.invalid`` host in its Via and Contact, and is reached only over its
connection. Built on ``websocket-client`` (a client independent of the server side)."""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import websocket
from sip_ua import UA

from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message


class WsUA(UA):
    """A UA whose only transport is one WebSocket connection to the gateway."""

    def __init__(self, user: str, url: str, *, timeout: float = 5.0, domain: str = "127.0.0.1",
                 origin: str | None = None, tls: ssl.SSLContext | None = None,
                 subprotocols: tuple[str, ...] = ("sip",),
                 sock: socket.socket | None = None) -> None:
        """``sock``: an already connected socket to use (e.g. one made inside a lab
        namespace)."""
        self.user = user
        self.domain = domain
        self.transport = "wss" if url.startswith("wss:") else "ws"
        self.timeout = timeout
        self.local_host = f"{uuid.uuid4().hex[:12]}.invalid"
        self.sips_contact = False
        self.port = 0
        self._pending: list[bytes] = []
        options = {"context": tls} if tls is not None else {}
        extra = {"socket": sock} if sock is not None else {}
        self.ws = websocket.create_connection(url, timeout=timeout, origin=origin,
                                              subprotocols=list(subprotocols),
                                              sslopt=options, **extra)

    @property
    def contact(self) -> str:
        """The Contact a browser registers: an ``.invalid`` host, transport ws/wss."""
        return f"sip:{self.user}@{self.local_host};transport={self.transport}"

    def via(self) -> str:
        """A fresh Via: transport WS/WSS, the ``.invalid`` host."""
        return (f"SIP/2.0/{self.transport.upper()} {self.local_host};"
                f"branch=z9hG4bK{uuid.uuid4().hex[:16]}")

    def send(self, message: Request | Response | bytes) -> None:
        """One SIP message in one WebSocket text message."""
        data = message if isinstance(message, bytes) else message.serialize()
        self.ws.send(data.decode("utf-8"))

    def receive(self, timeout: float | None = None) -> Request | Response:
        """The next SIP message, or raise TimeoutError."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.user}: nothing received")
            self.ws.settimeout(remaining)
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                raise TimeoutError(f"{self.user}: nothing received") from None
            self._pending.append(frame.encode() if isinstance(frame, str) else frame)
        return parse_message(self._pending.pop(0))

    def close(self) -> None:
        """Close the WebSocket."""
        self.ws.close()
