"""Soak test: registrations and calls at once, for a long time, against the gateway
(``twistd``); reports failed calls (target 0) and the gateway's memory over the run
(target: flat once the registry reaches its steady size).

Memory is sampled every 10 s: the resident size (``/proc``) and the number of blocks
Python's allocator has handed out (the gateway's ``status.json``), i.e. its live
objects. After ``--warmup`` seconds (300: the registry turns over every minute and
transactions linger 32 s, but the allocator's heap needs about five minutes of churn to
settle; docs/benchmarks.md), no one-minute mean of either may exceed its first
one-minute mean by more than ``--tolerance`` (5 %); means, so that a single sample
taken while the allocator holds an extra arena does not decide. The exit status is 0
only when no call failed and memory did not grow (a run too short for a verdict
gives none and is judged on its calls alone).

SIPp registers new users (``register.xml``, Expires 60, so the registry reaches a
steady size after a minute) at ``--register-rate`` and places calls (``uac_call.xml``
to a SIPp uas) at ``--call-rate`` for ``--minutes``. The defaults (500 registrations/s
and 150 calls/s at once) are half of what this two-core machine carried cleanly with
both kinds of load together; 1 000/s + 300/s together was already beyond it
(docs/benchmarks.md).

Usage::

    python bench/soak.py [--minutes 10] [--register-rate 500] [--call-rate 150]
        [--warmup 300] [--tolerance 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from call_load import UAC, start_uas
from register_load import (
    HOST,
    SCENARIO,
    Target,
    free_port,
    read_final_stats,
    rss_mb,
    stop_process,
)

from gateway.app.status_file import STATUS_FILE


def sipp(args: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """A SIPp client in the background, statistics in ``workdir/name.csv``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["sipp", *args, "-i", HOST, "-p", str(free_port()), "-t", "u1", "-nostdin",
         "-buff_size", "4194304", "-trace_stat", "-stf", str(workdir / f"{name}.csv"),
         "-fd", "10", "-trace_err", "-error_file", str(workdir / f"{name}.errors")],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def heap_blocks(data_dir: Path) -> int | None:
    """Python heap blocks from the gateway's ``status.json`` (written every 5 s)."""
    try:
        status = json.loads((data_dir / STATUS_FILE).read_text())
        return int(status["memory"]["python_blocks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def memory_verdict(samples: list[tuple[float, float, int | None]], warmup: float,
                   tolerance: float) -> dict[str, object]:
    """Whether memory stayed flat after ``warmup``: the one-minute means of RSS and of
    the live blocks never rose more than ``tolerance`` above the first such mean."""
    after = [s for s in samples if s[0] >= warmup]
    if len(after) < 12:
        return {"flat": None, "why": "run too short for a verdict after the warm-up"}
    def minute_means(index: int) -> list[float]:
        values = [s[index] for s in after if s[index] is not None]
        return [statistics.fmean(values[i:i + 6]) for i in range(0, len(values) - 5)]
    rss, blocks = minute_means(1), minute_means(2)
    rss_growth = max(rss) / rss[0] - 1
    block_growth = max(blocks) / blocks[0] - 1 if blocks else None
    flat = rss_growth <= tolerance and (block_growth is None or block_growth <= tolerance)
    return {"flat": flat, "rss_mib_after_warmup": round(rss[0], 1),
            "rss_mib_peak_after": round(max(rss), 1), "rss_growth": round(rss_growth, 3),
            "blocks_after_warmup": round(blocks[0]) if blocks else None,
            "blocks_peak_after": round(max(blocks)) if blocks else None,
            "block_growth": None if block_growth is None else round(block_growth, 3)}


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--register-rate", type=int, default=500)
    parser.add_argument("--call-rate", type=int, default=150)
    parser.add_argument("--warmup", type=float, default=300.0,
                        help="seconds before memory must stay flat (default 300)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="allowed rise of the memory means after the warm-up")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seconds = int(args.minutes * 60)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    target = Target("gateway", "gateway", workdir / "gateway")
    data_dir = workdir / "gateway" / "data"
    samples: list[tuple[float, float, int | None]] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        target.start()
        assert target.process is not None
        uas = start_uas(target, workdir)
        procs.append(uas)
        started = time.monotonic()
        samples.append((0.0, rss_mb(target.process.pid), heap_blocks(data_dir)))
        run_id = uuid.uuid4().hex[:6]
        gateway = f"{HOST}:{target.udp_port}"
        register = sipp(["-sf", str(SCENARIO), "-key", "user_prefix", f"soak{run_id}u",
                         "-key", "expires", "60", "-r", str(args.register_rate),
                         "-m", str(args.register_rate * seconds), gateway], workdir, "register")
        calls = sipp(["-sf", str(UAC), "-s", "callee", "-r", str(args.call_rate),
                      "-m", str(args.call_rate * seconds), gateway], workdir, "calls")
        procs += [register, calls]
        while time.monotonic() - started < seconds + 60:
            if register.poll() is not None and calls.poll() is not None:
                break
            time.sleep(10)
            samples.append((time.monotonic() - started, rss_mb(target.process.pid),
                            heap_blocks(data_dir)))
            print(f"  {samples[-1][0]:6.0f} s  gateway RSS {samples[-1][1]:7.1f} MiB, "
                  f"{samples[-1][2]} Python heap blocks", flush=True)
        alive = target.alive()
    finally:
        for proc in procs:
            stop_process(proc)
        target.stop()
    load_samples = [s for s in samples if s[0] <= seconds]  # not the drain at the end
    report = {"command": sys.argv, "seconds": seconds, "gateway_alive": alive,
              "memory": memory_verdict(load_samples, args.warmup, args.tolerance),
              "samples": samples}
    for name in ("register", "calls"):
        stats = read_final_stats(workdir / f"{name}.csv")
        report[name] = {key: stats.get(f"{key}(C)") for key in
                        ("SuccessfulCall", "FailedCall", "Retransmissions")}
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    failed = sum(int(report[n]["FailedCall"] or 0) for n in ("register", "calls"))
    return 0 if alive and failed == 0 and report["memory"]["flat"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
