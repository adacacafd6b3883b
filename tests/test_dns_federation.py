"""Calls to another SIP domain located by DNS (the ``dns`` resolver, RFC 3263), against a
real authoritative server (Knot DNS on a loopback port): the first SRV target is dead
(its port closed: ICMP port unreachable), the call goes through the second within the
same transaction; a busy callee at the first target is not called again elsewhere; a
domain DNS does not know gets 404 with a Warning at once; strangers cannot use the
gateway to reach other domains (no open relay), and DNS is not even asked for them.
The gateways run the default resolver chain."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
import pytest_twisted
from conftest import ports, start_gateway
from dns_server import KnotServer, zone
from empty_dns import EmptyDnsServer
from sip_ua import UA, call
from test_tls import tls_uas
from tls_certs import TestCA
from twisted.internet.threads import deferToThread

from gateway.sip.message import Response


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def far_domain(first_port: int, second_port: int) -> dict[str, str]:
    """far.example in DNS: two SRV targets on loopback ports the test chooses."""
    return {"far.example": zone("far.example",
                                f"_sip._udp SRV 10 10 {first_port} first",
                                f"_sip._udp SRV 20 10 {second_port} second",
                                "first A 127.0.0.1", "second A 127.0.0.1")}


async def _gateway(tmp_path: Path, knot: KnotServer):  # noqa: ANN202 - GatewayService
    host, port = knot.address
    # The default chain (local, overlay, upstream, dns) with a lone overlay node: the
    # overlay knows nothing of far.example, so DNS decides.
    return await start_gateway(tmp_path / "gw", **{"dns.servers": f"{host}:{port}"})


@pytest_twisted.ensureDeferred
async def test_a_dead_first_target_fails_over_to_the_next(
        knot_zones, tmp_path: Path) -> None:  # noqa: ANN001
    dead = _closed_udp_port()
    bob = UA("bob", 0, domain="far.example")
    knot = knot_zones(far_domain(dead, bob.port))
    service = await _gateway(tmp_path, knot)
    bob.gateway = ("127.0.0.1", ports(service)["udp"])
    alice = UA("alice", ports(service)["udp"])
    try:
        assert (await deferToThread(alice.register)).status == 200
        started = time.monotonic()
        seen = await deferToThread(call, alice, bob)
        took = time.monotonic() - started
    finally:
        alice.close()
        bob.close()
        await service.stopService()
    assert str(seen["incoming"].uri) == "sip:bob@far.example"  # the Request-URI is kept
    assert seen["bye_ok"] is not None
    print(f"failover past a dead SRV target (ICMP) and call set-up: {took * 1000:.0f} ms")
    assert took < 2.0


@pytest_twisted.ensureDeferred
async def test_a_busy_callee_is_not_called_again_at_the_next_target(
        knot_zones,  # noqa: ANN001
        tmp_path: Path) -> None:
    first = UA("bob", 0, domain="far.example")
    second = UA("bob", 0, domain="far.example")
    knot = knot_zones(far_domain(first.port, second.port))
    service = await _gateway(tmp_path, knot)
    for ua in (first, second):
        ua.gateway = ("127.0.0.1", ports(service)["udp"])
    alice = UA("alice", ports(service)["udp"])

    def busy() -> tuple[Response, list]:
        alice.send(alice.request("INVITE", "sip:bob@far.example"))
        incoming = first.expect_request("INVITE")
        first.answer(incoming, 486)
        final = alice.expect(486)
        left = []
        with contextlib.suppress(TimeoutError):
            left.append(second.receive(1.0))
        return final, left

    try:
        assert (await deferToThread(alice.register)).status == 200
        final, at_second = await deferToThread(busy)
    finally:
        for ua in (alice, first, second):
            ua.close()
        await service.stopService()
    assert final.status == 486 and at_second == []


@pytest.mark.parametrize(("overlay", "expected", "warnings"), [
    # Without the overlay, DNS has the last word.
    ("no", 404, ["NXDOMAIN"]),
    # The default: a lone overlay node cannot rule the user out, so its 480 stands,
    # and the Warnings say what the overlay and DNS each found.
    ("yes", 480, ["alone in the overlay", "NXDOMAIN"]),
])
@pytest_twisted.ensureDeferred
async def test_a_domain_dns_does_not_know_gets_a_clear_answer_at_once(
        knot_zones, tmp_path: Path, overlay: str, expected: int,  # noqa: ANN001
        warnings: list[str]) -> None:
    knot = knot_zones(far_domain(_closed_udp_port(), _closed_udp_port()))
    host, port = knot.address
    service = await start_gateway(tmp_path / "gw", **{
        "dns.servers": f"{host}:{port}", "overlay.enabled": overlay})
    alice = UA("alice", ports(service)["udp"])

    def unknown() -> tuple[Response, float]:
        started = time.monotonic()
        alice.send(alice.request("INVITE", "sip:bob@nowhere.far.example"))
        return alice.expect(expected), time.monotonic() - started

    try:
        assert (await deferToThread(alice.register)).status == 200
        answer, took = await deferToThread(unknown)
    finally:
        alice.close()
        await service.stopService()
    said = answer.header_values("warning")
    assert len(said) == len(warnings), said
    for value, word in zip(said, warnings, strict=True):
        assert word in value, said
    assert took < 1.0


@pytest.mark.parametrize(("names", "expected"), [
    (["secure.example"], 486),  # the certificate names the SIP domain: reached
    (["other.example"], "certificate name mismatch"),  # it names another: refused
])
@pytest_twisted.ensureDeferred
async def test_a_sips_domain_is_reached_over_tls_that_proves_the_domain(
        knot_zones,  # noqa: ANN001
        tmp_path: Path, names: list[str], expected: int | str) -> None:
    """RFC 5922: the server found through _sips._tcp SRV must prove the SIP domain
    (secure.example), not the SRV target's name."""
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("uas", dns=names)
    with tls_uas(leaf.cert, leaf.key) as (uas_port, received):
        knot = knot_zones({"secure.example": zone(
            "secure.example", f"_sips._tcp SRV 10 10 {uas_port} uas", "uas A 127.0.0.1")})
        host, port = knot.address
        service = await start_gateway(tmp_path / "gw", **{
            "dns.servers": f"{host}:{port}",
            "tls.ca_file": str(ca.cert_path)})
        alice = UA("alice", ports(service)["udp"])

        def invite() -> Response:
            alice.send(alice.request("INVITE", "sips:bob@secure.example"))
            return alice.expect(486, 503, timeout=15)

        try:
            response = await deferToThread(invite)
        finally:
            alice.close()
            await service.stopService()
    if expected == 486:
        assert response.status == 486
        assert received and received[0].vias[0].transport.upper() == "TLS"
    else:
        assert response.status == 503 and expected in response.reason, response.reason
        assert not received


