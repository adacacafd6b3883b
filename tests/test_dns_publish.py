"""The overlay's bootstrap records kept up to date by the gateways themselves (RFC 2136
UPDATE signed with TSIG, gateway/overlay/dns_publisher.py), against a real primary
server (Knot DNS on a loopback port that accepts updates signed with the test's key).
Overlay pings are stubbed here: which nodes answer is what each test decides."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import dns.exception
import pytest
import pytest_twisted
from dns_server import KEY_NAME, KnotServer, zone
from twisted.internet.defer import Deferred

from gateway.app.admin import main as admin_main
from gateway.overlay.dns_publisher import DnsPublisher, PublishSettings, TsigKey, TsigKeyError

A, B, C = ("127.0.0.1", 6101), ("127.0.0.1", 6102), ("127.0.0.1", 6103)


@pytest.fixture
def knot(knot_zones) -> KnotServer:  # noqa: ANN001
    """Knot serving an empty example.net that the test's key may update."""
    return knot_zones({"example.net": zone("example.net")})


def publisher(knot: KnotServer, own: tuple[str, int] | None, alive: set,
              secret: str | None = None) -> DnsPublisher:
    key = TsigKey(KEY_NAME, "hmac-sha256", secret or knot.secret)
    settings = PublishSettings("example.net", "example.net", knot.address, key,
                               min_entries=2, interval=1)

    async def ping(peer: tuple[str, int]) -> bool:
        return peer in alive

    return DnsPublisher(settings, ping, lambda: own)


def run(coroutine) -> Deferred:  # noqa: ANN001 - a coroutine
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def test_tsig_keys_are_read_from_the_usual_files(tmp_path: Path) -> None:
    bind = tmp_path / "bind.key"
    bind.write_text('key "gw-key" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0c2VjcmV0";\n};\n')
    knot = tmp_path / "knot.key"
    knot.write_text("key:\n  - id: gw-key\n    algorithm: hmac-sha256\n"
                    "    secret: c2VjcmV0c2VjcmV0\n")
    line = tmp_path / "line.key"
    line.write_text("gw-key hmac-sha256 c2VjcmV0c2VjcmV0\n")
    for path in (bind, knot, line):
        assert TsigKey.from_file(str(path)) == TsigKey("gw-key", "hmac-sha256",
                                                       "c2VjcmV0c2VjcmV0")
    (tmp_path / "bad.key").write_text("nothing here")
    with pytest.raises(TsigKeyError, match="bad.key"):
        TsigKey.from_file(str(tmp_path / "bad.key"))
    with pytest.raises(TsigKeyError, match="missing"):
        TsigKey.from_file(str(tmp_path / "missing"))


@pytest_twisted.ensureDeferred
async def test_the_first_publishes_itself_others_join_and_the_dead_go(knot: KnotServer) -> None:
    alive = {A}
    first = publisher(knot, A, alive)
    await run(first.round())
    assert first.state == "ok" and await run(first.read()) == ["127.0.0.1:6101"]
    # B finds one live entry, fewer than min_entries (2): it adds itself.
    alive.add(B)
    second = publisher(knot, B, alive)
    await run(second.round())
    assert sorted(await run(second.read())) == ["127.0.0.1:6101", "127.0.0.1:6102"]
    # C sees two live entries: enough, it does not add itself.
    alive.add(C)
    third = publisher(knot, C, alive)
    await run(third.round())
    assert "127.0.0.1:6103" not in await run(third.read())
    # A dies: the next round (by anyone) removes it, and C adds itself.
    alive.discard(A)
    await run(third.round())
    assert sorted(await run(third.read())) == ["127.0.0.1:6102", "127.0.0.1:6103"]
    assert third.status()["entries"] == ["127.0.0.1:6102", "127.0.0.1:6103"]
    # A gateway that cannot be reached (NAT, no external address) never adds itself.
    hidden = publisher(knot, None, alive)
    await run(hidden.round())
    assert len(await run(hidden.read())) == 2
    # On stop a gateway removes its own entry.
    await run(second.withdraw())
    assert await run(third.read()) == ["127.0.0.1:6103"]


