"""A domain's certificate fingerprints in DNS (``_p2psip-cert.<domain>`` TXT,
gateway/overlay/dns_fingerprints.py): published by the domain's gateways through RFC
2136 to a real Knot server, read by other gateways before they judge the domain's
records, and outranking trust on first use, so a forger that squatted an AoR before
its gateway published cannot win the first pin."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import pytest_twisted
from dns_server import KEY_NAME, KnotServer, zone
from tls_certs import domain_signer
from twisted.internet.defer import Deferred

from gateway.overlay.acceptance import RecordAcceptance
from gateway.overlay.dns_fingerprints import DomainFingerprints, entry, parse_fingerprints
from gateway.overlay.dns_publisher import DnsPublisher, PublishSettings, TsigKey
from gateway.overlay.record import Contact, Signer
from gateway.overlay.rollover import statement
from gateway.overlay.trust import MemoryPins, RecordTrust
from gateway.sip.dns import DnsClient

AOR = "sip:bob@b.example"
# Made when the module is collected: live for longer than the whole suite runs.
CONTACTS = [Contact("sip:bob@127.0.0.1:5090", 1.0, time.time() + 6 * 3600)]
ROUTE = "sip:127.0.0.1:5060;lr"


def run(coroutine) -> Deferred:  # noqa: ANN001 - a coroutine
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def _id(value: int) -> bytes:
    return value.to_bytes(20, "big")


def test_fingerprints_are_read_from_txt_strings() -> None:
    fp = "ab" * 32
    colons = ":".join(["CD"] * 32)
    assert parse_fingerprints([f"sha256={fp}", f"v=1 sha256={colons} note".encode(),
                               "sha256=1234", "garbage"]) == {fp, "cd" * 32}
    assert entry(fp) == f"sha256={fp}"


def test_published_fingerprints_outrank_the_replicas_and_the_pins() -> None:
    genuine, forger = domain_signer("b.example"), domain_signer("b.example")
    good = genuine.sign_record(AOR, CONTACTS, ROUTE, 600)
    forged = forger.sign_record(AOR, CONTACTS, ROUTE, 600)
    g, f = genuine.signer_id, forger.signer_id
    # Every replica lists the forger first (it squatted the AoR before the gateway
    # published): by agreement alone the forger would be pinned.
    squatted = [(path, _id(path + 1), [f, g]) for path in range(4)]
    fooled = RecordAcceptance(RecordTrust("tofu", pin_store=MemoryPins(),
                                            first_pin="replicas"))
    assert [r.signer for r in fooled.judge(AOR, [forged, good], served=squatted).accepted] == [f]
    # The domain publishes its gateway's fingerprint: only that certificate counts, a
    # lookup may end on it at once, and the forger is refused whatever the replicas say.
    published = {"b.example": frozenset({g})}
    pins = MemoryPins()
    trust = RecordTrust("tofu", pin_store=pins,
                        published=lambda d: published.get(d, frozenset()))
    acceptance = RecordAcceptance(trust)
    assert acceptance.acceptable(good) and not acceptance.acceptable(forged)
    verdict = acceptance.judge(AOR, [forged, good], served=squatted)
    assert [r.signer for r in verdict.accepted] == [g]
    assert "is not one b.example publishes in DNS" in verdict.reason
    assert pins.get("b.example") == g
    # A wrong pin (the forger won it before the domain published) is replaced.
    pins.repin("b.example", f)
    assert [r.signer for r in acceptance.judge(AOR, [forged, good]).accepted] == [g]
    assert pins.get("b.example") == g
    # A new certificate the published one endorsed (a roll-over DNS has not caught up
    # with yet) is accepted; another domain's DNS says nothing about b.example.
    rolled = domain_signer("b.example")
    assert genuine.certificate is not None
    announced = Signer(rolled.private_key, rolled.certificate,
                       statement(genuine.private_key, genuine.certificate, rolled.signer_id))
    new = announced.sign_record(AOR, CONTACTS, ROUTE, 600)
    assert [r.signer for r in acceptance.judge(AOR, [new]).accepted] == [rolled.signer_id]
    # Only tofu reads DNS: pinned trust keeps to its configured pins.
    strict = RecordTrust("pinned", pins={"b.example": {f}},
                         published=lambda d: published.get(d, frozenset()))
    assert strict.check(forged) is None and strict.check(good) is not None


@pytest.fixture
def knot(knot_zones) -> KnotServer:  # noqa: ANN001
    """Knot serving example.net, updatable with the test's key, where another gateway
    of b.example.net already published its fingerprint."""
    return knot_zones({"example.net": zone(
        "example.net", f'_p2psip-cert.b TXT "sha256={"0" * 64}"', ttl=1)})


def _publisher(knot: KnotServer, fingerprint: str, previous: str = "") -> DnsPublisher:
    settings = PublishSettings("example.net", "example.net", knot.address,
                               TsigKey(KEY_NAME, "hmac-sha256", knot.secret),
                               min_entries=1, interval=1, fingerprint=fingerprint,
                               previous_fingerprint=previous,
                               fingerprint_domains=("b.example.net",))

    async def ping(_peer: tuple[str, int]) -> bool:
        return True

    return DnsPublisher(settings, ping, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_gateway_publishes_its_fingerprint_next_to_the_others(knot: KnotServer) -> None:
    old, new = "1" * 64, "2" * 64
    owner = "_p2psip-cert.b.example.net."
    first = _publisher(knot, old)
    await run(first.round())
    assert first.state == "ok", first.last_error
    assert sorted(await run(first.read(owner))) == [entry("0" * 64), entry(old)]
    updates = first.updates
    await run(first.round())  # nothing to change: no UPDATE
    assert first.updates == updates
    # The gateway rolled over to a new certificate: the old entry goes, the other
    # gateway's stays.
    rolled = _publisher(knot, new, previous=old)
    await run(rolled.round())
    assert sorted(await run(rolled.read(owner))) == [entry("0" * 64), entry(new)]
    # Readers get them through their resolver (here: straight from Knot).
    fingerprints = DomainFingerprints(DnsClient([knot.address]))
    assert await run(fingerprints.fetch("b.example.net")) == {"0" * 64, new}
    assert fingerprints.get("b.example.net") == {"0" * 64, new}
    assert await run(fingerprints.fetch("nothing.example.net")) == frozenset()
    assert await run(fingerprints.fetch("127.0.0.1")) == frozenset()  # never asked


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


@pytest_twisted.ensureDeferred
async def test_a_squatter_loses_to_the_certificate_the_domain_publishes(
        knot: KnotServer, tmp_path: Path) -> None:
    """A forger stores a record for bob@b.example.net before b.example.net's gateway B
    ever published it, so every replica lists the forger first. B publishes its
    fingerprint in DNS (RFC 2136, to Knot); gateway A reads it and takes B's record."""
    from conftest import ports, start_gateway
    from sip_ua import UA
    from twisted.internet.threads import deferToThread

    key = tmp_path / "tsig.key"
    key.write_text(f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{knot.secret}"; }};\n')
    host, port = knot.address
    fast = {"overlay.cache": "0", "overlay.health_interval": "0.3",
            "overlay.dns_servers": f"{host}:{port}", "overlay.first_pin": "dns"}
    aor = "sip:bob@b.example.net"
    a = await start_gateway(tmp_path / "a", **fast, **{"gateway.domains": "a.example"})
    b = None
    try:
        assert a.overlay is not None and a.overlay.address is not None
        forger = domain_signer("b.example.net")
        forged = forger.sign_record(aor, CONTACTS, ROUTE, 600)
        b = await start_gateway(tmp_path / "b", **fast, **{
            "gateway.domains": "b.example.net",
            "overlay.bootstrap": "{}:{}".format(*a.overlay.address),
            "overlay.publish_dns": "example.net",
            "overlay.publish_dns_server": f"{host}:{port}",
            "overlay.publish_dns_key_file": str(key), "overlay.publish_dns_interval": "0.3"})
        assert b.overlay is not None
        deadline = time.monotonic() + 10
        while not (b.overlay.joined and a.overlay.node.contact_count() > 0):
            assert time.monotonic() < deadline, "B did not join"
            await _sleep(0.05)
        # The squatter comes first on every replica (A and B are all there is).
        assert await run(a.overlay.node.publish(aor, [forged])) >= 1
        bob = UA("bob", ports(b)["udp"], domain="b.example.net")
        try:
            assert (await deferToThread(bob.register)).status == 200
        finally:
            bob.close()
        genuine = b.overlay.signer.signer_id
        reader = DomainFingerprints(DnsClient([knot.address]))
        deadline = time.monotonic() + 15
        while genuine not in await run(reader.fetch("b.example.net")):
            assert time.monotonic() < deadline, "B never published its fingerprint"
            reader.client.forget()
            await _sleep(0.2)
        while True:
            records, result = await run(a.overlay.node.lookup_detail(aor, lambda _r: False,
                                                                     4.0))
            if {forger.signer_id, genuine} <= {r.signer for r in records}:
                break
            assert time.monotonic() < deadline, "B's record never reached the replicas"
            await _sleep(0.2)
        # Without DNS the replicas' agreement cannot give B the pin: they list the
        # squatter first (with two replicas, on too few paths to pin even it).
        fooled = RecordAcceptance(RecordTrust("tofu", pin_store=MemoryPins(),
                                                first_pin="replicas"))
        wrong = fooled.judge(aor, records, served=result.served if result else [])
        assert genuine not in {r.signer for r in wrong.accepted}, wrong.reason
        # A asks DNS during its lookup and takes B's record only.
        found = await a.overlay.lookup(aor)
        assert [r.signer for r in found] == [genuine], a.overlay.why_empty(aor)
        assert a.overlay.pins.get("b.example.net") == genuine
    finally:
        for gateway in (b, a):
            if gateway is not None:
                await gateway.stopService()
