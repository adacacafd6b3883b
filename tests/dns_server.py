"""A real authoritative DNS server for tests: Knot DNS (Debian ``knot``) on a free
loopback port, serving zones the test writes and accepting RFC 2136 updates signed
with a TSIG key (HMAC-SHA256). Everything lives in a temporary directory; the server is
stopped by PID."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
KEY_NAME = "gateway-key"


def available() -> str | None:
    """Why no Knot server can be started here, or None."""
    if not Path(KNOTD).exists():
        return "knotd is not installed (Debian package knot)"
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, 0))
        return udp.getsockname()[1]


class KnotServer:
    """One knotd serving ``zones`` ({origin: zone file text}) on ``host`` (127.0.0.1; a
    lab address when started inside a lab namespace)."""

    def __init__(self, workdir: Path, zones: dict[str, str], host: str = "127.0.0.1") -> None:
        self.dir = workdir / "knot"
        self.zones = zones
        self.host = host
        self.port = 0
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it answers (UDP and TCP)."""
        return self.host, self.port

    def _config(self) -> str:
        zones = "".join(f'  - domain: {origin}\n    file: "{origin}.zone"\n'
                        "    acl: update\n    zonefile-sync: -1\n"
                        "    zonefile-load: difference-no-serial\n    journal-content: all\n"
                        for origin in self.zones)
        return (f'server:\n    rundir: "{self.dir}"\n    listen: {self.host}@{self.port}\n'
                f'    pidfile: "{self.dir}/knot.pid"\n'
                f'log:\n  - target: "{self.dir}/knot.log"\n    any: info\n'
                f'database:\n    storage: "{self.dir}"\n'
                f"key:\n  - id: {KEY_NAME}\n    algorithm: hmac-sha256\n"
                f"    secret: {self.secret}\n"
                f"acl:\n  - id: update\n    key: {KEY_NAME}\n    action: update\n"
                f'template:\n  - id: default\n    storage: "{self.dir}"\n'
                f"zone:\n{zones}")

    def start(self, timeout: float = 10.0) -> None:
        """Write the zones and the configuration, start knotd, wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for origin, text in self.zones.items():
            (self.dir / f"{origin}.zone").write_text(text)
        for _ in range(5):  # the free port may be taken between the check and the bind
            self.port = _free_port(self.host)
            conf = self.dir / "knot.conf"
            conf.write_text(self._config())
            self.process = subprocess.Popen([KNOTD, "-c", str(conf)],
                                            stdout=subprocess.DEVNULL,
                                            stderr=open(self.dir / "stderr", "wb"))  # noqa: SIM115
            if self._wait(timeout):
                return
            self.stop()
        raise RuntimeError(f"knotd did not start: {self.log()}")

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            if self.answers():
                return True
            time.sleep(0.1)
        return False

    def answers(self) -> bool:
        """Whether it answers an SOA query for the first zone."""
        import dns.message
        import dns.query

        origin = next(iter(self.zones))
        try:
            dns.query.udp(dns.message.make_query(origin, "SOA"), self.host, timeout=0.5,
                          port=self.port)
        except (OSError, dns.exception.Timeout):
            return False
        return True

    def log(self) -> str:
        """What knotd wrote (its log and standard error)."""
        parts = []
        for name in ("knot.log", "stderr"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop knotd (by PID) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def zone(origin: str, *records: str, ttl: int = 60, negative_ttl: int = 5) -> str:
    """A zone file for ``origin`` with an SOA (negative caching ``negative_ttl``), an NS
    and ``records`` (zone-file lines relative to the origin)."""
    head = (f"$ORIGIN {origin}.\n$TTL {ttl}\n"
            f"@ SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 {negative_ttl}\n"
            f"@ NS ns.{origin}.\nns A 127.0.0.1\n")
    return head + "".join(f"{line}\n" for line in records)
