"""Trust-on-first-use pins that can be managed: a gateway whose self-signed certificate
is renewed (a domain was added) stays trusted by its peers, which follow the roll-over
its old key announced; ``p2psip-admin overlay pins list|pin|forget`` changes what a
running gateway trusts within a health check (on the default first-pin rule, where
only DNS or an administrator pins a domain). Two gateways in this process, real
overlay sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import pytest_twisted
from conftest import ports, sleep, start_gateway
from sip_ua import UA
from twisted.internet.threads import deferToThread

from gateway.app.admin import main as admin_main
from gateway.app.service import GatewayService

FAST = {"overlay.cache": "0", "overlay.health_interval": "0.3"}


async def _until(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await sleep(0.05)




async def _start_b(tmp_path: Path, a: GatewayService, domains: str,
                   **settings: str) -> GatewayService:
    assert a.overlay is not None and a.overlay.address is not None
    host, port = a.overlay.address
    b = await start_gateway(tmp_path / "b", **FAST, **settings, **{
        "gateway.domains": domains, "overlay.bootstrap": f"{host}:{port}"})
    assert b.overlay is not None
    await _until(lambda: b.overlay.joined and a.overlay.node.contact_count() > 0)
    return b


async def _found(a: GatewayService, aor: str) -> list:
    assert a.overlay is not None
    return await a.overlay.lookup(aor)


def admin(data_dir: Path, *argv: str) -> tuple[int, str]:
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        code = admin_main(["--data-dir", str(data_dir), *argv])
    return code, shown.getvalue()


async def _register_bob(b: GatewayService) -> None:
    bob = UA("bob", ports(b)["udp"], domain="b.example")
    try:
        assert (await deferToThread(bob.register)).status == 200
    finally:
        bob.close()


async def _found_from(a: GatewayService, aor: str, signer: str) -> list:
    """A's records of ``aor`` once one signed by ``signer`` is among them (bounded: the
    publication and A's trust decision may take a moment)."""
    deadline = time.monotonic() + 10
    while True:
        found = await _found(a, aor)
        if any(r.signer == signer for r in found):
            return found
        assert time.monotonic() < deadline, (
            f"no record of {aor} by {signer[:16]} ({a.overlay.rejected} rejected)")  # type: ignore[union-attr]
        await sleep(0.2)


@pytest_twisted.ensureDeferred
async def test_a_renewed_certificate_is_followed_by_the_peers(tmp_path: Path) -> None:
    a = await start_gateway(tmp_path / "a", **FAST, **{"gateway.domains": "a.example"})
    try:
        b = await _start_b(tmp_path, a, "b.example")
        try:
            await _register_bob(b)
            old = b.overlay.signer.signer_id  # type: ignore[union-attr]
            await _found_from(a, "sip:bob@b.example", old)
            assert a.overlay.pins.get("b.example") == old  # type: ignore[union-attr]
        finally:
            await b.stopService()
        # Adding a domain renews B's self-signed certificate (it must name b2.example).
        b = await _start_b(tmp_path, a, "b.example, b2.example")
        try:
            assert b.overlay is not None and b.overlay.signer.signer_id != old
            assert b.overlay.signer.rollover is not None
            await _register_bob(b)
            new = b.overlay.signer.signer_id
            await _found_from(a, "sip:bob@b.example", new)
            assert a.overlay.pins.get("b.example") == new  # type: ignore[union-attr]
            code, shown = admin(tmp_path / "b", "overlay", "status")
            assert f"{new} (announced by the previous one)" in shown
        finally:
            await b.stopService()
    finally:
        await a.stopService()
    # The re-pin is in A's registry too.
    code, shown = admin(tmp_path / "a", "overlay", "pins", "list", "--json")
    assert code == 0 and {"domain": "b.example", "fingerprint": new} in [
        {k: p[k] for k in ("domain", "fingerprint")} for p in json.loads(shown)]


@pytest_twisted.ensureDeferred
async def test_admin_pins_change_what_a_running_gateway_trusts(tmp_path: Path) -> None:
    """On the default first-pin rule (dns) with no fingerprint in DNS, B's domain is
    trusted only once an administrator pins it."""
    default = {"overlay.first_pin": "dns"}
    a = await start_gateway(tmp_path / "a", **FAST, **default,
                            **{"gateway.domains": "a.example"})
    try:
        b = await _start_b(tmp_path, a, "b.example", **default)
    except BaseException:
        await a.stopService()
        raise
    try:
        await _register_bob(b)
        genuine = b.overlay.signer.signer_id  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while "publishes no certificate fingerprint in DNS" not in a.overlay.why_empty(  # type: ignore[union-attr]
                "sip:bob@b.example"):
            assert await _found(a, "sip:bob@b.example") == []  # seen, not trusted
            assert time.monotonic() < deadline, a.overlay.why_empty("sip:bob@b.example")  # type: ignore[union-attr]
            await sleep(0.2)
        assert a.overlay.pins.get("b.example") is None  # type: ignore[union-attr]

        code, shown = await deferToThread(admin, tmp_path / "a", "overlay", "pins", "pin",
                                          "b.example", genuine)
        assert code == 0, shown
        await _until(lambda: a.overlay.pins.get("b.example") == genuine)  # type: ignore[union-attr]
        await _found_from(a, "sip:bob@b.example", genuine)

        other = "ab" * 32
        code, shown = await deferToThread(admin, tmp_path / "a", "overlay", "pins", "pin",
                                          "b.example", ":".join([other[i:i + 2] for i in
                                                                 range(0, 64, 2)]))
        assert code == 0, shown
        await _until(lambda: a.overlay.pins.get("b.example") == other)  # type: ignore[union-attr]
        assert await _found(a, "sip:bob@b.example") == []  # B's certificate is not pinned

        code, _ = await deferToThread(admin, tmp_path / "a", "overlay", "pins", "forget",
                                      "b.example")
        assert code == 0
        await _until(lambda: a.overlay.pins.get("b.example") != other)  # type: ignore[union-attr]
        assert await _found(a, "sip:bob@b.example") == []  # forgotten: not pinned afresh
        assert a.overlay.pins.get("b.example") is None  # type: ignore[union-attr]
        code, _ = await deferToThread(admin, tmp_path / "a", "overlay", "pins", "forget",
                                      "nowhere.example")
        assert code != 0
        code, _ = await deferToThread(admin, tmp_path / "a", "overlay", "pins", "pin",
                                      "b.example", "not-a-fingerprint")
        assert code != 0
    finally:
        await b.stopService()
        await a.stopService()
