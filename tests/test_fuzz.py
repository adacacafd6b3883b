"""Short fuzz run (bench/fuzz.py is the long one): mutated SIP messages over UDP and TCP
against the in-process gateway; afterwards it still answers OPTIONS and has logged no
unhandled error. The gateway cannot send beyond loopback (LoopbackGuard)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest_twisted
from conftest import ports, start_gateway
from fuzzing import LoopbackGuard, messages, send_tcp, send_udp
from sip_client import UdpClient, request
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher

UDP_MESSAGES = 6000
TCP_MESSAGES = 2000


@pytest_twisted.ensureDeferred
async def test_mutated_messages_neither_crash_nor_wedge_the_gateway(tmp_path: Path) -> None:
    failures: list[str] = []

    def observe(event: dict) -> None:
        if "log_failure" in event or event.get("log_level") in (LogLevel.critical,):
            failures.append(str(event.get("log_format", event))[:200])

    globalLogPublisher.addObserver(observe)
    service = await start_gateway(tmp_path / "d", **{"limits.source_rate": "0",
                                                     "sip.shutdown_grace": "0"})
    guard = LoopbackGuard(service.transports.send)
    service.transports.send = guard
    try:
        udp, tcp = ports(service)["udp"], ports(service)["tcp"]
        sent_udp = await deferToThread(send_udp, udp, messages(1, UDP_MESSAGES, udp))
        sent_tcp = await deferToThread(send_tcp, tcp, messages(2, TCP_MESSAGES, tcp),
                                       random.Random(3))
        assert sent_udp == UDP_MESSAGES and sent_tcp > TCP_MESSAGES // 2

        def ping() -> int:
            client = UdpClient(udp)
            try:
                return client.ask(request("OPTIONS", f"sip:127.0.0.1:{udp}",
                                          local_port=client.port)).status
            finally:
                client.close()

        assert await deferToThread(ping) == 200
        assert service.metrics.requests  # the valid ones were handled
    finally:
        await service.stopService()
        globalLogPublisher.removeObserver(observe)
    assert failures == []
