"""The gateway under twistd runs its registry calls in a worker process: a dead worker
costs at most a 500 with Retry-After, never a stored binding, and leaves no orphan."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from gateway_proc import GatewayProcess
from sip_client import UdpClient, register


def worker_pids(parent: int) -> list[int]:
    """PIDs of ``python -m gateway.registry.worker`` processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"gateway.registry.worker" in cmdline and ppid == parent:
            found.append(int(entry.name))
    return found


def test_killed_worker_is_replaced_and_no_binding_is_lost(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path / "data") as gateway:
        assert gateway.process is not None
        workers = worker_pids(gateway.process.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGTERM)  # e.g. systemd signalling the whole group
        time.sleep(0.3)
        assert worker_pids(gateway.process.pid) == workers
        client = UdpClient(gateway.udp_port)
        try:
            assert client.ask(register("uma", local_port=client.port)).status == 200
            os.kill(workers[0], signal.SIGKILL)
            statuses = []
            deadline = time.monotonic() + 15
            while not statuses or statuses[-1] != 200:
                assert time.monotonic() < deadline, f"no 200 after the kill: {statuses}"
                response = client.ask(register("vic", local_port=client.port))
                statuses.append(response.status)
                if response.status != 200:
                    assert response.status == 500 and response.header("Retry-After")
                    time.sleep(0.2)
            query = client.ask(register("uma", local_port=client.port, contact="",
                                        expires=None))
            assert [str(c.address.uri) for c in query.contacts] == [
                f"sip:uma@127.0.0.1:{client.port}"]
        finally:
            client.close()
        replacement = worker_pids(gateway.process.pid)
        assert len(replacement) == 1 and replacement != workers
    # twistd ends by re-raising the SIGTERM it handled once shut down cleanly
    assert gateway.process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in gateway.log_text()
    assert worker_pids(gateway.process.pid) == []
    assert not Path(f"/proc/{replacement[0]}").exists()
