"""Bootstrap from DNS: a real authoritative server (Knot DNS on a loopback port) serves
SRV and TXT records for ``_p2psip._udp.example.net``; the gateway joins the overlay
through them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from conftest import start_gateway, unavailable
from dns_server import KnotServer, available, zone
from twisted.internet import defer, reactor

from gateway.overlay.dns_bootstrap import DnsBootstrap, parse_txt_peers


class Zones:
    """Knot servers a test starts with its own zones (stopped afterwards)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[KnotServer] = []

    def serve(self, *records: str) -> KnotServer:
        server = KnotServer(self.workdir / f"knot{len(self.servers)}",
                            {"example.net": zone("example.net", *records)})
        server.start()
        self.servers.append(server)
        return server


@pytest.fixture
def zones(tmp_path: Path) -> Iterator[Zones]:
    reason = available()
    if reason is not None:
        unavailable(reason, "P2PSIP_REQUIRE_DNS")
    made = Zones(tmp_path)
    try:
        yield made
    finally:
        for server in made.servers:
            server.stop()


def test_txt_peers_are_parsed_and_garbage_is_skipped() -> None:
    assert parse_txt_peers([b"127.0.0.1:6100 [::1]:6101, 192.0.2.5", b"nope x:y 1.2.3.4:0"]) \
        == [("127.0.0.1", 6100), ("::1", 6101), ("192.0.2.5", 6084)]


@pytest_twisted.ensureDeferred
async def test_srv_and_txt_records_give_bootstrap_peers(zones: Zones) -> None:
    server = zones.serve("_p2psip._udp SRV 20 0 6202 node2",
                         "_p2psip._udp SRV 10 0 6201 node1",
                         '_p2psip._udp TXT "127.0.0.3:6203"',
                         "node1 A 127.0.0.1", "node2 A 127.0.0.2")
    lookup = DnsBootstrap(["example.net", "missing.example.net"], [server.address])
    peers = await lookup()
    assert peers == [("127.0.0.1", 6201), ("127.0.0.2", 6202), ("127.0.0.3", 6203)]


@pytest_twisted.ensureDeferred
async def test_a_gateway_joins_the_overlay_through_dns(zones: Zones, tmp_path: Path) -> None:
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example"})
    host, overlay_port = a.overlay.address
    server = zones.serve(f"_p2psip._udp SRV 10 0 {overlay_port} seed", f"seed A {host}")
    dns_host, dns_port = server.address
    b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example",
                                               "overlay.bootstrap_dns": "example.net",
                                               "overlay.dns_servers": f"{dns_host}:{dns_port}"})
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
