"""Bootstrap peers from DNS: ``_p2psip._udp.<domain>`` SRV records (their targets
resolved to addresses) and TXT records listing ``address:port`` peers, looked up with
twisted.names (no central bootstrap server: whoever runs the domain's DNS lists the
overlay's entry points).

TXT strings hold peers separated by spaces or commas, ``192.0.2.10:6084`` or
``[2001:db8::1]:6084`` (port 6084 when omitted). SRV answers are used in priority
order, then by weight.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.names import client, dns

from gateway.log import get_logger

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
    of ``(address, port)`` (what could be found; failures are logged)."""

    def __init__(self, domains: Iterable[str], servers: list[tuple[str, int]] | None = None,
                 resolver: Any = None) -> None:
        self.domains = list(domains)
        self.resolver = resolver or (client.createResolver(servers=servers) if servers
                                     else client.createResolver())

    def __call__(self) -> Deferred[list[tuple[str, int]]]:
        lookups = [self._domain(domain) for domain in self.domains]
        d = DeferredList(lookups, consumeErrors=True)
        d.addCallback(lambda results: [peer for ok, peers in results if ok for peer in peers])
        return d

    def _domain(self, domain: str) -> Deferred[list[tuple[str, int]]]:
        name = f"{SERVICE}.{domain}"
        srv = self.resolver.lookupService(name).addCallback(self._srv_peers)
        txt = self.resolver.lookupText(name).addCallback(
            lambda result: parse_txt_peers(s for r in result[0] if r.type == dns.TXT
                                           for s in r.payload.data))
        both = DeferredList([srv, txt], consumeErrors=True)

        def combine(results: list[tuple[bool, Any]]) -> list[tuple[str, int]]:
            peers: list[tuple[str, int]] = []
            for (ok, value), kind in zip(results, ("SRV", "TXT"), strict=True):
                if ok:
                    peers.extend(value)
                elif not value.check(dns.DomainError, dns.AuthoritativeDomainError):
                    log.info("no {kind} bootstrap records for {name}: {error}", kind=kind,
                             name=name, error=value.getErrorMessage())
            log.info("DNS bootstrap {name}: {peers}", name=name,
                     peers=", ".join(f"{h}:{p}" for h, p in peers) or "none")
            return peers

        return both.addCallback(combine)

    def _srv_peers(self, result: Any) -> Deferred[list[tuple[str, int]]]:
        answers = [r.payload for r in result[0] if r.type == dns.SRV]
        answers.sort(key=lambda srv: (srv.priority, -srv.weight))
        resolved = [self._address(str(srv.target), srv.port) for srv in answers]
        d = DeferredList(resolved, consumeErrors=True)
        d.addCallback(lambda results: [peer for ok, peer in results if ok and peer])
        return d

    def _address(self, target: str, port: int) -> Deferred[tuple[str, int] | None]:
        try:
            ipaddress.ip_address(target)
        except ValueError:
            return self.resolver.getHostByName(target).addCallback(lambda ip: (ip, port))
        d: Deferred[tuple[str, int] | None] = Deferred()
        d.callback((target, port))
        return d
