"""The registrar's decisions (RFC 3261 §10.3) on their own: a REGISTER and the AoR's
current bindings in, an error response or the complete new binding set out."""

from __future__ import annotations

from gateway.registry.binding import Binding
from gateway.server.registrar import Registrar, RegistrarPolicy, behind_nat
from gateway.sip.address import Address
from gateway.sip.message import Request
from gateway.sip.parser import parse_message

NOW = 1_800_000_000.0
SOURCE = Address("tcp", "198.51.100.7", 40000, 9)
REGISTRAR = Registrar(RegistrarPolicy(min_expires=60, max_expires=3600, default_expires=1800,
                                      max_contacts=2, nat_min_expires=20),
                      lambda host: host == "example.com")


def register(*contacts: str, expires: str = "", call_id: str = "c1", cseq: int = 1,
             to: str = "sip:alice@example.com", extra: str = "",
             uri: str = "sip:example.com") -> Request:
    lines = [f"REGISTER {uri} SIP/2.0",
             "Via: SIP/2.0/TCP 198.51.100.7:40000;branch=z9hG4bKreg",
             f"From: <{to}>;tag=f", f"To: <{to}>", f"Call-ID: {call_id}",
             f"CSeq: {cseq} REGISTER", "Max-Forwards: 70"]
    lines += [f"Contact: {c}" for c in contacts]
    if expires:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def decide(request: Request, current: list[Binding] | None = None):
    return REGISTRAR.decide(request, SOURCE, current or [], NOW)


def test_a_contact_gets_the_default_expiry_and_remembers_its_flow() -> None:
    decision = decide(register("<sip:a@192.0.2.1>"))
    (binding,) = decision.bindings
    assert decision.response is None and decision.aor == "sip:alice@example.com"
    assert binding.expires == NOW + 1800
    assert (binding.received, binding.transport) == ("198.51.100.7:40000", "tcp")


def test_contact_expires_wins_over_the_header_and_is_capped() -> None:
    (a, b) = decide(register("<sip:a@192.0.2.1>;expires=100", "<sip:b@192.0.2.2>",
                             expires="99999")).bindings
    assert (a.expires, b.expires) == (NOW + 100, NOW + 3600)


def test_too_brief_gets_423_with_min_expires() -> None:
    response = decide(register("<sip:a@198.51.100.7:40000>", expires="30")).response
    assert response is not None and response.status == 423
    assert response.header("min-expires") == "60"


def test_a_phone_behind_nat_may_register_for_as_little_as_nat_min_expires() -> None:
    # Its Contact names a private address, not the one its REGISTER came from.
    (binding,) = decide(register("<sip:a@10.0.0.7:5060>", expires="30")).bindings
    assert binding.expires == NOW + 30
    response = decide(register("<sip:a@10.0.0.7:5060>", expires="10")).response
    assert response is not None and response.status == 423
    assert response.header("min-expires") == "20"


def test_nat_is_seen_in_the_via_too_and_udp_ports_count() -> None:
    udp = Address("udp", "198.51.100.7", 40000)
    same = register("<sip:a@198.51.100.7:40000>", expires="30")
    same.headers[0] = ("via", "Via", "SIP/2.0/UDP 198.51.100.7:40000;branch=z9hG4bKreg")
    assert behind_nat(same, udp) is False
    assert behind_nat(same, Address("udp", "198.51.100.7", 1024)) is True  # port mapped
    assert behind_nat(same, Address("tcp", "198.51.100.7", 1024)) is False  # connection
    assert behind_nat(same, Address("udp", "203.0.113.9", 40000)) is True


def test_expires_zero_removes_only_that_contact() -> None:
    current = decide(register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>")).bindings
    decision = decide(register("<sip:a@192.0.2.1>;expires=0", cseq=2), list(current))
    assert [b.contact for b in decision.bindings] == ["sip:b@192.0.2.2"]


def test_wildcard_needs_expires_zero_and_removes_everything() -> None:
    current = list(decide(register("<sip:a@192.0.2.1>")).bindings)
    assert decide(register("*", cseq=2), current).response.status == 400
    assert decide(register("*", expires="0", cseq=2), current).bindings == ()


def test_an_older_cseq_of_the_same_call_id_is_refused() -> None:
    current = list(decide(register("<sip:a@192.0.2.1>", cseq=5)).bindings)
    response = decide(register("<sip:a@192.0.2.1>", cseq=4), current).response
    assert response is not None and response.status == 400 and "CSeq" in response.reason


def test_more_contacts_than_allowed_get_403() -> None:
    response = decide(register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>",
                               "<sip:c@192.0.2.3>")).response
    assert response is not None and response.status == 403


def test_a_domain_not_served_here_gets_403_and_a_foreign_aor_404() -> None:
    elsewhere = decide(register("<sip:a@192.0.2.1>", uri="sip:other.example")).response
    assert elsewhere is not None and elsewhere.status == 403
    response = decide(register("<sip:a@192.0.2.1>", to="sip:alice@other.example")).response
    assert response is not None and response.status == 404


