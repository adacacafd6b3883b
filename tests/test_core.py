"""The SIP core sans-IO: events in, actions out, a fake clock and no sockets
(tests/core_harness.py plays the driver). Registrations wait for their commit, Timer C
and the client timers reach the caller through the core's one Wake, failures of
lookups, writes and sends each end in the right response."""

from __future__ import annotations

from core_harness import (
    PHONE,
    START,
    CoreHarness,
    Deliver,
    Resolve,
    Send,
    WriteBindings,
    only,
    sends,
    statuses,
)

from gateway.registry.binding import Binding
from gateway.server.routing import Resolution, Target
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent
from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.responses import build_response

CALLEE = Address("udp", "127.0.0.1", 6001)


def register(branch: str = "z9hG4bKr1", expires: int = 600, cseq: int = 1) -> str:
    return (f"REGISTER sip:example.com SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\n"
            "From: <sip:alice@example.com>;tag=a\nTo: <sip:alice@example.com>\n"
            f"Call-ID: reg-1\nCSeq: {cseq} REGISTER\nMax-Forwards: 70\n"
            f"Contact: <sip:alice@127.0.0.1:5999>;expires={expires}\n"
            "Content-Length: 0\n\n")


def invite(branch: str = "z9hG4bKi1", to: str = "sip:bob@example.com") -> str:
    return (f"INVITE {to} SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\n"
            f"From: <sip:alice@example.com>;tag=a\nTo: <{to}>\n"
            "Call-ID: call-1\nCSeq: 1 INVITE\nMax-Forwards: 70\n"
            "Contact: <sip:alice@127.0.0.1:5999>\nContent-Length: 0\n\n")


def proxied_invite(harness: CoreHarness) -> Request:
    """An INVITE for bob, resolved to his phone: the forwarded copy."""
    actions = harness.receive(invite())
    assert statuses(actions) == [100]
    (lookup,) = only(actions, Resolve)
    assert str(lookup.uri) == "sip:bob@example.com"
    actions = harness.take(harness.core.resolved(
        lookup.token, Resolution((Target("sip:bob@127.0.0.1:6001", flow=CALLEE),)),
        harness.now))
    (forwarded, to), = sends(actions)
    (send,) = only(actions, Send)
    assert isinstance(forwarded, Request) and to == CALLEE and send.client is not None
    return forwarded


def reply(harness: CoreHarness, request: Request, status: int) -> list:
    response = parse_message(build_response(request, status).serialize())
    return harness.take(harness.core.receive(response, CALLEE, harness.now))


# --- REGISTER: the 200 waits for the commit ----------------------------------------------

def test_register_is_answered_only_after_its_bindings_are_committed() -> None:
    harness = CoreHarness()
    actions = harness.receive(register())
    assert statuses(actions) == []  # nothing before the commit
    (write,) = only(actions, WriteBindings)
    assert write.aor == "sip:alice@example.com"
    (binding,) = write.bindings
    assert binding.contact == "sip:alice@127.0.0.1:5999" and binding.expires == START + 600
    (ok, to), = sends(harness.commit(write))
    assert isinstance(ok, Response) and ok.status == 200 and to == PHONE
    assert ok.header("contact") == "<sip:alice@127.0.0.1:5999>;expires=600"


def test_a_failed_registry_write_gets_500_with_retry_after() -> None:
    harness = CoreHarness()
    (write,) = only(harness.receive(register()), WriteBindings)
    (error, _), = sends(harness.core.write_failed(write.token, "database is locked",
                                                  harness.now))
    assert isinstance(error, Response) and error.status == 500
    assert error.header("retry-after") == "5"


def test_a_retransmitted_register_waiting_for_its_commit_is_absorbed() -> None:
    harness = CoreHarness()
    (write,) = only(harness.receive(register()), WriteBindings)
    assert harness.receive(register()) == []  # same branch: the transaction has it
    assert statuses(harness.commit(write)) == [200]
    assert statuses(harness.receive(register())) == [200]  # now the 200 is re-sent


def test_register_below_min_expires_gets_423_without_a_write() -> None:
    harness = CoreHarness()
    actions = harness.receive(register(expires=30))
    assert statuses(actions) == [423] and not only(actions, WriteBindings)


# --- validation ------------------------------------------------------------------------------

def test_invalid_mandatory_headers_get_400_from_the_core_itself() -> None:
    harness = CoreHarness()
    bad = register().replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE")
    (answer, _), = sends(harness.receive(bad))
    assert isinstance(answer, Response) and answer.status == 400
    assert "CSeq method" in answer.reason


