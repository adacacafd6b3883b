"""Shared fixtures: an in-process gateway on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import dns_server
import empty_dns
import netlab
import pytest
import pytest_twisted
from dns_server import KnotServer
from netlab import Lab
from twisted.internet import defer, task

from gateway.app.service import GatewayService, prepare


async def start_gateway(data_dir: Path, **overrides: str) -> GatewayService:
    """Start a gateway service in this process (UDP, TCP and TLS on 127.0.0.1, free
    ports; DNS questions go to :mod:`empty_dns` unless ``dns.servers`` is given).

    The registry worker is a thread, so tests can instrument the store; the default
    worker process is exercised by the twistd subprocess tests and test_store_runner.
    """
    settings = {"gateway.data_dir": str(data_dir), "sip.listen_udp": "127.0.0.1:0",
                "sip.listen_tcp": "127.0.0.1:0", "tls.listen": "127.0.0.1:0",
                "overlay.listen": "127.0.0.1:0", "sip.shutdown_grace": "2",
                "database.sweep_interval": "1",
                "database.sync_interval": "0.5", "database.worker": "thread",
                # DNS stays on this machine: a server in which no name exists.
                "dns.servers": empty_dns.shared().setting,
                # Gateways of two domains trust each other without DNS fingerprints or
                # pins here; the default (dns) is what test_overlay_pins and
                # test_dns_fingerprints exercise.
                "overlay.first_pin": "replicas"}
    settings.update(overrides)
    from twisted.internet import reactor  # installed by pytest-twisted (asyncio)

    gateway = GatewayService(prepare(None, settings), reactor)
    gateway.startService()
    await gateway.ready
    return gateway


def sleep(seconds: float) -> defer.Deferred[None]:
    """Fires after ``seconds`` on the reactor (await it in a test running there)."""
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds)


def ports(gateway: GatewayService) -> dict[str, int]:
    """``{"udp": port, "tcp": port, "tls": port}`` of a running gateway."""
    return {kind: port for kind, _, port in gateway.transports.listening_addresses()}


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayService]:
    """A running gateway with default registrar limits."""
    service = await start_gateway(tmp_path / "data")
    yield service
    await service.stopService()


@pytest.fixture
def udp_port(gateway: GatewayService) -> int:
    """The gateway's UDP port."""
    return ports(gateway)["udp"]


@pytest.fixture
def tcp_port(gateway: GatewayService) -> int:
    """The gateway's TCP port."""
    return ports(gateway)["tcp"]


def unavailable(message: str, require: str) -> NoReturn:
    """Skip the test for want of what ``message`` names, or fail it when the environment
    variable ``require`` is 1 (CI, where every test must run)."""
    if os.environ.get(require) == "1":
        pytest.fail(f"{message} and {require}=1")
    pytest.skip(message)


@pytest.fixture
def sipp() -> str:
    """Path of the sipp binary; skip (or fail under P2PSIP_REQUIRE_SIPP=1) without it."""
    path = shutil.which("sipp")
    if path is None:
        unavailable("sipp (SIPp, Debian package sip-tester) is not on PATH",
                    "P2PSIP_REQUIRE_SIPP")
    return path


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A lab; skipped where namespaces cannot be made, unless P2PSIP_REQUIRE_NETNS=1
    (CI), where that is a failure."""
    reason = netlab.unavailable()
    if reason is not None:
        unavailable(f"the network lab: {reason}", "P2PSIP_REQUIRE_NETNS")
    built = Lab()
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def knot_zones(tmp_path: Path) -> Iterator[Callable[..., KnotServer]]:
    """Starts Knot DNS servers (``start(zones, host="127.0.0.1")``, zones as
    {origin: zone file text}) and stops them all afterwards. Starting one skips the test
    where knotd is missing, or fails it under P2PSIP_REQUIRE_DNS=1."""
    started: list[KnotServer] = []

    def start(zones: dict[str, str], host: str = "127.0.0.1") -> KnotServer:
        reason = dns_server.available()
        if reason is not None:
            unavailable(reason, "P2PSIP_REQUIRE_DNS")
        server = KnotServer(tmp_path / f"dns{len(started)}", zones, host=host)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