@pytest_twisted.ensureDeferred
async def test_a_route_naming_a_host_is_located_in_dns(
        knot_zones, tmp_path: Path) -> None:  # noqa: ANN001
    """A preloaded Route to proxy.far.example (a name, not an address): the gateway asks
    DNS (RFC 3263) and sends the request there, keeping the Route for that proxy."""
    bob = UA("bob", 0, domain="far.example")
    knot = knot_zones({"far.example": zone("far.example", "proxy A 127.0.0.1")})
    service = await _gateway(tmp_path, knot)
    gateway_port = ports(service)["udp"]
    bob.gateway = ("127.0.0.1", gateway_port)
    alice = UA("alice", gateway_port)

    def routed() -> tuple:
        alice.send(alice.request("INVITE", "sip:bob@far.example", extra=[
            ("Route", f"<sip:127.0.0.1:{gateway_port};lr>"),
            ("Route", f"<sip:proxy.far.example:{bob.port};lr>")]))
        incoming = bob.expect_request("INVITE")
        bob.answer(incoming, 486)
        return incoming, alice.expect(486)

    try:
        incoming, final = await deferToThread(routed)
    finally:
        alice.close()
        bob.close()
        await service.stopService()
    assert incoming.header_values("route") == [f"<sip:proxy.far.example:{bob.port};lr>"]
    assert final.status == 486


@pytest_twisted.ensureDeferred
async def test_strangers_cannot_reach_other_domains_through_the_gateway(
        tmp_path: Path) -> None:
    """No open relay with DNS on: a user of another domain calling a third domain gets
    403, a local user without credentials gets 407, and neither makes a DNS question."""
    dns = EmptyDnsServer.on_loopback()
    service = await start_gateway(tmp_path / "gw", **{
        "auth.trusted_networks": "", "dns.servers": dns.setting})
    port = ports(service)["udp"]
    stranger = UA("mallory", port, domain="elsewhere.example")
    local = UA("alice", port)

    def attempts() -> tuple[int, int]:
        stranger.send(stranger.request("INVITE", "sip:bob@far.example"))
        local.send(local.request("INVITE", "sip:bob@far.example"))
        return stranger.expect(403, 407).status, local.expect(403, 407).status

    try:
        refused, challenged = await deferToThread(attempts)
    finally:
        stranger.close()
        local.close()
        await service.stopService()
        dns.stop()
    assert (refused, challenged) == (403, 407)
    assert dns.questions == 0
