"""Locating SIP servers (RFC 3263 §4): which transport, address and port a SIP URI
with a host name leads to, in the order to try them.

- An IP address in the URI is used as it is.
- A port in the URI: A/AAAA of the host with that port (transport from the URI, UDP by
  default, TLS for ``sips:``).
- A ``transport`` parameter without a port: the SRV records of that transport, else
  A/AAAA with the transport's default port.
- Neither: NAPTR records of the host (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``; only
  ``SIPS+D2T`` for ``sips:``) in order/preference order, each pointing at SRV records;
  without NAPTR the SRV records of every transport this gateway has; without SRV, A/AAAA
  with the default port over UDP (TLS for ``sips:``).
- SRV records are tried by priority, and within a priority in a random order weighted
  by their weight (RFC 2782).

Every target carries the URI's host as the name a TLS server must prove (RFC 5922: the
SIP domain, not the SRV target). The result is bounded (``MAX_TARGETS``).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.sip.address import Address
from gateway.sip.dns import DnsAnswer
from gateway.sip.uri import SipUri

MAX_TARGETS = 16
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: NAPTR service → transport, and the SRV prefix of each transport.
NAPTR_SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
SRV_PREFIXES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


class Resolver(Protocol):
    """What the locator needs of :class:`gateway.sip.dns.DnsClient`."""

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The records of one query (never raises)."""


@dataclass(frozen=True, slots=True)
class Located:
    """Where a URI leads: ``targets`` in the order to try, or why none (``error``)."""

    targets: tuple[Address, ...]
    error: str = ""


def srv_order(records: Sequence[Any], rng: random.Random | None = None) -> list[Any]:
    """SRV records in the order to try (RFC 2782): priority ascending; within one
    priority a weighted random order (zero-weight records have a small chance)."""
    rng = rng or random.Random()
    ordered: list[Any] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        group.sort(key=lambda r: r.weight)  # zero weights first, as RFC 2782 says
        while group:
            total = sum(r.weight for r in group)
            pick = rng.uniform(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


class SipLocator:
    """RFC 3263 server location over a DNS resolver, for the transports this gateway
    can use."""

    def __init__(self, dns: Resolver, transports: Collection[str] = ("udp", "tcp", "tls"),
                 rng: random.Random | None = None) -> None:
        self.dns = dns
        self.transports = tuple(t for t in ("udp", "tcp", "tls") if t in transports)
        self.rng = rng or random.Random()

    async def locate(self, uri: SipUri) -> Located:
        """The targets of ``uri`` (its ``maddr`` when it has one)."""
        host = (uri.param("maddr") or uri.host).strip("[]")
        wanted = "tls" if uri.secure else (uri.transport or None)
        if wanted is not None and wanted not in self.transports:
            return Located((), f"no {wanted.upper()} transport here for {uri.host}")
        if _is_ip(host):
            transport = wanted or "udp"
            return Located((Address(transport, host, uri.port or DEFAULT_PORTS[transport]),))
        name = host.lower().rstrip(".")
        if uri.port is not None:
            return await self._addresses(name, [(wanted or "udp", uri.port)], name)
        if wanted is not None:
            hops = await self._srv(name, wanted)
            if hops is None:
                hops = [(wanted, name, DEFAULT_PORTS[wanted])]
            return await self._resolve_hops(hops, name)
        hops = await self._naptr(name, uri.secure)
        if hops is None:
            hops = []
            for transport in ("tls",) if uri.secure else self.transports:
                found = await self._srv(name, transport)
                hops += found or []
        if not hops:
            transport = "tls" if uri.secure else "udp"
            hops = [(transport, name, DEFAULT_PORTS[transport])]
        return await self._resolve_hops(hops, name)

    async def _naptr(self, name: str, secure: bool) -> list[tuple[str, str, int]] | None:
        """SRV-derived hops of the NAPTR records, None when there are none usable."""
        answer = await self.dns.query(name, "NAPTR")
        usable = []
        for record in answer.records:
            service = record.service.decode("ascii", "replace").lower()
            transport = NAPTR_SERVICES.get(service)
            if (transport is None or transport not in self.transports
                    or record.flags.decode("ascii", "replace").lower() != "s"
                    or (secure and transport != "tls")):
                continue
            usable.append((record.order, record.preference, transport,
                           record.replacement.to_text(omit_final_dot=True)))
        if not usable:
            return None
        hops: list[tuple[str, str, int]] = []
        for _, _, transport, target in sorted(usable):
            hops += await self._srv_records(target, transport)
        return hops

    async def _srv(self, name: str, transport: str) -> list[tuple[str, str, int]] | None:
        hops = await self._srv_records(f"{SRV_PREFIXES[transport]}.{name}", transport)
        return hops or None

    async def _srv_records(self, srv_name: str, transport: str) -> list[tuple[str, str, int]]:
        answer = await self.dns.query(srv_name, "SRV")
        records = [r for r in answer.records if r.target.to_text() != "."]
        return [(transport, r.target.to_text(omit_final_dot=True), r.port)
                for r in srv_order(records, self.rng)]

    async def _resolve_hops(self, hops: list[tuple[str, str, int]], domain: str) -> Located:
        targets: list[Address] = []
        errors: list[str] = []
        for transport, target, port in hops:
            located = await self._addresses(target, [(transport, port)], domain)
            targets += [t for t in located.targets if t not in targets]
            if located.error:
                errors.append(located.error)
            if len(targets) >= MAX_TARGETS:
                break
        return Located(tuple(targets[:MAX_TARGETS]),
                       "" if targets else "; ".join(dict.fromkeys(errors)))

    async def _addresses(self, name: str, ports: list[tuple[str, int]],
                         domain: str) -> Located:
        if _is_ip(name):
            return Located(tuple(Address(t, name, p, 0, domain) for t, p in ports))
        found: list[str] = []
        errors = []
        for rdtype in ("A", "AAAA"):
            answer = await self.dns.query(name, rdtype)
            found += [r.address for r in answer.records]
            if answer.error:
                errors.append(f"{name} {rdtype}: {answer.error}")
        targets = tuple(Address(t, address, p, 0, domain)
                        for address in found for t, p in ports)
        return Located(targets, "" if targets else "; ".join(errors))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
