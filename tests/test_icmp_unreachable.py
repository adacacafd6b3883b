"""A next hop that answers with ICMP port unreachable ends the client transaction at
once (RFC 3261 §18.4), with a warn-level log line, instead of Timer B's 32 s."""

from __future__ import annotations

import socket
import time

import pytest_twisted
from conftest import ports
from sip_ua import SDP, UA, ack_for
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from gateway.sip import icmp


def test_the_error_queue_reports_the_refused_destination() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert icmp.enable(sock)
        sock.sendto(b"anyone?", dead)
        reports: list[tuple[str, int, str]] = []
        deadline = time.monotonic() + 2
        while not reports and time.monotonic() < deadline:
            icmp.drain(sock, lambda host, port, why: reports.append((host, port, why)))
            time.sleep(0.01)
    assert reports and reports[0][:2] == dead
    assert "ECONNREFUSED" in reports[0][2]


@pytest_twisted.ensureDeferred
async def test_a_phone_whose_port_is_closed_fails_the_call_at_once(gateway) -> None:
    port = ports(gateway)["udp"]
    lines: list[str] = []

    def keep(event: dict) -> None:
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            lines.append(formatEvent(event))

    def run() -> tuple[int, float]:
        alice, bob = UA("alice", port), UA("bob", port)
        try:
            assert bob.register().status == 200
            bob.close()  # its port now answers with ICMP port unreachable
            started = time.monotonic()
            invite = alice.request("INVITE", bob.uri, body=SDP)
            alice.send(invite)
            final = alice.expect(503, 408, 480)
            alice.send(ack_for(invite, final))
            return final.status, time.monotonic() - started
        finally:
            alice.close()

    globalLogPublisher.addObserver(keep)
    try:
        status, took = await deferToThread(run)
    finally:
        globalLogPublisher.removeObserver(keep)
    assert status == 503
    assert took < 5, f"the final answer took {took:.1f} s"
    assert any("is unreachable (ICMP ECONNREFUSED" in line for line in lines), lines
