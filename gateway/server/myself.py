"""Which hosts in a URI mean "this gateway" (Kamailio's ``myself``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from gateway.sip.uri import SipUri

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class LocalDomains:
    """The configured domains, this host's names, and the IP addresses of this machine.

    Pure: the addresses are given (the application enumerates the interfaces at start
    and refreshes them with :meth:`set_addresses`); deciding never touches the network.
    """

    def __init__(self, domains: Iterable[str], addresses: Iterable[str] = (),
                 host_names: Iterable[str] = ()) -> None:
        names = {d.lower().rstrip(".") for d in domains}
        names.add("localhost")
        names.update(n.lower().rstrip(".") for n in host_names if n)
        self.names = frozenset(names)
        self._ips: frozenset[str] = frozenset()
        self.set_addresses(addresses)

    def set_addresses(self, addresses: Iterable[str]) -> None:
        """The machine's addresses now (unspecified and multicast ones never count)."""
        ips = set()
        for host in addresses:
            try:
                address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
            except ValueError:
                continue
            if not (address.is_unspecified or address.is_multicast):
                ips.add(str(address))
        self._ips = frozenset(ips)
        self._seen: dict[str, bool] = {}

    @property
    def addresses(self) -> frozenset[str]:
        """The addresses that count as this machine."""
        return self._ips

    def __call__(self, host: str) -> bool:
        """Whether ``host`` (a URI host, IPv6 possibly in brackets) is served here."""
        known = self._seen.get(host)
        if known is None:
            known = self._decide(host)
            if len(self._seen) >= 4096:  # hosts come from the network: bounded
                self._seen.clear()
            self._seen[host] = known
        return known

    def _decide(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        if host[:1] == "[" or host[:1].isdigit() or ":" in host:
            try:
                return str(ipaddress.ip_address(host.strip("[]"))) in self._ips
            except ValueError:
                return False
        return False


class Myself:
    """This gateway's own SIP addresses: the domains it serves (``is_local``) and the
    listeners (transport, host, port) it has open, plus the host it advertises in Via
    and Record-Route.

    Behind NAT with port forwarding a gateway has two faces (Asterisk's ``externaddr``
    and ``localnet``, Kamailio's ``advertise``): the ``external`` address that hosts
    beyond the NAT reach it at, and the LAN address for hosts in ``local_networks``. What
    it advertises towards a next hop depends on which side that hop is, and requests
    naming either address are for it.
    """

    def __init__(self, is_local: Callable[[str], bool],
                 listeners: Iterable[tuple[str, str, int]] = (),
                 advertised_host: str = "", wildcard_host: str = "127.0.0.1",
                 external: tuple[str, int | None] | None = None,
                 local_networks: Iterable[IpNetwork] = ()) -> None:
        """``advertised_host`` replaces every listener's host in what the gateway
        advertises on its LAN; without it a wildcard listener (0.0.0.0, ::) is advertised
        as ``wildcard_host`` (the application's best guess of this host's address).
        ``external``: (host, port or None for each listener's own port) advertised to
        hosts outside ``local_networks``."""
        self.is_local = is_local
        self.advertised_host = advertised_host
        self.wildcard_host = wildcard_host
        self.external = external
        self.local_networks = tuple(local_networks)
        self._ports: set[int] = set()
        self._addresses: dict[str, tuple[str, int]] = {}
        self._external: dict[str, tuple[str, int]] = {}
        self._lan_hosts: dict[str, bool] = {}
        for transport, host, port in listeners:
            self._ports.add(port)
            if transport not in self._addresses:
                self._addresses[transport] = (self._advertise(host), port)
                if external is not None:
                    self._external[transport] = (external[0], external[1] or port)
        self._ports.update(port for _, port in self._external.values())

    def _advertise(self, host: str) -> str:
        if self.advertised_host:
            return self.advertised_host
        if host not in ("0.0.0.0", "::", ""):
            return host
        return self.wildcard_host

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

    def address(self, transport: str, toward: str | None = None) -> tuple[str, int] | None:
        """The (host, port) to advertise for ``transport`` (None without a listener):
        the external address when one is set and ``toward`` (the host the message goes
        to) is outside the local networks, else the LAN address."""
        if toward is not None and self._external and not self.on_lan(toward):
            return self._external.get(transport)
        return self._addresses.get(transport)

    def external_address(self, transport: str) -> tuple[str, int] | None:
        """What hosts beyond the NAT reach ``transport`` at (the LAN address when no
        external address is set)."""
        return self._external.get(transport) or self._addresses.get(transport)

    def on_lan(self, host: str) -> bool:
        """Whether ``host`` (an IP address; a name counts as outside, except
        ``localhost``) is in the local networks."""
        known = self._lan_hosts.get(host)
        if known is None:
            known = _in_networks(host, self.local_networks)
            if len(self._lan_hosts) >= 4096:  # hosts come from the network: bounded
                self._lan_hosts.clear()
            self._lan_hosts[host] = known
        return known


def _in_networks(host: str, networks: tuple[IpNetwork, ...]) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if address.is_loopback or address.is_link_local:
        return True
    return any(address.version == net.version and address in net for net in networks)
