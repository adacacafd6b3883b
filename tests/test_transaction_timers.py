"""Every RFC 3261 / RFC 6026 transaction timer, fired by a fake clock (explicit times,
no sockets, no reactor): the client layer's A, B, D, E, F, K, M and the server layer's
G, H, I, J, L, each at the moment the RFCs give for T1 = 0.5 s, T2 = 4 s, T4 = 5 s."""

from __future__ import annotations

from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent, ClientState, ClientTransactionLayer
from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.responses import build_response
from gateway.sip.transaction import State, TransactionLayer

T1, T2, T4 = 0.5, 4.0, 5.0
UDP = Address("udp", "127.0.0.1", 5070)
TCP = Address("tcp", "127.0.0.1", 5070, 3)


def message(method: str, branch: str, cseq_method: str | None = None) -> Request:
    """A request with a fixed branch, Call-ID and tags (its ACK matches it)."""
    parsed = parse_message(
        f"{method} sip:bob@127.0.0.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: timers\r\nCSeq: 1 {cseq_method or method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n".encode())
    assert isinstance(parsed, Request)
    return parsed


def outgoing(method: str) -> Request:
    return message(method, "z9hG4bKclient")


def answer(request: Request, status: int) -> Response:
    return parse_message(build_response(request, status).serialize())  # type: ignore[return-value]


def run_clock(layer: ClientTransactionLayer | TransactionLayer, until: float,
              ) -> list[tuple[float, bytes]]:
    """Fire the layer's timers in order up to ``until``: (time, data) of every send."""
    sent = []
    for _ in range(1000):  # bounded
        deadline = layer.next_deadline()
        if deadline is None or deadline > until:
            break
        sent += [(deadline, data) for data, _ in layer.on_timer(deadline)]
    return sent


# --- client INVITE: A, B, D, M ------------------------------------------------------------

