"""Where SIP messages come from and go to, and where the gateway listens."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple


def is_ip_literal(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (IPv6 possibly in brackets)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


class Address(NamedTuple):
    """Where a message came from or goes to. ``connection`` identifies the TCP/TLS
    connection a message arrived on (0 for datagrams), so responses reuse it."""

    transport: str
    host: str
    port: int
    connection: int = 0
    #: For a TLS next hop: the name its certificate must carry (the URI's host), when
    #: that is not ``host`` itself.
    name: str = ""

    @property
    def reliable(self) -> bool:
        """Stream transports need no retransmissions."""
        return self.transport != "udp"

    def same_flow(self, other: Address) -> bool:
        """Whether ``other`` is the same flow: transport, host and port (the connection
        id and the TLS name aside)."""
        return (self.transport, self.host, self.port) == (other.transport, other.host,
                                                          other.port)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to listen on: an IP address (no name) and a port."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        """True for an IPv6 literal such as ``::`` or ``::1``."""
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"
