"""A site behind a NAT box: gateway C on a private LAN, its NAT forwarding the SIP and
overlay ports, ``sip.external_address`` naming the NAT's public address. It publishes
that address, advertises it to the other site and its LAN address to its own phones,
and calls work both ways with ACK and BYE from either end."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path

from lab_gateway import OVERLAY_PORT, SIP_PORT, LabGateway
from netlab import Lab
from test_lab_sites import call_until_it_works, phone

from gateway.app.admin import main as admin_main

A, B, NAT_PUBLIC, C = "198.18.1.2", "198.18.2.2", "198.18.4.2", "10.4.0.2"


def natted_site(lab: Lab, forwards: bool) -> tuple[str, str, str]:
    """Host a (public) and host c behind a NAT box, both behind router r; the NAT box
    forwards the SIP (UDP, TCP) and overlay ports to c when ``forwards``. (Host b, a
    second public site, is :func:`public_site`.)"""
    a, r, natbox, c = lab.host("a"), lab.router("r"), lab.host("nat"), lab.host("c")
    lab.cable(a, "eth0", f"{A}/24", r, "to-a", "198.18.1.1/24")
    lab.cable(r, "to-nat", "198.18.4.1/24", natbox, "up", f"{NAT_PUBLIC}/24")
    lab.cable(natbox, "lan", "10.4.0.1/24", c, "eth0", f"{C}/24")
    ports = (("udp", SIP_PORT, C), ("tcp", SIP_PORT, C), ("udp", OVERLAY_PORT, C))
    lab.nat(natbox, "up", ports if forwards else ())
    lab.default_route(a, "198.18.1.1")
    lab.default_route(natbox, "198.18.4.1")
    lab.default_route(c, "10.4.0.1")
    return a, c, r


def public_site(lab: Lab, router: str) -> str:
    """Host b on a public address behind ``router`` (that of :func:`natted_site`)."""
    b = lab.host("b")
    lab.cable(b, "eth0", f"{B}/24", router, "to-b", "198.18.2.1/24")
    lab.default_route(b, "198.18.2.1")
    return b


def test_a_site_behind_nat_with_port_forwarding_is_called_both_ways(
        lab: Lab, tmp_path: Path) -> None:
    site_a, site_c, _ = natted_site(lab, forwards=True)
    gateway_a = LabGateway(lab, site_a, A, "a.example", tmp_path)
    gateway_a.start()
    gateway_c = LabGateway(lab, site_c, C, "c.example", tmp_path,
                           f"sip.external_address={NAT_PUBLIC}", bootstrap=gateway_a.overlay)
    gateway_c.start()
    status = gateway_c.overlay_status()
    assert status["route"] == f"sip:{NAT_PUBLIC}:{SIP_PORT};lr"
    assert not status.get("warnings"), status
    alice = phone(lab, site_a, "alice", gateway_a)
    carol = phone(lab, site_c, "carol", gateway_c)
    try:
        deadline = time.monotonic() + 30
        into = call_until_it_works(alice, carol, deadline)
        into_far_bye = call_until_it_works(alice, carol, deadline, hang_up="callee")
        out = call_until_it_works(carol, alice, deadline)
        out_far_bye = call_until_it_works(carol, alice, deadline, hang_up="callee")
    finally:
        alice.close()
        carol.close()
    for seen in (into, into_far_bye, out, out_far_bye):
        assert seen["bye_ok"] is not None
    # Carol's phone sees C's LAN side on top, then the side alice's gateway talks to.
    assert into["incoming"].header_values("record-route")[:2] == [
        f"<sip:{C}:{SIP_PORT};lr>", f"<sip:{NAT_PUBLIC}:{SIP_PORT};lr>"]
    # Seen from alice's side, C's public entry comes first: the private one after it
    # is C's own (RFC 5658 double Record-Route) and never a next hop for A.
    for message in (into["ok"], out["incoming"]):
        routes = message.header_values("record-route")
        public, private = (routes.index(f"<sip:{NAT_PUBLIC}:{SIP_PORT};lr>"),
                           routes.index(f"<sip:{C}:{SIP_PORT};lr>"))
        assert abs(public - private) == 1
        assert routes.index(f"<sip:{A}:{SIP_PORT};lr>") in (public - 1, public + 1)


def wait_for_status(gateway: LabGateway, ready: Callable[[dict], bool],
                    timeout: float = 30.0) -> dict:
    """The gateway's overlay status once ``ready`` says so (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        status = gateway.overlay_status()
        if ready(status):
            return status
        assert time.monotonic() < deadline, f"status never ready: {status}"
        time.sleep(0.3)


