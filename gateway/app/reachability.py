"""Which address this gateway should advertise, and whether the one it publishes can be
reached by the others: loopback never can, a private one only from the same network."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

import psutil

from gateway.sip.uri import SipUri, parse_uri

ROUTE_TABLE = Path("/proc/net/route")


def default_route_interface(table: Path = ROUTE_TABLE) -> str | None:
    """The interface of the IPv4 default route (Linux; read from the kernel's routing
    table, nothing is sent), or None."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def interface_addresses() -> dict[str, list[str]]:
    """Usable IPv4 addresses (not loopback or link-local) of each interface that is up."""
    stats = psutil.net_if_stats()
    found: dict[str, list[str]] = {}
    for name, entries in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        usable = [str(e.address) for e in entries
                  if e.family == socket.AF_INET and _usable(e.address)]
        if usable:
            found[name] = usable
    return found


def host_address() -> str:
    """What a wildcard (0.0.0.0) listener advertises: the address of the default
    route's interface (how this host reaches others), else this host's name's address
    when an interface has it (Debian maps the name to 127.0.1.1, which none has),
    else any usable interface address, else 127.0.0.1."""
    addresses = interface_addresses()
    preferred = addresses.get(default_route_interface() or "")
    if preferred:
        return preferred[0]
    try:
        by_name = socket.gethostbyname(socket.gethostname())
    except OSError:
        by_name = ""
    if any(by_name in found for found in addresses.values()):
        return by_name
    for found in addresses.values():
        return found[0]
    return "127.0.0.1"


def route_problem(route: str, peers: Iterable[str]) -> str | None:
    """Why other gateways may not reach ``route`` (a SIP URI), given the hosts of the
    overlay peers this gateway joins through; None when nothing looks wrong."""
    try:
        uri = parse_uri(route)
    except ValueError:
        return None
    if not isinstance(uri, SipUri):
        return None
    try:
        ip = ipaddress.ip_address(uri.host.strip("[]"))
    except ValueError:
        return None  # a name: whoever resolves it decides
    fix = "set sip.advertised_address (or overlay.route) to an address they can reach"
    if ip.is_loopback or ip.is_unspecified:
        return (f"the overlay route {route} is a loopback address: other gateways and "
                f"peers cannot send requests to this gateway; {fix}")
    if ip.is_private:
        for peer in peers:
            try:
                peer_ip = ipaddress.ip_address(peer.strip("[]"))
            except ValueError:
                continue
            if peer_ip.is_global:
                return (f"the overlay route {route} is a private address but the overlay "
                        f"peer {peer} is on the public Internet: it cannot reach this "
                        f"gateway unless both are on one network; {fix}")
    return None
