"""Which hosts in a URI mean "this gateway" (Kamailio's ``myself``)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable


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
