"""Relaying for a gateway behind a NAT nothing is forwarded through (gateway/server/
relay.py): the relay keeps the NATed gateway's connection as a flow named by a token,
sends requests whose Route carries the token over it (and their ACKs), marks its
Record-Route with the token, and answers 480 once the flow is gone. Sans-IO: the core
with a fake clock, nothing is sent."""

from __future__ import annotations

from dataclasses import replace

from core_harness import CoreHarness, Resolve, only, sends, statuses

from gateway.app.config import defaults
from gateway.app.wiring import auth_policy
from gateway.registry.users import UserRecord
from gateway.server.authenticator import Authenticator
from gateway.server.core import SipCore
from gateway.server.myself import LocalDomains, Myself
from gateway.server.registrar import Registrar, RegistrarPolicy
from gateway.server.relay import RelayFlows
from gateway.server.routing import Resolution, Target
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientTransactionLayer
from gateway.sip.message import Request, Response
from gateway.sip.transaction import TransactionLayer

RELAY = "198.51.100.1"
NATTED = Address("tcp", "198.51.100.77", 40123, 7)  # the NATed gateway's connection
CALLER = Address("udp", "198.51.100.40", 5060)  # another gateway


class NoUsers:
    def get(self, username: str, realm: str) -> UserRecord | None:
        return None


def relay_harness(max_flows: int = 10, alive: bool = True, auth: bool = True) -> CoreHarness:
    """A relay with the default authentication policy (nothing trusted), or none."""
    harness = CoreHarness()
    me = Myself(LocalDomains(["relay.example"], [RELAY]),
                [("udp", RELAY, 5060), ("tcp", RELAY, 5060)])
    policy = replace(auth_policy(defaults()), trusted_networks=())
    harness.core = SipCore(Registrar(RegistrarPolicy(60, 3600, 3600, 10, 20), me.is_local),
                           harness.bindings, TransactionLayer(0.5, 4.0, 5.0),
                           ClientTransactionLayer(0.5, 4.0, 5.0), me,
                           authenticator=Authenticator(policy, NoUsers(), b"k" * 32, me)
                           if auth else None,
                           flow_alive=lambda flow: alive,
                           relay=RelayFlows(me.external_address, max_flows))
    return harness


def relay_register(expires: int = 120, call_id: str = "flow-1", cseq: int = 1) -> str:
    return (f"REGISTER sip:{RELAY}:5060;transport=tcp SIP/2.0\n"
            f"Via: SIP/2.0/TCP 10.4.0.2:5060;branch=z9hG4bKr{cseq};rport\n"
            f"From: <sip:relay@{RELAY}>;tag=n\nTo: <sip:relay@{RELAY}>\n"
            f"Call-ID: {call_id}\nCSeq: {cseq} REGISTER\nMax-Forwards: 70\n"
            f"Require: p2psip-relay\nExpires: {expires}\nContent-Length: 0\n\n")


def open_flow(harness: CoreHarness, source: Address = NATTED, **kwargs: object) -> str:
    """Register a flow and return the Path URI the relay gives."""
    (response, to), = sends(harness.receive(relay_register(**kwargs), source))  # type: ignore[arg-type]
    assert isinstance(response, Response) and response.status == 200, response.status
    assert to == source
    (path,) = response.header_values("path")
    return path.strip("<>")


def invite(route: str, source: Address = CALLER, to_tag: str = "",
           method: str = "INVITE", rest_routes: str = "") -> str:
    transport = source.transport.upper()
    return (f"{method} sip:carol@c.example SIP/2.0\n"
            f"Via: SIP/2.0/{transport} {source.host}:{source.port};branch=z9hG4bK{method}9;rport\n"
            f"From: <sip:alice@a.example>;tag=a\nTo: <sip:carol@c.example>{to_tag}\n"
            f"Call-ID: call-9\nCSeq: 1 {method}\nMax-Forwards: 70\n"
            f"Route: <{route}>\n{rest_routes}"
            f"Contact: <sip:alice@{source.host}:{source.port}>\nContent-Length: 0\n\n")


def test_a_flow_gets_a_token_and_the_path_to_publish() -> None:
    harness = relay_harness()
    path = open_flow(harness)
    assert path.startswith(f"sip:{RELAY}:5060;transport=tcp;lr;relay=")
    # A refresh keeps the token (the published route stays valid), even over a new
    # connection after a reconnect.
    assert open_flow(harness, Address("tcp", NATTED.host, 40999, 8), cseq=2) == path
    assert len(harness.core.relay) == 1  # type: ignore[arg-type]


