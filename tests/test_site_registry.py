"""A site on several gateways sharing one PostgreSQL registry (issue 17): changes reach
the other gateways through PostgreSQL LISTEN/NOTIFY in milliseconds (the poll, set to a
minute here, is only the fallback), and a gateway that has not seen a user yet asks the
database before it answers 404. Two gateways in this process, real SIP over UDP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest_twisted
from conftest import ports, sleep, start_gateway
from location_fixtures import postgres_url  # noqa: F401 - fixture
from sip_ua import UA
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from gateway.app.service import GatewayService
from gateway.registry.service import MAX_READ_THROUGH

DOMAIN = "site.example"




async def _site(tmp_path: Path, url: str) -> tuple[GatewayService, GatewayService]:
    settings = {"database.url": url, "database.sync_interval": "60",
                "gateway.domains": DOMAIN, "overlay.enabled": "no"}
    a = await start_gateway(tmp_path / "a", **settings)
    b = await start_gateway(tmp_path / "b", **settings)
    deadline = time.monotonic() + 10
    for gateway in (a, b):
        feed = gateway.location.change_feed
        assert feed is not None
        while feed.state != "listening":
            assert time.monotonic() < deadline, f"change feed {feed.state}: {feed.last_error}"
            await sleep(0.02)
    return a, b


async def _seen(gateway: GatewayService, aor: str, present: bool, limit: float = 2.0) -> float:
    """Seconds until ``gateway``'s memory has (or has lost) ``aor``'s binding."""
    started = time.monotonic()
    while bool(gateway.location.lookup(aor)) != present:
        assert time.monotonic() - started < limit, f"{aor}: still {not present}"
        await sleep(0.005)
    return time.monotonic() - started


@pytest_twisted.ensureDeferred
async def test_changes_reach_the_other_gateway_at_once(postgres_url: str,  # noqa: F811
                                                       tmp_path: Path) -> None:
    a, b = await _site(tmp_path, postgres_url)
    alice = UA("alice", ports(a)["udp"], domain=DOMAIN)
    try:
        assert (await deferToThread(alice.register)).status == 200
        # sync_interval is 60 s: only the notification can bring it this fast.
        assert await _seen(b, f"sip:alice@{DOMAIN}", True) < 1.0
        assert (await deferToThread(alice.register, 0)).status == 200
        assert await _seen(b, f"sip:alice@{DOMAIN}", False) < 1.0
        feed = b.location.change_feed
        assert feed is not None and feed.notifications >= 2
        # A gateway is not notified of its own writes.
        own = a.location.change_feed
        assert own is not None and own.notifications == 0
        # B measured how long each change took to reach its memory (status, metrics).
        delays = list(b.location.sync_delays)
        assert len(delays) >= 2 and all(0 <= d < 1.0 for d in delays), delays
        assert b.metrics.sync_delay.count == len(delays)
        assert not a.location.sync_delays
    finally:
        alice.close()
        await b.stopService()
        await a.stopService()


@pytest_twisted.ensureDeferred
async def test_a_gateway_asks_the_database_before_it_answers_404(
        postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    a, b = await _site(tmp_path, postgres_url)
    assert b.location.change_feed is not None
    await defer.Deferred.fromFuture(asyncio.ensure_future(
        b.location.change_feed.stop()))  # B hears nothing more: a lost notification
    carol = UA("carol", ports(a)["udp"], domain=DOMAIN)
    caller = UA("dave", ports(b)["udp"], domain=DOMAIN)
    try:
        assert (await deferToThread(carol.register)).status == 200
        await sleep(0.3)
        assert not b.location.lookup(f"sip:carol@{DOMAIN}")  # B's memory does not know
        caller.send(caller.request("OPTIONS", f"sip:carol@{DOMAIN}"))
        # B reads the database, finds carol and forwards instead of answering 404.
        forwarded = await deferToThread(carol.expect_request, "OPTIONS")
        carol.gateway = ("127.0.0.1", ports(b)["udp"])  # the answer goes back through B
        carol.answer(forwarded, 200)
        assert (await deferToThread(caller.expect, 200, 404)).status == 200
        # And the difference it found makes B sync at once.
        assert await _seen(b, f"sip:carol@{DOMAIN}", True) < 1.0
        # Nobody anywhere: still 404.
        caller.send(caller.request("OPTIONS", f"sip:nobody@{DOMAIN}"))
        assert (await deferToThread(caller.expect, 200, 404)).status == 404
        # Past MAX_READ_THROUGH reads in flight (a flood for unknown users), memory
        # answers: a user B has not seen yet gets 404 without a database read.
        erin = UA("erin", ports(a)["udp"], domain=DOMAIN)
        try:
            assert (await deferToThread(erin.register)).status == 200
            b.location._reading_through = MAX_READ_THROUGH  # noqa: SLF001 - the bound
            caller.send(caller.request("OPTIONS", f"sip:erin@{DOMAIN}"))
            assert (await deferToThread(caller.expect, 200, 404)).status == 404
            b.location._reading_through = 0  # noqa: SLF001
        finally:
            erin.close()
    finally:
        carol.close()
        caller.close()
        await b.stopService()
        await a.stopService()


@pytest_twisted.ensureDeferred
async def test_the_gateways_of_a_site_see_which_of_them_are_up(
        postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    import contextlib
    import io

    from gateway.app.admin import main as admin_main

    settings = {"database.url": postgres_url, "database.heartbeat_interval": "0.2",
                "gateway.domains": DOMAIN, "overlay.enabled": "no"}
    a = await start_gateway(tmp_path / "a", **settings)
    b = await start_gateway(tmp_path / "b", **settings)
    stopped_a = False
    try:
        async def states(gateway: GatewayService, want: dict[str, str]) -> None:
            deadline = time.monotonic() + 5
            while {g["id"]: g["state"] for g in gateway.location.site} != want:
                assert time.monotonic() < deadline, gateway.location.site
                await sleep(0.05)

        ids = a.location.gateway_id, b.location.gateway_id
        await states(b, dict.fromkeys(ids, "up"))
        # A falls silent (as if killed: no clean stop is recorded).
        for loop, _ in a.location._loops:  # noqa: SLF001 - silence its heartbeat only
            if loop.a[0] == "heartbeat":
                loop.stop()
        await states(b, {ids[0]: "down", ids[1]: "up"})
        b.write_status()
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            admin_main(["--data-dir", str(tmp_path / "b"), "status"])
        assert "down, last heard" in shown.getvalue() and "(this one): up" in shown.getvalue()
        await a.stopService()
        stopped_a = True
        await states(b, {ids[0]: "stopped", ids[1]: "up"})
    finally:
        await b.stopService()
        if not stopped_a:
            await a.stopService()
