"""Bootstrap from DNS: a twisted.names server on loopback serves SRV and TXT records
for ``_p2psip._udp.example.net``; the gateway joins the overlay through them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from conftest import start_gateway
from twisted.internet import defer, reactor
from twisted.names import common, dns, server
from twisted.names.error import DomainError

from gateway.overlay.dns_bootstrap import DnsBootstrap, parse_txt_peers


class Records(common.ResolverBase):
    """An in-memory zone: name -> list of record payloads."""

    def __init__(self, records: dict[str, list]) -> None:
        super().__init__()
        self.records = records

    def _lookup(self, name, cls, type_, timeout):  # noqa: ANN001, ANN202 - twisted API
        key = name.decode() if isinstance(name, bytes) else str(name)
        answers = [dns.RRHeader(name=key, type=payload.TYPE, payload=payload, ttl=60,
                                auth=True)
                   for payload in self.records.get(key.lower(), [])
                   if type_ in (payload.TYPE, dns.ALL_RECORDS)]
        if not answers:
            return defer.fail(DomainError(key))
        return defer.succeed((answers, [], []))


@pytest.fixture
def dns_server() -> Iterator[tuple[int, dict[str, list]]]:
    """A DNS server on 127.0.0.1 (UDP, free port) serving the returned dict."""
    records: dict[str, list] = {}
    factory = server.DNSServerFactory(clients=[Records(records)])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    yield port.getHost().port, records
    port.stopListening()


def test_txt_peers_are_parsed_and_garbage_is_skipped() -> None:
    assert parse_txt_peers([b"127.0.0.1:6100 [::1]:6101, 192.0.2.5", b"nope x:y 1.2.3.4:0"]) \
        == [("127.0.0.1", 6100), ("::1", 6101), ("192.0.2.5", 6084)]


@pytest_twisted.ensureDeferred
async def test_srv_and_txt_records_give_bootstrap_peers(dns_server) -> None:
    port, records = dns_server
    records["_p2psip._udp.example.net"] = [
        dns.Record_SRV(20, 0, 6202, "node2.example.net"),
        dns.Record_SRV(10, 0, 6201, "node1.example.net"),
        dns.Record_TXT(b"127.0.0.3:6203"),
    ]
    records["node1.example.net"] = [dns.Record_A("127.0.0.1")]
    records["node2.example.net"] = [dns.Record_A("127.0.0.2")]
    lookup = DnsBootstrap(["example.net", "missing.example.net"], [("127.0.0.1", port)])
    peers = await lookup()
    assert peers == [("127.0.0.1", 6201), ("127.0.0.2", 6202), ("127.0.0.3", 6203)]


@pytest_twisted.ensureDeferred
async def test_a_gateway_joins_the_overlay_through_dns(dns_server, tmp_path: Path) -> None:
    port, records = dns_server
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example"})
    host, overlay_port = a.overlay.address
    records["_p2psip._udp.example.net"] = [dns.Record_SRV(10, 0, overlay_port,
                                                          "seed.example.net")]
    records["seed.example.net"] = [dns.Record_A(host)]
    b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example",
                                               "overlay.bootstrap_dns": "example.net",
                                               "overlay.dns_servers": f"127.0.0.1:{port}"})
    try:
        deadline = time.monotonic() + 10
        while not (b.overlay.state == "joined" and b.overlay.node.contact_count()):
            assert time.monotonic() < deadline, b.overlay.last_error
            await _sleep(0.1)
        assert (host, overlay_port) in b.overlay.node.neighbors()
    finally:
        await b.stopService()
        await a.stopService()


def _sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
