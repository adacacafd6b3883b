"""RFC 3263 server location against a real authoritative DNS server (Knot DNS on a
loopback port, tests/dns_server.py): NAPTR → SRV → A/AAAA, the short cuts an explicit
port or transport takes, ``sips:`` only over TLS, SRV priority and weight, TTLs and
RFC 2308 negative caching, and a name changed by an RFC 2136 update re-resolved once its
TTL runs out."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from types import SimpleNamespace

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
import pytest_twisted
from conftest import unavailable
from dns_server import KEY_NAME, KnotServer, available, zone
from twisted.internet.defer import Deferred

from gateway.sip.address import Address
from gateway.sip.dns import DnsClient
from gateway.sip.locate import SipLocator, srv_order
from gateway.sip.uri import SipUri, parse_uri

ZONE = zone(
    "sip.example",
    # Two UDP servers (priority 10 and 20) and one TCP server, by NAPTR.
    '@ NAPTR 10 50 "s" "SIP+D2U" "" _sip._udp',
    '@ NAPTR 20 50 "s" "SIP+D2T" "" _sip._tcp',
    '@ NAPTR 30 50 "s" "SIPS+D2T" "" _sips._tcp',
    # The WSS server for browsers (RFC 7118 §8): the gateway opens no WebSocket.
    '@ NAPTR 5 50 "s" "SIPS+D2W" "" _sips._ws',
    "_sips._ws SRV 10 10 8443 main",
    "_sip._udp SRV 20 10 5070 backup",
    "_sip._udp SRV 10 10 5060 main",
    "_sip._tcp SRV 10 10 5060 main",
    "_sips._tcp SRV 10 10 5061 main",
    "main A 127.0.0.11",
    "main AAAA ::1",
    "backup A 127.0.0.12",
    # SRV only (no NAPTR), one transport.
    "_sip._tcp.srvonly SRV 10 10 5080 main",
    "srvonly A 127.0.0.13",
    # Only an address.
    "plain A 127.0.0.14",
    # A short TTL, changed by an update during a test.
    "moving 1 A 127.0.0.15",
)


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """Knot serving sip.example on a loopback port; skipped (or failed under
    P2PSIP_REQUIRE_DNS=1) where knotd is missing."""
    reason = available()
    if reason is not None:
        unavailable(reason, "P2PSIP_REQUIRE_DNS")
    server = KnotServer(tmp_path_factory.mktemp("dns"), {"sip.example": ZONE})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def locator(knot: KnotServer, transports: tuple[str, ...] = ("udp", "tcp", "tls"),
            ) -> SipLocator:
    return SipLocator(DnsClient([knot.address]), transports, random.Random(7))


def locate(loc: SipLocator, uri: str) -> Deferred:
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    return Deferred.fromFuture(asyncio.ensure_future(loc.locate(parsed)))


@pytest_twisted.ensureDeferred
async def test_naptr_srv_and_addresses_in_order(knot: KnotServer) -> None:
    found = await locate(locator(knot), "sip:bob@sip.example")
    assert not found.error
    assert found.targets[:3] == (
        Address("udp", "127.0.0.11", 5060, 0, "sip.example"),
        Address("udp", "::1", 5060, 0, "sip.example"),
        Address("udp", "127.0.0.12", 5070, 0, "sip.example"))  # priority 20 after 10
    assert Address("tcp", "127.0.0.11", 5060, 0, "sip.example") in found.targets
    assert all(t.port != 8443 for t in found.targets)  # SIPS+D2W (first) is skipped
    # Without a UDP transport here, the NAPTR's UDP entry is skipped.
    found = await locate(locator(knot, ("tcp",)), "sip:bob@sip.example")
    assert {t.transport for t in found.targets} == {"tcp"}


@pytest_twisted.ensureDeferred
async def test_the_uri_short_cuts_the_chain(knot: KnotServer) -> None:
    loc = locator(knot)
    # An explicit port: A/AAAA only, UDP by default.
    found = await locate(loc, "sip:bob@main.sip.example:5099")
    assert found.targets == (Address("udp", "127.0.0.11", 5099, 0, "main.sip.example"),
                             Address("udp", "::1", 5099, 0, "main.sip.example"))
    # A transport without a port: that transport's SRV records.
    found = await locate(loc, "sip:bob@sip.example;transport=tcp")
    assert {t.transport for t in found.targets} == {"tcp"}
    # sips: only the TLS (SIPS+D2T) entries, the SIP domain as the name to verify.
    found = await locate(loc, "sips:bob@sip.example")
    assert found.targets[0] == Address("tls", "127.0.0.11", 5061, 0, "sip.example")
    assert {t.transport for t in found.targets} == {"tls"}
    # No TLS transport here: a sips: URI cannot be reached at all.
    refused = await locate(locator(knot, ("udp", "tcp")), "sips:bob@sip.example")
    assert refused.targets == () and "TLS" in refused.error


@pytest_twisted.ensureDeferred
async def test_without_naptr_srv_then_the_address(knot: KnotServer) -> None:
    loc = locator(knot)
    found = await locate(loc, "sip:bob@srvonly.sip.example")
    assert found.targets == (Address("tcp", "127.0.0.11", 5080, 0, "srvonly.sip.example"),
                             Address("tcp", "::1", 5080, 0, "srvonly.sip.example"))
    found = await locate(loc, "sip:bob@plain.sip.example")
    assert found.targets == (Address("udp", "127.0.0.14", 5060, 0, "plain.sip.example"),)


@pytest_twisted.ensureDeferred
async def test_a_name_without_records_is_answered_quickly_and_remembered(
        knot: KnotServer) -> None:
    client = DnsClient([knot.address])
    loc = SipLocator(client)
    started = time.monotonic()
    found = await locate(loc, "sip:bob@nowhere.sip.example")
    assert found.targets == () and "NXDOMAIN" in found.error
    assert time.monotonic() - started < 1.0
    sent = client.sent
    again = await locate(loc, "sip:bob@nowhere.sip.example")
    assert again.error == found.error and client.sent == sent  # negative cache (RFC 2308)


@pytest_twisted.ensureDeferred
async def test_a_record_changed_by_an_update_is_seen_when_its_ttl_ran_out(
        knot: KnotServer) -> None:
    client = DnsClient([knot.address])
    loc = SipLocator(client)
    first = await locate(loc, "sip:bob@moving.sip.example")
    assert first.targets[0].host == "127.0.0.15"
    keyring = dns.tsigkeyring.from_text({KEY_NAME: ("hmac-sha256", knot.secret)})
    update = dns.update.UpdateMessage("sip.example", keyring=keyring, keyalgorithm="hmac-sha256")
    update.replace("moving", 1, "A", "127.0.0.16")
    response = await Deferred.fromFuture(asyncio.ensure_future(asyncio.to_thread(
        dns.query.tcp, update, "127.0.0.1", timeout=2, port=knot.port)))
    assert response.rcode() == 0
    cached = await locate(loc, "sip:bob@moving.sip.example")
    assert cached.targets[0].host == "127.0.0.15"  # within its TTL: the cache answers
    await Deferred.fromFuture(asyncio.ensure_future(asyncio.sleep(1.2)))
    fresh = await locate(loc, "sip:bob@moving.sip.example")
    assert fresh.targets[0].host == "127.0.0.16"


def test_srv_priority_first_then_weight() -> None:
    records = [SimpleNamespace(priority=p, weight=w, name=n)
               for p, w, n in ((20, 0, "late"), (10, 90, "heavy"), (10, 10, "light"))]
    firsts = {"heavy": 0, "light": 0}
    rng = random.Random(1)
    for _ in range(2000):
        ordered = srv_order(records, rng)
        assert ordered[-1].name == "late"
        firsts[ordered[0].name] += 1
    # Weighted 90:10 within priority 10 (RFC 2782).
    assert 1650 < firsts["heavy"] < 1950, firsts
