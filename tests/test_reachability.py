"""The advertised address of a wildcard listener, and the warning for a published route
that others cannot reach."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from gateway.app import reachability
from gateway.app.reachability import default_route_interface, host_address, route_problem

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask
eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000
"""


def test_the_default_route_interface_is_read_from_the_kernel_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(ROUTES)
    assert default_route_interface(table) == "eth0"
    table.write_text(ROUTES.splitlines()[0] + "\n" + ROUTES.splitlines()[1] + "\n")
    assert default_route_interface(table) is None
    assert default_route_interface(tmp_path / "missing") is None


def test_a_wildcard_listener_advertises_the_default_route_interface(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostbyname", lambda _name: "127.0.1.1")  # Debian
    monkeypatch.setattr(reachability, "default_route_interface", lambda: "eth1")
    monkeypatch.setattr(reachability, "interface_addresses",
                        lambda: {"eth0": ["198.18.7.7"], "eth1": ["198.18.8.8"]})
    assert host_address() == "198.18.8.8"


def test_without_a_default_route_the_name_counts_only_when_an_interface_has_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reachability, "default_route_interface", lambda: None)
    monkeypatch.setattr(reachability, "interface_addresses",
                        lambda: {"eth0": ["198.18.7.7"], "eth1": ["198.18.3.4"]})
    monkeypatch.setattr(socket, "gethostbyname", lambda _name: "198.18.3.4")
    assert host_address() == "198.18.3.4"
    monkeypatch.setattr(socket, "gethostbyname", lambda _name: "127.0.1.1")
    assert host_address() == "198.18.7.7"
    monkeypatch.setattr(reachability, "interface_addresses", lambda: {})
    assert host_address() == "127.0.0.1"


def test_this_machine_has_an_interface_address_that_is_not_loopback() -> None:
    if not reachability.interface_addresses():
        pytest.skip("this host has no interface besides loopback")
    assert not ipaddress.ip_address(host_address()).is_loopback


@pytest.mark.parametrize("route", ["sip:127.0.0.1:5060;lr", "sip:127.0.1.1;lr",
                                   "sip:[::1]:5060;lr", "sip:0.0.0.0:5060;lr"])
def test_a_loopback_route_is_reported(route: str) -> None:
    problem = route_problem(route, [])
    assert problem is not None and "loopback" in problem and "advertised_address" in problem


def test_a_private_route_is_reported_only_when_a_peer_is_public() -> None:
    assert route_problem("sip:10.1.2.3:5060;lr", ["10.9.9.9", "gw.example.com"]) is None
    problem = route_problem("sip:10.1.2.3:5060;lr", ["10.9.9.9", "8.8.8.8"])
    assert problem is not None and "8.8.8.8" in problem and "private" in problem


@pytest.mark.parametrize("route", ["sip:8.8.8.8:5060;lr", "sip:gw.example.com;lr",
                                   "not a uri"])
def test_reachable_or_unknowable_routes_are_not_reported(route: str) -> None:
    assert route_problem(route, ["8.8.4.4"]) is None
