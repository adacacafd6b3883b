"""A gateway behind NAT with port forwarding (``sip.external_address``): it advertises its
external address to hosts beyond the NAT and its LAN address on the LAN, records both
sides in Record-Route when a request crosses, and takes requests naming either address
as its own. Sans-IO: the core with a fake clock, nothing is sent."""

from __future__ import annotations

import ipaddress

import pytest
from core_harness import CoreHarness, Resolve, only, sends, statuses

from gateway.app.config import ConfigError, load_config
from gateway.server.core import SipCore
from gateway.server.myself import LocalDomains, Myself
from gateway.server.registrar import Registrar, RegistrarPolicy
from gateway.server.routing import Resolution, Target
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientTransactionLayer
from gateway.sip.message import Request
from gateway.sip.transaction import TransactionLayer

LAN, EXTERNAL = "10.1.0.2", "198.51.100.7"
LAN_PHONE = Address("udp", "10.1.0.9", 5062)
FAR_GATEWAY = Address("udp", "198.51.100.40", 5060)
NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]


def myself(external: tuple[str, int | None] | None = (EXTERNAL, None)) -> Myself:
    domains = LocalDomains(["a.example"], [LAN, *([external[0]] if external else [])])
    return Myself(domains, [("udp", LAN, 5060), ("tcp", LAN, 5060)],
                  external=external, local_networks=NETWORKS)


def natted_harness() -> CoreHarness:
    harness = CoreHarness()
    me = myself()
    harness.core = SipCore(Registrar(RegistrarPolicy(60, 3600, 3600, 10, 20), me.is_local),
                           harness.bindings, TransactionLayer(0.5, 4.0, 5.0),
                           ClientTransactionLayer(0.5, 4.0, 5.0), me)
    return harness


def invite(to: str, source: Address, routes: str = "", to_tag: str = "",
           method: str = "INVITE") -> str:
    return (f"{method} {to} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {source.host}:{source.port};branch=z9hG4bK{method}1;rport\n"
            f"From: <sip:alice@a.example>;tag=a\nTo: <sip:bob@b.example>{to_tag}\n"
            f"Call-ID: call-1\nCSeq: 1 {method}\nMax-Forwards: 70\n{routes}"
            f"Contact: <sip:alice@{source.host}:{source.port}>\nContent-Length: 0\n\n")


def forwarded(harness: CoreHarness, text: str, source: Address, target: Target,
              ) -> tuple[Request, Address]:
    actions = harness.receive(text, source)
    (lookup,) = only(actions, Resolve)
    (message, to), = [(m, a) for m, a in sends(harness.take(harness.core.resolved(
        lookup.token, Resolution((target,)), harness.now))) if isinstance(m, Request)]
    return message, to


def test_each_side_gets_the_address_it_can_reach() -> None:
    me = myself()
    assert me.address("udp") == (LAN, 5060)
    assert me.address("udp", "10.1.0.9") == (LAN, 5060)
    assert me.address("udp", "127.0.0.1") == (LAN, 5060)
    assert me.address("udp", FAR_GATEWAY.host) == (EXTERNAL, 5060)
    assert me.external_address("tcp") == (EXTERNAL, 5060)
    forwarded_port = myself((EXTERNAL, 15060))
    assert forwarded_port.address("tcp", FAR_GATEWAY.host) == (EXTERNAL, 15060)
    # Requests naming the external address (and the forwarded port) are for us.
    assert forwarded_port.is_me(EXTERNAL, 15060) and forwarded_port.is_me(EXTERNAL, 5060)
    assert not forwarded_port.is_me(EXTERNAL, 5070)
    # Without an external address nothing changes.
    plain = myself(None)
    assert plain.address("udp", FAR_GATEWAY.host) == (LAN, 5060)
    assert plain.external_address("udp") == (LAN, 5060)
    assert not plain.is_me(EXTERNAL, 5060)


def test_a_call_leaving_the_lan_carries_the_external_address_and_both_record_routes(
        ) -> None:
    harness = natted_harness()
    request, to = forwarded(harness, invite("sip:bob@b.example", LAN_PHONE), LAN_PHONE,
                            Target("sip:bob@b.example", path=(
                                f"<sip:{FAR_GATEWAY.host}:5060;lr>",)))
    assert to == FAR_GATEWAY
    assert request.header("via").startswith(f"SIP/2.0/UDP {EXTERNAL}:5060;")
    assert request.header_values("record-route") == [
        f"<sip:{EXTERNAL}:5060;lr>", f"<sip:{LAN}:5060;lr>"]


def test_a_call_into_the_lan_records_the_lan_side_on_top() -> None:
    harness = natted_harness()
    request, to = forwarded(harness, invite("sip:alice@a.example", FAR_GATEWAY),
                            FAR_GATEWAY, Target("sip:alice@10.1.0.9:5062", flow=LAN_PHONE))
    assert to == LAN_PHONE
    assert request.header("via").startswith(f"SIP/2.0/UDP {LAN}:5060;")
    assert request.header_values("record-route") == [
        f"<sip:{LAN}:5060;lr>", f"<sip:{EXTERNAL}:5060;lr>"]


def test_a_bye_from_beyond_the_nat_follows_both_record_routes_to_the_phone() -> None:
    harness = natted_harness()
    routes = f"Route: <sip:{EXTERNAL}:5060;lr>\nRoute: <sip:{LAN}:5060;lr>\n"
    actions = harness.receive(invite("sip:alice@10.1.0.9:5062", FAR_GATEWAY, routes,
                                     ";tag=b", method="BYE"), FAR_GATEWAY)
    (request, to), = [(m, a) for m, a in sends(actions) if isinstance(m, Request)]
    assert request.method == "BYE" and to.host == "10.1.0.9" and to.port == 5062
    assert not request.header_values("route")
    assert request.header("via").startswith(f"SIP/2.0/UDP {LAN}:5060;")


def test_options_to_the_external_address_is_answered_by_the_gateway() -> None:
    harness = natted_harness()
    actions = harness.receive(
        f"OPTIONS sip:{EXTERNAL}:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {FAR_GATEWAY.host}:5060;branch=z9hG4bKo1\n"
        "From: <sip:probe@b.example>;tag=p\nTo: <sip:probe@a.example>\n"
        "Call-ID: o-1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n",
        FAR_GATEWAY)
    assert statuses(actions) == [200]


@pytest.mark.parametrize("value", ["gateway.example", "127.0.0.1", "0.0.0.0",
                                   "198.51.100.7:0", "[2001:db8::1"])
def test_an_external_address_that_cannot_work_is_refused_naming_the_key(
        tmp_path, value: str) -> None:
    path = tmp_path / "gateway.ini"
    path.write_text(f"[sip]\nexternal_address = {value}\n")
    with pytest.raises(ConfigError, match="external_address"):
        load_config(str(path))
