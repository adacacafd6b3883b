"""A phone behind a NAT box that drops unsolicited traffic registers at a public
gateway with the short expiry NATed phones use, learns its public address with a STUN
keep-alive on the SIP port, and is called through its registration flow, ACK and BYE
included."""

from __future__ import annotations

import socket
from pathlib import Path

from aioice import stun
from lab_gateway import LabGateway
from netlab import Lab
from sip_ua import UA, call

A, NAT_PUBLIC, PHONE = "198.18.1.2", "198.18.3.2", "10.3.0.2"


def test_a_phone_behind_nat_registers_briefly_answers_stun_and_gets_called(
        lab: Lab, tmp_path: Path) -> None:
    site, router = lab.host("a"), lab.router("r")
    natbox, home = lab.host("nat"), lab.host("home")
    lab.cable(site, "eth0", f"{A}/24", router, "to-a", "198.18.1.1/24")
    lab.cable(router, "to-nat", "198.18.3.1/24", natbox, "up", f"{NAT_PUBLIC}/24")
    lab.cable(natbox, "lan", "10.3.0.1/24", home, "eth0", f"{PHONE}/24")
    lab.nat(natbox, "up")
    lab.default_route(site, "198.18.1.1")
    lab.default_route(natbox, "198.18.3.1")
    lab.default_route(home, "10.3.0.1")
    gateway = LabGateway(lab, site, A, "a.example", tmp_path)
    gateway.start()

    with lab.inside(home):
        bob = UA("bob", 5060, local_host=PHONE, domain="a.example", gateway_host=A,
                 timeout=10)
    with lab.inside(site):
        alice = UA("alice", 5060, local_host=A, domain="a.example", gateway_host=A,
                   timeout=10)
    try:
        # The Contact names the private address: the gateway sees NAT and takes 30 s.
        assert bob.register(expires=30).status == 200
        assert bob.register(expires=10).status == 423  # still below nat_min_expires
        request = stun.Message(message_method=stun.Method.BINDING,
                               message_class=stun.Class.REQUEST)
        request.add_fingerprint()
        bob.sock.sendto(bytes(request), (A, 5060))
        answer = stun.parse_message(bob.sock.recv(2048))
        host, mapped = answer.attributes["XOR-MAPPED-ADDRESS"]
        assert host == NAT_PUBLIC  # what the world sees of the phone
        # The NAT box lets nothing else in, not even to the mapped port: the call can
        # only come through the binding the phone's own REGISTER opened.
        with lab.inside(site):
            stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with stranger:
            stranger.bind((A, 0))
            stranger.sendto(b"hello?", (NAT_PUBLIC, mapped))
            bob.sock.settimeout(1)
            try:
                leaked = bob.sock.recv(2048)
            except TimeoutError:
                leaked = b""
            bob.sock.settimeout(10)
        assert leaked == b""
        seen = call(alice, bob)
        assert seen["bye_ok"] is not None
    finally:
        alice.close()
        bob.close()