def test_timer_a_doubles_and_timer_b_ends_a_silent_invite_at_64_t1() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    invite = outgoing("INVITE")
    txn, first = layer.send(invite, UDP, None, 0.0)
    assert first == [(txn.data, UDP)]
    sent = run_clock(layer, 40.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # A: T1, 2T1, 4T1…
    assert all(data == txn.data for _, data in sent)
    assert layer.take_events() == [(ClientEvent.TIMEOUT, txn, None)]  # B at 64*T1 = 32
    assert txn.state is ClientState.TERMINATED and len(layer) == 0


def test_timer_b_fires_at_32_s_exactly_and_not_over_tcp_retransmissions() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    txn, _ = layer.send(outgoing("INVITE"), TCP, None, 100.0)
    assert run_clock(layer, 131.9) == [] and layer.take_events() == []
    run_clock(layer, 132.0)
    assert layer.take_events() == [(ClientEvent.TIMEOUT, txn, None)]


def test_a_ringing_invite_is_left_to_timer_c_not_timer_b() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    invite = outgoing("INVITE")
    txn, _ = layer.send(invite, UDP, None, 0.0)
    layer.receive_response(answer(invite, 180), 0.2)
    assert run_clock(layer, 100.0) == []  # no retransmission once it rings
    assert [e for e, _, _ in layer.take_events()] == [ClientEvent.RESPONSE]
    assert txn.state is ClientState.PROCEEDING and len(layer) == 1


def test_timer_d_absorbs_retransmitted_errors_for_32_s_over_udp_acking_each() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    invite = outgoing("INVITE")
    txn, _ = layer.send(invite, UDP, None, 0.0)
    busy = answer(invite, 486)
    taken, ((ack, to),) = layer.receive_response(busy, 1.0)
    assert taken and to == UDP and ack.startswith(b"ACK ")
    assert layer.receive_response(busy, 20.0) == (True, [(ack, UDP)])  # ACKed again
    assert [e for e, _, _ in layer.take_events()] == [ClientEvent.RESPONSE]  # once
    run_clock(layer, 32.9)
    assert len(layer) == 1
    run_clock(layer, 33.0)  # D = 32 s after the final
    assert len(layer) == 0 and txn.state is ClientState.TERMINATED


def test_timer_d_is_zero_over_tcp() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    invite = outgoing("INVITE")
    layer.send(invite, TCP, None, 0.0)
    layer.receive_response(answer(invite, 486), 1.0)
    run_clock(layer, 1.0)
    assert len(layer) == 0


def test_timer_m_passes_further_2xx_on_for_64_t1() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    invite = outgoing("INVITE")
    txn, _ = layer.send(invite, UDP, None, 0.0)
    ok = answer(invite, 200)
    layer.receive_response(ok, 1.0)
    assert txn.state is ClientState.ACCEPTED
    layer.receive_response(ok, 10.0)  # a retransmitted (or forked) 2xx goes to the TU
    assert [e for e, _, _ in layer.take_events()] == [ClientEvent.RESPONSE] * 2
    assert run_clock(layer, 32.9) == [] and len(layer) == 1
    run_clock(layer, 33.0)  # M = 64*T1 after the first 2xx
    assert len(layer) == 0
    assert layer.receive_response(ok, 34.0) == (False, [])


# --- client non-INVITE: E, F, K ------------------------------------------------------------

def test_timer_e_doubles_up_to_t2_and_timer_f_ends_it_at_64_t1() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    txn, _ = layer.send(outgoing("OPTIONS"), UDP, None, 0.0)
    sent = run_clock(layer, 40.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert layer.take_events() == [(ClientEvent.TIMEOUT, txn, None)]  # F at 32


def test_timer_e_runs_at_t2_once_a_provisional_came() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    options = outgoing("OPTIONS")
    layer.send(options, UDP, None, 0.0)
    layer.receive_response(answer(options, 100), 0.2)
    sent = run_clock(layer, 10.0)
    assert [t for t, _ in sent] == [0.5, 4.5, 8.5]


def test_timer_f_ends_a_transaction_that_only_got_a_provisional() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    options = outgoing("OPTIONS")
    txn, _ = layer.send(options, TCP, None, 0.0)
    layer.receive_response(answer(options, 100), 0.2)
    layer.take_events()
    run_clock(layer, 32.0)
    assert layer.take_events() == [(ClientEvent.TIMEOUT, txn, None)]


def test_timer_k_absorbs_final_retransmissions_for_t4_over_udp() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    options = outgoing("OPTIONS")
    layer.send(options, UDP, None, 0.0)
    ok = answer(options, 200)
    layer.receive_response(ok, 1.0)
    assert layer.receive_response(ok, 2.0) == (True, [])  # absorbed
    assert [e for e, _, _ in layer.take_events()] == [ClientEvent.RESPONSE]
    run_clock(layer, 5.9)
    assert len(layer) == 1
    run_clock(layer, 6.0)  # K = T4
    assert len(layer) == 0


def test_a_transport_error_ends_the_transaction_once() -> None:
    layer = ClientTransactionLayer(T1, T2, T4)
    txn, _ = layer.send(outgoing("OPTIONS"), TCP, None, 0.0)
    layer.transport_error(txn, "connection refused")
    layer.transport_error(txn, "again")
    assert layer.take_events() == [(ClientEvent.TRANSPORT_ERROR, txn, None)]
    assert txn.error == "connection refused" and len(layer) == 0


# --- server INVITE: G, H, I, L -------------------------------------------------------------

def incoming(method: str) -> Request:
    return message(method, "z9hG4bKserver", "INVITE" if method == "ACK" else None)


def test_timer_g_doubles_up_to_t2_until_timer_h_gives_up_at_64_t1() -> None:
    layer = TransactionLayer(T1, T2, T4)
    invite = incoming("INVITE")
    txn, _ = layer.receive_request(invite, UDP, UDP, 0.0)
    assert txn is not None
    ((busy, _),) = layer.respond(txn, build_response(invite, 486), 0.0)
    sent = run_clock(layer, 40.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(data == busy for _, data in sent)
    assert txn.state is State.TERMINATED and len(layer) == 0  # H at 32


def test_an_ack_stops_timer_g_and_timer_i_ends_it_t4_later() -> None:
    layer = TransactionLayer(T1, T2, T4)
    invite = incoming("INVITE")
    txn, _ = layer.receive_request(invite, UDP, UDP, 0.0)
    assert txn is not None
    layer.respond(txn, build_response(invite, 486), 0.0)
    assert len(run_clock(layer, 2.0)) == 2  # G at 0.5 and 1.5
    ack = incoming("ACK")
    assert layer.absorb_ack(ack, UDP, 2.0)
    assert txn.state is State.CONFIRMED
    assert run_clock(layer, 6.9) == [] and len(layer) == 1
    run_clock(layer, 7.0)  # I = T4 after the ACK
    assert txn.state is State.TERMINATED and len(layer) == 0


def test_timer_i_is_zero_over_tcp_and_there_is_no_timer_g() -> None:
    layer = TransactionLayer(T1, T2, T4)
    invite = incoming("INVITE")
    txn, _ = layer.receive_request(invite, TCP, TCP, 0.0)
    assert txn is not None
    layer.respond(txn, build_response(invite, 486), 0.0)
    assert run_clock(layer, 1.0) == []
    layer.absorb_ack(incoming("ACK"), TCP, 1.0)
    run_clock(layer, 1.0)
    assert len(layer) == 0


def test_timer_l_keeps_an_accepted_invite_for_64_t1_absorbing_retransmissions() -> None:
    layer = TransactionLayer(T1, T2, T4)
    invite = incoming("INVITE")
    txn, _ = layer.receive_request(invite, UDP, UDP, 0.0)
    assert txn is not None
    layer.respond(txn, build_response(invite, 200), 0.0)
    assert txn.state is State.ACCEPTED
    assert layer.receive_request(incoming("INVITE"), UDP, UDP, 5.0) == (None, [])
    assert layer.respond(txn, build_response(invite, 200), 6.0)  # a forked 2xx passes
    assert run_clock(layer, 31.9) == [] and len(layer) == 1
    run_clock(layer, 32.0)
    assert txn.state is State.TERMINATED and len(layer) == 0


# --- server non-INVITE: J ---------------------------------------------------------------------

def test_timer_j_keeps_a_non_invite_answer_for_64_t1_over_udp() -> None:
    layer = TransactionLayer(T1, T2, T4)
    options = incoming("OPTIONS")
    txn, _ = layer.receive_request(options, UDP, UDP, 0.0)
    assert txn is not None
    ((ok, _),) = layer.respond(txn, build_response(options, 200), 1.0)
    assert layer.receive_request(incoming("OPTIONS"), UDP, UDP, 20.0) == (None, [(ok, UDP)])
    run_clock(layer, 32.9)
    assert len(layer) == 1
    run_clock(layer, 33.0)
    assert len(layer) == 0
