"""Calls through the in-process gateway between Python UAs on real sockets."""

from __future__ import annotations

import time

import pytest_twisted
from conftest import ports
from sip_ua import SDP, UA, ack_for, call, in_dialog
from twisted.internet.threads import deferToThread


@pytest_twisted.ensureDeferred
async def test_a_call_between_two_udp_phones_goes_through_with_record_route(gateway) -> None:
    port = ports(gateway)["udp"]

    def run() -> dict[str, object]:
        alice, bob = UA("alice", port), UA("bob", port)
        try:
            assert bob.register().status == 200
            return call(alice, bob)
        finally:
            alice.close()
            bob.close()

    seen = await deferToThread(run)
    incoming = seen["incoming"]
    assert str(incoming.uri).startswith("sip:bob@127.0.0.1:")
    assert incoming.max_forwards == 69
    assert len(incoming.vias) == 2 and incoming.vias[0].branch.startswith("z9hG4bK")
    assert incoming.header_values("record-route") == [f"<sip:127.0.0.1:{port};lr>"]
    assert seen["ok"].to.tag == "callee" and len(seen["ok"].vias) == 1
    assert seen["bye"].header("route") is None


async def _run(work):  # noqa: ANN001, ANN202 - a blocking test body
    return await deferToThread(work)


@pytest_twisted.ensureDeferred
async def test_a_call_over_tcp_and_one_from_udp_to_tcp_with_double_record_route(
        gateway) -> None:
    udp, tcp = ports(gateway)["udp"], ports(gateway)["tcp"]

    def run() -> tuple[dict[str, object], dict[str, object]]:
        carol, dave, erin = UA("carol", tcp, "tcp"), UA("dave", tcp, "tcp"), UA("erin", udp)
        try:
            assert dave.register().status == 200
            over_tcp = call(carol, dave)
            mixed = call(erin, dave)
            return over_tcp, mixed
        finally:
            for ua in (carol, dave, erin):
                ua.close()

    over_tcp, mixed = await _run(run)
    # One entry over TCP; the callee's connection rides in it as a flow token (its
    # in-dialog requests then take that connection, RFC 5626 §5.3).
    (entry,) = over_tcp["incoming"].header_values("record-route")
    assert entry.startswith(f"<sip:127.0.0.1:{tcp};transport=tcp;lr;flow=")
    assert over_tcp["incoming"].vias[0].transport == "TCP"
    tcp_side, udp_side = mixed["incoming"].header_values("record-route")
    assert tcp_side.startswith(f"<sip:127.0.0.1:{tcp};transport=tcp;lr;flow=")
    assert udp_side == f"<sip:127.0.0.1:{udp};lr>"
    assert mixed["bye_ok"].status == 200


@pytest_twisted.ensureDeferred
async def test_unknown_user_404_max_forwards_0_483_and_a_loop_482(gateway) -> None:
    port = ports(gateway)["udp"]

    tcp = ports(gateway)["tcp"]

    def run() -> list[int]:
        frank = UA("frank", port)
        try:
            statuses = []
            invite = frank.request("INVITE", "sip:nobody@127.0.0.1")
            frank.send(invite)
            not_found = frank.expect(404)
            frank.send(ack_for(invite, not_found))
            statuses.append(not_found.status)
            frank.send(frank.request("MESSAGE", "sip:frank@127.0.0.1", max_forwards=0))
            statuses.append(frank.expect(483).status)
            # A binding (registered over a TCP connection that is then closed, so the
            # Contact counts) that points back at the gateway: the request spirals
            # once (new Request-URI), then comes back unchanged: a loop.
            loop = UA("loop", tcp, "tcp")
            loop.send(loop.request("REGISTER", "sip:127.0.0.1", to=loop.uri, extra=[
                ("Contact", f"<sip:loop@127.0.0.1:{port}>"), ("Expires", "600")]))
            assert loop.expect(200).status == 200
            loop.close()
            frank.send(frank.request("MESSAGE", "sip:loop@127.0.0.1"))
            statuses.append(frank.expect(482).status)
            return statuses
        finally:
            frank.close()

    assert await _run(run) == [404, 483, 482]


