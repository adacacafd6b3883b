"""The first gateway of an overlay crashes and comes back: it must find the overlay
again (from its node cache, saved while it ran), not start a second one alone."""

from __future__ import annotations

import time
from pathlib import Path

from lab_gateway import LabGateway
from netlab import Lab
from test_lab_sites import call_until_it_works, drain, phone, two_gateways, two_sites


def wait_for_state(gateway: LabGateway, state: str, seconds: float) -> dict:
    """The overlay status of the running process once it says ``state`` (bounded)."""
    assert gateway.process is not None
    deadline = time.monotonic() + seconds
    while True:
        status = gateway.overlay_status()
        if status["state"] == state and status["pid"] != gateway.crashed_pid:
            return status
        assert time.monotonic() < deadline, (f"state {status['state']}, wanted {state}:\n"
                                             f"{gateway.tail()}")
        time.sleep(0.3)


def test_the_first_gateway_rejoins_after_a_crash(lab: Lab, tmp_path: Path) -> None:
    site_a, site_b, _ = two_sites(lab, tmp_path, 0)
    gateway_a, gateway_b = two_gateways(lab, site_a, site_b, tmp_path,
                                        "overlay.health_interval=2")
    wait_for_state(gateway_a, "joined", 20)  # B joined through A
    time.sleep(3)  # at least one health check since: the node cache is written

    gateway_a.kill()
    before = len(gateway_a.log.read_text(errors="replace"))
    gateway_a.start()
    status = wait_for_state(gateway_a, "joined", 20)
    assert status["contacts"] >= 1
    after_restart = gateway_a.log.read_text(errors="replace")[before:]
    assert "this node starts the overlay" not in after_restart
    assert "overlay joined: 1 of 1 bootstrap peer(s) answered" in after_restart

    alice = phone(lab, site_a, "alice", gateway_a)
    bob = phone(lab, site_b, "bob", gateway_b)
    try:
        deadline = time.monotonic() + 30
        call_until_it_works(alice, bob, deadline)
        call_until_it_works(bob, alice, deadline)
    finally:
        alice.close()
        bob.close()


def test_a_60_s_partition_is_noticed_in_seconds_and_heals_by_itself(
        lab: Lab, tmp_path: Path) -> None:
    """The router silently drops everything between the sites for 60 s (no ICMP, as a
    real outage): both gateways notice within a health interval, callers hear 480 with
    a Warning (not 404), and calls work again soon after the link is back. The
    measured times are printed (``pytest -s``) and reported in docs/benchmarks.md."""
    site_a, site_b, router = two_sites(lab, tmp_path, 0)
    gateway_a, gateway_b = two_gateways(lab, site_a, site_b, tmp_path)  # default intervals
    wait_for_state(gateway_a, "joined", 20)
    alice = phone(lab, site_a, "alice", gateway_a)
    bob = phone(lab, site_b, "bob", gateway_b)
    try:
        deadline = time.monotonic() + 30
        call_until_it_works(alice, bob, deadline)
        call_until_it_works(bob, alice, deadline)

        cut = time.monotonic()
        lab.exec(router, "nft", "add table inet partition")
        lab.exec(router, "nft", "add chain inet partition forward "
                 "{ type filter hook forward priority 0; policy accept; }")
        lab.exec(router, "nft", "add rule inet partition forward ip daddr 198.18.2.0/24 drop")
        lab.exec(router, "nft", "add rule inet partition forward ip saddr 198.18.2.0/24 drop")
        wait_for_state(gateway_a, "joining", 30)
        noticed_a = time.monotonic() - cut
        wait_for_state(gateway_b, "joining", 30)
        noticed_b = time.monotonic() - cut
        alice.send(alice.request("INVITE", bob.uri))
        refused = alice.expect(480)
        assert "overlay" in (refused.header("warning") or ""), refused.header("warning")
        drain(alice, bob)

        time.sleep(max(0.0, cut + 60 - time.monotonic()))
        lab.exec(router, "nft", "delete table inet partition")
        healed = time.monotonic()
        wait_for_state(gateway_a, "joined", 60)
        wait_for_state(gateway_b, "joined", 60)
        rejoined = time.monotonic() - healed
        deadline = time.monotonic() + 60
        call_until_it_works(alice, bob, deadline)
        call_until_it_works(bob, alice, deadline)
        calls_again = time.monotonic() - healed
    finally:
        alice.close()
        bob.close()
    print(f"partition noticed after {noticed_a:.1f} s (A), {noticed_b:.1f} s (B); "
          f"rejoined {rejoined:.1f} s and calls both ways {calls_again:.1f} s after it healed")
    assert noticed_a < 25 and noticed_b < 25
    assert calls_again < 30