def test_a_gateway_behind_nat_without_forwarding_joins_as_a_client_and_says_why(
        lab: Lab, tmp_path: Path) -> None:
    site_a, site_c, _ = natted_site(lab, forwards=False)
    gateway_a = LabGateway(lab, site_a, A, "a.example", tmp_path,
                           "overlay.health_interval=0.5", "overlay.relay=0")
    gateway_a.start()
    gateway_c = LabGateway(lab, site_c, C, "c.example", tmp_path,
                           bootstrap=gateway_a.overlay)
    gateway_c.start()
    status = wait_for_status(gateway_c, lambda s: s["state"] == "joined" and s["nat"])
    assert status["mode"] == "client" and status["published_route"] == ""
    assert status["nat"]["kind"] == "nat"
    assert status["nat"]["observed"].startswith(f"{NAT_PUBLIC}:")
    assert any("no peer offers a relay" in w and "cannot be called from other sites" in w
               for w in status["warnings"]), status["warnings"]
    # Nothing unreachable enters A's routing table.
    time.sleep(1.5)
    assert gateway_a.overlay_status()["contacts"] == 0


def test_a_gateway_behind_nat_without_forwarding_is_called_through_a_relay(
        lab: Lab, tmp_path: Path) -> None:
    """C (NAT, nothing forwarded) keeps a flow to relay A; bob on site B calls carol
    through A and is called back directly, BYE from either end; alice on A's own site
    too (the relay's own phones reach C straight over the flow)."""
    site_a, site_c, router = natted_site(lab, forwards=False)
    site_b = public_site(lab, router)
    gateway_a = LabGateway(lab, site_a, A, "a.example", tmp_path)
    gateway_a.start()
    gateway_b = LabGateway(lab, site_b, B, "b.example", tmp_path, bootstrap=gateway_a.overlay)
    gateway_b.start()
    gateway_c = LabGateway(lab, site_c, C, "c.example", tmp_path,
                           bootstrap=gateway_a.overlay)
    gateway_c.start()
    status = wait_for_status(gateway_c, lambda s: bool(s["published_route"]))
    relay_prefix = f"sip:{A}:{SIP_PORT};transport=tcp;lr;relay="
    assert status["mode"] == "client"
    assert status["published_route"].startswith(relay_prefix), status
    assert status["relay"]["relay"] == f"sip:{A}:{SIP_PORT};transport=tcp"
    assert not status["warnings"], status["warnings"]
    assert wait_for_status(gateway_a, lambda s: s["relaying_for"] == 1)["contacts"] == 1
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        admin_main(["--data-dir", str(gateway_c.data_dir), "overlay", "status"])
    assert f"through sip:{A}:{SIP_PORT};transport=tcp" in shown.getvalue(), shown.getvalue()
    alice = phone(lab, site_a, "alice", gateway_a)
    bob = phone(lab, site_b, "bob", gateway_b)
    carol = phone(lab, site_c, "carol", gateway_c)
    try:
        deadline = time.monotonic() + 30
        seen = [call_until_it_works(bob, carol, deadline),
                call_until_it_works(bob, carol, deadline, hang_up="callee"),
                call_until_it_works(carol, bob, deadline),
                call_until_it_works(carol, bob, deadline, hang_up="callee"),
                call_until_it_works(alice, carol, deadline, hang_up="callee"),
                call_until_it_works(carol, alice, deadline, hang_up="callee")]
    finally:
        for ua in (alice, bob, carol):
            ua.close()
    for one in seen:
        assert one["bye_ok"] is not None
    # Both ways the dialog's route set names the relay with C's token, so requests
    # from the far side reach C over the flow C keeps open.
    into, _, out, *_ = seen
    for message in (into["ok"], out["incoming"]):
        routes = message.header_values("record-route")
        assert any(r.startswith(f"<{relay_prefix}") for r in routes), routes
        assert any(r.startswith(f"<sip:{B}:{SIP_PORT};lr") for r in routes), routes
