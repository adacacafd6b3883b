"""Soak test: registrations and calls at once, for a long time, against the gateway
(``twistd``); reports failed calls (target 0) and the gateway's memory over the run
(target: flat once the registry reaches its steady size).

SIPp registers new users (``register.xml``, Expires 60, so the registry reaches a
steady size after a minute) at ``--register-rate`` and places calls (``uac_call.xml``
to a SIPp uas) at ``--call-rate`` for ``--minutes``. The defaults (500 registrations/s
and 150 calls/s at once) are half of what this two-core machine carried cleanly with
both kinds of load together; 1 000/s + 300/s together was already beyond it
(docs/benchmarks.md).

Usage::

    python bench/soak.py [--minutes 10] [--register-rate 500] [--call-rate 150]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from call_load import UAC, start_uas
from register_load import HOST, SCENARIO, Target, free_port, read_final_stats, rss_mb


def sipp(args: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """A SIPp client in the background, statistics in ``workdir/name.csv``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["sipp", *args, "-i", HOST, "-p", str(free_port()), "-t", "u1", "-nostdin",
         "-buff_size", "4194304", "-trace_stat", "-stf", str(workdir / f"{name}.csv"),
         "-fd", "10", "-trace_err", "-error_file", str(workdir / f"{name}.errors")],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--register-rate", type=int, default=500)
    parser.add_argument("--call-rate", type=int, default=150)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seconds = int(args.minutes * 60)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    target = Target("gateway", "gateway", workdir / "gateway")
    samples: list[tuple[float, float]] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        target.start()
        assert target.process is not None
        uas = start_uas(target, workdir)
        procs.append(uas)
        started = time.monotonic()
        samples.append((0.0, rss_mb(target.process.pid)))
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
            samples.append((time.monotonic() - started, rss_mb(target.process.pid)))
            print(f"  {samples[-1][0]:6.0f} s  gateway RSS {samples[-1][1]:7.1f} MiB",
                  flush=True)
        alive = target.alive()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        target.stop()
    report = {"command": sys.argv, "seconds": seconds, "gateway_alive": alive,
              "rss_mb": samples}
    for name in ("register", "calls"):
        stats = read_final_stats(workdir / f"{name}.csv")
        report[name] = {key: stats.get(f"{key}(C)") for key in
                        ("SuccessfulCall", "FailedCall", "Retransmissions")}
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb"}, indent=1))
    steady = [rss for at, rss in samples if at >= 90]
    if steady:
        print(f"RSS after the first 90 s: {steady[0]:.0f} MiB -> {steady[-1]:.0f} MiB "
              f"(start {samples[0][1]:.0f} MiB)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    failed = sum(int(report[n]["FailedCall"] or 0) for n in ("register", "calls"))
    return 0 if alive and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