def test_path_needs_supported_path() -> None:
    without = decide(register("<sip:a@192.0.2.1>", extra="Path: <sip:edge.example.com;lr>"))
    assert without.response is not None and without.response.status == 420
    with_path = decide(register("<sip:a@192.0.2.1>", extra="Path: <sip:edge.example.com;lr>"
                                "\r\nSupported: path"))
    assert with_path.bindings[0].path == ("<sip:edge.example.com;lr>",)


def test_ok_response_lists_every_live_binding_with_its_remaining_time() -> None:
    request = register("<sip:a@192.0.2.1>;q=0.5", "<sip:b@192.0.2.2>", expires="600")
    bindings = decide(request).bindings
    ok = REGISTRAR.ok_response(request, bindings, NOW + 100)
    assert ok.status == 200
    assert ok.header_values("contact") == ["<sip:b@192.0.2.2>;expires=500",
                                           "<sip:a@192.0.2.1>;expires=500;q=0.5"]
    assert ok.header("date")


def test_an_outbound_registration_gets_require_outbound_and_the_flow_timer() -> None:
    registrar = Registrar(RegistrarPolicy(60, 3600, 1800, 2, 20, flow_timer=25),
                          lambda host: host == "example.com")
    contact = ('<sip:a@192.0.2.1>;reg-id=1;'
               '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"')
    request = register(contact, extra="Supported: outbound, path")
    decision = registrar.decide(request, SOURCE, [], NOW)
    assert decision.bindings is not None
    ok = registrar.ok_response(request, decision.bindings, NOW)
    assert ok.header("require") == "outbound" and ok.header("flow-timer") == "25"
    # Not outbound: no Supported: outbound, no reg-id, or an edge proxy before us
    # that did not say ob in its Path.
    for other in (register(contact), register("<sip:a@192.0.2.1>", extra="Supported: outbound"),
                  register(contact, extra="Supported: outbound, path\r\n"
                                          "Path: <sip:edge.example.com;lr>")):
        response = registrar.ok_response(other, decision.bindings, NOW)
        assert response.header("require") is None and response.header("flow-timer") is None
    with_ob = register(contact, extra="Supported: outbound, path\r\n"
                                      "Path: <sip:edge.example.com;lr;ob>")
    assert registrar.ok_response(with_ob, decision.bindings, NOW).header("flow-timer") == "25"


def test_the_same_phone_back_from_another_port_replaces_its_old_contact() -> None:
    (old,) = decide(register("<sip:a@198.51.100.7:40000;transport=tcp>")).bindings
    moved = Address("tcp", "198.51.100.7", 40002, 11)
    (new,) = REGISTRAR.decide(register("<sip:a@198.51.100.7:40002;transport=tcp>", cseq=2),
                              moved, [old], NOW).bindings
    assert new.contact.endswith(":40002;transport=tcp") and new.received.endswith(":40002")


def test_other_contacts_are_kept() -> None:
    (old,) = decide(register("<sip:a@198.51.100.7:40000>")).bindings
    # From the same flow: a second contact of the same phone, not a move.
    same_flow = decide(register("<sip:b@198.51.100.7:40000>", cseq=2), [old]).bindings
    assert len(same_flow) == 2
    # Another phone (another Call-ID) of the same user from the same host.
    other = REGISTRAR.decide(register("<sip:b@198.51.100.7:40002>", call_id="c2"),
                             Address("tcp", "198.51.100.7", 40002), [old], NOW).bindings
    assert len(other) == 2
    # Another host with the same Call-ID is not the same phone moving.
    elsewhere = REGISTRAR.decide(register("<sip:b@203.0.113.5:5060>", cseq=2),
                                 Address("tcp", "203.0.113.5", 5060), [old], NOW).bindings
    assert len(elsewhere) == 2


def test_an_outbound_flow_replaces_the_one_with_its_instance_and_reg_id() -> None:
    instance = '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"'
    first = decide(register(f"<sip:a@10.0.0.7:5060>;{instance};reg-id=1",
                            "<sip:b@10.0.0.7:5060>")).bindings
    again = REGISTRAR.decide(register(f"<sip:a@10.0.0.7:6000>;{instance};reg-id=1",
                                      call_id="c9"),
                             Address("udp", "203.0.113.9", 1024), list(first), NOW).bindings
    assert sorted(b.contact for b in again) == ["sip:a@10.0.0.7:6000", "sip:b@10.0.0.7:5060"]


def test_bindings_name_the_gateway_that_holds_their_flow() -> None:
    registrar = Registrar(REGISTRAR.policy, REGISTRAR.is_local, owner="gw-a")
    (binding,) = registrar.decide(register("<sip:a@192.0.2.1>"), SOURCE, [], NOW).bindings
    assert binding.owner == "gw-a"