def _second_phone(first: UA, port: int, user: str) -> UA:
    """Another UA registering the same AoR as ``first`` (forking targets)."""
    other = UA(user, port)
    other.user = first.user
    return other


@pytest_twisted.ensureDeferred
async def test_forking_first_200_wins_and_the_other_branch_is_cancelled(gateway) -> None:
    port = ports(gateway)["udp"]

    def run() -> tuple[int, int, int]:
        gina, desk, mobile = UA("gina", port), UA("hank", port), None
        mobile = _second_phone(desk, port, "hank-mobile")
        try:
            assert desk.register().status == 200 and mobile.register().status == 200
            invite = gina.request("INVITE", desk.uri, body=SDP)
            gina.send(invite)
            at_desk = desk.expect_request("INVITE")
            at_mobile = mobile.expect_request("INVITE")
            desk.answer(at_desk, 180)
            mobile.answer(at_mobile, 180, to_tag="mobile")
            desk.answer(at_desk, 200)
            ok = gina.expect(200)
            cancel = mobile.expect_request("CANCEL")
            mobile.answer(cancel, 200, record_route=False)
            mobile.answer(at_mobile, 487, to_tag="mobile")
            mobile_ack = mobile.expect_request("ACK")
            gina.send(in_dialog(gina, "ACK", ok, invite, 1))
            desk.expect_request("ACK")
            return ok.status, mobile_ack.cseq.number, len(gateway.proxy)
        finally:
            for ua in (gina, desk, mobile):
                ua.close()

    assert await _run(run) == (200, 1, 0)


@pytest_twisted.ensureDeferred
async def test_a_603_ends_the_search_and_cancels_the_other_branch(gateway) -> None:
    port = ports(gateway)["udp"]

    def run() -> int:
        ivan, desk = UA("ivan", port), UA("judy", port)
        mobile = _second_phone(desk, port, "judy-mobile")
        try:
            assert desk.register().status == 200 and mobile.register().status == 200
            invite = ivan.request("INVITE", desk.uri)
            ivan.send(invite)
            at_desk = desk.expect_request("INVITE")
            at_mobile = mobile.expect_request("INVITE")
            mobile.answer(at_mobile, 180, to_tag="mobile")
            desk.answer(at_desk, 603)
            desk.expect_request("ACK")
            cancel = mobile.expect_request("CANCEL")
            mobile.answer(cancel, 200, record_route=False)
            mobile.answer(at_mobile, 487, to_tag="mobile")
            declined = ivan.expect(603)
            ivan.send(ack_for(invite, declined))
            return declined.status
        finally:
            for ua in (ivan, desk, mobile):
                ua.close()

    assert await _run(run) == 603


@pytest_twisted.ensureDeferred
async def test_caller_cancel_before_answer_gets_487(gateway) -> None:
    port = ports(gateway)["udp"]

    def run() -> tuple[int, int]:
        kate, leo = UA("kate", port), UA("leo", port)
        try:
            assert leo.register().status == 200
            invite = kate.request("INVITE", leo.uri)
            kate.send(invite)
            incoming = leo.expect_request("INVITE")
            leo.answer(incoming, 180)
            kate.expect(180)
            cancel = kate.request("CANCEL", leo.uri)
            cancel.headers = [h for h in invite.headers if h[0] != "cseq"] + [
                ("cseq", "CSeq", f"{invite.cseq.number} CANCEL")]
            kate.send(cancel)
            cancel_ok = kate.expect(200, method="CANCEL")
            downstream = leo.expect_request("CANCEL")
            leo.answer(downstream, 200, record_route=False)
            leo.answer(incoming, 487)
            leo.expect_request("ACK")
            terminated = kate.expect(487)
            kate.send(ack_for(invite, terminated))
            return cancel_ok.status, terminated.status
        finally:
            kate.close()
            leo.close()

    assert await _run(run) == (200, 487)


