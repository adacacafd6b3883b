"""Memory per live binding: a gateway on its defaults (SQLite, overlay mirror on) is
filled with registrations of distinct users, and its resident memory (and, with
``--heap``, the Python heap as ``tracemalloc`` counts it) is read from its ``/status``
at each mark, once the mirror has published every AoR (so the overlay's own copy of
each record is counted too).

Per binding = (memory at the mark - memory before the first REGISTER) / bindings.

The REGISTERs go out over UDP from one socket, ``--window`` unanswered at most, so the
gateway is loaded but never overloaded (nothing shed, nothing retransmitted).

Usage::

    python bench/binding_memory.py [--marks 100000,500000] [--heap] [--window 200]
        [--json out.json]

``--heap`` starts the gateway with ``PYTHONTRACEMALLOC=1``: tracing slows it down and
its own tables are not counted, so RSS figures come from a run without it.

Everything runs on 127.0.0.1; the gateway is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from register_load import BENCH_DIR, HOST, free_port, status_code, stop_process, wait_ready

STATUS_TIMEOUT = 10.0


def register(user: str, port: int, gateway_port: int) -> bytes:
    """A REGISTER of ``sip:<user>@127.0.0.1`` from 127.0.0.1:``port``, one hour."""
    return (f"REGISTER sip:{HOST}:{gateway_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{user}@{HOST}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{HOST}:{port};transport=udp>\r\n"
            "Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


def fill(gateway_port: int, first: int, last: int, window: int) -> float:
    """REGISTER users ``first``..``last - 1`` with at most ``window`` unanswered;
    returns the seconds it took. A REGISTER unanswered for 2 s is sent again."""
    begun = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        sock.settimeout(2.0)
        pending: dict[str, float] = {}
        following = first
        while following < last or pending:
            while following < last and len(pending) < window:
                user = f"m{following}"
                sock.sendto(register(user, port, gateway_port), (HOST, gateway_port))
                pending[user] = time.monotonic()
                following += 1
            try:
                data = sock.recv(65535)
            except TimeoutError:
                for user in [u for u, at in pending.items() if time.monotonic() - at > 2]:
                    sock.sendto(register(user, port, gateway_port), (HOST, gateway_port))
                    pending[user] = time.monotonic()
                continue
            if status_code(data) != 200:
                continue
            to = data.split(b"\r\nTo: <sip:", 1)[1].split(b"@", 1)[0].decode()
            pending.pop(to, None)
    return time.monotonic() - begun


def status(port: int) -> dict:
    """The gateway's ``/status``."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/status",  # noqa: S310 - loopback
                                timeout=STATUS_TIMEOUT) as answer:
        return json.loads(answer.read())


def settled(port: int, bindings: int, limit: float = 1800) -> dict:
    """``/status`` once the registry holds ``bindings`` and the mirror's backlog is
    empty (bounded by ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        now = status(port)
        if (now["registry"]["bindings"] >= bindings
                and now["overlay"].get("backlog", 0) == 0) \
                or time.monotonic() > deadline:
            return now
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    """Fill a gateway to each mark and report its memory per binding."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", default="100000,500000")
    parser.add_argument("--heap", action="store_true",
                        help="run the gateway under tracemalloc and report its Python heap")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    marks = sorted(int(m) for m in args.marks.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="binding-memory-"))
    udp_port, status_port = free_port(), free_port(socket.SOCK_STREAM)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR.parent),
                                                      env.get("PYTHONPATH")]))
    if args.heap:
        env["PYTHONTRACEMALLOC"] = "1"
    command = [shutil.which("twistd") or "twistd", "-n", "--pidfile=", "p2psip-gateway",
               "--data-dir", str(workdir / "data"),
               "--listen-udp", f"{HOST}:{udp_port}", "--listen-tcp", "",
               "--listen-tls", "", "--listen-overlay", f"{HOST}:0",
               "--set", f"status.listen={HOST}:{status_port}"]
    log = (workdir / "gateway.log").open("wb")
    gateway = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    rows = []
    try:
        wait_ready(udp_port, lambda: gateway.poll() is None)
        time.sleep(2)
        before = status(status_port)["memory"]
        print(f"before: {before}", flush=True)
        filled = 0
        for mark in marks:
            took = fill(udp_port, filled, mark, args.window)
            filled = mark
            now = settled(status_port, mark)
            memory = now["memory"]
            row = {"bindings": now["registry"]["bindings"], "fill_seconds": round(took, 1),
                   "rss_mib": memory["rss_mib"],
                   "rss_per_binding_bytes": round((memory["rss_mib"] - before["rss_mib"])
                                                  * 2**20 / mark),
                   "published": now["overlay"].get("published"),
                   "stored_keys": now["overlay"].get("stored_keys"),
                   "backlog": now["overlay"].get("backlog")}
            if memory.get("python_heap_mib") is not None and \
                    before.get("python_heap_mib") is not None:
                row["python_heap_mib"] = memory["python_heap_mib"]
                row["heap_per_binding_bytes"] = round(
                    (memory["python_heap_mib"] - before["python_heap_mib"]) * 2**20 / mark)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop_process(gateway)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| bindings | RSS (MiB) | RSS per binding (B) | Python heap (MiB) "
          "| heap per binding (B) | fill time (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['bindings']} | {row['rss_mib']} | {row['rss_per_binding_bytes']} "
              f"| {row.get('python_heap_mib', '-')} | {row.get('heap_per_binding_bytes', '-')} "
              f"| {row['fill_seconds']} |")
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
