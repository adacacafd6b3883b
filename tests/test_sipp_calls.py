"""Real SIP clients (SIPp uac and uas) call each other through a real gateway
(``twistd -n p2psip-gateway``): over UDP, over TCP, and from UDP to TCP.

The callee's address is registered first, the way a phone registers (UDP: from the very
port the uas then listens on; TCP: over a connection that is then closed, so the gateway
reaches the uas by its Contact). Skipped without ``sipp`` unless
``P2PSIP_REQUIRE_SIPP=1``.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from gateway_proc import HOST, GatewayProcess, free_port
from sip_client import TcpClient, register
from test_sipp_register import SCENARIOS

CALLS = 5


def register_callee(gateway: GatewayProcess, user: str, port: int, transport: str) -> None:
    """Register sip:<user>@127.0.0.1 with Contact <sip:user@127.0.0.1:port>."""
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, port))
            sock.settimeout(5)
            sock.sendto(register(user, local_port=port), gateway.udp_address)
            assert sock.recv(65535).startswith(b"SIP/2.0 200 ")
        return
    client = TcpClient(gateway.tcp_port)
    try:
        client.send(register(user, local_port=port, transport="TCP",
                             contact=f"<sip:{user}@{HOST}:{port};transport=tcp>"))
        assert client.receive().status == 200
    finally:
        client.close()


def sipp_command(sipp: str, scenario: str, port: int, transport: str, target: int,
                 workdir: Path, *extra: str) -> list[str]:
    """A bounded SIPp run on 127.0.0.1."""
    return [sipp, "-sf", str(SCENARIOS / scenario), "-i", HOST, "-p", str(port),
            "-t", "u1" if transport == "udp" else "t1", "-m", str(CALLS),
            "-timeout", "40s", "-timeout_error", "-nostdin", "-trace_err",
            "-error_file", str(workdir / f"{scenario}.{port}.errors"),
            *extra, f"{HOST}:{target}"]


@pytest.mark.parametrize("caller_transport, callee_transport",
                         [("udp", "udp"), ("tcp", "tcp"), ("udp", "tcp")])
def test_sipp_calls_through_the_gateway(sipp: str, tmp_path: Path, caller_transport: str,
                                        callee_transport: str) -> None:
    with GatewayProcess(tmp_path / "data") as gateway:
        uas_port = free_port(socket.SOCK_DGRAM if callee_transport == "udp"
                             else socket.SOCK_STREAM)
        uac_port = free_port(socket.SOCK_DGRAM if caller_transport == "udp"
                             else socket.SOCK_STREAM)
        register_callee(gateway, "callee", uas_port, callee_transport)
        uas_target = gateway.udp_port if callee_transport == "udp" else gateway.tcp_port
        uac_target = gateway.udp_port if caller_transport == "udp" else gateway.tcp_port
        uas = sipp_command(sipp, "uas_call.xml", uas_port, callee_transport, uas_target,
                           tmp_path)
        uac = sipp_command(sipp, "uac_call.xml", uac_port, caller_transport, uac_target,
                           tmp_path, "-s", "callee", "-r", "5")
        run_call(uas, uac, tmp_path, gateway)


def run_call(uas_command: list[str], uac_command: list[str], workdir: Path,
             gateway: GatewayProcess) -> None:
    """Start the uas, run the uac to its end, and assert both succeeded and the gateway
    logged no traceback (SIPp's error files and the gateway log in the message)."""
    uas = subprocess.Popen(uas_command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           cwd=workdir)
    try:
        uac = subprocess.run(uac_command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             cwd=workdir, timeout=60)
        uas_code = uas.wait(timeout=60)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
    errors = "\n".join(p.read_text()[-2000:] for p in workdir.glob("*.errors"))
    assert uac.returncode == 0, f"uac failed:\n{errors}\n{gateway.log_tail()}"
    assert uas_code == 0, f"uas failed:\n{errors}\n{gateway.log_tail()}"
    assert "Traceback" not in gateway.log_text()


def _uas(sipp: str, scenario: str, port: int, target: int, workdir: Path,
         calls: int = 1) -> subprocess.Popen[bytes]:
    command = sipp_command(sipp, scenario, port, "udp", target, workdir)
    command[command.index("-m") + 1] = str(calls)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=workdir)


@pytest.mark.parametrize("answering, uac_scenario", [
    ("uas_call.xml", "uac_call.xml"),  # the first 200 wins, the ringing branch gets CANCEL
    ("uas_decline.xml", "uac_declined.xml"),  # a 603 ends the search, cancels the other
])
def test_sipp_forking_to_two_registered_phones(sipp: str, tmp_path: Path, answering: str,
                                               uac_scenario: str) -> None:
    with GatewayProcess(tmp_path / "data") as gateway:
        answer_port, ring_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        register_callee(gateway, "callee", answer_port, "udp")
        register_callee(gateway, "callee", ring_port, "udp")
        uases = [_uas(sipp, answering, answer_port, gateway.udp_port, tmp_path),
                 _uas(sipp, "uas_ring_cancel.xml", ring_port, gateway.udp_port, tmp_path)]
        try:
            command = sipp_command(sipp, uac_scenario, free_port(socket.SOCK_DGRAM), "udp",
                                   gateway.udp_port, tmp_path, "-s", "callee")
            command[command.index("-m") + 1] = "1"
            uac = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 cwd=tmp_path, timeout=60)
            codes = [uas.wait(timeout=60) for uas in uases]
        finally:
            for uas in uases:
                if uas.poll() is None:
                    uas.kill()
                    uas.wait()
        errors = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.errors"))
        assert uac.returncode == 0, f"uac failed:\n{errors}\n{gateway.log_tail()}"
        assert codes == [0, 0], f"uas failed:\n{errors}\n{gateway.log_tail()}"