@pytest_twisted.ensureDeferred
async def test_timer_c_cancels_a_branch_that_rings_too_long_and_the_caller_gets_408(
        tmp_path) -> None:
    from conftest import start_gateway

    gateway = await start_gateway(tmp_path / "data", **{"proxy.timer_c": "1"})
    port = ports(gateway)["udp"]

    def run() -> tuple[int, float]:
        mike, nora = UA("mike", port), UA("nora", port)
        try:
            assert nora.register().status == 200
            invite = mike.request("INVITE", nora.uri)
            mike.send(invite)
            incoming = nora.expect_request("INVITE")
            nora.answer(incoming, 180)
            started = time.monotonic()
            cancel = nora.expect_request("CANCEL", timeout=5)
            waited = time.monotonic() - started
            nora.answer(cancel, 200, record_route=False)
            nora.answer(incoming, 487)
            timeout = mike.expect(408, timeout=5)
            mike.send(ack_for(invite, timeout))
            return timeout.status, waited
        finally:
            mike.close()
            nora.close()

    try:
        status, waited = await _run(run)
    finally:
        await gateway.stopService()
    assert status == 408 and 0.8 <= waited <= 3


@pytest_twisted.ensureDeferred
async def test_udp_retransmissions_cover_a_lost_request_and_are_absorbed_upstream(
        gateway) -> None:
    port = ports(gateway)["udp"]

    def run() -> tuple[str, str, float, int]:
        olga, pete = UA("olga", port), UA("pete", port)
        try:
            assert pete.register().status == 200
            invite = olga.request("INVITE", pete.uri)
            olga.send(invite)
            first = pete.expect_request("INVITE")  # "lost": not answered
            started = time.monotonic()
            olga.send(invite)  # the caller retransmits too: absorbed, 100 again
            again = pete.expect_request("INVITE", timeout=3)
            gap = time.monotonic() - started
            pete.answer(again, 200)
            ok = olga.expect(200)
            olga.send(in_dialog(olga, "ACK", ok, invite, 1))
            pete.expect_request("ACK")
            extra = 0
            try:
                while True:
                    message = pete.receive(0.3)
                    extra += isinstance(message, type(invite)) and message.method == "INVITE"
            except TimeoutError:
                pass
            return first.vias[0].branch, again.vias[0].branch, gap, extra
        finally:
            olga.close()
            pete.close()

    first_branch, second_branch, gap, extra = await _run(run)
    assert first_branch == second_branch  # a retransmission, not a new branch
    assert 0.3 <= gap <= 1.5 and extra == 0


@pytest_twisted.ensureDeferred
async def test_in_dialog_requests_to_a_registered_contact_follow_its_registration_flow(
        gateway) -> None:
    """A phone behind NAT registers and calls with a Contact nobody can reach (here an
    unused loopback address); the callee's BYE still reaches it, through the flow its
    REGISTER came from."""
    port = ports(gateway)["udp"]
    hidden = "sip:quinn@127.0.0.99:5999"

    def run() -> tuple[str, int]:
        quinn, rita = UA("quinn", port), UA("rita", port)
        try:
            quinn.send(quinn.request("REGISTER", "sip:127.0.0.1", to=quinn.uri, extra=[
                ("Contact", f"<{hidden}>"), ("Expires", "600")]))
            assert quinn.expect(200).status == 200
            assert rita.register().status == 200
            invite = quinn.request("INVITE", rita.uri, extra=[("Contact", f"<{hidden}>")])
            quinn.send(invite)
            incoming = rita.expect_request("INVITE")
            rita.answer(incoming, 200)
            ok = quinn.expect(200)
            quinn.send(in_dialog(quinn, "ACK", ok, invite, 1))
            rita.expect_request("ACK")
            bye = rita.request("BYE", hidden, to=str(invite.from_.uri),
                               call_id=invite.call_id, cseq=1, from_tag=ok.to.tag,
                               to_tag=invite.from_.tag, extra=[
                                   ("Route", value)
                                   for value in incoming.header_values("record-route")])
            rita.send(bye)
            received = quinn.expect_request("BYE")
            quinn.answer(received, 200, record_route=False)
            return str(received.uri), rita.expect(200, method="BYE").status
        finally:
            quinn.close()
            rita.close()

    uri, status = await _run(run)
    assert uri == hidden and status == 200
