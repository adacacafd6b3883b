"""The overlay inside the gateway: two in-process gateways (a.example and b.example)
on one loopback overlay find each other's users through the DHT and proxy calls."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from conftest import ports, sleep, start_gateway
from sip_ua import UA, call
from twisted.internet.threads import deferToThread

from gateway.app.admin import main as admin_main
from gateway.app.service import GatewayService
from gateway.sip.message import Request, Response


async def _pair(tmp_path: Path) -> tuple[GatewayService, GatewayService]:
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example",
                                               "overlay.cache": "0"})
    assert a.overlay is not None and a.overlay.address is not None
    host, port = a.overlay.address
    b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example",
                                               "overlay.cache": "0",
                                               "overlay.bootstrap": f"{host}:{port}"})
    assert b.overlay is not None
    await _until(lambda: b.overlay.joined and a.overlay.node.contact_count() > 0)
    return a, b


async def _until(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await sleep(0.05)




@pytest_twisted.async_yield_fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[GatewayService, GatewayService]]:
    """Gateways A and B on one overlay."""
    a, b = await _pair(tmp_path)
    yield a, b
    await b.stopService()
    await a.stopService()


@pytest_twisted.ensureDeferred
async def test_registration_is_mirrored_and_found_from_the_other_gateway(pair) -> None:
    a, b = pair
    port_b = ports(b)["udp"]

    def register() -> Response:
        bob = UA("bob", port_b, domain="b.example")
        try:
            return bob.register()
        finally:
            bob.close()

    assert (await deferToThread(register)).status == 200
    (record,) = await _found(a, "sip:bob@b.example")
    assert record.route == f"sip:127.0.0.1:{port_b};lr"
    assert [c.uri for c in record.contacts][0].startswith("sip:bob@127.0.0.1:")
    assert record.signer == b.overlay.signer.signer_id


@pytest_twisted.ensureDeferred
async def test_a_phone_on_a_calls_a_phone_on_b_through_the_overlay(pair) -> None:
    a, b = pair
    port_a, port_b = ports(a)["udp"], ports(b)["udp"]

    alice = UA("alice", port_a, domain="a.example")
    bob = UA("bob", port_b, domain="b.example")

    try:
        assert (await deferToThread(alice.register)).status == 200
        assert (await deferToThread(bob.register)).status == 200
        await _found(a, "sip:bob@b.example")
        seen = await deferToThread(call, alice, bob)
    finally:
        alice.close()
        bob.close()
    incoming, ok = seen["incoming"], seen["ok"]
    assert isinstance(incoming, Request) and isinstance(ok, Response)
    assert str(incoming.uri).startswith("sip:bob@127.0.0.1:")
    # Both gateways record-routed: the dialog goes through A and B.
    assert len(incoming.header_values("record-route")) == 2
    assert len(incoming.vias) == 3
    assert ok.status == 200


@pytest_twisted.ensureDeferred
async def test_unregister_makes_the_record_vanish_from_lookups(pair) -> None:
    a, b = pair
    port_b = ports(b)["udp"]
    bob = UA("bob", port_b, domain="b.example")
    try:
        assert (await deferToThread(bob.register)).status == 200
        assert await _found(a, "sip:bob@b.example")
        assert (await deferToThread(bob.register, 0)).status == 200
        deadline = time.monotonic() + 5
        while await a.overlay.lookup("sip:bob@b.example"):
            assert time.monotonic() < deadline, "the record outlived the unregister"
            await sleep(0.1)
    finally:
        bob.close()


async def _found(gateway: GatewayService, aor: str, timeout: float = 5.0) -> list:
    """The records ``gateway`` finds for ``aor``, once there are some."""
    deadline = time.monotonic() + timeout
    while True:
        records = await gateway.overlay.lookup(aor)
        if records:
            return records
        assert time.monotonic() < deadline, f"{aor} never appeared in the DHT"
        await sleep(0.1)




@pytest_twisted.ensureDeferred
async def test_an_expired_registration_vanishes_from_lookups(tmp_path) -> None:
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example",
                                               "overlay.cache": "0"})
    host, port = a.overlay.address
    b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example",
                                               "overlay.cache": "0",
                                               "registrar.min_expires": "1",
                                               "overlay.bootstrap": f"{host}:{port}"})
    bob = UA("bob", ports(b)["udp"], domain="b.example")
    try:
        await _until(lambda: b.overlay.joined and a.overlay.node.contact_count() > 0)
        assert (await deferToThread(bob.register, 2)).status == 200
        await _found(a, "sip:bob@b.example")
        published = b.overlay.mirror.published
        started = time.monotonic()
        while await a.overlay.lookup("sip:bob@b.example"):
            assert time.monotonic() - started < 6, "an expired contact is still found"
            await sleep(0.2)
        # The record ran out with its contact: the sweep that drops the binding from
        # the registry publishes nothing (no tombstone per expiry).
        await _until(lambda: b.location.binding_count() == 0)
        await sleep(0.5)
        assert b.overlay.mirror.published == published and b.overlay.mirror.backlog == 0
    finally:
        bob.close()
        await b.stopService()
        await a.stopService()


@pytest_twisted.ensureDeferred
async def test_node_id_and_contacts_survive_a_restart(tmp_path) -> None:
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example"})
    host, port = a.overlay.address
    b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example",
                                               "overlay.bootstrap": f"{host}:{port}"})
    try:
        await _until(lambda: b.overlay.joined and b.overlay.node.contact_count() > 0)
        node_id = b.overlay.node.node.id
        await b.stopService()
        # No bootstrap configured this time: the node cache in the registry is enough.
        b = await start_gateway(tmp_path / "b", **{"gateway.domains": "b.example"})
        assert b.overlay.node.node.id == node_id
        await _until(lambda: b.overlay.joined and b.overlay.node.contact_count() > 0)
        assert (host, port) in b.overlay.node.neighbors()
    finally:
        await b.stopService()
        await a.stopService()


@pytest_twisted.ensureDeferred
async def test_forged_records_in_the_dht_are_rejected_by_the_reader(pair, tmp_path) -> None:
    from tls_certs import TestCA

    from gateway.overlay.record import Contact
    from gateway.overlay.service import run_async

    a, b = pair
    bob = UA("bob", ports(b)["udp"], domain="b.example")
    try:
        assert (await deferToThread(bob.register)).status == 200
        (genuine,) = await _found(a, "sip:bob@b.example")  # pins B's certificate
        rogue_ca = TestCA(tmp_path / "rogue", "rogue CA")
        rogue = _signer(rogue_ca.issue("b-forged", dns=["b.example"]))
        stranger = _signer(rogue_ca.issue("c", dns=["c.example"]))
        contacts = [Contact("sip:bob@127.0.0.66:5060", 1.0, time.time() + 600)]
        taken = {}
        for name, signer in (("rogue", rogue), ("stranger", stranger)):
            record = signer.sign_record("sip:bob@b.example", contacts,
                                        "sip:127.0.0.66:5060;lr", 600)
            taken[name] = await run_async(a.overlay.node.publish("sip:bob@b.example",
                                                                 [record]))
        # A certificate naming another domain does not travel: no node stores it. One
        # naming the domain does; the reader refuses it (B's certificate is pinned).
        assert taken == {"rogue": 1, "stranger": 0}
        assert (await a.overlay.lookup("sip:bob@b.example")) == [genuine]
        assert a.overlay.rejected >= 1
        # An AoR with forged records only: the caller hears the overlay is at fault
        # (480 with a Warning), not 404 "no such user".
        ghost = rogue.sign_record("sip:ghost@b.example", contacts, "sip:127.0.0.66:5060;lr",
                                  600)
        await run_async(a.overlay.node.publish("sip:ghost@b.example", [ghost]))
        alice = UA("alice", ports(a)["udp"])

        def call_ghost() -> Response:
            alice.send(alice.request("INVITE", "sip:ghost@b.example"))
            return alice.expect(480)

        try:
            assert (await deferToThread(alice.register)).status == 200
            refused = await deferToThread(call_ghost)
        finally:
            alice.close()
        assert "none trusted" in (refused.header("warning") or ""), refused.header("warning")
    finally:
        bob.close()


def _signer(issued):  # noqa: ANN001, ANN202 - tls_certs.Issued -> Signer
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from gateway.overlay.record import Signer

    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    return Signer(key, x509.load_pem_x509_certificate(issued.cert.read_bytes()))


@pytest_twisted.ensureDeferred
async def test_an_unreachable_bootstrap_leaves_the_gateway_serving_locally(tmp_path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        service = await start_gateway(tmp_path / "d", **{
            "overlay.bootstrap": f"127.0.0.1:{silent.getsockname()[1]}"})
        try:
            await sleep(2.5)  # one join attempt (2 x rpc_timeout, cold) has timed out
            assert not service.overlay.joined
            assert service.overlay.state == "joining"
            assert "no bootstrap peer answered" in service.overlay.last_error
            ua = UA("alice", ports(service)["udp"])

            def call_elsewhere() -> tuple[Response, float]:
                started = time.monotonic()
                ua.send(ua.request("INVITE", "sip:bob@b.example"))
                return ua.expect(480), time.monotonic() - started

            try:
                assert (await deferToThread(ua.register)).status == 200
                refused, seconds = await deferToThread(call_elsewhere)
            finally:
                ua.close()
            assert seconds < 1.0
            assert "overlay unreachable" in refused.reason
            assert "overlay unreachable" in (refused.header("warning") or "")
            status = json.loads((tmp_path / "d" / "overlay-status.json").read_text())
            assert status["state"] == "joining" and status["last_error"]
            shown = io.StringIO()
            with contextlib.redirect_stdout(shown):
                assert admin_main(["--data-dir", str(tmp_path / "d"), "overlay",
                                   "status"]) == 0
            assert "joining" in shown.getvalue()
            assert "no bootstrap peer answered" in shown.getvalue()
        finally:
            await service.stopService()


def test_an_overlay_port_in_use_is_a_one_line_error(tmp_path) -> None:
    import socket

    import pytest

    from gateway.app.service import StartupError, prepare

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=r"^overlay\.listen: cannot listen on udp"):
            prepare(None, {"gateway.data_dir": str(tmp_path / "d"),
                           "sip.listen_udp": "127.0.0.1:0", "sip.listen_tcp": "",
                           "tls.listen": "", "overlay.listen": f"127.0.0.1:{port}"})


@pytest_twisted.ensureDeferred
async def test_a_node_whose_neighbours_vanish_joins_again_and_republishes(tmp_path) -> None:
    a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example"})
    host, port = a.overlay.address
    settings = {"gateway.domains": "b.example", "overlay.bootstrap": f"{host}:{port}",
                "overlay.health_interval": "0.3"}
    b = await start_gateway(tmp_path / "b", **settings)
    try:
        await _until(lambda: b.overlay.state == "joined")
        await a.stopService()  # B's only neighbour is gone
        await _until(lambda: b.overlay.state == "joining", timeout=10)
        assert b.overlay.last_error
        # A comes back on the same overlay port: B joins again by itself.
        a = await start_gateway(tmp_path / "a", **{"gateway.domains": "a.example",
                                                   "overlay.listen": f"{host}:{port}"})
        await _until(lambda: b.overlay.state == "joined", timeout=30)
    finally:
        await b.stopService()
        await a.stopService()


@pytest_twisted.ensureDeferred
async def test_overlay_status_says_disabled_when_the_overlay_is_off(tmp_path) -> None:
    service = await start_gateway(tmp_path / "d", **{"overlay.enabled": "no"})
    try:
        assert service.overlay is None
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            assert admin_main(["--data-dir", str(tmp_path / "d"), "overlay", "status"]) == 0
        assert shown.getvalue().startswith("state") and "disabled" in shown.getvalue()
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_dead_gateways_records_are_skipped_after_one_failure(tmp_path) -> None:
    """B goes away without withdrawing its records (a crash): the first call to its user
    fails (ICMP port unreachable on loopback), and the next ones get 480 with a Warning
    at once, without being sent to B again."""
    a, b = await _pair(tmp_path)
    b_stopped = False
    try:
        bob = UA("bob", ports(b)["udp"], domain="b.example")
        try:
            assert (await deferToThread(bob.register)).status == 200
        finally:
            bob.close()
        await _found(a, "sip:bob@b.example")
        b.overlay.mirror.stop()  # a crash: nothing withdrawn
        await b.stopService()
        b_stopped = True
        alice = UA("alice", ports(a)["udp"])

        def final_to_bob() -> Response:
            alice.send(alice.request("INVITE", "sip:bob@b.example"))
            deadline = time.monotonic() + 40
            while True:
                message = alice.receive(max(0.1, deadline - time.monotonic()))
                if isinstance(message, Response) and message.status >= 200:
                    return message

        try:
            assert (await deferToThread(alice.register)).status == 200
            first = await deferToThread(final_to_bob)
            started = time.monotonic()
            second = await deferToThread(final_to_bob)
            second_took = time.monotonic() - started
        finally:
            alice.close()
        assert first.status in (503, 408), first.status
        assert second.status == 480, second.status
        assert "does not answer" in (second.header("warning") or ""), second.header("warning")
        assert second_took < 1.0
    finally:
        if not b_stopped:
            await b.stopService()
        await a.stopService()


@pytest_twisted.ensureDeferred
async def test_the_overlay_status_stays_fresh_between_join_attempts(tmp_path) -> None:
    """While the gateway waits between join attempts (up to a minute) its overlay status
    is rewritten with the gateway's, so ``overlay status`` does not call it dead."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        service = await start_gateway(tmp_path / "d", **{
            "overlay.bootstrap": f"127.0.0.1:{silent.getsockname()[1]}"})
        try:
            path = tmp_path / "d" / "overlay-status.json"
            await _until(lambda: path.exists())
            # The join attempts back off (1, 2, 4, 8, 16 s…): without the status loop the
            # file would go 10 s and more without a write within this window.
            seen, started = [], time.monotonic()
            while time.monotonic() - started < 25:
                status = json.loads(path.read_text())
                if not seen or status["updated"] != seen[-1]:
                    seen.append(status["updated"])
                assert status["state"] == "joining"
                await sleep(0.25)
            gaps = [later - earlier for earlier, later in zip(seen, seen[1:], strict=False)]
            assert gaps and max(gaps) < 7, gaps
        finally:
            await service.stopService()
