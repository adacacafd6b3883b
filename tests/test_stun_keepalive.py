"""STUN keep-alives on the SIP UDP port (RFC 5626 §4.4.1), checked with aioice's STUN
implementation (independent of ours): a Binding request gets a success response with the
sender's address, verified FINGERPRINT; other STUN messages get nothing; SIP on the same
port is not disturbed."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from aioice import stun
from twisted.internet import threads

from gateway.sip.stun import binding_response, is_stun


def binding_request() -> stun.Message:
    request = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    request.add_fingerprint()
    return request


@pytest.mark.parametrize(("host", "port"), [("198.18.4.2", 40123), ("2001:db8::7", 5060)])
def test_a_binding_request_is_answered_with_the_mapped_address(host: str, port: int) -> None:
    request = binding_request()
    answer = stun.parse_message(binding_response(bytes(request), host, port))
    assert (answer.message_method, answer.message_class) == (stun.Method.BINDING,
                                                             stun.Class.RESPONSE)
    assert answer.transaction_id == request.transaction_id
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == (host, port)
    assert "FINGERPRINT" in answer.attributes  # parse_message checked it


def test_other_stun_messages_and_sip_are_not_answered() -> None:
    indication = stun.Message(message_method=stun.Method.BINDING,
                              message_class=stun.Class.INDICATION)
    assert is_stun(bytes(indication))
    assert binding_response(bytes(indication), "198.18.4.2", 1) is None
    sip = b"OPTIONS sip:a@example.com SIP/2.0\r\n\r\n"
    assert not is_stun(sip) and binding_response(sip, "198.18.4.2", 1) is None
    assert not is_stun(bytes(binding_request())[:-1])  # truncated


@pytest_twisted.ensureDeferred
async def test_the_gateway_answers_stun_on_its_sip_port(udp_port: int) -> None:
    def probe() -> tuple[stun.Message, tuple[str, int], bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            request = binding_request()
            sock.sendto(bytes(request), ("127.0.0.1", udp_port))
            answer = stun.parse_message(sock.recv(2048))
            assert answer.transaction_id == request.transaction_id
            sock.sendto(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:"
                        + str(sock.getsockname()[1]).encode() + b";branch=z9hG4bKstun1\r\n"
                        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n"
                        b"Call-ID: stun1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                        b"Content-Length: 0\r\n\r\n", ("127.0.0.1", udp_port))
            return answer, sock.getsockname(), sock.recv(65535)

    answer, local, sip = await threads.deferToThread(probe)
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == tuple(local)
    assert sip.startswith(b"SIP/2.0 200 ")
