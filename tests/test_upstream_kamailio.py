"""The gateway next to a real conventional SIP server (Kamailio, Debian package
``kamailio``) configured as its [upstream]: the gateway registers its users there, a
SIPp phone registered at Kamailio calls a phone registered at the gateway, and the
other way round. Everything is a separate process on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from conftest import unavailable
from dns_server import zone
from gateway_proc import HOST, GatewayProcess, free_port
from sip_client import register
from test_sipp_calls import run_call
from test_sipp_register import SCENARIOS

KAMAILIO = "/usr/sbin/kamailio"
CONFIG = Path(__file__).with_name("kamailio-upstream.cfg")


@pytest.fixture
def kamailio_bin() -> str:
    """The kamailio binary; skip (or fail under P2PSIP_REQUIRE_KAMAILIO=1) without it."""
    path = KAMAILIO if os.path.exists(KAMAILIO) else shutil.which("kamailio")
    if path is None:
        unavailable("kamailio (Debian package kamailio) is not installed",
                    "P2PSIP_REQUIRE_KAMAILIO")
    return path


@contextmanager
def kamailio(binary: str, workdir: Path) -> Iterator[int]:
    """Kamailio on a free UDP port of 127.0.0.1; stopped by its process group."""
    port = free_port()
    rundir = workdir / "kam-run"
    rundir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "kamailio.log").open("wb")
    proc = subprocess.Popen([binary, "-f", str(CONFIG), "-DD", "-E", "-m", "64", "-M", "8",
                             "-A", f"LISTEN_PORT={port}", "-Y", str(rundir),
                             "-P", str(rundir / "kamailio.pid")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_options(port, proc)
        yield port
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_options(port: int, proc: subprocess.Popen[bytes]) -> None:
    from gateway_proc import options_request

    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.3)
        while True:
            assert proc.poll() is None, "kamailio exited"
            assert time.monotonic() < deadline, "kamailio not ready"
            sock.sendto(options_request(port, sock.getsockname()[1]), (HOST, port))
            with suppress(TimeoutError):
                if sock.recv(65535).startswith(b"SIP/2.0 "):
                    return


def register_at(port: int, user: str, domain: str, local_port: int) -> None:
    """REGISTER sip:user@domain at 127.0.0.1:port from UDP ``local_port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, local_port))
        sock.settimeout(5)
        sock.sendto(register(user, local_port=local_port, domain=domain), (HOST, port))
        answer = sock.recv(65535)
        assert answer.startswith(b"SIP/2.0 200 "), answer[:200]


def uac_to(tmp_path: Path, domain: str) -> Path:
    """uac_call.xml calling sip:[service]@DOMAIN."""
    path = tmp_path / f"uac_{domain}.xml"
    path.write_text((SCENARIOS / "uac_call.xml").read_text().replace(
        "sip:[service]@[remote_ip]:[remote_port]", f"sip:[service]@{domain}"))
    return path


def kam_in_dns(kam_port: int) -> dict[str, str]:
    """kam.example in DNS: two _sip._udp SRV targets, the first a closed port (a dead
    server), the second Kamailio."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        dead = sock.getsockname()[1]
    return {"kam.example": zone(
        "kam.example", f"_sip._udp SRV 10 10 {dead} dead", f"_sip._udp SRV 20 10 {kam_port} kam",
        f"dead A {HOST}", f"kam A {HOST}")}


@pytest.mark.parametrize("mode", ["by-address", "by-name-in-dns", "federation-by-dns"])
def test_calls_between_a_kamailio_phone_and_a_gateway_phone(sipp: str, kamailio_bin: str,
                                                           tmp_path: Path, mode: str,
                                                           knot_zones) -> None:  # noqa: ANN001
    """By address, and by name: ``upstream.uri = sip:kam.example`` located in DNS
    (RFC 3263), whose first SRV target is dead: registrations and calls fail over to
    Kamailio. Federation: no [upstream] at all; the default resolver chain finds
    kam.example's servers in DNS and fails over from the dead one (a call from the
    gateway's phone to Kamailio's; Kamailio here does not look other domains up, so
    only that direction)."""
    with kamailio(kamailio_bin, tmp_path) as kam_port:
        dns_server = knot_zones(kam_in_dns(kam_port)).address if mode != "by-address" else None
        config = tmp_path / "gateway.ini"
        if dns_server is None:
            config.write_text(f"[upstream]\nuri = sip:{HOST}:{kam_port}\n"
                              "domain = kam.example\nexpires = 120\n")
        elif mode == "by-name-in-dns":
            config.write_text("[upstream]\nuri = sip:kam.example\nexpires = 120\n"
                              f"[dns]\nservers = {dns_server[0]}:{dns_server[1]}\n")
        else:
            config.write_text(f"[dns]\nservers = {dns_server[0]}:{dns_server[1]}\n")
        with GatewayProcess(tmp_path / "gw", extra_args=("--config", str(config),
                                                         "--domain", "a.example")) as gw:
            alice_port, kuser_port = free_port(), free_port()
            register_at(gw.udp_port, "alice", "a.example", alice_port)
            register_at(kam_port, "kuser", "kam.example", kuser_port)
            time.sleep(1.0)  # the gateway registers alice at Kamailio 0.1 s after her
            common = ["-i", HOST, "-m", "1", "-timeout", "30s", "-timeout_error",
                      "-nostdin", "-trace_err"]

            if mode != "federation-by-dns":
                # A phone at Kamailio calls sip:alice@kam.example: Kamailio's location
                # points at the gateway, which finds alice's phone.
                uas = [sipp, "-sf", str(SCENARIOS / "uas_call.xml"), "-p", str(alice_port),
                       *common, "-error_file", str(tmp_path / "k2g-uas.errors"),
                       f"{HOST}:{gw.udp_port}"]
                uac = [sipp, "-sf", str(uac_to(tmp_path, "kam.example")), "-s", "alice",
                       "-p", str(free_port()), *common,
                       "-error_file", str(tmp_path / "k2g-uac.errors"), f"{HOST}:{kam_port}"]
                run_call(uas, uac, tmp_path, gw)

            # alice's phone calls sip:kuser@kam.example: neither local nor in the
            # overlay, so the gateway hands it to Kamailio (the upstream, or DNS's).
            uas = [sipp, "-sf", str(SCENARIOS / "uas_call.xml"), "-p", str(kuser_port),
                   *common, "-error_file", str(tmp_path / "g2k-uas.errors"),
                   f"{HOST}:{kam_port}"]
            uac = [sipp, "-sf", str(uac_to(tmp_path, "kam.example")), "-s", "kuser",
                   "-p", str(free_port()), *common,
                   "-error_file", str(tmp_path / "g2k-uac.errors"), f"{HOST}:{gw.udp_port}"]
            run_call(uas, uac, tmp_path, gw)
