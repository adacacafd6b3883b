"""Run the real gateway (``twistd -n p2psip-gateway``) as a subprocess for tests.

Usage::

    with GatewayProcess(tmp_path / "data") as gateway:
        send_something_to(("127.0.0.1", gateway.udp_port))
    # stopped (SIGTERM, then SIGKILL after a bounded wait)

It listens on free 127.0.0.1 ports only, keeps its ports across ``stop()``/``start()``
(so a restart on the same data dir is the same gateway to a client), and is ready once
it has answered an OPTIONS over UDP and accepts TCP connections.

The repository root is put first on ``PYTHONPATH``, so the ``gateway`` package under
test is this working tree even when an older copy is installed; the ``p2psip-gateway``
twistd plugin itself must be installed (``pip install -e .``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import empty_dns

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """Return a port number that is free on 127.0.0.1 for ``kind`` right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def twistd_executable() -> str:
    """The ``twistd`` that belongs to this interpreter (falling back to PATH)."""
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError("twistd not found next to the interpreter or on PATH")
    return found


def options_request(port: int, local_port: int) -> bytes:
    """A minimal OPTIONS request to ``127.0.0.1:port`` from ``127.0.0.1:local_port``."""
    return (
        f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:probe@{HOST}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class GatewayProcess:
    """The gateway under ``twistd -n``, with its ports, data dir and log file."""

    def __init__(
        self,
        data_dir: Path,
        *,
        udp_port: int | None = None,
        tcp_port: int | None = None,
        tls_port: int | None = None,
        overlay_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        log_path: Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.udp_port = udp_port or free_port(socket.SOCK_DGRAM)
        self.tcp_port = tcp_port or free_port(socket.SOCK_STREAM)
        self.tls_port = tls_port or free_port(socket.SOCK_STREAM)
        self.overlay_port = overlay_port or free_port(socket.SOCK_DGRAM)
        self.extra_args = extra_args
        self.log_path = log_path or self.data_dir.with_name(self.data_dir.name + "-gateway.log")
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def udp_address(self) -> tuple[str, int]:
        """Where the gateway listens for SIP over UDP."""
        return (HOST, self.udp_port)

    @property
    def tcp_address(self) -> tuple[str, int]:
        """Where the gateway listens for SIP over TCP."""
        return (HOST, self.tcp_port)

    def command(self) -> list[str]:
        """The command line that runs the gateway in the foreground."""
        return [
            twistd_executable(), "-n", "--pidfile=", "p2psip-gateway",
            "--data-dir", str(self.data_dir),
            "--listen-udp", f"{HOST}:{self.udp_port}",
            "--listen-tcp", f"{HOST}:{self.tcp_port}",
            "--listen-tls", f"{HOST}:{self.tls_port}",
            "--listen-overlay", f"{HOST}:{self.overlay_port}",
            *self._dns_isolation(),
            *self.extra_args,
        ]  # fmt: skip

    def _dns_isolation(self) -> list[str]:
        """``--set dns.servers`` pointing at :mod:`empty_dns`, unless the test chose its
        DNS servers (a later ``--set`` or a config file with a [dns] section)."""
        for index, arg in enumerate(self.extra_args):
            chosen = arg.startswith("dns.servers=")
            if arg == "--config" and index + 1 < len(self.extra_args):
                chosen = "[dns]" in Path(self.extra_args[index + 1]).read_text()
            if chosen:
                return []
        return ["--set", f"dns.servers={empty_dns.shared().setting}"]

    def running(self) -> bool:
        """Whether the gateway process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the gateway and wait (bounded) until it answers; raise if it does not."""
        if self.running():
            raise RuntimeError("gateway already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """Poll with OPTIONS over UDP until any response, then connect over TCP."""
        deadline = time.monotonic() + self.ready_timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            sock.settimeout(0.2)
            local_port = sock.getsockname()[1]
            while True:
                if not self.running():
                    raise RuntimeError(f"gateway exited early:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready in time:\n{self.log_tail()}")
                sock.sendto(options_request(self.udp_port, local_port), self.udp_address)
                with suppress(TimeoutError):
                    if sock.recv(65535).startswith(b"SIP/2.0 "):
                        break
        while True:
            try:
                socket.create_connection(self.tcp_address, timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or not self.running():
                    raise RuntimeError(f"gateway TCP not ready:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM the gateway, wait up to ``stop_timeout``, then SIGKILL; its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode

    def restart(self) -> None:
        """Stop and start again on the same data dir and ports."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Everything the gateway has written to its log file so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for failure messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> GatewayProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