@pytest_twisted.ensureDeferred
async def test_an_update_based_on_a_stale_read_is_refused(knot: KnotServer) -> None:
    one = publisher(knot, A, {A})
    await run(one.round())
    # Another gateway read the (empty) set before A's update: its change is refused.
    with pytest.raises(dns.exception.DNSException, match="another gateway"):
        await run(publisher(knot, B, {A, B})._replace([], ["127.0.0.1:6102"]))  # noqa: SLF001
    assert await run(one.read()) == ["127.0.0.1:6101"]


@pytest_twisted.ensureDeferred
async def test_a_wrong_tsig_secret_is_reported_and_changes_nothing(knot: KnotServer) -> None:
    wrong = publisher(knot, A, {A}, secret="d3Jvbmd3cm9uZ3dyb25nd3Jvbmc=")
    await run(wrong.round())
    assert wrong.state == "error" and "TSIG" in wrong.last_error, wrong.last_error
    assert await run(wrong.read()) == []


async def _until(condition, timeout: float = 20.0) -> None:  # noqa: ANN001
    import time

    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        d: Deferred[None] = Deferred()
        reactor.callLater(0.2, d.callback, None)
        await d


@pytest_twisted.ensureDeferred
async def test_gateways_keep_the_overlays_dns_name_themselves(knot: KnotServer,
                                                              tmp_path: Path) -> None:
    """A starts alone and lists itself; B joins through DNS only and adds itself; A dies
    without a word and B removes its entry; C joins through the name afterwards."""
    from conftest import start_gateway

    key = tmp_path / "tsig.key"
    key.write_text(f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{knot.secret}"; }};\n')
    host, port = knot.address
    settings = {"overlay.publish_dns": "example.net",
                "overlay.publish_dns_server": f"{host}:{port}",
                "overlay.publish_dns_key_file": str(key),
                "overlay.publish_dns_interval": "0.5", "overlay.health_interval": "0.5",
                "overlay.dns_servers": f"{host}:{port}", "overlay.cache": "0"}
    reader = publisher(knot, None, set())

    async def listed() -> list[str]:
        return sorted(await run(reader.read()))

    def entry(gateway) -> str:  # noqa: ANN001 - GatewayService
        node_host, node_port = gateway.overlay.address
        return f"{node_host}:{node_port}"

    a = await start_gateway(tmp_path / "a", **settings, **{"gateway.domains": "a.example"})
    b = c = None
    try:
        await _until(lambda: _is(listed, [entry(a)]))
        b = await start_gateway(tmp_path / "b", **settings, **{"gateway.domains": "b.example"})
        await _until(lambda: _is(listed, sorted([entry(a), entry(b)])))
        assert b.overlay.state == "joined"  # through the name alone: no static peer
        assert b.overlay.status()["dns_publish"]["state"] == "ok"
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            admin_main(["--data-dir", str(tmp_path / "b"), "overlay", "status"])
        assert "_p2psip._udp.example.net" in shown.getvalue() and ": ok" in shown.getvalue()
        a.overlay.publisher = None  # A dies: nothing withdrawn
        dead = entry(a)
        await a.stopService()
        a = None
        await _until(lambda: _is(listed, [entry(b)]))
        c = await start_gateway(tmp_path / "c", **settings, **{"gateway.domains": "c.example"})
        await _until(lambda: _has(listed, entry(c)))
        assert c.overlay.state == "joined" and dead not in await listed()
    finally:
        for gateway in (c, b, a):
            if gateway is not None:
                await gateway.stopService()


async def _is(listed, expected: list[str]) -> bool:  # noqa: ANN001
    return await listed() == expected


async def _has(listed, item: str) -> bool:  # noqa: ANN001
    return item in await listed()


@pytest_twisted.ensureDeferred
async def test_a_node_not_joined_changes_nothing_while_a_listed_node_answers(
        knot: KnotServer) -> None:
    alive = {A}
    await run(publisher(knot, A, alive).round())
    alive.add(B)
    outsider = publisher(knot, B, alive)
    await run(outsider.round(joined=False))  # A answers: B joins through it first
    assert await run(outsider.read()) == ["127.0.0.1:6101"]
    alive.discard(A)  # nobody listed answers: B is the first of what is left
    await run(outsider.round(joined=False))
    assert await run(outsider.read()) == ["127.0.0.1:6102"]
