"""Which hosts in a URI mean "this gateway" (Kamailio's ``myself``)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

from gateway.sip.uri import SipUri


class LocalDomains:
    """The configured domains, this host's names, and every address of this machine.

    An IP literal counts as local when the kernel lets us bind to it; the answer is
    cached, so a bind is tried once per distinct address.
    """

    def __init__(self, domains: Iterable[str], listen_hosts: Iterable[str] = ()) -> None:
        names = {d.lower().rstrip(".") for d in domains}
        names.add("localhost")
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(name.lower().rstrip("."))
        self.names = frozenset(names)
        self._ips: dict[str, bool] = {}
        self._seen: dict[str, bool] = {}
        for host in listen_hosts:
            if host not in ("0.0.0.0", "::"):
                self._ips[_normalize_ip(host)] = True

    def __call__(self, host: str) -> bool:
        """Whether ``host`` (a URI host, IPv6 possibly in brackets) is served here."""
        known = self._seen.get(host)
        if known is None:
            known = self._decide(host)
            if len(self._seen) < 65536:  # bounded: hosts come from the network
                self._seen[host] = known
        return known

    def _decide(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        try:
            ip = _normalize_ip(host)
        except ValueError:
            return False
        known = self._ips.get(ip)
        if known is None:
            known = self._ips[ip] = _is_local_ip(ip)
        return known


def _normalize_ip(host: str) -> str:
    return str(ipaddress.ip_address(host.strip("[]")))


def _is_local_ip(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if address.is_unspecified or address.is_multicast:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True


class Myself:
    """This gateway's own SIP addresses: the domains it serves (``is_local``) and the
    listeners (transport, host, port) it has open, plus the host it advertises in Via
    and Record-Route."""

    def __init__(self, is_local: Callable[[str], bool],
                 listeners: Iterable[tuple[str, str, int]] = (),
                 advertised_host: str = "") -> None:
        self.is_local = is_local
        self.advertised_host = advertised_host
        self._ports: set[int] = set()
        self._addresses: dict[str, tuple[str, int]] = {}
        self.set_listeners(listeners)

    def set_listeners(self, listeners: Iterable[tuple[str, str, int]]) -> None:
        """The listeners now open, as ``(transport, host, port)``."""
        self._ports = set()
        self._addresses = {}
        for transport, host, port in listeners:
            self._ports.add(port)
            if transport not in self._addresses:
                self._addresses[transport] = (self._advertise(host), port)

    def _advertise(self, host: str) -> str:
        if self.advertised_host:
            return self.advertised_host
        if host not in ("0.0.0.0", "::", ""):
            return host
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"

    def is_me(self, host: str, port: int | None) -> bool:
        """Whether a URI's host and port name this gateway. Without a port the host
        decides (a request that reached us naming our host without a port is for us,
        whatever port we listen on)."""
        if not self.is_local(host):
            return False
        return port is None or port in self._ports

    def is_for_me(self, request: Any) -> bool:
        """Whether ``request`` is addressed to the gateway itself (no user part)."""
        uri = request.uri
        return isinstance(uri, SipUri) and not uri.user and self.is_me(uri.host, uri.port)

    def address(self, transport: str) -> tuple[str, int] | None:
        """The (host, port) to advertise for ``transport``, None without a listener."""
        return self._addresses.get(transport)
