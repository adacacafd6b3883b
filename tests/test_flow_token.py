"""In-dialog requests reach a phone behind NAT over its flow, whatever Contact its
dialog uses (RFC 5626 §5.3): the proxy writes the flow into its Record-Route entry
facing the phone (gateway/server/flow_token.py) and sends requests from the far side
over it. Sans-IO: the core with a fake clock, nothing is sent."""

from __future__ import annotations

from core_harness import CoreHarness, Resolve, only, sends

from gateway.server.flow_token import FlowTokens
from gateway.server.routing import Resolution, Target
from gateway.sip.address import Address
from gateway.sip.message import Request

NATTED_PHONE = Address("udp", "203.0.113.9", 40000)  # its NAT mapping
FAR = Address("udp", "198.51.100.40", 5060)  # the other party's gateway


def test_tokens_round_trip_and_forged_ones_are_ignored() -> None:
    tokens = FlowTokens()
    for flow in (NATTED_PHONE, Address("tcp", "2001:db8::7", 5061)):
        assert tokens.flow(tokens.token(flow)) == flow
    token = tokens.token(NATTED_PHONE)
    assert FlowTokens().flow(token) is None  # another process's key
    assert tokens.flow(token.replace(".", "x.")) is None
    assert tokens.flow("garbage") is None and tokens.flow("a.b") is None


def request(method: str, uri: str, source: Address, via: str, routes: str = "",
            to_tag: str = "", branch: str = "1") -> str:
    return (f"{method} {uri} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {via};branch=z9hG4bK{method}{branch};rport\n"
            f"From: <sip:alice@example.com>;tag=a\nTo: <sip:bob@b.example>{to_tag}\n"
            f"Call-ID: dialog-1\nCSeq: 1 {method}\nMax-Forwards: 70\n{routes}"
            f"Contact: <sip:alice@10.0.0.5:5060;line=1>\nContent-Length: 0\n\n")


def forwarded(actions: list) -> tuple[Request, Address]:
    (message, to), = [(m, a) for m, a in sends(actions) if isinstance(m, Request)]
    return message, to


def test_a_natted_caller_gets_its_in_dialog_requests_over_its_mapping() -> None:
    harness = CoreHarness()
    actions = harness.receive(request("INVITE", "sip:bob@b.example", NATTED_PHONE,
                                      "10.0.0.5:5060"), NATTED_PHONE)
    (lookup,) = only(actions, Resolve)
    invite, to = forwarded(harness.take(harness.core.resolved(
        lookup.token, Resolution((Target("sip:bob@198.51.100.40:5060"),)), harness.now)))
    assert to == FAR
    (entry,) = invite.header_values("record-route")
    assert ";flow=" in entry
    # The far side's BYE and ACK name the phone's private Contact: they take the flow.
    route = f"Route: {entry}\n"
    for method in ("BYE", "ACK"):
        message, to = forwarded(harness.receive(request(
            method, "sip:alice@10.0.0.5:5060;line=1", FAR, "198.51.100.40:5060", route,
            ";tag=b"), FAR))
        assert message.method == method and to == NATTED_PHONE
    # The phone's own in-dialog requests follow the Request-URI as always.
    message, to = forwarded(harness.receive(request(
        "INFO", "sip:bob@198.51.100.40:5060", NATTED_PHONE, "10.0.0.5:5060", route,
        ";tag=b"), NATTED_PHONE))
    assert to == FAR


def test_a_natted_callee_reached_by_its_registration_keeps_that_flow_in_the_dialog() -> None:
    harness = CoreHarness()
    actions = harness.receive(request("INVITE", "sip:bob@example.com", FAR,
                                      "198.51.100.40:5060"), FAR)
    (lookup,) = only(actions, Resolve)
    target = Target("sip:bob@10.0.0.7:5060", flow=NATTED_PHONE)
    invite, to = forwarded(harness.take(harness.core.resolved(
        lookup.token, Resolution((target,)), harness.now)))
    assert to == NATTED_PHONE
    (entry,) = invite.header_values("record-route")
    # The phone answered with another Contact (a new port): BYE still takes the flow.
    message, to = forwarded(harness.receive(request(
        "BYE", "sip:bob@10.0.0.7:5070", FAR, "198.51.100.40:5060", f"Route: {entry}\n",
        ";tag=b", branch="2"), FAR))
    assert to == NATTED_PHONE


def test_a_forged_flow_token_is_not_followed() -> None:
    harness = CoreHarness()
    forged = FlowTokens().token(Address("udp", "192.0.2.66", 5060))
    route = f"Route: <sip:127.0.0.1:5060;lr;flow={forged}>\n"
    message, to = forwarded(harness.receive(request(
        "BYE", "sip:alice@198.51.100.50:5060", FAR, "198.51.100.40:5060", route,
        ";tag=b"), FAR))
    assert (to.host, to.port) == ("198.51.100.50", 5060)
