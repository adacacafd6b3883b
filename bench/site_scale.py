"""REGISTER and call rates of a site of 1, 2 and 3 gateways sharing one PostgreSQL registry.

Each site size runs at once, side by side: its gateways (``twistd p2psip-gateway`` on
their defaults, the overlay mirror on, one overlay per site) share a database of their
own on the PostgreSQL server at ``--server`` (created and dropped here). For each
offered rate, the sites take turns: every gateway of the site gets that rate at the
same time from a SIPp of its own (REGISTER of new users, ``bench/sipp/register.xml``;
with ``--calls``, calls from each gateway to a SIPp uas registered at the next one, so
that every call crosses between gateways, ``bench/sipp/uac_call.xml``).
A site's step is clean when every gateway's run is clean (SIPP-NOTES.md: no failure,
timeout or retransmission, ≥ 95 % of the offered rate). Reported per site: the highest
clean rate per gateway and in total, the gateways' CPU, the database's work
(transactions and rows per second from ``pg_stat_database``, PostgreSQL's CPU), and the
sync delay — from one gateway's commit to another's memory having it — as the gateways
measure it (``registry.sync_delay_ms`` in their status).

Usage::

    python bench/site_scale.py [--calls] [--sizes 1,2,3] [--rates 500,1000,...]
        [--step-seconds 10] [--server postgresql+psycopg://postgres@127.0.0.1:5432/test]

Everything runs on 127.0.0.1; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
from call_load import UAC, start_uas
from cryptography.hazmat.primitives import serialization
from register_load import (
    HOST,
    Step,
    Target,
    free_port,
    run_step,
    stop_process,
)
from sqlalchemy.engine import make_url

from gateway.sip.tls import self_signed

DEFAULT_RATES = (250, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000)


@dataclass
class Site:
    """``size`` gateways on database ``database``."""

    size: int
    database: str
    url: str
    gateways: list[Target] = field(default_factory=list)
    clean_per_gateway: int = 0
    steps: list[dict[str, object]] = field(default_factory=list)


def _admin(server: str) -> str:
    return make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def databases(server: str, names: list[str]) -> Iterator[None]:
    """Create the databases ``names`` on ``server`` (dropped afterwards)."""
    with psycopg.connect(_admin(server), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        with psycopg.connect(_admin(server), autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_counters(server: str, name: str) -> dict[str, float]:
    """Transactions and rows written so far in database ``name``, and the CPU seconds
    of every PostgreSQL process of this machine."""
    with psycopg.connect(_admin(server), autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
                           "FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    cpu = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] == "postgres" and process.info["cpu_times"] is not None:
            cpu += process.info["cpu_times"].user + process.info["cpu_times"].system
    return {"commits": float(row[0]), "rows": float(row[1]), "cpu": cpu}


def _certificates(directory: Path, size: int) -> tuple[list[tuple[Path, Path]], Path]:
    """A self-signed certificate per gateway (gw<n>.bench.test, 127.0.0.1) and a trust
    store holding them all: how the site's gateways know each other."""
    directory.mkdir(parents=True, exist_ok=True)
    pairs, store = [], b""
    for index in range(1, size + 1):
        certificate, key = self_signed([f"gw{index}.bench.test"], [HOST])
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        cert_path, key_path = directory / f"gw{index}.crt", directory / f"gw{index}.key"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        pairs.append((cert_path, key_path))
        store += cert_pem
    (directory / "site-ca.pem").write_bytes(store)
    return pairs, directory / "site-ca.pem"


def start_site(size: int, server: str, workdir: Path, run_id: str) -> Site:
    """Start ``size`` gateways on a database of their own, one overlay among them, each
    knowing the others by certificate ([site] uri and peers)."""
    name = f"p2psip_site_bench_{run_id}_{size}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    site = Site(size, name, url)
    first_overlay = 0
    pairs, store = _certificates(workdir / f"site{size}-tls", size)
    peers = ",".join(f"gw{index}.bench.test" for index in range(1, size + 1))
    for index in range(size):
        overlay_port, tls_port = free_port(), free_port(socket.SOCK_STREAM)
        cert, key = pairs[index]
        args = ["--set", f"database.url={url}", "--listen-overlay", f"{HOST}:{overlay_port}",
                "--listen-tls", f"{HOST}:{tls_port}", "--set", f"tls.certificate={cert}",
                "--set", f"tls.private_key={key}", "--set", f"tls.ca_file={store}",
                "--set", f"site.uri=sips:{HOST}:{tls_port}", "--set", f"site.peers={peers}"]
        if first_overlay:
            args += ["--bootstrap", f"{HOST}:{first_overlay}"]
        else:
            first_overlay = overlay_port
        gateway = Target("gateway", f"site of {size}, gateway {index + 1}",
                         workdir / f"site{size}-gw{index + 1}", gateway_args=tuple(args))
        gateway.start()
        site.gateways.append(gateway)
    return site


