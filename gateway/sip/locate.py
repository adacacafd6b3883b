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

import asyncio
import ipaddress
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
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
            transports = ("tls",) if uri.secure else self.transports
            found = await asyncio.gather(*(self._srv(name, t) for t in transports))
            hops = [hop for some in found for hop in some or []]
        if not hops:
            transport = "tls" if uri.secure else "udp"
            hops = [(transport, name, DEFAULT_PORTS[transport])]
        return await self._resolve_hops(hops, name)

    async def _ask(self, questions: list[tuple[str, str]]) -> list[DnsAnswer]:
        """The answers to several questions, asked together; straight from the cache
        when it holds them all (no task per question on the common path)."""
        peek = getattr(self.dns, "cached", None)
        if peek is not None:
            hits = [peek(name, rdtype) for name, rdtype in questions]
            if all(hit is not None for hit in hits):
                return hits  # type: ignore[return-value]
        return list(await asyncio.gather(*(self.dns.query(name, rdtype)
                                           for name, rdtype in questions)))

    async def _naptr(self, name: str, secure: bool) -> list[tuple[str, str, int]] | None:
        """SRV-derived hops of the NAPTR records, None when there are none usable."""
        (answer,) = await self._ask([(name, "NAPTR")])
        usable = []
        for record in answer.records:
            service = record.service.decode("ascii", "replace").lower()
            transport = NAPTR_SERVICES.get(service)
            if (transport is None or transport not in self.transports
                    or record.flags.decode("ascii", "replace").lower() != "s"
                    or (secure and transport != "tls")):
                continue
            usable.append((record.order, record.preference, transport,
                           _text(record.replacement)))
        if not usable:
            return None
        return await self._srv_hops([(target, transport)
                                     for _, _, transport, target in sorted(usable)])

    async def _srv(self, name: str, transport: str) -> list[tuple[str, str, int]] | None:
        hops = await self._srv_hops([(f"{SRV_PREFIXES[transport]}.{name}", transport)])
        return hops or None

    async def _srv_hops(self, names: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
        """(transport, target, port) of the SRV records of each (name, transport), in
        order."""
        answers = await self._ask([(srv_name, "SRV") for srv_name, _ in names])
        hops = []
        for (_, transport), answer in zip(names, answers, strict=True):
            records = [r for r in answer.records if _text(r.target)]  # "." = no service
            hops += [(transport, _text(r.target), r.port)
                     for r in srv_order(records, self.rng)]
        return hops

    async def _resolve_hops(self, hops: list[tuple[str, str, int]], domain: str) -> Located:
        hops = hops[:MAX_TARGETS]
        names = list(dict.fromkeys(target for _, target, _ in hops if not _is_ip(target)))
        answers = await self._ask([(n, rdtype) for n in names for rdtype in ("A", "AAAA")])
        addresses: dict[str, list[str]] = {}
        errors: list[str] = []
        for index, name in enumerate(names):
            for rdtype, answer in zip(("A", "AAAA"), answers[2 * index:2 * index + 2],
                                      strict=True):
                addresses.setdefault(name, []).extend(r.address for r in answer.records)
                if answer.error:
                    errors.append(f"{name} {rdtype}: {answer.error}")
        targets: list[Address] = []
        for transport, target, port in hops:
            for address in [target] if _is_ip(target) else addresses.get(target, []):
                hop = Address(transport, address, port, 0, domain)
                if hop not in targets:
                    targets.append(hop)
        return Located(tuple(targets[:MAX_TARGETS]),
                       "" if targets else "; ".join(dict.fromkeys(errors)))

    async def _addresses(self, name: str, ports: list[tuple[str, int]],
                         domain: str) -> Located:
        return await self._resolve_hops([(t, name, p) for t, p in ports], domain)


@lru_cache(maxsize=4096)
def _text(name: Any) -> str:
    """A DNS name as text without the final dot ("" for the root); cached, since the
    same few names come back from the cache for every call."""
    return name.to_text(omit_final_dot=True).rstrip(".")


@lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
