"""What a gateway publishes as its route when it listens on every address, and the
warning when that route cannot be reached (issue: a loopback route made every remote
call fail with no word in the log)."""

from __future__ import annotations

from pathlib import Path

from lab_gateway import LabGateway
from netlab import Lab

A = "198.18.1.2"


def one_host(lab: Lab) -> str:
    host, router = lab.host("a"), lab.router("r")
    lab.cable(host, "eth0", f"{A}/24", router, "to-a", "198.18.1.1/24")
    lab.default_route(host, "198.18.1.1")
    return host


def test_a_wildcard_listener_publishes_its_interface_address(lab: Lab,
                                                             tmp_path: Path) -> None:
    gateway = LabGateway(lab, one_host(lab), A, "a.example", tmp_path, listen="0.0.0.0")
    gateway.start()
    status = gateway.overlay_status()
    assert status["route"] == f"sip:{A}:5060;lr"
    assert status["warnings"] == []
    assert "loopback" not in gateway.tail(200)


def test_a_loopback_route_is_warned_about_in_the_log_and_the_status(lab: Lab,
                                                                    tmp_path: Path) -> None:
    gateway = LabGateway(lab, one_host(lab), A, "a.example", tmp_path,
                         "overlay.route=sip:127.0.0.1:5060;lr")
    gateway.start()
    status = gateway.overlay_status()
    assert len(status["warnings"]) == 1 and "loopback" in status["warnings"][0]
    assert "[gateway.app.assembly#warn] the overlay route sip:127.0.0.1:5060;lr is a " \
           "loopback address" in gateway.tail(200)
