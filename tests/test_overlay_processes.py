"""The overlay end to end, every part its own process on loopback: gateways A
(a.example) and B (b.example) under twistd, one ``p2psip-peer``
(sip:carol@overlay.example) and SIPp phones registered at A and B.

phone@A calls phone@B; the peer calls phone@A; phone@B calls the peer. Every call
reaches 200 OK and ends with BYE/200.

On the default first-pin rule, as an operator would run it without DNS fingerprints:
no domain is trusted until it is pinned, so each gateway pins the other's certificate
(and B the peer's) with ``p2psip-admin overlay pins pin``, reading the fingerprints from
``p2psip-admin overlay status --json`` and the peer's start-up line, and the peer's
lookups and call take ``--pin``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway_proc import HOST, REPO, GatewayProcess, free_port
from sip_client import register
from test_sipp_calls import run_call
from test_sipp_register import SCENARIOS

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                               os.environ.get("PYTHONPATH")])))


@contextmanager
def process(command: list[str], log: Path, ready: str | None = None,
            timeout: float = 30) -> Iterator[str]:
    """Run ``command`` (output to ``log``); wait for a line starting with ``ready``
    and yield it."""
    handle = log.open("w")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE if ready else handle,
                            stderr=handle, text=True, env=ENV, cwd=log.parent)
    try:
        if ready:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            line = proc.stdout.readline()
            while not line.startswith(ready):
                assert time.monotonic() < deadline and line, f"{command[:3]} not ready"
                line = proc.stdout.readline()
        yield line if ready else ""
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        handle.close()


def register_phone(gateway: GatewayProcess, user: str, domain: str, port: int) -> None:
    """REGISTER sip:user@domain from UDP ``port`` (where the SIPp uas then listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(5)
        sock.sendto(register(user, local_port=port, domain=domain), gateway.udp_address)
        assert sock.recv(65535).startswith(b"SIP/2.0 200 ")


def uac_scenario(tmp_path: Path, domain: str) -> Path:
    """uac_call.xml calling sip:[service]@DOMAIN instead of the gateway's address."""
    text = (SCENARIOS / "uac_call.xml").read_text().replace(
        "sip:[service]@[remote_ip]:[remote_port]", f"sip:[service]@{domain}")
    path = tmp_path / f"uac_{domain}.xml"
    path.write_text(text)
    return path


def sipp_pair(sipp: str, tmp_path: Path, gateway_from: GatewayProcess, callee: str,
              domain: str, uas_port: int | None, uas_gateway: GatewayProcess | None,
              tag: str) -> tuple[list[str], list[str]]:
    """The commands of a SIPp uas (when ``uas_port``) and a uac calling callee@domain."""
    common = ["-i", HOST, "-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin",
              "-trace_err"]
    uas = []
    if uas_port is not None and uas_gateway is not None:
        uas = [sipp, "-sf", str(SCENARIOS / "uas_call.xml"), "-p", str(uas_port), *common,
               "-error_file", str(tmp_path / f"{tag}-uas.errors"),
               f"{HOST}:{uas_gateway.udp_port}"]
    uac = [sipp, "-sf", str(uac_scenario(tmp_path, domain)), "-s", callee,
           "-p", str(free_port()), *common, "-error_file", str(tmp_path / f"{tag}-uac.errors"),
           f"{HOST}:{gateway_from.udp_port}"]
    return uas, uac


def admin(gateway: GatewayProcess, *argv: str) -> str:
    """Run ``p2psip-admin`` on ``gateway``'s data directory; its output."""
    result = subprocess.run([sys.executable, "-m", "gateway.app.admin", "--data-dir",
                             str(gateway.data_dir), *argv], capture_output=True, text=True,
                            env=ENV, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def certificate_of(gateway: GatewayProcess) -> str:
    """The fingerprint of the certificate ``gateway`` signs its records with."""
    deadline = time.monotonic() + 20
    while True:
        shown = subprocess.run([sys.executable, "-m", "gateway.app.admin", "--data-dir",
                                str(gateway.data_dir), "overlay", "status", "--json"],
                               capture_output=True, text=True, env=ENV, timeout=30)
        if shown.returncode == 0 and json.loads(shown.stdout).get("certificate"):
            return json.loads(shown.stdout)["certificate"]
        assert time.monotonic() < deadline, shown.stdout + shown.stderr
        time.sleep(0.2)


def wait_for_record(peer_state: Path, bootstrap: str, aor: str, tmp_path: Path,
                    pins: list[str]) -> None:
    """Poll with ``p2psip-peer lookup`` until ``aor`` is in the DHT (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        result = subprocess.run([sys.executable, "-m", "gateway.app.peer", "--state-dir",
                                 str(peer_state), "--bootstrap", bootstrap, *pins,
                                 "lookup", aor],
                                capture_output=True, text=True, env=ENV, timeout=30,
                                cwd=tmp_path)
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"{aor} never found: {result.stderr}"
        time.sleep(0.5)


def test_gateways_and_a_peer_call_each_other(sipp: str, tmp_path: Path) -> None:
    # Pins are re-read at every health check.
    fast = ("--set", "overlay.health_interval=0.5")
    a = GatewayProcess(tmp_path / "a", extra_args=("--domain", "a.example", *fast))
    with a:
        seed = f"{HOST}:{a.overlay_port}"
        b = GatewayProcess(tmp_path / "b", extra_args=("--domain", "b.example",
                                                      "--bootstrap", seed, *fast))
        with b, process([sys.executable, "-m", "gateway.app.peer", "--state-dir",
                         str(tmp_path / "carol"), "--bootstrap", seed, "join", "--aor",
                         "sip:carol@overlay.example"], tmp_path / "carol.log",
                        ready="sip:carol@overlay.example joined") as joined:
            carol = re.search(r"certificate sha256=([0-9a-f]{64})", joined)
            assert carol, joined
            cert_a, cert_b = certificate_of(a), certificate_of(b)
            admin(a, "overlay", "pins", "pin", "b.example", cert_b)
            admin(b, "overlay", "pins", "pin", "a.example", cert_a)
            admin(b, "overlay", "pins", "pin", "overlay.example", carol.group(1))
            pins = ["--pin", f"a.example={cert_a}", "--pin", f"b.example={cert_b}",
                    "--pin", f"overlay.example={carol.group(1)}"]
            alice_port, bob_port = free_port(), free_port()
            register_phone(a, "alice", "a.example", alice_port)
            register_phone(b, "bob", "b.example", bob_port)
            for aor in ("sip:alice@a.example", "sip:bob@b.example",
                        "sip:carol@overlay.example"):
                wait_for_record(tmp_path / "probe", seed, aor, tmp_path, pins)

            # phone@A calls phone@B.
            run_call(*sipp_pair(sipp, tmp_path, a, "bob", "b.example", bob_port, b, "ab"),
                     tmp_path, a)
            # The peer calls phone@A.
            uas, _ = sipp_pair(sipp, tmp_path, a, "alice", "a.example", alice_port, a, "ca")
            uas_proc = subprocess.Popen(uas, stdout=subprocess.DEVNULL, cwd=tmp_path)
            try:
                call = subprocess.run(
                    [sys.executable, "-m", "gateway.app.peer", "--state-dir",
                     str(tmp_path / "dave"), "--bootstrap", seed, *pins, "call", "--from",
                     "sip:self@overlay.example", "sip:alice@a.example"],
                    capture_output=True, text=True, env=ENV, timeout=60, cwd=tmp_path)
                assert call.returncode == 0, call.stdout + call.stderr + a.log_tail()
                assert "sip:alice@a.example: 200" in call.stdout
                assert uas_proc.wait(timeout=30) == 0
            finally:
                if uas_proc.poll() is None:
                    uas_proc.kill()
                    uas_proc.wait()
            # phone@B calls the peer (no uas: the peer answers).
            _, uac = sipp_pair(sipp, tmp_path, b, "carol", "overlay.example", None, None,
                               "bc")
            result = subprocess.run(uac, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    cwd=tmp_path, timeout=60)
            errors = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("bc-*.errors"))
            assert result.returncode == 0, f"{errors}\n{b.log_tail()}"
        assert "Traceback" not in a.log_text() + b.log_text()