def test_relay_registrations_need_a_connection_and_respect_the_limit() -> None:
    harness = relay_harness(max_flows=1)
    udp = Address("udp", NATTED.host, 5060)
    assert statuses(harness.receive(relay_register(call_id="udp", cseq=5), udp)) == [403]
    open_flow(harness)
    assert statuses(harness.receive(relay_register(call_id="flow-2", cseq=3),
                                    Address("tcp", "198.51.100.78", 4000, 9))) == [503]
    # Expires: 0 releases the flow.
    assert statuses(harness.receive(relay_register(expires=0, cseq=2), NATTED)) == [200]
    assert len(harness.core.relay) == 0  # type: ignore[arg-type]


def test_a_gateway_that_relays_for_none_answers_420() -> None:
    harness = relay_harness(max_flows=0)
    (response, _), = sends(harness.receive(relay_register(), NATTED))
    assert isinstance(response, Response) and response.status == 420
    assert response.header("unsupported") == "p2psip-relay"


def test_a_request_for_the_token_goes_over_the_flow_with_a_marked_record_route() -> None:
    harness = relay_harness()
    path = open_flow(harness)
    token = path.rsplit("relay=", 1)[1]
    forwarded = [(m, a) for m, a in sends(harness.receive(invite(path), CALLER))
                 if isinstance(m, Request)]
    (request, to), = forwarded
    assert to == NATTED  # the flow, not the Request-URI's host
    assert request.header_values("route") == []
    record_routes = request.header_values("record-route")
    assert record_routes and all(f";relay={token}" in r for r in record_routes)
    # The relay did not ask the caller for credentials (the NATed gateway decides).
    assert 407 not in statuses(harness.receive(invite(path), CALLER))


def test_in_dialog_requests_and_acks_from_outside_take_the_flow() -> None:
    harness = relay_harness()
    path = open_flow(harness)
    natted_entry = "Route: <sip:10.4.0.2:5060;transport=tcp;lr>\n"
    bye = invite(path, to_tag=";tag=c", method="BYE", rest_routes=natted_entry)
    (request, to), = [(m, a) for m, a in sends(harness.receive(bye, CALLER))
                      if isinstance(m, Request)]
    assert to == NATTED
    # What follows the relay's entry is for the NATed gateway itself.
    assert request.header_values("route") == ["<sip:10.4.0.2:5060;transport=tcp;lr>"]
    ack = invite(path, to_tag=";tag=c", method="ACK", rest_routes=natted_entry)
    (request, to), = [(m, a) for m, a in sends(harness.receive(ack, CALLER))]
    assert to == NATTED and request.method == "ACK"


def test_requests_from_the_flow_itself_follow_their_route_set() -> None:
    harness = relay_harness()
    path = open_flow(harness)
    onward = "Route: <sip:198.51.100.40:5060;lr>\n"
    bye = invite(path, source=NATTED, to_tag=";tag=c", method="BYE", rest_routes=onward)
    (request, to), = [(m, a) for m, a in sends(harness.receive(bye, NATTED))
                      if isinstance(m, Request)]
    assert (to.host, to.port) == (CALLER.host, CALLER.port)


def test_an_unknown_token_or_a_closed_flow_gets_480_with_a_warning() -> None:
    harness = relay_harness()
    actions = harness.receive(invite(f"sip:{RELAY}:5060;transport=tcp;lr;relay=gone"))
    final = [m for m, _ in sends(actions) if isinstance(m, Response) and m.status >= 200]
    assert [m.status for m in final] == [480] and final[0].header("warning")
    closed = relay_harness(alive=False)
    path = open_flow(closed)
    assert 480 in statuses(closed.receive(invite(path)))


def test_a_flow_ends_with_its_registration() -> None:
    harness = relay_harness()
    path = open_flow(harness, expires=30)
    harness.advance(31)
    assert 480 in statuses(harness.receive(invite(path)))


def test_a_target_published_through_this_relay_goes_straight_over_the_flow() -> None:
    harness = relay_harness(auth=False)  # a caller the relay serves (authenticated)
    path = open_flow(harness)
    call = invite(path).replace(f"Route: <{path}>\n", "")
    (lookup,) = only(harness.receive(call, CALLER), Resolve)
    target = Target("sip:carol@c.example", path=(f"<{path}>",))
    actions = harness.take(harness.core.resolved(lookup.token, Resolution((target,)),
                                                 harness.now))
    (request, to), = [(m, a) for m, a in sends(actions) if isinstance(m, Request)]
    assert to == NATTED and request.header_values("route") == []


def test_a_flow_is_no_open_relay_for_whoever_holds_it() -> None:
    """An initial request coming *from* the flow, routed through the relay to a third
    party, is checked like any other: a stranger to the relay's domains gets 403."""
    harness = relay_harness()
    path = open_flow(harness)
    onward = "Route: <sip:198.51.100.99:5060;lr>\n"
    actions = harness.receive(invite(path, source=NATTED, rest_routes=onward), NATTED)
    assert 403 in statuses(actions)
    assert not [m for m, _ in sends(actions) if isinstance(m, Request)]
