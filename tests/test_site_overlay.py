"""One site, one overlay voice (issue 17): two gateways sharing a PostgreSQL registry and
the site's overlay certificate publish each AoR once — the gateway that received the
phone's REGISTER signs it, the other does not — and when that gateway stops, the other
takes its AoRs over. A third gateway (another domain) looks them up in the overlay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest_twisted
from conftest import ports, sleep, start_gateway
from location_fixtures import postgres_url  # noqa: F401 - fixture
from sip_ua import UA
from tls_certs import TestCA
from twisted.internet.threads import deferToThread

from gateway.app.service import GatewayService
from gateway.overlay.record import Record

DOMAIN = "site.example"




async def _until(condition, what: str, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await sleep(0.05)


async def _records(observer: GatewayService, aor: str, route_port: int,
                   timeout: float = 10.0) -> list[Record]:
    """The records ``observer`` finds for ``aor`` once one routes to ``route_port``."""
    assert observer.overlay is not None
    deadline = time.monotonic() + timeout
    while True:
        records = await observer.overlay.lookup(aor)
        if any(f":{route_port}" in r.route for r in records):
            return records
        assert time.monotonic() < deadline, f"{aor}: {records}"
        await sleep(0.1)


@pytest_twisted.ensureDeferred
async def test_the_site_publishes_each_aor_once_and_takes_over_a_stopped_gateways(
        postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    site = TestCA(tmp_path / "ca").issue("site", dns=[DOMAIN])
    common = {"database.url": postgres_url, "gateway.domains": DOMAIN,
              "overlay.certificate": str(site.cert), "overlay.private_key": str(site.key),
              "overlay.cache": "0", "database.heartbeat_interval": "0.3"}
    observer = await start_gateway(tmp_path / "c", **{"gateway.domains": "c.example",
                                                       "overlay.cache": "0"})
    assert observer.overlay is not None and observer.overlay.address is not None
    bootstrap = "{}:{}".format(*observer.overlay.address)
    a = await start_gateway(tmp_path / "a", **common, **{"overlay.bootstrap": bootstrap})
    b = await start_gateway(tmp_path / "b", **common, **{"overlay.bootstrap": bootstrap})
    bob = UA("bob", ports(a)["udp"], domain=DOMAIN)
    dave = UA("dave", ports(b)["udp"], domain=DOMAIN)
    stopped = False
    try:
        assert a.overlay is not None and b.overlay is not None
        await _until(lambda: a.overlay.joined and b.overlay.joined, "joined")
        await _until(lambda: len(a.location.site_view.up) == 2 == len(b.location.site_view.up),
                     "both gateways see each other up")
        assert (await deferToThread(bob.register)).status == 200
        assert (await deferToThread(dave.register)).status == 200
        route_a, route_b = ports(a)["udp"], ports(b)["udp"]
        (record,) = await _records(observer, bob.uri, route_a)
        assert (await _records(observer, dave.uri, route_b))[0].signer == record.signer
        await _until(lambda: b.location.lookup(bob.uri) and a.location.lookup(dave.uri),
                     "each gateway knows the other's phone")
        await sleep(0.5)  # time for any second publication to happen
        # Each AoR was signed and published by its gateway only.
        assert (a.overlay.mirror.published, b.overlay.mirror.published) == (1, 1)

        await a.stopService()
        stopped = True
        # B sees A stopped at its next heartbeat and publishes bob with its own route.
        records = await _records(observer, bob.uri, route_b)
        assert [r.route for r in records if f":{route_a}" in r.route] == []
        assert b.overlay.mirror.published == 2
    finally:
        bob.close()
        dave.close()
        await b.stopService()
        if not stopped:
            await a.stopService()
        await observer.stopService()


@pytest_twisted.ensureDeferred
async def test_a_site_gateway_without_the_site_certificate_is_warned(
        postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    import socket

    from gateway_proc import free_port

    from gateway.app.assembly import SITE_WITHOUT_CERTIFICATE

    tls_port = free_port(socket.SOCK_STREAM)
    gateway = await start_gateway(tmp_path / "a", **{
        "database.url": postgres_url, "gateway.domains": DOMAIN,
        "tls.listen": f"127.0.0.1:{tls_port}", "site.uri": f"sips:127.0.0.1:{tls_port}"})
    try:
        assert gateway.overlay is not None
        assert SITE_WITHOUT_CERTIFICATE in gateway.overlay.status()["warnings"]
    finally:
        await gateway.stopService()
