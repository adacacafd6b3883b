"""Any phone through any gateway of a site (issue 17): two gateways on one PostgreSQL
registry, each knowing the other by its TLS certificate ([site] peers). A request for a
phone that registered at the other gateway goes through that gateway, which holds the
phone's flow; a gateway not named in [site] peers gets no such trust; a binding whose
gateway stopped is reached directly, as one gateway would.

Phones here reach only their own gateway's flow: a TCP or TLS phone has no listener
(the Contact names a closed port), a UDP phone's Contact names a port nobody uses."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_twisted
from conftest import ports, sleep, start_gateway
from gateway_proc import free_port
from location_fixtures import postgres_url  # noqa: F401 - fixture
from sip_ua import UA
from test_tls import client_context
from tls_certs import TestCA
from twisted.internet.threads import deferToThread

from gateway.app.service import GatewayService
from gateway.sip.message import Request

DOMAIN = "site.example"
PEERS = "gw-a.site.test, gw-b.site.test"
#: Where phones are: not an address of the gateways (whose own addresses are local
#: hosts to them), as on a real network.
PHONES = "127.0.0.2"


async def _gateway(tmp_path: Path, url: str, ca: TestCA, name: str,
                   peers: str = PEERS, issuer: TestCA | None = None) -> GatewayService:
    """Gateway ``name`` of the site (trusting ``ca``), its certificate from ``issuer``
    (default: ``ca``)."""
    issued = (issuer or ca).issue(f"gw-{name}", dns=[f"gw-{name}.site.test"],
                                  ips=["127.0.0.1"])
    tls_port = free_port(socket.SOCK_STREAM)
    return await start_gateway(
        tmp_path / name, **{
            "database.url": url, "database.sync_interval": "60",
            "gateway.domains": DOMAIN, "overlay.enabled": "no",
            # Nobody is trusted by address: only the site's certificates count.
            "auth.trusted_networks": "", "auth.methods": "INVITE",
            "tls.listen": f"127.0.0.1:{tls_port}", "tls.certificate": str(issued.cert),
            "tls.private_key": str(issued.key), "tls.ca_file": str(ca.cert_path),
            "site.uri": f"sips:127.0.0.1:{tls_port}", "site.peers": peers})


async def _up(gateway: GatewayService, other: GatewayService) -> None:
    """Until ``gateway`` knows ``other`` is up (the heartbeat after its start)."""
    deadline = time.monotonic() + 10
    while not any(g["id"] == other.location.gateway_id and g["state"] == "up"
                  for g in gateway.location.site):
        assert time.monotonic() < deadline, gateway.location.site
        await gateway.location.heartbeat()


async def _seen(gateway: GatewayService, aor: str) -> None:
    deadline = time.monotonic() + 3
    while not gateway.location.lookup(aor):
        assert time.monotonic() < deadline, f"{aor} never reached the other gateway"
        await sleep(0.01)


def _phone(user: str, gateway: GatewayService, transport: str, ca: TestCA) -> UA:
    if transport == "tls":
        phone = UA(user, ports(gateway)["tls"], "tls", domain=DOMAIN, local_host=PHONES,
                   tls=client_context(ca.cert_path), server_name="127.0.0.1")
    else:
        phone = UA(user, ports(gateway)[transport], transport, domain=DOMAIN,
                   local_host=PHONES)
    # The Contact leads nowhere (dialling it is refused): only the flow reaches it.
    phone.port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    return phone
    return UA(user, ports(gateway)[transport], transport, domain=DOMAIN)


@asynccontextmanager
async def _bob_at_a(tmp_path: Path, url: str, ca: TestCA, *, kind: str = "",
                    a_peers: str = PEERS, b_issuer: TestCA | None = None,
                    ) -> AsyncIterator[tuple[GatewayService, GatewayService, UA, UA]]:
    """Gateways A and B; bob registered at A (a ``kind`` phone of :func:`_phone`, or by
    default a UDP phone on a LAN whose Contact works) and known to B; carol, of another
    domain, calls through B. Everything is stopped afterwards (A unless the test did)."""
    a = await _gateway(tmp_path, url, ca, "a", peers=a_peers)
    b = await _gateway(tmp_path, url, ca, "b", issuer=b_issuer)
    bob = _phone("bob", a, kind, ca) if kind else UA("bob", ports(a)["udp"], domain=DOMAIN)
    carol = UA("carol", ports(b)["udp"], domain="elsewhere.example")
    try:
        await _up(b, a)
        assert (await deferToThread(bob.register)).status == 200
        await _seen(b, bob.uri)
        yield a, b, bob, carol
    finally:
        bob.close()
        carol.close()
        await b.stopService()
        if a.running:
            await a.stopService()


def _call(caller: UA, callee: UA, holder: GatewayService) -> tuple[Request, int]:
    """``caller`` (of another domain) invites ``callee``; the INVITE the callee got and
    the final status the caller saw once the callee answered 486."""
    invite = caller.request("INVITE", f"sip:{callee.user}@{DOMAIN}")
    caller.send(invite)
    received = callee.expect_request("INVITE", timeout=5)
    callee.gateway = ("127.0.0.1", ports(holder)["udp"])  # a UDP answer goes back there
    callee.answer(received, 486)
    status = caller.expect(486, 403, 404, 480, 500, 502, 503, 408, timeout=10).status
    caller.send(caller.request("ACK", str(invite.uri), call_id=invite.call_id,
                               from_tag=invite.from_.tag, to_tag="callee"))
    return received, status


@pytest.fixture
def site_ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca", "site test CA")


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_a_phone_of_one_gateway_is_called_through_the_other(
        postgres_url: str, tmp_path: Path, site_ca: TestCA,  # noqa: F811
        transport: str) -> None:
    a = await _gateway(tmp_path, postgres_url, site_ca, "a")
    b = await _gateway(tmp_path, postgres_url, site_ca, "b")
    phones: list[UA] = []
    try:
        await _up(b, a)
        await _up(a, b)
        for holder, other, user in ((a, b, "bob"), (b, a, "dave")):
            callee = await deferToThread(_phone, user, holder, transport, site_ca)
            caller = UA("carol", ports(other)["udp"], domain="elsewhere.example")
            phones += [callee, caller]
            assert (await deferToThread(callee.register)).status == 200
            await _seen(other, callee.uri)
            received, status = await deferToThread(_call, caller, callee, holder)
            assert status == 486, f"{user} through the other gateway over {transport}"
            vias = received.header_values("via")
            # Sent by the gateway holding the flow, which got it from the other over
            # TLS; both stay in the dialog.
            assert f"127.0.0.1:{ports(holder)[transport]}" in vias[0], vias
            assert vias[1].startswith("SIP/2.0/TLS"), vias
            record_routes = ",".join(received.header_values("record-route"))
            for gateway in (a, b):
                assert f"127.0.0.1:{ports(gateway)['tls']}" in record_routes
    finally:
        for phone in phones:
            phone.close()
        await b.stopService()
        await a.stopService()


@pytest.mark.parametrize("why", ["not in site.peers", "certificate of another CA"])
@pytest_twisted.ensureDeferred
async def test_a_gateway_the_site_does_not_know_is_not_trusted(
        postgres_url: str, tmp_path: Path, site_ca: TestCA, why: str) -> None:  # noqa: F811
    # Either A does not list B, or B's certificate names gw-b.site.test but a CA A does
    # not trust signed it (B still trusts A's).
    untrusted = ({"a_peers": "gw-a.site.test"} if why == "not in site.peers"
                 else {"b_issuer": TestCA(tmp_path / "rogue", "rogue CA")})
    async with _bob_at_a(tmp_path, postgres_url, site_ca, kind="tcp",
                         **untrusted) as (_, _, _, carol):
        carol.send(carol.request("INVITE", f"sip:bob@{DOMAIN}"))
        # A treats B as anyone: a request from another domain to a Contact is relaying.
        assert (await deferToThread(carol.expect, 403, 486, timeout=10)).status == 403


@pytest_twisted.ensureDeferred
async def test_a_binding_whose_gateway_stopped_is_reached_directly(
        postgres_url: str, tmp_path: Path, site_ca: TestCA) -> None:  # noqa: F811
    async with _bob_at_a(tmp_path, postgres_url, site_ca) as (a, b, bob, carol):
        await a.stopService()
        await b.location.heartbeat()  # B reads that A stopped
        assert b.location.holder_route(b.location.lookup(bob.uri)[0]) is None
        carol.send(carol.request("INVITE", f"sip:bob@{DOMAIN}"))
        received = await deferToThread(bob.expect_request, "INVITE", 5)
        assert f"127.0.0.1:{ports(b)['udp']}" in received.header_values("via")[0]


@pytest_twisted.ensureDeferred
async def test_a_gateway_that_stopped_answering_is_not_routed_through(
        postgres_url: str, tmp_path: Path, site_ca: TestCA) -> None:  # noqa: F811
    from twisted.internet import reactor

    async with _bob_at_a(tmp_path, postgres_url, site_ca) as (a, b, bob, carol):
        # A request to A just failed (its host vanished): until its quarantine ends, B
        # does not wait for A again, though A's heartbeat is not overdue yet.
        b.core.next_hops.failed("127.0.0.1", ports(a)["tls"], reactor.seconds())
        carol.send(carol.request("INVITE", f"sip:bob@{DOMAIN}"))
        received = await deferToThread(bob.expect_request, "INVITE", 5)
        assert f"127.0.0.1:{ports(b)['udp']}" in received.header_values("via")[0]


@pytest_twisted.ensureDeferred
async def test_a_phone_behind_nat_whose_gateway_stopped_gets_480_at_once(
        postgres_url: str, tmp_path: Path, site_ca: TestCA) -> None:  # noqa: F811
    # Bob's NAT lets in only A's packets.
    async with _bob_at_a(tmp_path, postgres_url, site_ca, kind="udp") as (a, b, bob, carol):
        await a.stopService()
        await b.location.heartbeat()
        started = time.monotonic()
        carol.send(carol.request("INVITE", f"sip:bob@{DOMAIN}"))
        answer = await deferToThread(carol.expect, 480, 408, 503, timeout=5)
        assert answer.status == 480 and "registered at is down" in answer.reason
        assert time.monotonic() - started < 1.0
        # Registering again (at B) makes it reachable at once.
        bob.gateway = ("127.0.0.1", ports(b)["udp"])
        assert (await deferToThread(bob.register)).status == 200
        carol.send(carol.request("INVITE", f"sip:bob@{DOMAIN}"))
        received = await deferToThread(bob.expect_request, "INVITE", 5)
        assert f"127.0.0.1:{ports(b)['udp']}" in received.header_values("via")[0]
