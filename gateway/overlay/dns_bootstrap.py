"""Bootstrap peers from DNS: ``_p2psip._udp.<domain>`` SRV records (their targets
resolved to addresses) and TXT records listing ``address:port`` peers, looked up with
the SIP stack's DNS client (dnspython, cached; no central bootstrap server: whoever runs
the domain's DNS lists the overlay's entry points).

TXT strings hold peers separated by spaces or commas, ``192.0.2.10:6084`` or
``[2001:db8::1]:6084`` (port 6084 when omitted). SRV answers are used in priority
order, weighted at random within a priority (RFC 2782).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable

from twisted.internet.defer import Deferred

from gateway.log import get_logger
from gateway.sip.dns import DnsClient
from gateway.sip.locate import srv_order

log = get_logger("gateway.overlay.dns")
SERVICE = "_p2psip._udp"
DEFAULT_PORT = 6084


def parse_txt_peers(strings: Iterable[bytes | str]) -> list[tuple[str, int]]:
    """Peers from TXT strings; malformed entries are skipped."""
    peers = []
    for raw in strings:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        for item in text.replace(",", " ").split():
            host, port = item, DEFAULT_PORT
            if item.startswith("["):
                host, _, rest = item[1:].partition("]")
                if rest.startswith(":") and rest[1:].isdigit():
                    port = int(rest[1:])
            elif item.count(":") == 1:
                host, _, text_port = item.partition(":")
                if not text_port.isdigit():
                    continue
                port = int(text_port)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                continue
            if 0 < port < 65536:
                peers.append((host, port))
    return peers


class DnsBootstrap:
    """Looks the bootstrap records of ``domains`` up; calling it gives a Deferred list
    of ``(address, port)`` (what could be found; what could not is logged)."""

    def __init__(self, domains: Iterable[str], servers: list[tuple[str, int]] | None = None,
                 client: DnsClient | None = None) -> None:
        self.domains = list(domains)
        self.client = client or DnsClient(servers)

    def __call__(self) -> Deferred[list[tuple[str, int]]]:
        return Deferred.fromFuture(asyncio.ensure_future(self.peers()))

    async def peers(self) -> list[tuple[str, int]]:
        """The peers every domain lists, in order, each once."""
        found: list[tuple[str, int]] = []
        for domain in self.domains:
            found += await self._domain(domain)
        return list(dict.fromkeys(found))

    async def _domain(self, domain: str) -> list[tuple[str, int]]:
        name = f"{SERVICE}.{domain}"
        srv = await self.client.query(name, "SRV")
        peers: list[tuple[str, int]] = []
        for record in srv_order(srv.records):
            peers += await self._addresses(record.target.to_text(omit_final_dot=True),
                                           record.port)
        txt = await self.client.query(name, "TXT")
        peers += parse_txt_peers(s for record in txt.records for s in record.strings)
        for kind, answer in (("SRV", srv), ("TXT", txt)):
            if answer.error and answer.error not in ("NXDOMAIN", "no records"):
                log.info("no {kind} bootstrap records for {name}: {error}", kind=kind,
                         name=name, error=answer.error)
        log.info("DNS bootstrap {name}: {peers}", name=name,
                 peers=", ".join(f"{h}:{p}" for h, p in peers) or "none")
        return peers

    async def _addresses(self, target: str, port: int) -> list[tuple[str, int]]:
        try:
            ipaddress.ip_address(target)
        except ValueError:
            pass
        else:
            return [(target, port)]
        found = []
        for rdtype in ("A", "AAAA"):
            answer = await self.client.query(target, rdtype)
            found += [(record.address, port) for record in answer.records]
        return found