def test_options_to_the_gateway_lists_what_it_allows() -> None:
    harness = CoreHarness()
    options = register().replace("REGISTER sip:example.com", "OPTIONS sip:127.0.0.1:5060") \
        .replace("CSeq: 1 REGISTER", "CSeq: 1 OPTIONS")
    (answer, _), = sends(harness.receive(options))
    assert isinstance(answer, Response) and answer.status == 200
    assert answer.header("allow") == "REGISTER, OPTIONS, ACK, CANCEL"


def test_while_draining_new_requests_get_503() -> None:
    harness = CoreHarness()
    harness.core.drain()
    assert statuses(harness.receive(register())) == [503]


# --- the proxy through the core: lookups, Timer C, client timers ------------------------------

def test_a_proxied_call_is_answered_with_the_callees_responses() -> None:
    harness = CoreHarness()
    forwarded = proxied_invite(harness)
    assert forwarded.header("max-forwards") == "69"
    assert statuses(reply(harness, forwarded, 180)) == [180]
    assert statuses(reply(harness, forwarded, 200)) == [200]
    assert len(harness.core.proxy) == 0


def test_timer_c_cancels_a_ringing_branch_and_answers_408_after_timer_c() -> None:
    harness = CoreHarness(timer_c=60.0)
    forwarded = proxied_invite(harness)
    reply(harness, forwarded, 180)
    assert sends(harness.advance(59.9)) == []
    actions = harness.advance(0.2)
    (cancel,) = [m for m, _ in sends(actions) if isinstance(m, Request)]
    assert cancel.method == "CANCEL"
    assert len(cancel.vias) == 1 and cancel.vias[0] == forwarded.vias[0]  # RFC 3261 §9.1
    assert statuses(actions) == [408]


def test_timer_c_is_reset_by_every_provisional() -> None:
    harness = CoreHarness(timer_c=60.0)
    forwarded = proxied_invite(harness)
    reply(harness, forwarded, 180)
    harness.advance(50.0)
    reply(harness, forwarded, 183)
    assert statuses(harness.advance(59.9)) == []  # 110 s after the 180
    assert statuses(harness.advance(0.2)) == [408]  # 60 s after the 183


def test_a_silent_next_hop_ends_in_408_when_timer_b_fires() -> None:
    harness = CoreHarness()
    proxied_invite(harness)
    actions = harness.advance(31.9)
    assert [m.method for m, _ in sends(actions)] == ["INVITE"] * 6  # Timer A
    assert statuses(harness.advance(0.2)) == [408]  # Timer B = 64*T1


def test_a_next_hop_that_cannot_be_reached_ends_in_503() -> None:
    harness = CoreHarness()
    proxied_invite(harness)
    (key,) = list(harness.core.clients._table)  # noqa: SLF001 - the one transaction
    actions = harness.take(harness.core.send_failed(key, "connection refused", harness.now))
    (answer, _), = sends(actions)
    assert isinstance(answer, Response) and answer.status == 503
    assert "connection refused" in answer.reason


def test_a_failed_lookup_answers_500() -> None:
    harness = CoreHarness()
    (lookup,) = only(harness.receive(invite()), Resolve)
    actions = harness.core.resolve_failed(lookup.token, "boom", harness.now)
    assert statuses(actions) == [500]


def test_a_registered_user_is_found_only_through_the_resolver_action() -> None:
    harness = CoreHarness()
    harness.bindings.by_aor["sip:bob@example.com"] = [
        Binding("sip:bob@example.com", "sip:bob@127.0.0.1:6001", START + 600,
                received="127.0.0.1:6001")]
    (lookup,) = only(harness.receive(invite()), Resolve)  # the core never resolves itself
    assert lookup.request.method == "INVITE"


# --- other transaction users -------------------------------------------------------------------

def test_responses_to_a_non_proxy_user_are_delivered_as_actions() -> None:
    harness = CoreHarness()
    request = parse_message(register().replace("\n", "\r\n").encode())
    assert isinstance(request, Request)
    user = object()
    actions = harness.core.send_request(request, CALLEE, user, "z9hG4bKr1", harness.now)
    assert [a.address for a in only(actions, Send)] == [CALLEE]
    response = parse_message(build_response(request, 200).serialize())
    (deliver,) = only(harness.core.receive(response, CALLEE, harness.now), Deliver)
    assert deliver.user is user and deliver.event is ClientEvent.RESPONSE
    assert deliver.response.status == 200
