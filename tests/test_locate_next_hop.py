"""Next hops named by host names (sans-IO): the proxy asks DNS with a Locate action,
forwards to the first server DNS gives, moves to the next after a timeout, answers 503
naming DNS's error when there is none, and sends the ACK of a 2xx after locating too."""

from __future__ import annotations

from core_harness import CoreHarness, only, sends, statuses

from gateway.server.actions import Locate
from gateway.sip.address import Address
from gateway.sip.locate import Located
from gateway.sip.message import Request

FIRST = Address("udp", "198.51.100.21", 5060, 0, "proxy.far.example")
SECOND = Address("udp", "198.51.100.22", 5060, 0, "proxy.far.example")


def invite(method: str = "INVITE", to_tag: str = "") -> str:
    return (f"{method} sip:bob@far.example SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{method}loc;rport\n"
            f"From: <sip:alice@example.com>;tag=a\nTo: <sip:bob@far.example>{to_tag}\n"
            f"Call-ID: loc-1\nCSeq: 1 {method}\nMax-Forwards: 70\n"
            "Route: <sip:127.0.0.1:5060;lr>\nRoute: <sip:proxy.far.example;lr>\n"
            "Contact: <sip:alice@127.0.0.1:5999>\nContent-Length: 0\n\n")


def forwarded(actions: list) -> list[tuple[Request, Address]]:
    return [(m, a) for m, a in sends(actions) if isinstance(m, Request)]


def test_the_first_server_then_the_next_after_a_timeout() -> None:
    harness = CoreHarness()
    (locate,) = only(harness.receive(invite()), Locate)
    assert str(locate.uri) == "sip:proxy.far.example;lr"
    actions = harness.take(harness.core.located(locate.token, Located((FIRST, SECOND)),
                                                harness.now))
    ((request, to),) = forwarded(actions)
    assert to == FIRST and request.header_values("route") == ["<sip:proxy.far.example;lr>"]
    later = harness.advance(33)  # Timer B: the first server never answered
    assert [to for _, to in forwarded(later) if _.method == "INVITE"][-1] == SECOND


def test_no_server_in_dns_is_a_503_naming_the_dns_error() -> None:
    harness = CoreHarness()
    (locate,) = only(harness.receive(invite()), Locate)
    actions = harness.take(harness.core.located(
        locate.token, Located((), "proxy.far.example A: NXDOMAIN"), harness.now))
    final = [m for m, _ in sends(actions) if not isinstance(m, Request) and m.status >= 200]
    assert [m.status for m in final] == [503] and "NXDOMAIN" in final[0].reason
    assert 503 in statuses(actions)


def test_the_ack_of_a_2xx_is_located_too() -> None:
    harness = CoreHarness()
    (locate,) = only(harness.receive(invite("ACK", ";tag=b")), Locate)
    actions = harness.take(harness.core.located(locate.token, Located((SECOND,)),
                                                harness.now))
    ((request, to),) = forwarded(actions)
    assert request.method == "ACK" and to == SECOND
