"""The first gateway of an overlay crashes and comes back: it must find the overlay
again (from its node cache, saved while it ran), not start a second one alone."""

from __future__ import annotations

import time
from pathlib import Path

from lab_gateway import LabGateway
from netlab import Lab
from test_lab_sites import call_until_it_works, phone, two_gateways, two_sites


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
