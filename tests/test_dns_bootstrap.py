"""Bootstrap from DNS: a real authoritative server (Knot DNS on a loopback port) serves
SRV and TXT records for ``_p2psip._udp.example.net``; the gateway joins the overlay
through them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest_twisted
from conftest import sleep, start_gateway
from dns_server import zone

from gateway.overlay.dns_bootstrap import DnsBootstrap, parse_txt_peers


def test_txt_peers_are_parsed_and_garbage_is_skipped() -> None:
    assert parse_txt_peers([b"127.0.0.1:6100 [::1]:6101, 192.0.2.5", b"nope x:y 1.2.3.4:0"]) \
        == [("127.0.0.1", 6100), ("::1", 6101), ("192.0.2.5", 6084)]


@pytest_twisted.ensureDeferred
async def test_srv_and_txt_records_give_bootstrap_peers(knot_zones) -> None:  # noqa: ANN001
    server = knot_zones({"example.net": zone("example.net",
                                             "_p2psip._udp SRV 20 0 6202 node2",
                                             "_p2psip._udp SRV 10 0 6201 node1",
                                             '_p2psip._udp TXT "127.0.0.3:6203"',
                                             "node1 A 127.0.0.1", "node2 A 127.0.0.2")})
    lookup = DnsBootstrap(["example.net", "missing.example.net"], [server.address])
    peers = await lookup()
    assert peers == [("127.0.0.1", 6201), ("127.0.0.2", 6202), ("127.0.0.3", 6203)]


@pytest_twisted.ensureDeferred
async def test_a_gateway_joins_the_overlay_through_dns(knot_zones,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example"})
    host, overlay_port = a.overlay.address
    server = knot_zones({"example.net": zone(
        "example.net", f"_p2psip._udp SRV 10 0 {overlay_port} seed", f"seed A {host}")})
    dns_host, dns_port = server.address
    b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example",
                                               "overlay.bootstrap_dns": "example.net",
                                               "overlay.dns_servers": f"{dns_host}:{dns_port}"})
    try:
        deadline = time.monotonic() + 10
        while not (b.overlay.state == "joined" and b.overlay.node.contact_count()):
            assert time.monotonic() < deadline, b.overlay.last_error
            await sleep(0.1)
        assert (host, overlay_port) in b.overlay.node.neighbors()
    finally:
        await b.stopService()
        await a.stopService()


