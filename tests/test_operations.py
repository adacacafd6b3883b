"""Operations: the HTTP status endpoint, the status file and `p2psip-admin status`, and
the per-source rate limit, against the in-process gateway over real sockets."""

from __future__ import annotations

import contextlib
import io
import json
import time
import urllib.request
from pathlib import Path

import pytest_twisted
from conftest import ports, start_gateway
from sip_client import UdpClient, request
from sip_ua import UA
from twisted.internet.threads import deferToThread

from gateway.app.admin import main as admin_main


def _send_malformed(port: int) -> list[int]:
    """Three malformed datagrams: one nothing can be answered to, one the transport
    cannot parse and one the core finds invalid (CSeq method differs), both answered
    (their statuses returned)."""
    client = UdpClient(port, timeout=3)
    try:
        client.send(b"\x00\xff" * 50)
        client.send(b"INVITE sip:a@example.com SIP/2.0\r\n"
                    b"Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKmal\r\n"
                    b"Content-Length: 99\r\n\r\nshort")
        statuses = [client.receive().status]
        client.send(request("OPTIONS", "sip:127.0.0.1", local_port=client.port,
                            cseq_method="INVITE"))
        statuses.append(client.receive().status)
        return statuses
    finally:
        client.close()


def _get(port: int, path: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return answer.headers.get("content-type", ""), answer.read()


@pytest_twisted.ensureDeferred
async def test_status_endpoint_and_metrics_count_what_happened(tmp_path: Path) -> None:
    service = await start_gateway(tmp_path / "d", **{"status.enabled": "yes",
                                                     "status.listen": "127.0.0.1:0"})
    try:
        http_port = service._status_port.getHost().port
        ua = UA("alice", ports(service)["udp"])
        try:
            assert (await deferToThread(ua.register)).status == 200
        finally:
            ua.close()
        assert await deferToThread(_send_malformed, ports(service)["udp"]) == [400, 400]
        kind, body = await deferToThread(_get, http_port, "/status")
        status = json.loads(body)
        assert status["malformed"] == 3
        assert status["memory"]["rss_mib"] > 10 and status["memory"]["python_blocks"] > 1000
        assert kind.startswith("application/json")
        assert status["registry"]["bindings"] == 1 and status["registry"]["state"] == "ok"
        assert status["overlay"]["state"] in ("alone", "joined")
        assert any(item.startswith("udp 127.0.0.1:") for item in status["listeners"])
        kind, text = await deferToThread(_get, http_port, "/metrics")
        metrics = text.decode()
        assert kind.startswith("text/plain")
        assert 'sip_requests_total{method="REGISTER"} 1.0' in metrics
        assert 'sip_responses_total{status="200"} 1.0' in metrics
        assert 'sip_responses_total{status="400"} 2.0' in metrics
        assert "sip_malformed_messages_total 3.0" in metrics
        assert "process_resident_memory_bytes" in metrics and "python_allocated_blocks" in metrics
        assert "sip_registrations_total 1.0" in metrics
        assert "registry_bindings 1.0" in metrics
        assert 'registry_write_seconds_bucket{le="+Inf"} 1.0' in metrics
        assert "overlay_neighbours" in metrics
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_admin_status_reads_the_status_file(tmp_path: Path) -> None:
    service = await start_gateway(tmp_path / "d")
    try:
        service.write_status()
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            assert admin_main(["--data-dir", str(tmp_path / "d"), "status"]) == 0
        text = shown.getvalue()
        assert text.startswith("gateway") and "registry" in text and "ok: 0 bindings" in text
        assert "MiB resident" in text and "0 messages" in text
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_source_over_its_rate_gets_503_with_retry_after(tmp_path: Path) -> None:
    service = await start_gateway(tmp_path / "d", **{
        "limits.source_rate": "5", "limits.source_burst": "5",
        "auth.trusted_networks": "127.0.0.9/32"})
    try:
        port = ports(service)["udp"]

        def flood(local_host: str) -> list:
            ua = UA("alice", port, local_host=local_host)
            try:
                answers = []
                for _ in range(12):
                    ua.send(ua.request("OPTIONS", f"sip:127.0.0.1:{port}"))
                    answers.append(ua.expect(200, 503))
                return answers
            finally:
                ua.close()

        limited = await deferToThread(flood, "127.0.0.2")
        trusted = await deferToThread(flood, "127.0.0.9")
        assert [r.status for r in limited[:5]] == [200] * 5
        refused = [r for r in limited[5:] if r.status == 503]
        assert refused and all(int(r.header("retry-after")) >= 1 for r in refused)
        assert [r.status for r in trusted] == [200] * 12  # trusted: exempt by default
        assert service.metrics.rate_limited >= 1
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stop_refuses_new_requests_but_lets_a_ringing_call_finish(tmp_path: Path) -> None:
    service = await start_gateway(tmp_path / "d", **{"sip.shutdown_grace": "10"})
    port = ports(service)["udp"]
    alice, bob, carol = UA("alice", port), UA("bob", port), UA("carol", port)
    try:
        assert (await deferToThread(bob.register)).status == 200
        invite = alice.request("INVITE", bob.uri)
        alice.send(invite)
        incoming = await deferToThread(bob.expect_request, "INVITE")
        # The status counts what is under way (the core's own client transactions).
        under_way = service.status()["transactions"]
        assert under_way["client"] == 1 and under_way["proxied"] == 1
        stopped = service.stopService()  # the call is ringing at bob
        assert not stopped.called
        refused = await deferToThread(carol.register)
        assert refused.status == 503 and refused.header("retry-after")
        bob.answer(incoming, 200)
        answered = await deferToThread(alice.expect, 200)
        await stopped
        assert answered.status == 200
    finally:
        for ua in (alice, bob, carol):
            ua.close()


@pytest_twisted.ensureDeferred
async def test_admin_status_of_a_stopped_gateway_exits_3_and_says_when(tmp_path: Path) -> None:
    service = await start_gateway(tmp_path / "d", **{"overlay.enabled": "yes",
                                                     "overlay.listen": "127.0.0.1:0"})
    await service.stopService()
    stopped_after = time.time() - 1
    for command, words in ((["status"], "stopped at"), (["overlay", "status"], "stopped since")):
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            assert admin_main(["--data-dir", str(tmp_path / "d"), *command]) == 3
        assert words in shown.getvalue(), shown.getvalue()
    overlay = json.loads((tmp_path / "d" / "overlay-status.json").read_text())
    assert overlay["state"] == "stopped" and overlay["since"] >= stopped_after
    gateway = json.loads((tmp_path / "d" / "status.json").read_text())
    assert gateway["state"] == "stopped"


def test_admin_status_of_a_vanished_gateway_exits_3(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(json.dumps(
        {"state": "running", "pid": 2**22 + 12345, "updated": time.time()}))
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        assert admin_main(["--data-dir", str(tmp_path), "status"]) == 3
    assert "not running" in shown.getvalue()
