"""Server transactions (RFC 3261 §17.2), driven sans-IO with explicit times."""

from __future__ import annotations

import pytest

from gateway.sip.address import Address
from gateway.sip.errors import IllegalTransition
from gateway.sip.parser import parse_message
from gateway.sip.responses import build_response
from gateway.sip.transaction import State, TransactionLayer

UDP = Address("udp", "127.0.0.1", 5070, 1)
TCP = Address("tcp", "127.0.0.1", 5070, 7)


def make(method: str, branch: str = "z9hG4bKabc", cseq_method: str | None = None,
         to_tag: str = "") -> object:
    return parse_message(
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=1\r\n"
        f"To: <sip:bob@127.0.0.1>{to_tag}\r\nCall-ID: c\r\n"
        f"CSeq: 1 {cseq_method or method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        .encode())


def test_non_invite_retransmission_before_response_is_absorbed_silently() -> None:
    layer = TransactionLayer()
    txn, _ = layer.receive_request(make("OPTIONS"), UDP, UDP, 0.0)
    assert txn is not None and txn.state is State.TRYING
    again, sends = layer.receive_request(make("OPTIONS"), UDP, UDP, 0.1)
    assert again is None and sends == []


def test_non_invite_retransmission_after_final_resends_the_last_response() -> None:
    layer = TransactionLayer()
    request = make("OPTIONS")
    txn, _ = layer.receive_request(request, UDP, UDP, 0.0)
    (sent, to), = layer.respond(txn, build_response(request, 200), 0.0)
    assert txn.state is State.COMPLETED and to == UDP
    again, sends = layer.receive_request(make("OPTIONS"), UDP, UDP, 1.0)
    assert again is None and sends == [(sent, UDP)]


def test_non_invite_transaction_lives_for_timer_j_over_udp_only() -> None:
    layer = TransactionLayer(t1=0.5)
    udp_request = make("OPTIONS", branch="z9hG4bKudp")
    tcp_request = make("OPTIONS", branch="z9hG4bKtcp")
    udp_txn, _ = layer.receive_request(udp_request, UDP, UDP, 0.0)
    tcp_txn, _ = layer.receive_request(tcp_request, TCP, TCP, 0.0)
    layer.respond(udp_txn, build_response(udp_request, 200), 0.0)
    layer.respond(tcp_txn, build_response(tcp_request, 200), 0.0)
    layer.on_timer(0.0)
    assert len(layer) == 1  # TCP: Timer J is zero
    layer.on_timer(31.9)
    assert len(layer) == 1
    layer.on_timer(32.0)
    assert len(layer) == 0 and udp_txn.state is State.TERMINATED


def test_provisional_then_final_follow_the_state_table() -> None:
    layer = TransactionLayer()
    request = make("OPTIONS")
    txn, _ = layer.receive_request(request, UDP, UDP, 0.0)
    layer.respond(txn, build_response(request, 100), 0.0)
    assert txn.state is State.PROCEEDING
    layer.respond(txn, build_response(request, 200), 0.0)
    assert txn.state is State.COMPLETED
    with pytest.raises(IllegalTransition, match="in state completed cannot send a 500"):
        layer.respond(txn, build_response(request, 500), 0.0)  # no second final
    assert txn.state is State.COMPLETED


def test_invite_error_is_retransmitted_on_timer_g_until_ack() -> None:
    layer = TransactionLayer(t1=0.5, t2=4.0)
    invite = make("INVITE")
    txn, _ = layer.receive_request(invite, UDP, UDP, 0.0)
    assert txn.state is State.PROCEEDING
    (sent, _), = layer.respond(txn, build_response(invite, 486), 0.0)
    times = []
    now = 0.0
    while now < 10.0:
        now = layer.next_deadline()
        if layer.on_timer(now):
            times.append(now)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5][: len(times)] and len(times) >= 4
    ack = make("ACK", to_tag=";tag=x")
    absorbed, sends = layer.receive_request(ack, UDP, UDP, now)
    assert absorbed is None and sends == [] and txn.state is State.CONFIRMED
    later = layer.on_timer(now + 100)
    assert later == [] and len(layer) == 0


def test_invite_without_ack_ends_after_timer_h() -> None:
    layer = TransactionLayer(t1=0.5)
    invite = make("INVITE")
    txn, _ = layer.receive_request(invite, UDP, UDP, 0.0)
    layer.respond(txn, build_response(invite, 404), 0.0)
    layer.on_timer(31.9)
    assert len(layer) == 1
    layer.on_timer(32.0)
    assert len(layer) == 0 and txn.state is State.TERMINATED


def test_invite_2xx_moves_to_accepted_absorbs_retransmissions_until_timer_l() -> None:
    layer = TransactionLayer(t1=0.5)
    invite = make("INVITE")
    txn, _ = layer.receive_request(invite, UDP, UDP, 0.0)
    sends = layer.respond(txn, build_response(invite, 200), 0.0)
    assert txn.state is State.ACCEPTED and len(sends) == 1
    again, resent = layer.receive_request(make("INVITE"), UDP, UDP, 1.0)
    assert again is None and resent == []  # RFC 6026: the TU retransmits 2xx, not us
    assert len(layer.respond(txn, build_response(invite, 200), 1.0)) == 1  # forwarded 2xx
    layer.on_timer(64 * 0.5 - 0.01)
    assert txn.state is State.ACCEPTED
    layer.on_timer(64 * 0.5)
    assert txn.state is State.TERMINATED and len(layer) == 0


def test_cancel_and_invite_with_the_same_branch_are_separate_transactions() -> None:
    layer = TransactionLayer()
    invite_txn, _ = layer.receive_request(make("INVITE"), UDP, UDP, 0.0)
    cancel_txn, _ = layer.receive_request(make("CANCEL"), UDP, UDP, 0.0)
    assert invite_txn is not None and cancel_txn is not None and invite_txn is not cancel_txn


def test_rfc2543_requests_without_magic_cookie_match_on_the_fallback_key() -> None:
    layer = TransactionLayer()
    first, _ = layer.receive_request(make("OPTIONS", branch="old1"), UDP, UDP, 0.0)
    again, _ = layer.receive_request(make("OPTIONS", branch="old1"), UDP, UDP, 0.1)
    other, _ = layer.receive_request(make("OPTIONS", branch="old2"), UDP, UDP, 0.1)
    assert first is not None and again is None and other is not None


def test_timer_entries_hold_no_reference_to_the_transaction() -> None:
    import gc

    layer = TransactionLayer()
    txn, _ = layer.receive_request(make("REGISTER"), UDP, UDP, 0.0)
    assert txn is not None
    layer.respond(txn, build_response(make("REGISTER"), 200), 0.0)
    gc.collect()
    gc.collect()  # CPython untracks nested tuples one level per pass
    entries = layer._timers.entries
    assert entries and not any(gc.is_tracked(entry) for entry in entries)
    layer.on_timer(64 * layer.t1)
    assert len(layer) == 0
