"""The registrar as a phone sees it: REGISTER/OPTIONS over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import pytest_twisted
from sip_client import UdpClient, register, request
from twisted.internet.threads import deferToThread

from gateway.app.service import GatewayService


def contacts_of(response) -> dict[str, dict[str, str]]:
    """Contact URI → its parameters, from a REGISTER response."""
    result = {}
    for contact in response.contacts:
        assert contact.address is not None
        result[str(contact.address.uri)] = {k: v or "" for k, v in contact.address.params}
    return result


async def exchange(port: int, *messages: bytes):
    """Send each message from one UDP client and return the final responses."""
    def run():
        client = UdpClient(port)
        try:
            return [client.ask(message) for message in messages]
        finally:
            client.close()
    return await deferToThread(run)


@pytest_twisted.ensureDeferred
async def test_options_to_gateway_gets_200_with_allow_accept_supported(udp_port: int) -> None:
    (response,) = await exchange(udp_port, request("OPTIONS", "sip:127.0.0.1",
                                                   local_port=1))
    assert response.status == 200
    assert "REGISTER" in response.header("Allow")
    assert response.header("Accept") == "application/sdp"
    assert "path" in response.header("Supported")
    assert response.to.tag


@pytest_twisted.ensureDeferred
async def test_register_then_query_lists_binding_with_remaining_expiry(
        udp_port: int, gateway: GatewayService) -> None:
    ok, query = await exchange(
        udp_port, register("alice", local_port=5999, expires=300),
        register("alice", local_port=5999, contact="", expires=None))
    assert ok.status == 200 and query.status == 200
    listed = contacts_of(query)
    assert list(listed) == ["sip:alice@127.0.0.1:5999"]
    assert 295 <= int(listed["sip:alice@127.0.0.1:5999"]["expires"]) <= 300
    assert [b.contact for b in gateway.location.lookup("sip:alice@127.0.0.1")] == [
        "sip:alice@127.0.0.1:5999"]


@pytest_twisted.ensureDeferred
async def test_register_with_expires_zero_removes_binding(udp_port: int,
                                                          gateway: GatewayService) -> None:
    ok, gone = await exchange(udp_port, register("bob", local_port=6000),
                              register("bob", local_port=6000, expires=0))
    assert ok.status == 200 and contacts_of(ok)
    assert gone.status == 200 and gone.contacts == []
    assert gateway.location.lookup("sip:bob@127.0.0.1") == []


@pytest_twisted.ensureDeferred
async def test_expires_below_minimum_gets_423_with_min_expires(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register("carol", local_port=1, expires=10))
    assert response.status == 423
    # Its Via names port 1, not the port it came from: NAT, so nat_min_expires applies.
    assert response.header("Min-Expires") == "20"
    (response,) = await exchange(udp_port, register("carol", local_port=1, expires=30))
    assert response.status == 200


@pytest_twisted.ensureDeferred
async def test_expires_above_maximum_is_clamped(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register("dave", local_port=1, expires=999999))
    assert response.status == 200
    (params,) = contacts_of(response).values()
    assert 3590 <= int(params["expires"]) <= 3600


@pytest_twisted.ensureDeferred
async def test_contact_expires_parameter_overrides_expires_header(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register(
        "erin", local_port=1, contact="<sip:erin@127.0.0.1:7000>;expires=120", expires=3600))
    (params,) = contacts_of(response).values()
    assert 115 <= int(params["expires"]) <= 120


@pytest_twisted.ensureDeferred
async def test_several_contacts_with_q_values_are_listed_best_first(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register(
        "frank", local_port=1,
        contact="<sip:frank@127.0.0.1:7001>;q=0.1, <sip:frank@127.0.0.1:7002>;q=0.9"))
    assert response.status == 200
    listed = contacts_of(response)
    assert list(listed) == ["sip:frank@127.0.0.1:7002", "sip:frank@127.0.0.1:7001"]
    assert listed["sip:frank@127.0.0.1:7001"]["q"] == "0.1"


@pytest_twisted.ensureDeferred
async def test_wildcard_with_expires_zero_removes_every_binding(
        udp_port: int, gateway: GatewayService) -> None:
    first, second, cleared = await exchange(
        udp_port,
        register("gina", local_port=1, contact="<sip:gina@127.0.0.1:7001>"),
        register("gina", local_port=1, contact="<sip:gina@127.0.0.1:7002>"),
        register("gina", local_port=1, contact="*", expires=0))
    assert len(contacts_of(second)) == 2
    assert cleared.status == 200 and cleared.contacts == []
    assert gateway.location.lookup("sip:gina@127.0.0.1") == []


@pytest_twisted.ensureDeferred
async def test_wildcard_without_expires_zero_is_rejected(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register("hank", local_port=1, contact="*",
                                                    expires=60))
    assert response.status == 400


@pytest_twisted.ensureDeferred
async def test_same_call_id_with_older_cseq_is_rejected(udp_port: int) -> None:
    first, stale = await exchange(
        udp_port, register("ivan", local_port=1, call_id="same", cseq=5),
        register("ivan", local_port=1, call_id="same", cseq=4, expires=0))
    assert first.status == 200
    assert stale.status == 400 and "CSeq" in stale.reason


@pytest_twisted.ensureDeferred
async def test_refresh_from_new_call_id_replaces_the_binding(
        udp_port: int, gateway: GatewayService) -> None:
    await exchange(udp_port, register("judy", local_port=1, call_id="a", expires=100),
                   register("judy", local_port=1, call_id="b", cseq=1, expires=200))
    (binding,) = gateway.location.lookup("sip:judy@127.0.0.1")
    assert binding.call_id == "b"
    assert 195 <= binding.expires - __import__("time").time() <= 200


@pytest_twisted.ensureDeferred
async def test_more_contacts_than_allowed_get_403(udp_port: int) -> None:
    contacts = ", ".join(f"<sip:k@127.0.0.1:{7000 + i}>" for i in range(11))
    (response,) = await exchange(udp_port, register("kate", local_port=1, contact=contacts))
    assert response.status == 403


@pytest_twisted.ensureDeferred
async def test_register_for_foreign_domain_is_forbidden(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register("leo", local_port=1,
                                                    domain="example.com"))
    assert response.status == 403


@pytest_twisted.ensureDeferred
async def test_unsupported_required_extension_gets_420(udp_port: int) -> None:
    (response,) = await exchange(udp_port, register("mia", local_port=1,
                                                    extra="Require: foo, path\r\n"))
    assert response.status == 420
    assert response.header("Unsupported") == "foo"


@pytest_twisted.ensureDeferred
async def test_path_is_stored_and_echoed_when_supported(udp_port: int,
                                                        gateway: GatewayService) -> None:
    (response,) = await exchange(udp_port, register(
        "nick", local_port=1, extra="Supported: path\r\nPath: <sip:edge.example.com;lr>\r\n"))
    assert response.status == 200
    assert response.header("Path") == "<sip:edge.example.com;lr>"
    (binding,) = gateway.location.lookup("sip:nick@127.0.0.1")
    assert binding.path == ("<sip:edge.example.com;lr>",)


@pytest_twisted.ensureDeferred
async def test_invite_to_the_gateway_gets_405_unknown_method_501_unknown_user_404(
        udp_port: int) -> None:
    invite, unknown, nobody = await exchange(
        udp_port, request("INVITE", "sip:127.0.0.1", local_port=1),
        request("FOOBAR", "sip:127.0.0.1", local_port=1),
        request("INVITE", "sip:nobody@127.0.0.1", local_port=1))
    assert invite.status == 405 and "REGISTER" in invite.header("Allow")
    assert nobody.status == 404
    assert unknown.status == 501


@pytest_twisted.ensureDeferred
async def test_cseq_method_mismatch_gets_400(udp_port: int) -> None:
    (response,) = await exchange(udp_port, request("OPTIONS", "sip:127.0.0.1", local_port=1,
                                                   cseq_method="INVITE"))
    assert response.status == 400 and "CSeq" in response.reason


@pytest_twisted.ensureDeferred
async def test_response_goes_to_packet_source_not_to_via_host(udp_port: int) -> None:
    # The Via names a documentation address; the answer must still reach our socket,
    # with received= telling the UA where it was seen from.
    (response,) = await exchange(udp_port, register("olga", local_port=5062,
                                                    via_host="192.0.2.10", rport=False))
    assert response.status == 200
    assert response.vias[0].received == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_rport_is_filled_with_the_source_port(udp_port: int) -> None:
    def run():
        client = UdpClient(udp_port)
        try:
            response = client.ask(request("OPTIONS", "sip:127.0.0.1", local_port=9))
            return response, client.port
        finally:
            client.close()
    response, port = await deferToThread(run)
    assert response.vias[0].rport == str(port)


@pytest_twisted.ensureDeferred
async def test_retransmitted_register_gets_the_same_response_and_one_write(
        udp_port: int, gateway: GatewayService) -> None:
    writes = []
    store = gateway.location._runner.store  # the in-process fixture runs a thread worker
    original = store.write_snapshots

    def counting(snapshots, now):
        writes.append(dict(snapshots))
        return original(snapshots, now)

    store.write_snapshots = counting
    message = register("pete", local_port=1, branch_id="z9hG4bK-fixed-branch")

    def run():
        client = UdpClient(udp_port)
        try:
            first = client.ask(message)
            second = client.ask(message)
            return first, second
        finally:
            client.close()
    first, second = await deferToThread(run)
    assert first.serialize() == second.serialize()
    assert sum("sip:pete@127.0.0.1" in batch for batch in writes) == 1


@pytest_twisted.ensureDeferred
async def test_malformed_datagrams_do_not_stop_the_gateway(udp_port: int) -> None:
    junk = [b"\x00\xff" * 50, b"REGISTER\r\n\r\n", b"SIP/2.0 200\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKj\r\n"
            b"Content-Length: 99\r\n\r\nshort"]

    def run():
        client = UdpClient(udp_port, timeout=0.3)
        answers = []
        try:
            for data in junk:
                client.send(data)
                try:
                    answers.append(client.receive().status)
                except TimeoutError:
                    answers.append(None)
            client.sock.settimeout(3)
            answers.append(client.ask(request("OPTIONS", "sip:127.0.0.1", local_port=1)).status)
            return answers
        finally:
            client.close()
    answers = await deferToThread(run)
    assert answers[:3] == [None, None, None]  # nothing to answer to
    assert answers[3] == 400  # Via present: a 400 naming the Content-Length problem
    assert answers[-1] == 200


@pytest_twisted.ensureDeferred
async def test_overlong_contact_is_rejected_with_400(udp_port: int) -> None:
    contact = f"<sip:{'x' * 1100}@127.0.0.1>"
    (response,) = await exchange(udp_port, register("long", local_port=1, contact=contact))
    assert response.status == 400 and "too long" in response.reason
