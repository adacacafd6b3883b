"""A tiny blocking SIP test client over real sockets (run it in a thread from async tests)."""

from __future__ import annotations

import socket
import uuid

from gateway.sip.message import Response
from gateway.sip.parser import StreamFramer, parse_message

HOST = "127.0.0.1"


def branch() -> str:
    """A fresh RFC 3261 branch."""
    return "z9hG4bK" + uuid.uuid4().hex[:16]


def register(user: str, *, local_port: int, contact: str | None = None,
             expires: int | None = 3600, call_id: str | None = None, cseq: int = 1,
             domain: str = HOST, via_host: str = HOST, transport: str = "UDP",
             extra: str = "", rport: bool = True, branch_id: str | None = None) -> bytes:
    """A REGISTER for ``sip:user@domain``."""
    contact_line = "" if contact == "" else \
        f"Contact: {contact or f'<sip:{user}@{HOST}:{local_port}>'}\r\n"
    expires_line = "" if expires is None else f"Expires: {expires}\r\n"
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}:{local_port};branch={branch_id or branch()}"
        f"{';rport' if rport else ''}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{domain}>;tag=f{uuid.uuid4().hex[:6]}\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"Call-ID: {call_id or uuid.uuid4().hex}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{contact_line}{expires_line}{extra}"
        "Content-Length: 0\r\n\r\n").encode()


def request(method: str, uri: str, *, local_port: int, transport: str = "UDP",
            extra: str = "", cseq_method: str | None = None) -> bytes:
    """Any out-of-dialog request."""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {HOST}:{local_port};branch={branch()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@{HOST}>;tag=t{uuid.uuid4().hex[:6]}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n").encode()


class UdpClient:
    """A UDP socket on 127.0.0.1 that sends to the gateway and reads responses."""

    def __init__(self, port: int, timeout: float = 3.0) -> None:
        self.server = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(timeout)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        """Send one datagram to the gateway."""
        self.sock.sendto(data, self.server)

    def receive(self) -> Response:
        """The next response (raises socket.timeout)."""
        data, _ = self.sock.recvfrom(65535)
        message = parse_message(data)
        assert isinstance(message, Response)
        return message

    def ask(self, data: bytes) -> Response:
        """Send and return the final response (skipping provisionals)."""
        self.send(data)
        while True:
            response = self.receive()
            if response.status >= 200:
                return response

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class TcpClient:
    """A TCP connection to the gateway."""

    def __init__(self, port: int, timeout: float = 3.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.port = self.sock.getsockname()[1]
        self.framer = StreamFramer(1 << 20)
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        """Write bytes as they are."""
        self.sock.sendall(data)

    def receive_item(self) -> bytes:
        """The next framed item (a message or a CRLF pong as b'\\r\\n')."""
        while not self.pending:
            data = self.sock.recv(65535)
            if not data:
                raise ConnectionError("closed by the gateway")
            if data == b"\r\n":
                return data
            self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)

    def receive(self) -> Response:
        """The next response."""
        message = parse_message(self.receive_item(), framed=True)
        assert isinstance(message, Response)
        return message

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()
