"""REGISTER load benchmark: the gateway against Twisted's RegisterProxy and Kamailio.

Every target is started on its own free 127.0.0.1 port and they are measured side by
side, interleaved rate by rate, so machine noise hits all of them alike.  For each
offered rate SIPp (``bench/sipp/register.xml``) sends ``rate * step_seconds``
REGISTERs, one per distinct user.  A step is *clean* when it has 0 failed calls,
0 timeouts, 0 retransmissions and achieved at least 95 % of the offered rate (the
definition in SIPP-NOTES.md).  The headline per target is the highest clean rate, with
SIPp's response-time median/p99 at that rate (millisecond resolution, kernel tick) and
the idle latency median/p99 measured one REGISTER at a time by a small UDP client with
``time.perf_counter_ns``.

With ``--overload 2,4`` each target is then offered those multiples of its own highest
clean rate for ``--overload-seconds`` (30) and, right after each, half of that rate for
10 s: what it completed successfully per second of the overload (against its capacity),
and whether it was clean again at once.

Usage::

    python bench/register_load.py [--targets gateway,twisted,kamailio]
        [--rates 1000,2000,...] [--step-seconds 10] [--overload 2,4]
        [--overload-seconds 30] [--json out.json]

Everything runs on 127.0.0.1 and every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SCENARIO = BENCH_DIR / "sipp" / "register.xml"
#: The same REGISTER ending on 503 too (overload runs: shedding is not a failure).
SHEDDING_SCENARIO = BENCH_DIR / "sipp" / "register_or_503.xml"
KAMAILIO_CFG = BENCH_DIR / "kamailio-registrar.cfg"
TWISTED_SCRIPT = BENCH_DIR / "twisted_registerproxy.py"
KAMAILIO_BIN = "/usr/sbin/kamailio"
HOST = "127.0.0.1"
DEFAULT_RATES = (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000, 16000, 20000, 24000)
DEFAULT_RATES += (28000, 32000)
CLEAN_RATE_FRACTION = 0.95
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- helpers


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """Return a port number that is free on 127.0.0.1 for ``kind`` right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (which must not be empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def sip_request(method: str, user: str, port: int, local_port: int, expires: int) -> bytes:
    """Build a minimal SIP request for ``user@127.0.0.1`` sent to ``127.0.0.1:port``."""
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [
        f"{method} sip:{HOST}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{user}@{HOST}>",
        f"Call-ID: {uuid.uuid4().hex}@{HOST}",
        f"CSeq: 1 {method}",
    ]
    if method == "REGISTER":
        lines += [f"Contact: <sip:{user}@{HOST}:{local_port}>", f"Expires: {expires}"]
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def status_code(data: bytes) -> int:
    """Status code of a SIP response (0 when ``data`` is not a response)."""
    parts = data.split(b" ", 2)
    if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return 0


def wait_ready(port: int, alive: Callable[[], bool], timeout: float = 30.0) -> None:
    """Send OPTIONS to ``127.0.0.1:port`` until any SIP response arrives.

    Raises RuntimeError when the process dies or ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.25)
        local_port = sock.getsockname()[1]
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("process exited before it answered OPTIONS")
            sock.sendto(sip_request("OPTIONS", "probe", port, local_port, 0), (HOST, port))
            with suppress(TimeoutError):
                if status_code(sock.recv(65535)):
                    return
    raise RuntimeError(f"no answer to OPTIONS on udp {HOST}:{port} within {timeout:.0f} s")


def idle_latency(port: int, count: int, prefix: str) -> dict[str, float]:
    """Time ``count`` REGISTERs sent one at a time; median/p99 in microseconds.

    Twenty warm-up requests go first and are not counted.  A non-200 answer or a
    response lost for 2 s counts in ``errors``.
    """
    samples: list[float] = []
    errors = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2.0)
        local_port = sock.getsockname()[1]
        for i in range(count + 20):
            request = sip_request("REGISTER", f"{prefix}{i}", port, local_port, 3600)
            start = time.perf_counter_ns()
            sock.sendto(request, (HOST, port))
            try:
                code = status_code(sock.recv(65535))
            except TimeoutError:
                code = 0
            elapsed_us = (time.perf_counter_ns() - start) / 1000
            if i < 20:
                continue
            if code == 200:
                samples.append(elapsed_us)
            else:
                errors += 1
    if not samples:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "errors": errors}
    return {
        "p50_us": statistics.median(samples),
        "p99_us": percentile(samples, 99),
        "errors": errors,
    }


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    udp = [fields for fields in lines if fields[0] == "Udp:"]
    return int(dict(zip(udp[0], udp[1], strict=False)).get("RcvbufErrors", 0))


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


# --------------------------------------------------------------------------- targets


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM ``process`` if it still runs, wait up to ``timeout`` s, then SIGKILL it."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass
class Target:
    """A registrar under test: how to start it, and its running process."""

    name: str
    description: str
    workdir: Path
    kamailio_shm_mb: int = 2048
    kamailio_cfg: Path = KAMAILIO_CFG
    udp_port: int = 0
    tcp_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    #: More ``twistd p2psip-gateway`` options (e.g. ``--config``), gateway only.
    gateway_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        """The command line that runs this target in the foreground."""
        if self.name == "gateway":
            data_dir = self.workdir / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            return [
                shutil.which("twistd") or "twistd", "-n", "--pidfile=", "p2psip-gateway",
                "--data-dir", str(data_dir),
                "--listen-udp", f"{HOST}:{self.udp_port}",
                "--listen-tcp", f"{HOST}:{self.tcp_port}",
                "--listen-tls", "", "--listen-overlay", f"{HOST}:0", *self.gateway_args,
            ]  # fmt: skip
        if self.name == "twisted":
            script = str(TWISTED_SCRIPT)
            return [sys.executable, script, "--host", HOST, "--port", str(self.udp_port)]
        if self.name == "kamailio":
            rundir = self.workdir / "run"
            rundir.mkdir(parents=True, exist_ok=True)
            return [
                KAMAILIO_BIN, "-f", str(self.kamailio_cfg), "-DD", "-E",
                "-m", str(self.kamailio_shm_mb), "-M", "16",
                "-A", f"LISTEN_PORT={self.udp_port}",
                "-Y", str(rundir), "-P", str(rundir / "kamailio.pid"),
            ]  # fmt: skip
        raise ValueError(f"unknown target {self.name!r}")

    def alive(self) -> bool:
        """Whether the target process is still running."""
        return self.process is not None and self.process.poll() is None

    def start(self, ready_timeout: float = 30.0) -> None:
        """Start the target on free ports and wait until it answers OPTIONS."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.udp_port = free_port()
        self.tcp_port = free_port(socket.SOCK_STREAM)
        self.log_path = self.workdir / "target.log"
        env = dict(os.environ)
        if self.name == "gateway":  # run this working tree's gateway package
            repo = str(BENCH_DIR.parent)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        wait_ready(self.udp_port, self.alive, ready_timeout)

    def stop(self) -> None:
        """SIGTERM the target by its PID, wait up to 10 s, then SIGKILL its group."""
        if self.process is None:
            return
        stop_process(self.process)
        # Kamailio's workers share the process group we created for it; mop up any left.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_problems(self) -> list[str]:
        """Log lines that look like errors (tracebacks, ERROR/CRITICAL)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        markers = ("Traceback", "ERROR", "CRITICAL", "Unhandled", "[-] Error")
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if any(marker in line for marker in markers)]


DESCRIPTIONS = {
    "gateway": "p2psip-gateway, SQLite registry (WAL, durable before 200)",
    "twisted": "Twisted RegisterProxy + InMemoryRegistry",
    "kamailio": "Kamailio 5.6, 2 UDP workers, usrloc db_mode 0",
}


# --------------------------------------------------------------------------- SIPp steps


@dataclass
class Step:
    """The outcome of one SIPp run at one offered rate against one target."""

    target: str
    rate: int
    calls: int
    exit_code: int
    successful: int = 0
    failed: int = 0
    timeouts: int = 0
    retransmissions: int = 0
    unexpected: int = 0
    elapsed_s: float = 0.0
    achieved_rate: float = 0.0
    rtt_p50_ms: float = float("nan")
    rtt_p99_ms: float = float("nan")
    target_cpu_pct: float = 0.0
    target_rss_mb: float = 0.0
    kernel_rcvbuf_drops: int = 0
    #: Responses timed (rtd): with a scenario that also ends on 503, the 200s.
    timed: int = 0
    clean: bool = False
    reasons: list[str] = field(default_factory=list)


def read_final_stats(stat_file: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` file, keyed by column name."""
    rows = list(csv.reader(stat_file.open(newline=""), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False))


def epoch(stamp: str) -> float:
    """The POSIX time at the end of a SIPp stat timestamp ("date<TAB>time<TAB>epoch")."""
    return float(stamp.split("\t")[-1])


def read_rtts(workdir: Path) -> list[float]:
    """All response times (ms) from the ``*_rtt.csv`` file SIPp wrote in ``workdir``."""
    values: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open(newline="") as handle:
            for row in csv.reader(handle, delimiter=";"):
                with suppress(IndexError, ValueError):
                    values.append(float(row[1]))
    return values


def run_step(target: Target, rate: int, seconds: int, run_id: str, workdir: Path,
             scenario_args: list[str] | None = None) -> Step:
    """Offer ``rate`` calls/s for ``seconds`` to ``target`` and judge the step. The
    scenario is REGISTER of new users unless ``scenario_args`` (``-sf`` and its keys)
    name another one."""
    calls = rate * seconds
    workdir.mkdir(parents=True, exist_ok=True)
    stat_file = workdir / "stat.csv"
    if scenario_args is None:
        scenario_args = ["-sf", str(SCENARIO), "-key", "user_prefix", f"{run_id}r{rate}u",
                         "-key", "expires", "3600"]
    command = [
        "sipp", *scenario_args,
        "-i", HOST, "-p", str(free_port()), "-t", "u1",
        "-buff_size", "4194304", "-r", str(rate), "-rp", "1000", "-m", str(calls),
        "-timeout", f"{seconds + 45}s", "-timeout_error", "-nostdin",
        "-trace_stat", "-stf", str(stat_file),
        "-trace_rtt", "-rtt_freq", "1000",
        "-trace_screen", "-screen_file", str(workdir / "screen.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        f"{HOST}:{target.udp_port}",
    ]  # fmt: skip
    assert target.process is not None
    cpu_before, wall_before = cpu_seconds(target.process.pid), time.monotonic()
    drops_before = udp_rcvbuf_errors()
    with (workdir / "sipp.out").open("wb") as out:
        try:
            exit_code = subprocess.run(
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, timeout=seconds + 75, check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:  # subprocess.run has killed SIPp by its PID
            exit_code = -9
    wall = time.monotonic() - wall_before
    cpu = cpu_seconds(target.process.pid) - cpu_before if target.alive() else 0.0
    step = Step(target.name, rate, calls, exit_code, target_cpu_pct=100 * cpu / wall)
    step.target_rss_mb = rss_mb(target.process.pid)
    step.kernel_rcvbuf_drops = udp_rcvbuf_errors() - drops_before
    if not stat_file.exists():
        step.reasons.append(f"no SIPp statistics (exit code {exit_code})")
        return step
    stats = read_final_stats(stat_file)

    def count(name: str) -> int:
        return int(stats.get(f"{name}(C)", "0") or 0)

    step.successful = count("SuccessfulCall")
    step.failed = count("FailedCall")
    step.timeouts = count("FailedMaxUDPRetrans") + count("FailedTimeoutOnRecv")
    step.retransmissions = count("Retransmissions")
    step.unexpected = count("FailedUnexpectedMessage")
    step.elapsed_s = epoch(stats["CurrentTime"]) - epoch(stats["StartTime"])
    step.achieved_rate = step.successful / step.elapsed_s if step.elapsed_s > 0 else 0.0
    rtts = read_rtts(workdir)
    step.timed = len(rtts)
    if rtts:
        step.rtt_p50_ms = statistics.median(rtts)
        step.rtt_p99_ms = percentile(rtts, 99)
    if step.failed:
        step.reasons.append(f"{step.failed} failed ({step.unexpected} unexpected responses)")
    if step.timeouts:
        step.reasons.append(f"{step.timeouts} timeouts")
    if step.retransmissions:
        step.reasons.append(f"{step.retransmissions} retransmissions")
    if step.successful < calls:
        step.reasons.append(f"{calls - step.successful} calls not completed")
    if step.achieved_rate < CLEAN_RATE_FRACTION * rate:
        step.reasons.append(f"achieved {step.achieved_rate:.0f}/s")
    if exit_code != 0:
        step.reasons.append(f"SIPp exit code {exit_code}")
    step.clean = not step.reasons
    return step


# --------------------------------------------------------------------------- the run


@dataclass
class Summary:
    """Headline figures for one target."""

    target: str
    description: str
    max_clean_rate: int = 0
    rtt_p50_ms: float = float("nan")
    rtt_p99_ms: float = float("nan")
    cpu_pct_at_max: float = float("nan")
    idle_p50_us: float = float("nan")
    idle_p99_us: float = float("nan")
    idle_errors: int = 0
    first_unclean: str = ""
    died: bool = False
    log_problems: list[str] = field(default_factory=list)


def summarise(target: Target, steps: list[Step], idle: dict[str, float]) -> Summary:
    """Reduce a target's steps to its :class:`Summary`."""
    summary = Summary(target.name, DESCRIPTIONS[target.name])
    summary.idle_p50_us, summary.idle_p99_us = idle["p50_us"], idle["p99_us"]
    summary.idle_errors = int(idle["errors"])
    clean = [step for step in steps if step.clean]
    if clean:
        best = max(clean, key=lambda step: step.rate)
        summary.max_clean_rate = best.rate
        summary.rtt_p50_ms, summary.rtt_p99_ms = best.rtt_p50_ms, best.rtt_p99_ms
        summary.cpu_pct_at_max = best.target_cpu_pct
    unclean = [step for step in steps if not step.clean]
    if unclean:
        summary.first_unclean = f"{unclean[0].rate}/s: " + "; ".join(unclean[0].reasons)
    summary.died = not target.alive()
    summary.log_problems = target.log_problems()[:20]
    return summary


@contextmanager
def running(targets: list[Target]) -> Iterator[list[Target]]:
    """Start every target; stop each by its PID on the way out, errors or not."""
    try:
        for target in targets:
            print(f"starting {target.name} ...", flush=True)
            target.start()
            print(f"  {target.name} ready on udp {HOST}:{target.udp_port}", flush=True)
        yield targets
    finally:
        for target in targets:
            target.stop()


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Summary], list[Step]]:
    """Start the targets, measure idle latency, then step the rate through all of them."""
    targets = [
        Target(name, DESCRIPTIONS[name], workdir / name, args.kamailio_shm_mb,
               gateway_args=("--config", str(args.gateway_config))
               if args.gateway_config else ())
        for name in args.targets
    ]
    steps: dict[str, list[Step]] = {target.name: [] for target in targets}
    idle: dict[str, dict[str, float]] = {}
    with running(targets):
        for target in targets:
            idle[target.name] = idle_latency(target.udp_port, args.idle_requests, "idle")
            print(f"  idle {target.name}: {idle[target.name]}", flush=True)
        active = {target.name: 0 for target in targets}  # consecutive unclean steps
        for rate in args.rates:
            for target in targets:
                if target.name not in active:
                    continue
                if not target.alive():
                    print(f"  {target.name} has exited; no more steps", flush=True)
                    del active[target.name]
                    continue
                step = run_step(
                    target, rate, args.step_seconds, "load", workdir / target.name / str(rate)
                )
                steps[target.name].append(step)
                verdict = "clean" if step.clean else "NOT clean: " + "; ".join(step.reasons)
                print(
                    f"  {target.name:9} {rate:6}/s achieved {step.achieved_rate:8.0f}/s "
                    f"rtt p50 {step.rtt_p50_ms:.0f} ms p99 {step.rtt_p99_ms:.0f} ms "
                    f"cpu {step.target_cpu_pct:5.1f}% rss {step.target_rss_mb:4.0f} MiB "
                    f"rcvbuf drops {step.kernel_rcvbuf_drops}  {verdict}",
                    flush=True,
                )
                active[target.name] = 0 if step.clean else active[target.name] + 1
                if active[target.name] >= args.patience:
                    del active[target.name]
                time.sleep(args.pause)
            if not active:
                break
        summaries = [summarise(t, steps[t.name], idle[t.name]) for t in targets]
        if args.overload:
            args.overload_results = overload_runs(
                targets, {s.target: s.max_clean_rate for s in summaries}, args.overload,
                args.overload_seconds, workdir, pause=args.pause)
    return summaries, [step for name in steps for step in steps[name]]


@dataclass
class Overload:
    """One target offered ``multiple`` x its own clean capacity for a while, then half
    of that capacity at once (is it clean again?)."""

    target: str
    capacity: int
    multiple: float
    offered_rate: int
    seconds: int
    successful: int
    failed: int
    timeouts: int
    retransmissions: int
    #: Successful completions per second of the run (offering and completing), and
    #: that over the capacity.
    completed_rate: float
    of_capacity: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    target_cpu_pct: float
    recovery_clean: bool
    recovery_reasons: list[str]


def overload_runs(targets: list[Target], capacities: dict[str, int],
                  multiples: list[float], seconds: int, workdir: Path,
                  scenario: Callable[[str, int], list[str] | None] | None = None,
                  recovery_seconds: int = 10, pause: float = 2.0) -> list[Overload]:
    """Offer each target ``multiple`` x its capacity for ``seconds`` s (interleaved by
    multiple, so noise hits the targets alike), then half its capacity for
    ``recovery_seconds`` s right after: what it completed, and whether it was clean
    again. ``scenario(run id, rate)`` gives SIPp's scenario arguments (None:
    REGISTER of new users, a 503 ending a call without failing it). Successful are
    the calls whose final response was timed (the 200s of either REGISTER scenario)."""
    if scenario is None:
        def scenario(run: str, rate: int) -> list[str]:
            return ["-sf", str(SHEDDING_SCENARIO), "-key", "user_prefix", f"{run}r{rate}u",
                    "-key", "expires", "3600"]
    results = []
    for multiple in multiples:
        for target in targets:
            capacity = capacities.get(target.name, 0)
            if not capacity or not target.alive():
                continue
            rate = int(capacity * multiple)
            where = workdir / target.name / f"overload-{multiple:g}"
            step = run_step(target, rate, seconds, f"ovl{multiple:g}", where,
                            scenario(f"ovl{multiple:g}", rate))
            recovery = run_step(target, max(1, capacity // 2), recovery_seconds,
                                f"rec{multiple:g}", where / "recovery",
                                scenario(f"rec{multiple:g}", capacity // 2))
            # Over the whole run: calls offered late complete after the offering ends.
            completed = step.timed / max(seconds, step.elapsed_s)
            results.append(Overload(
                target.name, capacity, multiple, rate, seconds, step.timed,
                step.failed, step.timeouts, step.retransmissions, completed,
                completed / capacity, step.rtt_p50_ms, step.rtt_p99_ms,
                step.target_cpu_pct, recovery.clean and recovery.timed >= recovery.calls,
                recovery.reasons or ([] if recovery.timed >= recovery.calls else
                                     [f"{recovery.calls - recovery.timed} not answered 200"])))
            print(f"  {target.name:9} overload {multiple:g}x ({rate}/s for {seconds} s): "
                  f"{completed:.0f}/s successful = {completed / capacity:.0%} of capacity "
                  f"{capacity}/s, {step.failed} failed, {step.timeouts} timeouts, "
                  f"{step.retransmissions} retransmissions, cpu {step.target_cpu_pct:.0f}%; "
                  f"then {capacity // 2}/s: "
                  f"{recovery.timed} of {recovery.calls} answered 200, "
                  f"{'clean' if recovery.clean else 'NOT clean: ' + '; '.join(recovery.reasons)}",
                  flush=True)
            time.sleep(pause)
    return results


def print_overload(results: list[Overload]) -> None:
    """The overload table."""
    if not results:
        return
    print()
    print("| target | capacity/s | offered | successful/s | of capacity | failed | timeouts "
          "| retransmissions | rtt p50 / p99 (ms) | CPU | half capacity right after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.target} | {r.capacity} | {r.multiple:g}x = {r.offered_rate}/s "
              f"| {r.completed_rate:.0f} | {r.of_capacity:.0%} | {r.failed} | {r.timeouts} "
              f"| {r.retransmissions} | {r.rtt_p50_ms:.0f} / {r.rtt_p99_ms:.0f} "
              f"| {r.target_cpu_pct:.0f} % "
              f"| {'clean' if r.recovery_clean else '; '.join(r.recovery_reasons)} |")


def ratios(summaries: list[Summary]) -> dict[str, float]:
    """Gateway/twisted and gateway/kamailio ratios of the max clean rate and idle p50."""
    by_name = {summary.target: summary for summary in summaries}
    result: dict[str, float] = {}
    gateway = by_name.get("gateway")
    if gateway is None:
        return result
    for other in ("twisted", "kamailio"):
        if other in by_name and by_name[other].max_clean_rate:
            result[f"rate gateway/{other}"] = gateway.max_clean_rate / by_name[other].max_clean_rate
            result[f"idle p50 gateway/{other}"] = gateway.idle_p50_us / by_name[other].idle_p50_us
    return result


def print_report(
    summaries: list[Summary], ratio: dict[str, float], args: argparse.Namespace
) -> None:
    """Print the results table, the ratios and the target verdict."""
    print()
    print(f"REGISTER load, {args.step_seconds} s per step, clean = 0 failed, 0 timeouts, "
          f"0 retransmissions, >= {CLEAN_RATE_FRACTION:.0%} of the offered rate")  # fmt: skip
    header = (
        "| target | max clean REGISTER/s | SIPp rtt p50 / p99 at that rate (ms) "
        "| target CPU at that rate | idle p50 / p99 (µs) | first unclean step |"
    )
    print(header)
    print("|---|---|---|---|---|---|")
    for s in summaries:
        print(
            f"| {s.target} | {s.max_clean_rate} | {s.rtt_p50_ms:.0f} / {s.rtt_p99_ms:.0f} "
            f"| {s.cpu_pct_at_max:.0f} % | {s.idle_p50_us:.0f} / {s.idle_p99_us:.0f} "
            f"| {s.first_unclean or '-'} |"
        )
    for name, value in ratio.items():
        print(f"{name}: {value:.2f}")
    if "rate gateway/twisted" in ratio and "rate gateway/kamailio" in ratio:
        met = ratio["rate gateway/twisted"] > 1 and ratio["rate gateway/kamailio"] >= 0.5
        print("target (gateway > twisted and >= 0.5 x kamailio):", "MET" if met else "MISSED")
    for s in summaries:
        if s.died:
            print(f"WARNING: {s.target} exited during the run")
        if s.log_problems:
            print(f"WARNING: {s.target} logged {len(s.log_problems)}+ error lines, first:")
            print("   ", s.log_problems[0][:300])
        if s.idle_errors:
            print(f"WARNING: {s.target}: {s.idle_errors} idle REGISTERs without a 200")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="gateway,twisted,kamailio",
                        help="comma-separated subset of gateway,twisted,kamailio")  # fmt: skip
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)),
                        help="comma-separated offered REGISTER/s, ascending")  # fmt: skip
    parser.add_argument("--step-seconds", type=int, default=10, help="duration of each step")
    parser.add_argument("--patience", type=int, default=2,
                        help="stop a target after this many consecutive unclean steps")  # fmt: skip
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between steps")
    parser.add_argument("--idle-requests", type=int, default=500,
                        help="REGISTERs timed one at a time for the idle latency")  # fmt: skip
    parser.add_argument("--kamailio-shm-mb", type=int, default=2048,
                        help="Kamailio shared memory, MiB (usrloc: ~1 KiB a binding)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("--gateway-config", type=Path,
                        help="configuration file for the gateway (e.g. [overlay] enabled = no)")
    parser.add_argument("--overload", default="",
                        help="after the steps, offer each target these multiples of its "
                             "own clean rate (e.g. 2,4), then half of it")
    parser.add_argument("--overload-seconds", type=int, default=30,
                        help="how long each overload is offered")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, SIPp traces)")  # fmt: skip
    args = parser.parse_args(argv)
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(args.targets) - set(DESCRIPTIONS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    args.rates = [int(rate) for rate in args.rates.split(",")]
    args.overload = [float(m) for m in args.overload.split(",") if m.strip()]
    args.overload_results = []
    if args.step_seconds < 1 or any(rate < 1 for rate in args.rates):
        parser.error("--step-seconds and --rates must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the results."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("sipp") is None:
        print("sipp is not on PATH", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="register-load-"))
    started = datetime.now(UTC)
    try:
        summaries, steps = run(args, workdir)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    ratio = ratios(summaries)
    print_report(summaries, ratio, args)
    print_overload(args.overload_results)
    if args.json:
        arguments = sys.argv[1:] if argv is None else argv
        record = {
            "started": started.isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "command": " ".join(["bench/register_load.py", *arguments]),
            "step_seconds": args.step_seconds,
            "summaries": [asdict(s) for s in summaries],
            "ratios": ratio,
            "steps": [asdict(step) for step in steps],
            "overload": [asdict(r) for r in args.overload_results],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
