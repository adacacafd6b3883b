"""A minimal blocking SIP user agent over real UDP/TCP/TLS sockets on 127.0.0.x, for proxy
tests (run it in a thread from async tests). It builds requests, answers requests with
the gateway's own response builder, and keeps the dialog's route set."""

from __future__ import annotations

import select
import socket
import ssl
import time
import uuid

from gateway.sip.message import Request, Response
from gateway.sip.parser import StreamFramer, parse_message
from gateway.sip.responses import build_response

HOST = "127.0.0.1"


def _branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex[:16]


class UA:
    """One user agent: a socket, a user name, and helpers for the usual exchanges."""

    def __init__(self, user: str, gateway_port: int, transport: str = "udp",
                 timeout: float = 5.0, *, local_host: str = HOST,
                 tls: ssl.SSLContext | None = None, server_name: str = "localhost",
                 sips_contact: bool = False, domain: str = HOST,
                 gateway_host: str = HOST) -> None:
        self.user = user
        self.domain = domain
        self.transport = transport
        self.local_host = local_host
        self.sips_contact = sips_contact
        self.gateway = (gateway_host, gateway_port)
        self.timeout = timeout
        self._framer = StreamFramer(65535)
        self._framers: dict[int, StreamFramer] = {}
        self._accepted: list[socket.socket] = []
        self._reply_on: socket.socket | None = None
        self._pending: list[bytes] = []
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((local_host, 0))
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((local_host, 0))
            self.listener.listen(4)
            self.sock = socket.create_connection(self.gateway, timeout=timeout,
                                                 source_address=(local_host, 0))
            if transport == "tls":
                assert tls is not None, "a TLS UA needs an SSLContext"
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_name)
        self.sock.settimeout(timeout)
        self.port = (self.sock if transport == "udp" else self.listener).getsockname()[1]

    @property
    def uri(self) -> str:
        """The AoR this UA registers."""
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        """The Contact URI (for TCP/TLS: its listening port)."""
        if self.sips_contact:
            return f"sips:{self.user}@{self.local_host}:{self.port}"
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{self.user}@{self.local_host}:{self.port}{suffix}"

    def via(self) -> str:
        """A fresh Via for a request from this UA."""
        return (f"SIP/2.0/{self.transport.upper()} {self.local_host}:{self.port};"
                f"branch={_branch()};rport")

    # --- wire -----------------------------------------------------------------------------

    def send(self, message: Request | Response | bytes) -> None:
        """Send to the gateway (UDP) or over the current connection (TCP)."""
        data = message if isinstance(message, bytes) else message.serialize()
        if self.transport == "udp":
            self.sock.sendto(data, self.gateway)
        elif isinstance(message, Response) and self._reply_on is not None:
            self._reply_on.sendall(data)  # a response goes back where its request came
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> Request | Response:
        """The next message (any), or raise TimeoutError."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.user}: nothing received")
            if self.transport == "udp":
                self.sock.settimeout(remaining)
                data, _ = self.sock.recvfrom(65535)
                self._pending.append(data)
            else:
                self._read_streams(remaining)
        return parse_message(self._pending.pop(0), framed=self.transport != "udp")

    def _read_streams(self, remaining: float) -> None:
        """Read from the connection to the gateway, and from connections the gateway
        opened to our listener (accepting them as they come)."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            readable = [self.sock]  # decrypted bytes select() cannot see
        else:
            readable, _, _ = select.select([self.sock, self.listener, *self._accepted], [],
                                           [], remaining)
        for sock in readable:
            if sock is self.listener:
                conn, _ = self.listener.accept()
                self._accepted.append(conn)
                self._framers[conn.fileno()] = StreamFramer(65535)
                continue
            data = sock.recv(65535)
            if not data:
                if sock in self._accepted:
                    self._accepted.remove(sock)
                continue
            framer = self._framer if sock is self.sock else self._framers[sock.fileno()]
            self._pending.extend(i for i in framer.feed(data) if i != b"\r\n\r\n")
            self._reply_on = sock if sock is not self.sock else None

    def expect(self, *statuses: int, method: str | None = None,
               timeout: float | None = None) -> Response:
        """Receive responses until one with a status in ``statuses`` (others with a lower
        status, e.g. 100/180, are skipped); requests are not expected here."""
        while True:
            message = self.receive(timeout)
            if not isinstance(message, Response):
                raise AssertionError(f"{self.user}: expected a response, got {message!r}")
            if message.status in statuses and (method is None
                                               or message.cseq.method == method):
                return message
            if message.status >= 200 and message.status not in statuses:
                raise AssertionError(f"{self.user}: got {message!r}, wanted {statuses}")

    def expect_request(self, method: str, timeout: float | None = None) -> Request:
        """Receive until a request with ``method`` (responses in between are skipped)."""
        while True:
            message = self.receive(timeout)
            if isinstance(message, Request) and message.method == method:
                return message

    # --- building -------------------------------------------------------------------------

    def register(self, expires: int = 3600,
                 extra: list[tuple[str, str]] | None = None) -> Response:
        """Register ``self.contact`` and return the final response."""
        request = self.request("REGISTER", f"sip:{self.domain}", to=self.uri,
                               extra=[("Contact", f"<{self.contact}>"),
                                      ("Expires", str(expires)), *(extra or [])])
        self.send(request)
        return self.expect(200, 400, 401, 403, 404, 423, 500, 503)

    def request(self, method: str, uri: str, *, to: str | None = None,
                call_id: str | None = None, cseq: int = 1, from_tag: str | None = None,
                to_tag: str | None = None, max_forwards: int = 70,
                extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> Request:
        """An out-of-dialog (or, with ``to_tag``, in-dialog) request."""
        headers = [
            ("via", "Via", self.via()),
            ("max-forwards", "Max-Forwards", str(max_forwards)),
            ("from", "From", f"<{self.uri}>;tag={from_tag or uuid.uuid4().hex[:8]}"),
            ("to", "To", f"<{to or uri}>" + (f";tag={to_tag}" if to_tag else "")),
            ("call-id", "Call-ID", call_id or uuid.uuid4().hex),
            ("cseq", "CSeq", f"{cseq} {method}"),
        ]
        if not any(name.lower() == "contact" for name, _ in extra or []):
            headers.append(("contact", "Contact", f"<{self.contact}>"))
        for name, value in extra or []:
            headers.append((name.lower(), name, value))
        if body:
            headers.append(("content-type", "Content-Type", "application/sdp"))
        headers.append(("content-length", "Content-Length", str(len(body))))
        return Request(method, _uri(uri), headers, body)

    def answer(self, request: Request, status: int, *, to_tag: str = "callee",
               record_route: bool = True) -> Response:
        """Answer ``request`` (Record-Route copied for dialog-creating ones)."""
        headers: list[tuple[str, str]] = []
        if record_route and status < 300 and status > 100:
            headers.extend(("Record-Route", value)
                           for value in request.header_values("record-route"))
            headers.append(("Contact", f"<{self.contact}>"))
        response = build_response(request, status, headers=headers,
                                  to_tag=to_tag if status > 100 else None)
        self.send(response)
        return response

    def close(self) -> None:
        """Close the sockets."""
        self.sock.close()
        if self.transport != "udp":
            self.listener.close()
            for conn in self._accepted:
                conn.close()


def _uri(text: str):  # noqa: ANN202 - a parsed URI
    from gateway.sip.uri import parse_uri

    return parse_uri(text)


def route_set(response: Response) -> list[str]:
    """The caller's route set from a 2xx: Record-Route values in reverse order."""
    return list(reversed(response.header_values("record-route")))


def in_dialog(ua: UA, method: str, response: Response, invite: Request, cseq: int) -> Request:
    """An in-dialog request (ACK for the 2xx, BYE …) from the caller ``ua``."""
    target = response.contacts[0].address.uri  # type: ignore[union-attr]
    extra = [("Route", value) for value in route_set(response)]
    request = ua.request(method, str(target), to=str(invite.to.uri), call_id=invite.call_id,
                         cseq=cseq, from_tag=invite.from_.tag, to_tag=response.to.tag,
                         extra=extra)
    return request


def ack_for(invite: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response (same branch as the INVITE, RFC 3261 §17.1.1.3)."""
    headers = [(k, n, v) for k, n, v in invite.headers
               if k in ("via", "from", "call-id", "max-forwards", "route")]
    headers.append(("to", "To", response.header("to") or ""))
    headers.append(("cseq", "CSeq", f"{invite.cseq.number} ACK"))
    headers.append(("content-length", "Content-Length", "0"))
    return Request("ACK", invite.uri, headers)


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def call(caller: UA, callee: UA, hang_up: str = "caller") -> dict[str, object]:
    """INVITE/180/200/ACK/BYE/200 from caller to callee's AoR, the BYE from the caller
    or (``hang_up="callee"``) from the callee; what each side saw (``incoming``
    INVITE, ``ringing``, ``ok``, ``ack``, ``bye``, ``bye_ok``)."""
    seen: dict[str, object] = {}
    invite = caller.request("INVITE", callee.uri, body=SDP)
    caller.send(invite)
    incoming = callee.expect_request("INVITE")
    seen["incoming"] = incoming
    callee.answer(incoming, 180)
    seen["ringing"] = caller.expect(180)
    callee.answer(incoming, 200)
    ok = caller.expect(200)
    seen["ok"] = ok
    caller.send(in_dialog(caller, "ACK", ok, invite, 1))
    seen["ack"] = callee.expect_request("ACK")
    if hang_up == "callee":
        seen["bye_ok"] = callee_hangs_up(caller, callee, incoming)
        return seen
    caller.send(in_dialog(caller, "BYE", ok, invite, 2))
    bye = callee.expect_request("BYE")
    seen["bye"] = bye
    callee.answer(bye, 200, record_route=False)
    seen["bye_ok"] = caller.expect(200, method="BYE")
    return seen


def callee_hangs_up(caller: UA, callee: UA, incoming: Request) -> Response:
    """After :func:`call`-like set-up without the caller's BYE: the callee sends BYE along
    the Record-Route set of the INVITE it received (in order) to the caller's Contact;
    the caller answers; the callee's 200 is returned."""
    target = incoming.contacts[0].address.uri  # type: ignore[union-attr]
    bye = callee.request("BYE", str(target), to=str(incoming.from_.uri),
                         call_id=incoming.call_id, cseq=1, from_tag="callee",
                         to_tag=incoming.from_.tag,
                         extra=[("Route", v) for v in incoming.header_values("record-route")])
    callee.send(bye)
    received = caller.expect_request("BYE")
    caller.answer(received, 200, record_route=False)
    return callee.expect(200, method="BYE")
