"""A REGISTER's 200 OK follows its commit; a failed commit is a 500; restarts keep bindings."""

from __future__ import annotations

import threading

import pytest_twisted
from conftest import ports, start_gateway
from sip_client import UdpClient, register
from twisted.internet.threads import deferToThread

from gateway.registry.store import RegistryUnavailable


@pytest_twisted.ensureDeferred
async def test_no_200_before_the_binding_is_committed(gateway) -> None:
    port = ports(gateway)["udp"]
    gate = threading.Event()
    committed = threading.Event()
    original = gateway.location._runner.store.write_snapshots

    def gated(snapshots, now):
        gate.wait(10)
        original(snapshots, now)
        committed.set()

    gateway.location._runner.store.write_snapshots = gated

    def run():
        client = UdpClient(port, timeout=0.5)
        try:
            client.send(register("quinn", local_port=client.port))
            try:
                early = client.receive()
            except TimeoutError:
                early = None
            gate.set()
            client.sock.settimeout(5)
            late = client.receive()
            return early, late, committed.is_set()
        finally:
            client.close()
    early, late, was_committed = await deferToThread(run)
    assert early is None  # held back while the write was blocked
    assert late.status == 200 and was_committed


@pytest_twisted.ensureDeferred
async def test_failed_commit_answers_500_with_retry_after_and_keeps_memory(gateway) -> None:
    port = ports(gateway)["udp"]

    def broken(snapshots, now):
        raise RegistryUnavailable("database is locked")

    gateway.location._runner.store.write_snapshots = broken

    def run():
        client = UdpClient(port)
        try:
            return client.ask(register("rita", local_port=client.port))
        finally:
            client.close()
    response = await deferToThread(run)
    assert response.status == 500
    assert response.header("Retry-After") == "5"
    assert gateway.location.lookup("sip:rita@127.0.0.1") == []
    assert gateway.location.current("sip:rita@127.0.0.1") == []


@pytest_twisted.ensureDeferred
async def test_bindings_survive_a_restart(tmp_path) -> None:
    data = tmp_path / "data"
    first = await start_gateway(data)
    port = ports(first)["udp"]

    def run(message):
        client = UdpClient(port)
        try:
            return client.ask(message)
        finally:
            client.close()
    for user in ("sam", "tess"):
        assert (await deferToThread(run, register(user, local_port=7000,
                                                  expires=600))).status == 200
    await first.stopService()

    second = await start_gateway(data)
    try:
        port = ports(second)["udp"]
        query = await deferToThread(run, register("sam", local_port=7000, contact="",
                                                  expires=None))
        assert [str(c.address.uri) for c in query.contacts] == ["sip:sam@127.0.0.1:7000"]
        assert {b.aor for aor in ("sip:sam@127.0.0.1", "sip:tess@127.0.0.1")
                for b in second.location.lookup(aor)} == {"sip:sam@127.0.0.1",
                                                          "sip:tess@127.0.0.1"}
    finally:
        await second.stopService()
