"""Call-rate benchmark: SIPp uac -> proxy -> SIPp uas, the gateway against Kamailio.

Each target (the gateway; Kamailio 5.6 as a record-routing, transaction-stateful proxy
with usrloc in memory, ``bench/kamailio-proxy.cfg``) starts on free 127.0.0.1 ports. A
SIPp uas (``bench/sipp/uas_call.xml``) registers ``sip:callee@127.0.0.1`` from its own
port and answers every call; SIPp uac (``bench/sipp/uac_call.xml``) offers each rate for
``--step-seconds``: INVITE, 180, 200, ACK and BYE along the Record-Route set. Targets are
measured interleaved, rate by rate. A step is *clean* as in ``register_load.py``: 0
failed calls, 0 timeouts, 0 retransmissions (uac side), >= 95 % of the offered rate.
The response time is INVITE -> 200 (SIPp's rtd, millisecond resolution).

``--overload 2,4`` then offers each target those multiples of its own highest clean
rate for ``--overload-seconds`` (30), each followed by half that rate for 10 s (as in
``register_load.py``).

Usage::

    python bench/call_load.py [--targets gateway,kamailio] [--rates 100,200,...]
        [--step-seconds 10] [--overload 2,4] [--overload-seconds 30] [--json out.json]

Everything runs on 127.0.0.1 and every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from register_load import (
    BENCH_DIR,
    HOST,
    Overload,
    Step,
    Target,
    free_port,
    overload_runs,
    print_overload,
    run_step,
    status_code,
    stop_process,
)

UAC = BENCH_DIR / "sipp" / "uac_call.xml"
UAS = BENCH_DIR / "sipp" / "uas_call.xml"
KAMAILIO_PROXY_CFG = BENCH_DIR / "kamailio-proxy.cfg"
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000)


def register_callee(target: Target, port: int, user: str = "callee") -> None:
    """REGISTER sip:<user>@127.0.0.1 with Contact 127.0.0.1:<port>, sent from that port."""
    request = (
        f"REGISTER sip:{HOST}:{target.udp_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{user}@{HOST}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{HOST}:{port}>\r\n"
        "Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(5)
        sock.sendto(request, (HOST, target.udp_port))
        while True:
            status = status_code(sock.recv(65535))
            if status >= 200:
                break
    if status != 200:
        raise RuntimeError(f"{target.name}: REGISTER of {user} got {status}")


def start_uas(target: Target, workdir: Path, user: str = "callee") -> subprocess.Popen[bytes]:
    """Register ``user`` (the callee) and start the SIPp uas that answers its calls."""
    port = free_port()
    register_callee(target, port, user)
    command = [
        "sipp", "-sf", str(UAS), "-i", HOST, "-p", str(port), "-t", "u1",
        "-buff_size", "4194304", "-nostdin", "-m", "100000000",
        "-trace_err", "-error_file", str(workdir / f"uas-{target.name}.errors"),
        f"{HOST}:{target.udp_port}",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="gateway,kamailio")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--step-seconds", type=int, default=10)
    parser.add_argument("--patience", type=int, default=2,
                        help="unclean steps in a row before a target drops out")
    parser.add_argument("--overload", default="",
                        help="multiples of each target's clean rate to offer afterwards")
    parser.add_argument("--overload-seconds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    multiples = [float(m) for m in args.overload.split(",") if m.strip()]
    overloads: list[Overload] = []
    if shutil.which("sipp") is None:
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    rates = [int(rate) for rate in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="call-load-"))
    run_id = uuid.uuid4().hex[:6]
    targets = [Target(name, name, workdir / name, kamailio_cfg=KAMAILIO_PROXY_CFG)
               for name in names]
    uases: list[subprocess.Popen[bytes]] = []
    steps: list[Step] = []
    try:
        for target in targets:
            target.start()
            uases.append(start_uas(target, workdir))
            print(f"{target.name} ready on udp {HOST}:{target.udp_port}", flush=True)
        misses = dict.fromkeys(names, 0)
        for rate in rates:
            for target in targets:
                if misses[target.name] >= args.patience or not target.alive():
                    continue
                step = run_step(target, rate, args.step_seconds, run_id,
                                workdir / target.name / f"r{rate}",
                                ["-sf", str(UAC), "-s", "callee"])
                steps.append(step)
                misses[target.name] = 0 if step.clean else misses[target.name] + 1
                verdict = "clean" if step.clean else "NOT clean: " + "; ".join(step.reasons)
                print(f"  {target.name:9} {rate:6}/s achieved {step.achieved_rate:7.0f}/s "
                      f"INVITE->200 p50 {step.rtt_p50_ms:.0f} ms p99 {step.rtt_p99_ms:.0f} ms "
                      f"cpu {step.target_cpu_pct:5.1f}%  {verdict}", flush=True)
        if multiples:
            capacities = {name: max((s.rate for s in steps if s.target == name and s.clean),
                                    default=0) for name in names}
            overloads = overload_runs(targets, capacities, multiples, args.overload_seconds,
                                      workdir, lambda _run, _rate: ["-sf", str(UAC),
                                                                    "-s", "callee"])
    finally:
        for uas in uases:
            stop_process(uas, timeout=5)
        for target in targets:
            target.stop()
    best = {name: max((s.rate for s in steps if s.target == name and s.clean), default=0)
            for name in names}
    print(f"\ncalls, {args.step_seconds} s per step; clean = 0 failed, 0 timeouts, "
          "0 retransmissions, >= 95% of the offered rate")
    print("| target | max clean calls/s | INVITE->200 p50 / p99 (ms) | CPU |")
    print("|---|---|---|---|")
    for name in names:
        at = next((s for s in steps if s.target == name and s.rate == best[name]), None)
        if at is None:
            print(f"| {name} | 0 | - | - |")
            continue
        print(f"| {name} | {best[name]} | {at.rtt_p50_ms:.0f} / {at.rtt_p99_ms:.0f} | "
              f"{at.target_cpu_pct:.0f} % |")
    print_overload(overloads)
    if best.get("kamailio") and "gateway" in best:
        ratio = best["gateway"] / best["kamailio"]
        verdict = "MET" if ratio >= 0.75 else "MISSED"
        print(f"rate gateway/kamailio: {ratio:.2f}  (target >= 0.75: {verdict})")
    if args.json:
        args.json.write_text(json.dumps({
            "started": datetime.now(UTC).isoformat(), "command": sys.argv,
            "best": best, "steps": [asdict(step) for step in steps],
            "overload": [asdict(r) for r in overloads]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
