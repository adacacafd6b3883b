"""Registry outages during a run: a real PostgreSQL stopped and started again with
pg_ctlcluster, and an SQLite registry whose write lock another process holds. While
writes cannot be committed, REGISTERs that must write get 500 with Retry-After and
everything already registered keeps being served from memory; once the database is
back the gateway writes again by itself."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from conftest import ports, start_gateway, unavailable
from location_fixtures import postgres_url  # noqa: F401 - fixture
from sip_client import UdpClient, register
from twisted.internet.threads import deferToThread


def _cluster() -> tuple[str, str]:
    """(version, name) of the local PostgreSQL cluster on port 5432."""
    result = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True,
                            text=True, timeout=30, check=True)
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "5432":
            return fields[0], fields[1]
    raise RuntimeError("no PostgreSQL cluster on port 5432")


def _pg(action: str, cluster: tuple[str, str]) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action],
                   check=True, capture_output=True, timeout=60)


def _wait_ready(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
                         timeout=10).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.3)


@pytest.fixture
def cluster() -> tuple[str, str]:
    """The cluster to stop; skipped (or failed under P2PSIP_REQUIRE_POSTGRES=1) when
    this machine cannot stop and start it."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        unavailable("pg_ctlcluster (as root) is needed to stop and start PostgreSQL",
                    "P2PSIP_REQUIRE_POSTGRES")
    return _cluster()


def _status(port: int, user: str, *, contact: str | None = None, cseq: int = 1) -> tuple[
        int, str | None, int]:
    client = UdpClient(port, timeout=15)
    try:
        response = client.ask(register(user, local_port=client.port, contact=contact,
                                       call_id=f"outage-{user}", cseq=cseq))
        return response.status, response.header("retry-after"), len(response.contacts)
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_registry_outage_gives_500_then_recovers(postgres_url, cluster,  # noqa: F811
                                                       tmp_path: Path) -> None:
    service = await start_gateway(tmp_path / "d", **{"database.url": postgres_url,
                                                     "database.sync_interval": "0.5"})
    port = ports(service)["udp"]
    stopped = False
    try:
        assert (await deferToThread(_status, port, "alice"))[0] == 200
        await deferToThread(_pg, "stop", cluster)
        stopped = True
        status, retry_after, _ = await deferToThread(_status, port, "bob")
        assert status == 500 and retry_after is not None
        # alice is still served from memory: a query (no Contact) lists her binding.
        query = await deferToThread(_status, port, "alice", contact="", cseq=2)
        assert query[0] == 200 and query[2] == 1
        await deferToThread(_pg, "start", cluster)
        stopped = False
        await deferToThread(_wait_ready)
        await _until_registered(port, "bob", 2)
        assert [b.aor for b in service.location.lookup("sip:bob@127.0.0.1")]
    finally:
        if stopped:
            await deferToThread(_pg, "start", cluster)
            await deferToThread(_wait_ready)
        await service.stopService()


async def _until_registered(port: int, user: str, first_cseq: int) -> None:
    deadline = time.monotonic() + 30
    cseq = first_cseq
    while True:
        status = (await deferToThread(_status, port, user, cseq=cseq))[0]
        if status == 200:
            return
        assert time.monotonic() < deadline, f"writes did not resume (last {status})"
        cseq += 1


@pytest_twisted.ensureDeferred
async def test_sqlite_locked_gives_500_then_recovers(tmp_path: Path) -> None:
    """Another process (an admin's sqlite3 shell, a backup) holds the write lock for
    longer than the busy timeout: REGISTER gets 500 + Retry-After instead of waiting
    forever, lookups go on, and writes resume once the lock is released."""
    service = await start_gateway(tmp_path / "d")
    port = ports(service)["udp"]
    holder = sqlite3.connect(tmp_path / "d" / "registry.sqlite3", isolation_level=None)
    try:
        assert (await deferToThread(_status, port, "alice"))[0] == 200
        holder.execute("BEGIN IMMEDIATE")  # the write lock, until COMMIT/ROLLBACK
        status, retry_after, _ = await deferToThread(_status, port, "bob")
        assert status == 500 and retry_after is not None
        query = await deferToThread(_status, port, "alice", contact="", cseq=2)
        assert query[0] == 200 and query[2] == 1
        holder.execute("ROLLBACK")
        await _until_registered(port, "bob", 2)
        assert [b.aor for b in service.location.lookup("sip:bob@127.0.0.1")]
    finally:
        holder.close()
        await service.stopService()
