"""A DNS server in which no name exists, for the gateways of tests that are not about DNS.

The gateway's ``dns`` resolver is on by default, so a gateway under test that routes a
request for a domain it neither serves nor finds in the overlay asks DNS. Left to the
system's resolver (``/etc/resolv.conf``), that question would leave the machine; the test
harnesses (conftest's ``start_gateway``, :class:`gateway_proc.GatewayProcess`,
:class:`lab_gateway.LabGateway`) point ``dns.servers`` here instead. Every question gets
NXDOMAIN with an SOA (negative TTL 30 s, RFC 2308), as an authoritative server with an
empty root zone would answer, so such a request ends as it would in a world where the
domain is not in DNS: 404 with a Warning. Tests about DNS itself use Knot
(``dns_server.KnotServer``).
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

NEGATIVE_TTL = 30
_SOA = f"ns.invalid. hostmaster.invalid. 1 3600 600 86400 {NEGATIVE_TTL}"


class EmptyDnsServer:
    """Answers NXDOMAIN to every query arriving on ``sock`` (a bound UDP socket, made in
    whatever network namespace it must serve), from a daemon thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.5)
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.questions = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="empty-dns", daemon=True)
        self._thread.start()

    @classmethod
    def on_loopback(cls) -> EmptyDnsServer:
        """A server on a free 127.0.0.1 port of this namespace."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return cls(sock)

    @property
    def setting(self) -> str:
        """The value for ``dns.servers``."""
        return f"{self.address[0]}:{self.address[1]}"

    def stop(self) -> None:
        """Stop serving and close the socket (bounded wait for the thread)."""
        self._stopped.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = _nxdomain(data)
            if answer is not None:
                self.questions += 1
                try:
                    self.sock.sendto(answer, peer)
                except OSError:
                    continue


def _nxdomain(query: bytes) -> bytes | None:
    """The NXDOMAIN answer to ``query`` (None for what is not a DNS query)."""
    try:
        message = dns.message.from_wire(query)
    except Exception:  # noqa: BLE001 - anything that is not a query is ignored
        return None
    response = dns.message.make_response(message)
    response.flags |= dns.flags.AA
    response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(dns.rrset.from_text(
        dns.name.root, NEGATIVE_TTL, dns.rdataclass.IN, dns.rdatatype.SOA, _SOA))
    return response.to_wire()


_shared: EmptyDnsServer | None = None
_shared_lock = threading.Lock()


def shared() -> EmptyDnsServer:
    """The one loopback server of this test process (started on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EmptyDnsServer.on_loopback()
        return _shared
