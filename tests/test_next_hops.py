"""Next hops that stopped answering are skipped for a while (gateway/server/
next_hops.py): the proxy reports failed forwards, the overlay resolver skips records
routed to a quarantined hop and answers 480 with a Warning at once."""

from __future__ import annotations

from core_harness import CoreHarness, Resolve, only

from gateway.server.next_hops import NextHopHealth
from gateway.server.routing import Resolution, Target


def test_a_failed_hop_is_quarantined_until_it_answers_or_the_time_is_up() -> None:
    health = NextHopHealth(quarantine=60)
    assert not health.dead("198.51.100.2", 5060, 0)
    health.failed("198.51.100.2", 5060, 100)
    assert health.dead("198.51.100.2", 5060, 159)
    assert not health.dead("198.51.100.2", 5061, 120)
    assert not health.dead("198.51.100.2", 5060, 160.5)  # the quarantine ran out
    health.failed("198.51.100.2", 5060, 200)
    health.answered("198.51.100.2", 5060)
    assert not health.dead("198.51.100.2", 5060, 201)
    for i in range(10_000):  # bounded
        health.failed(f"10.{i // 250}.{i % 250}.1", 5060, 300)
    assert len(health._until) <= 4096  # noqa: SLF001 - the bound itself


def test_the_proxy_reports_a_forward_that_timed_out() -> None:
    harness = CoreHarness()
    invite = ("INVITE sip:bob@b.example SIP/2.0\n"
              "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKdead1;rport\n"
              "From: <sip:alice@example.com>;tag=a\nTo: <sip:bob@b.example>\n"
              "Call-ID: dead-1\nCSeq: 1 INVITE\nMax-Forwards: 70\n"
              "Contact: <sip:alice@127.0.0.1:5999>\nContent-Length: 0\n\n")
    (lookup,) = only(harness.receive(invite), Resolve)
    target = Target("sip:bob@b.example", path=("<sip:198.51.100.2:5060;lr>",))
    harness.take(harness.core.resolved(lookup.token, Resolution((target,)), harness.now))
    assert not harness.core.next_hops.dead("198.51.100.2", 5060, harness.now)
    harness.advance(33)  # Timer B (64 x T1 = 32 s)
    assert harness.core.next_hops.dead("198.51.100.2", 5060, harness.now)


def test_a_server_dns_gives_that_failed_lately_is_tried_last() -> None:
    import importlib

    from gateway.server.routing import plugins_package
    from gateway.sip.address import Address
    from gateway.sip.locate import Located
    from gateway.sip.uri import parse_uri

    plugins_package()  # installed, or loaded from plugins/ in a checkout
    dns_resolver = importlib.import_module("gateway.plugins.dns").DnsResolver

    dead = Address("udp", "198.51.100.31", 5060, 0, "far.example")
    live = Address("udp", "198.51.100.32", 5060, 0, "far.example")
    resolver = dns_resolver(None, lambda host: False,
                           lambda host, port: (host, port) == (dead.host, dead.port))
    uri = parse_uri("sip:bob@far.example")
    resolution = resolver._targets(Located((dead, live)), uri)  # noqa: SLF001
    assert [t.next_hop for t in resolution.targets] == [live, dead]
    assert all(t.alternative for t in resolution.targets)
    assert resolution.targets[0].q > resolution.targets[1].q
