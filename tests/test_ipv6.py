"""The registrar over IPv6 loopback."""

from __future__ import annotations

import socket

import pytest_twisted
from conftest import ports, start_gateway
from sip_client import register
from twisted.internet.threads import deferToThread

from gateway.sip.parser import parse_message


@pytest_twisted.ensureDeferred
async def test_register_over_ipv6_udp_records_the_v6_source(tmp_path) -> None:
    gateway = await start_gateway(tmp_path / "d", **{"sip.listen_udp": "[::1]:0",
                                                     "sip.listen_tcp": ""})
    port = ports(gateway)["udp"]

    def run():
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            sock.settimeout(3)
            local = sock.getsockname()[1]
            message = register("vic", local_port=local, domain="[::1]", via_host="[::1]",
                               contact=f"<sip:vic@[::1]:{local}>")
            sock.sendto(message, ("::1", port))
            return parse_message(sock.recv(65535)), local
    try:
        response, local = await deferToThread(run)
        assert response.status == 200
        (binding,) = gateway.location.lookup("sip:vic@[::1]")
        assert binding.contact == f"sip:vic@[::1]:{local}"
        assert binding.received == f"[::1]:{local}"
    finally:
        await gateway.stopService()
