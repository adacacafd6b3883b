"""Mutation fuzzing of SIP messages, shared by tests/test_fuzz.py (short) and
bench/fuzz.py (long): a corpus of valid messages, seeded random mutations, a sender
for UDP and TCP, and a guard that keeps the gateway from sending anywhere but
loopback whatever a mutated message asks for."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
from collections.abc import Iterator
from typing import Any

BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def corpus(port: int) -> list[bytes]:
    """Valid messages addressed to a gateway at 127.0.0.1:port."""
    head = ("Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfuzz{n};rport\r\n"
            "Max-Forwards: 70\r\nFrom: \"Fuzz\" <sip:fuzz@127.0.0.1>;tag=f{n}\r\n")
    items = [
        f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n{head}To: <sip:fuzz@127.0.0.1>\r\n"
        "Call-ID: reg{n}@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
        "Contact: <sip:fuzz@127.0.0.1:5999>;expires=60;q=0.5\r\nExpires: 60\r\n"
        "Content-Length: 0\r\n\r\n",
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n{head}To: <sip:127.0.0.1>\r\n"
        "Call-ID: opt{n}\r\nCSeq: 7 OPTIONS\r\nAccept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n",
        f"INVITE sip:nobody@127.0.0.1:{port} SIP/2.0\r\n{head}To: <sip:nobody@127.0.0.1>\r\n"
        "Call-ID: inv{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:fuzz@127.0.0.1:5999>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(BODY)}\r\n\r\n"
        + BODY.decode(),
        f"BYE sip:fuzz@127.0.0.1:5999 SIP/2.0\r\n{head}To: <sip:nobody@127.0.0.1>;tag=t{{n}}\r\n"
        "Call-ID: inv{n}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        f"CANCEL sip:nobody@127.0.0.1:{port} SIP/2.0\r\n{head}To: <sip:nobody@127.0.0.1>\r\n"
        "Call-ID: inv{n}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKgw{n}\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: r{n}\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    ]
    return [item.replace("{{n}}", "{n}").encode() for item in items]


GARBAGE = [b"\x00", b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"',
           b"\\", b"%", b"%00", b"\xff\xfe", b"\xc3\x28", b"SIP/2.0", b"sip:", b"sips:",
           b"Content-Length: 999999\r\n", b"Content-Length: -1\r\n", b"l: 5\r\n",
           b"v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n", b"Via:\r\n",
           b"CSeq: 99999999999999999999 INVITE\r\n", b"Expires: 4294967296\r\n",
           b"Route: <sip:127.0.0.1:1;lr>\r\n", b"A" * 1000, b"[::1]", b"@", b";lr", b"=",
           b"Max-Forwards: 0\r\n", b"Contact: *\r\n", b"To: <sip:x@127.0.0.1>\r\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """1 to 5 random edits of ``data``."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        choice = rng.randrange(8)
        position = rng.randrange(len(buffer) + 1) if buffer else 0
        if choice == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] = rng.randrange(256)
        elif choice == 1:
            buffer[position:position] = rng.choice(GARBAGE)
        elif choice == 2 and buffer:
            end = min(len(buffer), position + rng.randint(1, 40))
            del buffer[position:end]
        elif choice == 3:
            lines = bytes(buffer).split(b"\r\n")
            index = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[index])
            buffer = bytearray(b"\r\n".join(lines))
        elif choice == 4:
            lines = bytes(buffer).split(b"\r\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            buffer = bytearray(b"\r\n".join(lines))
        elif choice == 5:
            del buffer[rng.randrange(len(buffer) + 1):]
        elif choice == 6:
            buffer[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        else:
            buffer = buffer.replace(b"\r\n", rng.choice([b"\n", b"\r\n ", b"\r\n\t", b"\r"]), 1)
    return bytes(buffer)


def messages(seed: int, count: int, port: int) -> Iterator[bytes]:
    """``count`` mutated messages (one in ten left valid), reproducible from ``seed``."""
    rng = random.Random(seed)
    base = corpus(port)
    for n in range(count):
        data = rng.choice(base).replace(b"{n}", str(n).encode())
        yield data if rng.random() < 0.1 else mutate(rng, data)


def send_udp(port: int, items: Iterator[bytes], sync_every: int = 200) -> int:
    """Send every item as a datagram to 127.0.0.1:port. Every ``sync_every`` datagrams
    an OPTIONS is sent and its answer awaited (bounded), so the gateway has read what
    came before it rather than the kernel dropping it."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        local = sock.getsockname()[1]
        for data in items:
            with contextlib.suppress(OSError):
                sock.sendto(data[:65000], ("127.0.0.1", port))
                sent += 1
            if sent % sync_every == 0:
                _sync(sock, port, local, sent)
        _sync(sock, port, local, sent)
    return sent


def _sync(sock: socket.socket, port: int, local: int, serial: int) -> bool:
    """OPTIONS with a unique branch; wait up to 2 s for its answer."""
    branch = f"z9hG4bKsync{serial}x{random.getrandbits(32):x}".encode()
    sock.sendto(b"OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s"
                b"\r\nMax-Forwards: 70\r\nFrom: <sip:s@127.0.0.1>;tag=s\r\n"
                b"To: <sip:127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\n"
                b"Content-Length: 0\r\n\r\n" % (port, local, branch, branch),
                ("127.0.0.1", port))
    sock.settimeout(2)
    try:
        while True:
            if branch in sock.recv(65535):
                return True
    except OSError:
        return False
    finally:
        sock.settimeout(None)


def send_tcp(port: int, items: Iterator[bytes], rng: random.Random) -> int:
    """Send the items as one stream in random chunks, reconnecting when the gateway
    closes the connection (it does on garbage)."""
    sent = 0
    sock: socket.socket | None = None
    for data in items:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.setblocking(False)
            while data:
                cut = rng.randint(1, max(1, len(data)))
                _send_some(sock, data[:cut])
                data = data[cut:]
            sent += 1
            with_drained(sock)
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return sent


def _send_some(sock: socket.socket, data: bytes) -> None:
    sock.setblocking(True)
    sock.settimeout(2)
    sock.sendall(data)
    sock.setblocking(False)


def with_drained(sock: socket.socket) -> None:
    """Read and drop what the gateway answered so far."""
    while True:
        try:
            if not sock.recv(65535):
                raise OSError("closed by the gateway")
        except BlockingIOError:
            return


class LoopbackGuard:
    """Wraps the core's ``send`` so nothing leaves loopback (counted instead)."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.blocked = 0

    def __call__(self, data: bytes, address: Any, on_error: Any = None) -> None:
        try:
            loopback = ipaddress.ip_address(address.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            self.blocked += 1
            if on_error is not None:
                on_error("blocked by the fuzz harness (not loopback)")
            return
        self.send(data, address, on_error)
