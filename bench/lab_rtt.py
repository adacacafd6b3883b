"""Local vs. worldwide overlay: lookups and call set-up across a delayed link.

The P2PSIP paper this project follows compared an overlay on one LAN with one spread
over the world. This benchmark builds the test suite's network lab (tests/netlab.py:
network namespaces, a router, a user-space delay bridge on site B's cable) and, for
each round-trip time, starts gateway A (a.example) and gateway B (b.example, joined
through A) as real ``twistd`` processes with ``overlay.cache = 0`` (every call looks
the callee up), then measures:

- ``lookup``: ``p2psip-peer lookup sip:alice@a.example`` run as a fresh overlay client
  on host P, whose own link to the router has the same delay (so every query it sends
  crosses a slow link, as for a peer far from the rest), seeded with gateway A; the
  time of the lookup itself as the tool reports it;
- ``setup``: a phone on B calls a phone on A: INVITE sent → 200 received (overlay
  lookup at B, both proxies, 180 and 200 back), then ACK and BYE.

Usage (root, namespaces; nothing leaves the lab)::

    python bench/lab_rtt.py [--rtts 0,100,300,600] [--calls 10] [--lookups 5]
        [--json out.json]

Each RTT gets a fresh lab, torn down after it. Ratios are against the first RTT.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab_gateway import lab_env  # noqa: E402
from netlab import Lab, unavailable  # noqa: E402
from sip_ua import SDP, UA, in_dialog  # noqa: E402
from test_lab_sites import call_until_it_works, phone, two_gateways, two_sites  # noqa: E402

PEER = "198.18.5.2"
TOOK = re.compile(r"record\(s\) of \S+ in (\d+) ms")


def timed_call(caller: UA, callee: UA) -> float:
    """One call; seconds from INVITE sent to 200 received."""
    invite = caller.request("INVITE", callee.uri, body=SDP)
    started = time.monotonic()
    caller.send(invite)
    incoming = callee.expect_request("INVITE")
    callee.answer(incoming, 180)
    caller.expect(180)
    callee.answer(incoming, 200)
    ok = caller.expect(200)
    setup = time.monotonic() - started
    caller.send(in_dialog(caller, "ACK", ok, invite, 1))
    callee.expect_request("ACK")
    caller.send(in_dialog(caller, "BYE", ok, invite, 2))
    bye = callee.expect_request("BYE")
    callee.answer(bye, 200, record_route=False)
    caller.expect(200, method="BYE")
    return setup


def peer_lookup(site: str, workdir: Path, seed: str) -> float | None:
    """``p2psip-peer lookup`` on ``site``: milliseconds the lookup took (None: failed)."""
    done = subprocess.run(
        ["ip", "netns", "exec", site, sys.executable, "-m", "gateway.app.peer",
         "--host", PEER, "--state-dir", str(workdir / "peer"), "--bootstrap", seed,
         "--first-pin", "replicas", "lookup", "sip:alice@a.example"],
        capture_output=True, text=True, env=lab_env(), timeout=60, cwd=workdir)
    found = TOOK.search(done.stderr)
    return float(found.group(1)) if done.returncode == 0 and found else None


def measure(rtt_ms: float, calls: int, lookups: int) -> dict[str, object]:
    """Lookups and call set-up times at one RTT, in a fresh lab."""
    with tempfile.TemporaryDirectory(prefix="lab-rtt-") as tmp, Lab() as lab:
        workdir = Path(tmp)
        site_a, site_b, router = two_sites(lab, workdir, rtt_ms / 2)
        peer_host = lab.host("p")
        if rtt_ms:
            lab.delayed_cable(router, "peer", "198.18.5.1/24", peer_host, "eth0",
                              f"{PEER}/24", rtt_ms / 2, workdir)
        else:
            lab.cable(router, "peer", "198.18.5.1/24", peer_host, "eth0", f"{PEER}/24")
        lab.default_route(peer_host, "198.18.5.1")
        gateway_a, gateway_b = two_gateways(lab, site_a, site_b, workdir, "overlay.cache=0")
        alice = phone(lab, site_a, "alice", gateway_a)
        bob = phone(lab, site_b, "bob", gateway_b)
        try:
            call_until_it_works(bob, alice, time.monotonic() + 60)  # the record is out
            setups = [timed_call(bob, alice) * 1000 for _ in range(calls)]
        finally:
            alice.close()
            bob.close()
        found = [peer_lookup(peer_host, workdir, gateway_a.overlay) for _ in range(lookups)]
        for gateway in (gateway_b, gateway_a):
            gateway.stop()
    ok = [ms for ms in found if ms is not None]
    return {"rtt_ms": rtt_ms, "setup_ms": setups, "lookup_ms": ok,
            "lookups_failed": len(found) - len(ok)}


def summary(rows: list[dict]) -> str:
    """A Markdown table, ratios against the first row."""
    lines = ["| RTT (ms) | call set-up p50 / max (ms) | ratio | p2psip-peer lookup p50 / max "
             "(ms) | ratio | lookups failed |", "|---|---|---|---|---|---|"]
    base_setup = statistics.median(rows[0]["setup_ms"])
    base_lookup = statistics.median(rows[0]["lookup_ms"]) if rows[0]["lookup_ms"] else 0
    for row in rows:
        setup = statistics.median(row["setup_ms"])
        lookup = statistics.median(row["lookup_ms"]) if row["lookup_ms"] else float("nan")
        lookup_ratio = f"{lookup / base_lookup:.1f}" if base_lookup else "-"
        lines.append(
            f"| {row['rtt_ms']:g} | {setup:.0f} / {max(row['setup_ms']):.0f} | "
            f"{setup / base_setup:.1f} | {lookup:.0f} / {max(row['lookup_ms'] or [0]):.0f} | "
            f"{lookup_ratio} | {row['lookups_failed']} |")
    return "\n".join(lines)


def main() -> int:
    """Run every RTT and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtts", default="0,100,300,600")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--lookups", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so the lab's namespaces and processes go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = unavailable()
    if reason is not None:
        print(f"the network lab is not available: {reason}", file=sys.stderr)
        return 2
    rows = []
    for rtt in (float(x) for x in args.rtts.split(",")):
        row = measure(rtt, args.calls, args.lookups)
        print(f"RTT {rtt:g} ms: set-up {[round(x) for x in row['setup_ms']]} ms, lookups "
              f"{row['lookup_ms']} ms", flush=True)
        rows.append(row)
    print(summary(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
