"""The real gateway (``twistd -n p2psip-gateway``) on a host of the network lab."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path

from gateway_proc import REPO, twistd_executable
from netlab import Lab

from gateway.app.status_file import OVERLAY_STATUS_FILE

SIP_PORT = 5060
TLS_PORT = 5061
OVERLAY_PORT = 6084
LAB_NETWORKS = "198.18.0.0/15, 10.0.0.0/8"


def options(address: str, port: int, local: tuple[str, int]) -> bytes:
    """An OPTIONS request to ``address:port`` from ``local``."""
    return (f"OPTIONS sip:{address}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex[:16]}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{local[0]}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:probe@{address}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def lab_env() -> dict[str, str]:
    """The environment of a lab process: this working tree's ``gateway`` package first."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


class LabGateway:
    """One gateway listening on ``address`` (UDP and TCP 5060, overlay 6084) in ``ns``."""

    def __init__(self, lab: Lab, ns: str, address: str, domain: str, workdir: Path,
                 *settings: str, bootstrap: str = "", listen: str | None = None,
                 trusted_networks: str | None = LAB_NETWORKS, tls: bool = False) -> None:
        """``listen``: the SIP and overlay listen host (default ``address``; "0.0.0.0"
        for a wildcard listener); ``trusted_networks``: auth.trusted_networks (None:
        the default); ``tls``: a TLS listener on port 5061."""
        self.lab, self.ns, self.address, self.domain = lab, ns, address, domain
        self.listen = listen or address
        self.data_dir = workdir / f"{domain}-data"
        self.log = workdir / f"{domain}.log"
        self.settings = settings
        self.bootstrap = bootstrap
        self.trusted_networks = trusted_networks
        self.tls = tls
        self.process = None
        self.crashed_pid: int | None = None  # the pid of the last process killed

    @property
    def overlay(self) -> str:
        """host:port of its overlay node."""
        return f"{self.address}:{OVERLAY_PORT}"

    def command(self) -> list[str]:
        """The twistd command line."""
        argv = [twistd_executable(), "-n", "--pidfile=", "p2psip-gateway",
                "--data-dir", str(self.data_dir), "--domain", self.domain,
                "--listen-udp", f"{self.listen}:{SIP_PORT}",
                "--listen-tcp", f"{self.listen}:{SIP_PORT}",
                "--listen-tls", f"{self.listen}:{TLS_PORT}" if self.tls else "",
                "--listen-overlay", f"{self.listen}:{OVERLAY_PORT}"]
        if self.trusted_networks is not None:
            argv += ["--set", f"auth.trusted_networks={self.trusted_networks}"]
        if self.bootstrap:
            argv += ["--bootstrap", self.bootstrap]
        if not any(setting.startswith("overlay.first_pin=") for setting in self.settings):
            # The lab's gateways of several domains trust each other without DNS
            # fingerprints or pins (the default, dns, is exercised elsewhere).
            argv += ["--set", "overlay.first_pin=replicas"]
        if not any(setting.startswith("dns.servers=") for setting in self.settings):
            # DNS stays inside the lab: a server in which no name exists.
            argv += ["--set", f"dns.servers={self.lab.empty_dns(self.ns).setting}"]
        for setting in self.settings:
            argv += ["--set", setting]
        return argv

    def add_user(self, user: str, password: str) -> None:
        """Add ``sip:user@<domain>`` with ``password`` (``p2psip-admin users add``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "gateway.app.admin", "--data-dir",
                        str(self.data_dir), "users", "add", f"sip:{user}@{self.domain}",
                        "--password-stdin"], input=password + "\n", text=True, check=True,
                       capture_output=True, env=lab_env())

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait (bounded) until it answers OPTIONS from inside its host."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = self.lab.popen(self.ns, self.command(), self.log, env=lab_env())
        with self.lab.inside(self.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.bind((self.address, 0))
            sock.settimeout(0.2)
            deadline = time.monotonic() + timeout
            while True:
                assert self.process.poll() is None, f"gateway exited:\n{self.tail()}"
                assert time.monotonic() < deadline, f"gateway not ready:\n{self.tail()}"
                sock.sendto(options(self.address, SIP_PORT, sock.getsockname()),
                            (self.address, SIP_PORT))
                with suppress(TimeoutError):
                    if sock.recv(65535).startswith(b"SIP/2.0 "):
                        return

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s)."""
        if self.process is not None:
            self.lab.stop(self.process)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.crashed_pid = self.process.pid
            self.process.kill()
            self.process.wait(timeout=5)

    def overlay_status(self, timeout: float = 20.0) -> dict:
        """The overlay status file, once it names a route (bounded wait)."""
        path = self.data_dir / OVERLAY_STATUS_FILE
        deadline = time.monotonic() + timeout
        while True:
            if path.exists():
                status = json.loads(path.read_text())
                if status.get("route"):
                    return status
            assert time.monotonic() < deadline, f"no overlay status:\n{self.tail()}"
            time.sleep(0.2)

    def tail(self, lines: int = 40) -> str:
        """The end of its log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
