"""TCP framing, keep-alives and limits against a running gateway on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from conftest import ports, start_gateway
from sip_client import TcpClient, register, request
from twisted.internet.threads import deferToThread


async def in_thread(function):
    """Run blocking client code off the reactor thread."""
    return await deferToThread(function)


@pytest_twisted.ensureDeferred
async def test_two_messages_in_one_segment_get_two_responses(tcp_port: int) -> None:
    def run():
        client = TcpClient(tcp_port)
        try:
            client.send(register("ann", local_port=client.port, transport="TCP")
                        + request("OPTIONS", "sip:127.0.0.1", local_port=client.port,
                                  transport="TCP"))
            return [client.receive() for _ in range(2)]
        finally:
            client.close()
    responses = await in_thread(run)
    # the REGISTER's 200 waits for its commit, so the OPTIONS answer may come first
    assert sorted((r.cseq.method, r.status) for r in responses) == [
        ("OPTIONS", 200), ("REGISTER", 200)]


@pytest_twisted.ensureDeferred
async def test_message_split_into_single_bytes_is_reassembled(tcp_port: int) -> None:
    def run():
        client = TcpClient(tcp_port)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            body = b"v=0\r\n"
            message = request("OPTIONS", "sip:127.0.0.1", local_port=client.port,
                              transport="TCP").replace(b"Content-Length: 0",
                                                       b"Content-Type: application/sdp\r\n"
                                                       b"Content-Length: 5") + body
            for index in range(len(message)):
                client.send(message[index:index + 1])
            return client.receive()
        finally:
            client.close()
    response = await in_thread(run)
    assert response.status == 200


@pytest_twisted.ensureDeferred
async def test_crlf_keepalive_ping_is_answered_with_pong(tcp_port: int) -> None:
    def run():
        client = TcpClient(tcp_port)
        try:
            client.send(b"\r\n\r\n")
            return client.sock.recv(16)
        finally:
            client.close()
    assert await in_thread(run) == b"\r\n"


@pytest_twisted.ensureDeferred
async def test_register_over_tcp_records_transport_and_connection_source(tcp_port: int,
                                                                         gateway) -> None:
    def run():
        client = TcpClient(tcp_port)
        try:
            client.send(register("bea", local_port=client.port, transport="TCP"))
            return client.receive(), client.port
        finally:
            client.close()
    response, port = await in_thread(run)
    assert response.status == 200
    (binding,) = gateway.location.lookup("sip:bea@127.0.0.1")
    assert binding.transport == "tcp" and binding.received == f"127.0.0.1:{port}"


@pytest_twisted.ensureDeferred
async def test_bad_request_on_stream_gets_400_and_connection_stays_usable(tcp_port: int) -> None:
    def run():
        client = TcpClient(tcp_port)
        try:
            bad = request("OPTIONS", "sip:127.0.0.1", local_port=client.port, transport="TCP",
                          cseq_method="BYE")
            client.send(bad)
            first = client.receive()
            client.send(request("OPTIONS", "sip:127.0.0.1", local_port=client.port,
                                transport="TCP"))
            return first, client.receive()
        finally:
            client.close()
    first, second = await in_thread(run)
    assert first.status == 400 and second.status == 200


@pytest_twisted.ensureDeferred
async def test_garbage_without_framing_closes_the_connection(tcp_port: int) -> None:
    def run():
        client = TcpClient(tcp_port)
        try:
            client.send(b"HELLO sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKa\r\n\r\n")
            return client.sock.recv(100)
        finally:
            client.close()
    # no Content-Length on a stream: the framing is lost, the gateway hangs up
    assert await in_thread(run) == b""


@pytest_twisted.ensureDeferred
async def test_oversize_message_closes_the_connection(tmp_path) -> None:
    gateway = await start_gateway(tmp_path / "d", **{"sip.max_message_size": "2048"})
    port = ports(gateway)["tcp"]

    def run():
        client = TcpClient(port)
        try:
            client.send(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Big: " + b"a" * 5000)
            return client.sock.recv(100)
        except ConnectionResetError:
            return b""
        finally:
            client.close()
    try:
        assert await in_thread(run) == b""
    finally:
        await gateway.stopService()


@pytest_twisted.ensureDeferred
async def test_connections_beyond_the_limit_are_refused(tmp_path) -> None:
    gateway = await start_gateway(tmp_path / "d", **{"sip.max_tcp_connections": "2"})
    port = ports(gateway)["tcp"]

    def run():
        clients = [TcpClient(port) for _ in range(2)]
        try:
            for client in clients:  # both accepted and served
                client.send(request("OPTIONS", "sip:127.0.0.1", local_port=client.port,
                                    transport="TCP"))
                assert client.receive().status == 200
            extra = TcpClient(port)
            try:
                extra.send(request("OPTIONS", "sip:127.0.0.1", local_port=extra.port,
                                   transport="TCP"))
                return extra.sock.recv(100)
            except ConnectionResetError:
                return b""
            finally:
                extra.close()
        finally:
            for client in clients:
                client.close()
    try:
        assert await in_thread(run) == b""
    finally:
        await gateway.stopService()


@pytest.mark.parametrize("idle", ["1"])
@pytest_twisted.ensureDeferred
async def test_idle_connection_is_closed_after_the_timeout(tmp_path, idle: str) -> None:
    gateway = await start_gateway(tmp_path / "d", **{"sip.tcp_idle_timeout": idle})
    port = ports(gateway)["tcp"]

    def run():
        client = TcpClient(port, timeout=5)
        try:
            return client.sock.recv(10)
        finally:
            client.close()
    try:
        assert await in_thread(run) == b""
    finally:
        await gateway.stopService()
