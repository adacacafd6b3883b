"""Two sites on different hosts of the network lab, joined by a router whose link to
site B adds delay: gateway A (a.example, the first of the overlay) and gateway B
(b.example, joined through A), a phone on each host. Calls go both ways through the
overlay, ACK and BYE included, at 0, 300 and 600 ms round-trip time between the sites.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_gateway import LabGateway, lab_env
from netlab import Lab
from sip_ua import UA, call

from gateway.sip.message import Request, Response

A, B = "198.18.1.2", "198.18.2.2"


def two_sites(lab: Lab, workdir: Path, one_way_ms: float) -> tuple[str, str, str]:
    """Hosts a and b behind router r (returned last); b's cable delayed ``one_way_ms``
    each way."""
    a, b, r = lab.host("a"), lab.host("b"), lab.router("r")
    lab.cable(a, "eth0", f"{A}/24", r, "to-a", "198.18.1.1/24")
    if one_way_ms:
        lab.delayed_cable(r, "to-b", "198.18.2.1/24", b, "eth0", f"{B}/24", one_way_ms,
                          workdir)
    else:
        lab.cable(r, "to-b", "198.18.2.1/24", b, "eth0", f"{B}/24")
    lab.default_route(a, "198.18.1.1")
    lab.default_route(b, "198.18.2.1")
    return a, b, r


def two_gateways(lab: Lab, site_a: str, site_b: str, workdir: Path,
                 *settings: str) -> tuple[LabGateway, LabGateway]:
    """Gateway A (a.example, the first of the overlay) and B (b.example, joined through
    A), started with ``settings`` (``section.key=value``) both."""
    gateway_a = LabGateway(lab, site_a, A, "a.example", workdir, *settings)
    gateway_a.start()
    gateway_b = LabGateway(lab, site_b, B, "b.example", workdir, *settings,
                           bootstrap=gateway_a.overlay)
    gateway_b.start()
    return gateway_a, gateway_b


def phone(lab: Lab, ns: str, user: str, gateway: LabGateway) -> UA:
    """A registered UDP phone on host ``ns``."""
    with lab.inside(ns):
        ua = UA(user, 5060, local_host=gateway.address, domain=gateway.domain,
                gateway_host=gateway.address, timeout=10)
    assert ua.register(expires=600).status == 200
    return ua


def ack_of(response: Response) -> Request:
    """The ACK of a non-2xx final response to an INVITE, from the response alone (same
    Via branch, so the gateway's INVITE server transaction absorbs it)."""
    headers = [(name, name.title(), response.header(name) or "")
               for name in ("via", "from", "to", "call-id")]
    headers += [("cseq", "CSeq", f"{response.cseq.number} ACK"),
                ("max-forwards", "Max-Forwards", "70"),
                ("content-length", "Content-Length", "0")]
    return Request("ACK", response.to.uri, headers)


def drain(*uas: UA) -> list[str]:
    """Read what is left on the phones' sockets (first lines), for a retry; a failed
    INVITE is ACKed, so the gateway stops retransmitting its final response."""
    left = []
    for ua in uas:
        while True:
            try:
                message = ua.receive(0.5)
            except TimeoutError:
                break
            if (isinstance(message, Response) and message.status >= 300
                    and message.cseq.method == "INVITE"):
                ua.send(ack_of(message))
            what = message.status if isinstance(message, Response) else message.method
            left.append(f"{ua.user}: {what}")
    return left


def call_until_it_works(caller: UA, callee: UA, deadline: float,
                        hang_up: str = "caller") -> dict[str, object]:
    """Call until the callee's record is found (the publication may still be on its
    way); the last failure, with what the phones saw, once ``deadline`` passes."""
    while True:
        started = time.monotonic()
        try:
            seen = call(caller, callee, hang_up)
        except (AssertionError, TimeoutError) as failure:
            left = drain(caller, callee)
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure}; phones saw {left}") from failure
            time.sleep(1)
            continue
        seen["setup"] = time.monotonic() - started
        return seen


@pytest.mark.parametrize("rtt_ms", [0, 300, 600])
def test_calls_between_two_sites_both_ways(lab: Lab, tmp_path: Path, rtt_ms: int) -> None:
    site_a, site_b, _ = two_sites(lab, tmp_path, rtt_ms / 2)
    gateway_a, gateway_b = two_gateways(lab, site_a, site_b, tmp_path)
    alice = phone(lab, site_a, "alice", gateway_a)
    bob = phone(lab, site_b, "bob", gateway_b)
    try:
        deadline = time.monotonic() + 30
        forward = call_until_it_works(alice, bob, deadline)
        backward = call_until_it_works(bob, alice, deadline)
    finally:
        alice.close()
        bob.close()
    for seen in (forward, backward):
        assert seen["bye_ok"] is not None
    # Both gateways record-route: the in-dialog requests crossed the sites through them.
    assert f"{A}:5060" in str(forward["incoming"].header_values("record-route"))
    assert f"{B}:5060" in str(forward["incoming"].header_values("record-route"))


@pytest.mark.parametrize("rtt_ms", [300, 600])
def test_a_new_node_finds_records_across_a_slow_link(lab: Lab, tmp_path: Path,
                                                     rtt_ms: int) -> None:
    """``p2psip-peer lookup`` from a host whose only link is slow: it knows nobody but
    the seed, so every query of its lookup crosses that link."""
    site_a, site_b, router = two_sites(lab, tmp_path, 0)
    peer_host = lab.host("p")
    lab.delayed_cable(router, "to-p", "198.18.5.1/24", peer_host, "eth0", "198.18.5.2/24",
                      rtt_ms / 2, tmp_path)
    lab.default_route(peer_host, "198.18.5.1")
    gateway_a, gateway_b = two_gateways(lab, site_a, site_b, tmp_path)
    alice = phone(lab, site_a, "alice", gateway_a)
    alice.close()
    found, took = 0, []
    for _attempt in range(5):
        started = time.monotonic()
        done = subprocess.run(
            ["ip", "netns", "exec", peer_host, sys.executable, "-m", "gateway.app.peer",
             "--host", "198.18.5.2", "--state-dir", str(tmp_path / "peer"),
             "--bootstrap", gateway_b.overlay, "--first-pin", "replicas", "lookup",
             "sip:alice@a.example"],
            capture_output=True, text=True, env=lab_env(), timeout=60, cwd=tmp_path)
        took.append(time.monotonic() - started)
        found += done.returncode == 0
    assert found == 5, (f"found {found}/5 at {rtt_ms} ms RTT (seconds per run: "
                        f"{[round(t, 1) for t in took]}); last: {done.stderr}")