def sync_delays(site: Site) -> list[dict[str, float] | None]:
    """Each gateway's latest sync delays (p50/p99 ms) from its status file."""
    found = []
    for gateway in site.gateways:
        path = gateway.workdir / "data" / "status.json"
        try:
            found.append(json.loads(path.read_text())["registry"].get("sync_delay_ms"))
        except (OSError, ValueError, KeyError):
            found.append(None)
    return found


def start_callees(site: Site) -> list[subprocess.Popen[bytes]]:
    """A SIPp uas per gateway, registered there as callee<n> (n from 1)."""
    return [start_uas(gateway, gateway.workdir, f"callee{index}")
            for index, gateway in enumerate(site.gateways, start=1)]


def site_step(site: Site, rate: int, seconds: int, run_id: str, workdir: Path,
              server: str, calls: bool = False) -> dict[str, object]:
    """Offer ``rate`` to every gateway of ``site`` at once; the step's outcome. With
    ``calls``, gateway n calls the callee registered at gateway n + 1 (every call
    crosses from one gateway to another when the site has several)."""
    before = database_counters(server, site.database)
    started = time.monotonic()
    results: list[Step | None] = [None] * site.size

    def one(index: int) -> None:
        scenario = (["-sf", str(UAC), "-s", f"callee{(index + 1) % site.size + 1}"]
                    if calls else None)
        results[index] = run_step(site.gateways[index], rate, seconds,
                                  f"{run_id}s{site.size}g{index}",
                                  workdir / f"site{site.size}-r{rate}-g{index}", scenario)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(site.size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # the status files catch up (written every second)
    after = database_counters(server, site.database)
    steps = [r for r in results if r is not None]
    return {
        "what": "calls" if calls else "REGISTER",
        "size": site.size, "rate_per_gateway": rate, "total_offered": rate * site.size,
        "clean": all(s.clean for s in steps) and len(steps) == site.size,
        "achieved_total": round(sum(s.achieved_rate for s in steps)),
        "reasons": [r for s in steps for r in s.reasons],
        "rtt_p50_ms": [s.rtt_p50_ms for s in steps],
        "gateway_cpu_pct": [round(s.target_cpu_pct) for s in steps],
        "db_commits_per_s": round((after["commits"] - before["commits"]) / elapsed),
        "db_rows_per_s": round((after["rows"] - before["rows"]) / elapsed),
        "postgres_cpu_pct": round(100 * (after["cpu"] - before["cpu"]) / elapsed),
        "sync_delay_ms": sync_delays(site),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,3")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--step-seconds", type=int, default=10)
    parser.add_argument("--patience", type=int, default=2,
                        help="unclean steps in a row before a site drops out")
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", action="store_true",
                        help="calls (INVITE..BYE, each from one gateway to a callee "
                             "registered at the next) instead of REGISTERs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rates = [int(r) for r in args.rates.split(",")]
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="site-scale-"))
    names = [f"p2psip_site_bench_{run_id}_{size}" for size in sizes]
    print(f"site_scale {datetime.now(UTC).isoformat(timespec='seconds')} sizes {sizes} "
          f"rates {rates} x {args.step_seconds} s; workdir {workdir}", flush=True)
    sites: list[Site] = []
    uases: list[subprocess.Popen[bytes]] = []
    with databases(args.server, names):
        try:
            for size in sizes:
                sites.append(start_site(size, args.server, workdir, run_id))
            time.sleep(3)  # overlays joined, heartbeats written
            if args.calls:
                for site in sites:
                    uases += start_callees(site)
                time.sleep(1)  # the callees' registrations reach every gateway
            misses = {site.size: 0 for site in sites}
            for rate in rates:
                for site in sites:
                    if misses[site.size] >= args.patience:
                        continue
                    outcome = site_step(site, rate, args.step_seconds, run_id, workdir,
                                        args.server, args.calls)
                    site.steps.append(outcome)
                    print(json.dumps(outcome), flush=True)
                    if outcome["clean"]:
                        site.clean_per_gateway = rate
                        misses[site.size] = 0
                    else:
                        misses[site.size] += 1
        finally:
            for uas in uases:
                stop_process(uas, timeout=5)
            for site in sites:
                for gateway in site.gateways:
                    gateway.stop()
    what = "calls" if args.calls else "REGISTER"
    print(f"\nsite  clean {what}/s per gateway  total")
    for site in sites:
        print(f"{site.size:>4}  {site.clean_per_gateway:>27}  "
              f"{site.clean_per_gateway * site.size:>5}")
    if args.json is not None:
        args.json.write_text(json.dumps([{"size": s.size, "clean_per_gateway":
                                          s.clean_per_gateway, "steps": s.steps}
                                         for s in sites], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
