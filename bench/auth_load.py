"""Digest-authenticated REGISTER benchmark: what authentication costs the gateway.

The same gateway is measured twice, rate by rate: ``trusted`` (127.0.0.1 is in
``auth.trusted_networks``, the REGISTER is accepted at once) and ``digest``
(``trusted_networks`` empty: every REGISTER is answered 401 and sent again with MD5
credentials, SIPp's ``[authentication]``; ``bench/sipp/register_auth.xml``). A "call" is
one registration: one REGISTER when trusted, two (401, then 200) with digest. SIPp 3.6
takes credentials only from ``-au``/``-ap``, so every registration is for the one user
``bench``. Steps are judged as in ``register_load.py``.

Usage::

    python bench/auth_load.py [--rates 500,1000,...] [--step-seconds 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from register_load import BENCH_DIR, HOST, Step, Target, run_step

AUTH_SCENARIO = BENCH_DIR / "sipp" / "register_auth.xml"
TRUSTED_SCENARIO = BENCH_DIR / "sipp" / "register.xml"
DEFAULT_RATES = (500, 1000, 1500, 2000, 3000, 4000, 5000)
USER, PASSWORD = "bench", "bench-secret"


def prepare(workdir: Path, name: str, trusted: bool) -> Target:
    """A gateway target with its own data dir, config and (for digest) the user."""
    target_dir = workdir / name
    data_dir = target_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = target_dir / "gateway.ini"
    config.write_text("[auth]\n" + ("" if trusted else
                                    "trusted_networks =\nalgorithms = MD5, SHA-256\n"))
    subprocess.run([sys.executable, "-m", "gateway.app.admin", "--data-dir", str(data_dir),
                    "users", "add", f"sip:{USER}@{HOST}", "--password-stdin"],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                   cwd=BENCH_DIR.parent, timeout=60)
    target = Target("gateway", name, target_dir, gateway_args=("--config", str(config)))
    return target


def main(argv: list[str] | None = None) -> int:
    """Run both variants rate by rate and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--step-seconds", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    rates = [int(rate) for rate in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="auth-load-"))
    run_id = uuid.uuid4().hex[:6]
    variants = {"trusted": prepare(workdir, "trusted", True),
                "digest": prepare(workdir, "digest", False)}
    scenario = {
        "trusted": ["-sf", str(TRUSTED_SCENARIO), "-key", "user_prefix", f"{run_id}t",
                    "-key", "expires", "3600"],
        "digest": ["-sf", str(AUTH_SCENARIO), "-key", "user", USER, "-au", USER,
                   "-ap", PASSWORD, "-key", "expires", "3600"],
    }
    steps: list[Step] = []
    dropped: set[str] = set()
    try:
        for target in variants.values():
            target.start()
        for rate in rates:
            for name, target in variants.items():
                if name in dropped or not target.alive():
                    continue
                args_for = list(scenario[name])
                if name == "trusted":
                    args_for[4] = f"{run_id}t{rate}u"
                step = run_step(target, rate, args.step_seconds, run_id,
                                workdir / name / f"r{rate}", args_for)
                step.target = name
                steps.append(step)
                if not step.clean:
                    dropped.add(name)
                verdict = "clean" if step.clean else "NOT clean: " + "; ".join(step.reasons)
                print(f"  {name:8} {rate:6}/s achieved {step.achieved_rate:7.0f}/s "
                      f"p50 {step.rtt_p50_ms:.0f} ms p99 {step.rtt_p99_ms:.0f} ms "
                      f"cpu {step.target_cpu_pct:5.1f}%  {verdict}", flush=True)
    finally:
        for target in variants.values():
            target.stop()
    print(f"\nregistrations, {args.step_seconds} s per step; clean = 0 failed, 0 timeouts, "
          "0 retransmissions, >= 95% of the offered rate")
    print("| variant | max clean registrations/s | p50 / p99 (ms) | CPU |")
    print("|---|---|---|---|")
    for name in variants:
        clean = [s for s in steps if s.target == name and s.clean]
        if not clean:
            print(f"| {name} | 0 | - | - |")
            continue
        best = max(clean, key=lambda s: s.rate)
        print(f"| {name} | {best.rate} | {best.rtt_p50_ms:.0f} / {best.rtt_p99_ms:.0f} | "
              f"{best.target_cpu_pct:.0f} % |")
    if args.json:
        args.json.write_text(json.dumps({
            "started": datetime.now(UTC).isoformat(), "command": sys.argv,
            "steps": [asdict(step) for step in steps]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
