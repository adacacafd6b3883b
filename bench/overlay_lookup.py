"""Overlay lookup benchmark: our overlay node against the plain ``kademlia`` package.

For each size N, one process hosts N nodes on 127.0.0.1 (k=20, alpha=3), each joined
through an earlier node. ``--keys`` keys are published from random nodes, then looked
up from random nodes ``--concurrency`` at a time: success rate, latency p50/p99 and
(ours) hop count. Then 20 % of the nodes are killed without leaving (their sockets just
close) and every key is looked up again at once. Finally the nodes sit idle for
``--idle`` seconds and the RPC requests they send each other are counted (a healthy
overlay is quiet when idle).

Usage::

    python bench/overlay_lookup.py [--sizes 16,64,256,1000] [--keys 200]
        [--impl ours,plain] [--json out.json]

Everything runs on loopback in this process; it ends by closing every socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kademlia.network import Server  # noqa: E402
from rpcudp.protocol import RPCProtocol  # noqa: E402

from gateway.overlay.node import OverlayNode  # noqa: E402
from gateway.overlay.record import Contact, Signer, decode_bundle  # noqa: E402
from gateway.sip.tls import self_signed  # noqa: E402

logging.getLogger("kademlia").setLevel(logging.CRITICAL)
logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
logging.getLogger("asyncio").setLevel(logging.CRITICAL)

REQUESTS = {"count": 0}
_original = RPCProtocol.datagram_received


def _counting(self: Any, data: bytes, addr: Any) -> None:
    if data[:1] == b"\x00":
        REQUESTS["count"] += 1
    _original(self, data, addr)


@dataclass
class Phase:
    """Lookups of one phase."""

    lookups: int = 0
    found: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    hops: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Success rate and percentiles."""
        lat = sorted(self.latencies_ms)
        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")
        return {"lookups": self.lookups, "success_pct": 100 * self.found / max(1, self.lookups),
                "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": lat[-1] if lat else float("nan"),
                "hops_mean": statistics.mean(self.hops) if self.hops else None,
                "hops_max": max(self.hops) if self.hops else None}


async def build(impl: str, size: int) -> list[Any]:
    """Start ``size`` nodes and join each through a random earlier one."""
    nodes: list[Any] = []
    for index in range(size):
        # 8 puzzle bits: 1 000 node ids in seconds (the gateway's default, 20, costs 0.7 s each).
        node = (OverlayNode(ksize=20, alpha=3, difficulty=8) if impl == "ours"
                else Server(ksize=20, alpha=3))
        await node.listen(0, "127.0.0.1")
        if index:
            seed = random.choice(nodes[:index])
            address = ("127.0.0.1", seed.transport.get_extra_info("sockname")[1])
            if impl == "ours":
                await node.join([address])
            else:
                await node.bootstrap([address])
        nodes.append(node)
    return nodes


async def publish(impl: str, nodes: list[Any], keys: int) -> dict[str, str]:
    """Publish ``keys`` AoRs from random nodes; returns AoR → expected route."""
    certificate, key = self_signed(["bench.example"], [])
    signer = Signer(key, certificate)  # a certificate naming the domain, as a gateway's
    expected = {}
    for index in range(keys):
        aor = f"sip:user{index}@bench.example"
        route = f"sip:127.0.0.1:{10000 + index};lr"
        node = random.choice(nodes)
        if impl == "ours":
            contact = [Contact(f"sip:user{index}@127.0.0.1", 1.0, time.time() + 3600)]
            await node.publish(aor, decode_bundle(signer.sign(aor, contact, route, 3600)))
        else:
            await node.set(aor, route)
        expected[aor] = route
    return expected


async def lookups(impl: str, nodes: list[Any], expected: dict[str, str],
                  concurrency: int) -> Phase:
    """Look every key up from a random node, ``concurrency`` at a time."""
    phase = Phase()

    async def one(aor: str) -> None:
        node = random.choice(nodes)
        started = time.perf_counter()
        ok, hops = False, None
        try:
            if impl == "ours":
                records, detail = await node.lookup_detail(aor)
                ok = any(r.route == expected[aor] for r in records)
                hops = detail.hops if detail is not None else 0
            else:
                ok = await node.get(aor) == expected[aor]
        except Exception:
            ok = False
        phase.latencies_ms.append(1000 * (time.perf_counter() - started))
        phase.lookups += 1
        phase.found += ok
        if ok and hops is not None:
            phase.hops.append(hops)

    items = list(expected)
    for start in range(0, len(items), concurrency):
        await asyncio.gather(*(one(aor) for aor in items[start:start + concurrency]))
    return phase


async def run_size(impl: str, size: int, keys: int, concurrency: int, idle: float,
                   ) -> dict[str, Any]:
    """One implementation at one size: build, publish, steady, kill 20 %, idle."""
    random.seed(size)
    built = time.perf_counter()
    nodes = await build(impl, size)
    build_s = time.perf_counter() - built
    try:
        expected = await publish(impl, nodes, keys)
        steady = await lookups(impl, nodes, expected, concurrency)
        killed = random.sample(nodes, size // 5)
        for node in killed:
            node.stop()
        survivors = [n for n in nodes if n not in killed]
        after = await lookups(impl, survivors, expected, concurrency)
        REQUESTS["count"] = 0
        await asyncio.sleep(idle)
        idle_rate = REQUESTS["count"] / idle
        return {"impl": impl, "size": size, "keys": keys, "build_s": round(build_s, 1),
                "steady": steady.summary(), "after_kill": after.summary(),
                "idle_requests_per_s": round(idle_rate, 1)}
    finally:
        for node in nodes:
            node.stop()
        await asyncio.sleep(0.2)


def _row(result: dict[str, Any], phase: str) -> str:
    s = result[phase]
    hops = "-" if s["hops_mean"] is None else f"{s['hops_mean']:.2f} ({s['hops_max']})"
    return (f"| {result['impl']} | {result['size']} | {phase.replace('_', ' ')} | "
            f"{s['success_pct']:.2f} % | {s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {hops} | "
            f"{result['idle_requests_per_s'] if phase == 'steady' else ''} |")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (implementation, size) in turn."""
    RPCProtocol.datagram_received = _counting  # type: ignore[method-assign]
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for impl in args.impl.split(","):
            result = await run_size(impl, size, args.keys, args.concurrency, args.idle)
            results.append(result)
            print(_row(result, "steady"), flush=True)
            print(_row(result, "after_kill"), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256,1000")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--impl", default="ours,plain")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print("| impl | N | phase | success | p50 / p99 (ms) | hops mean (max) | idle req/s |")
    print("|---|---|---|---|---|---|---|")
    results = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "results": results}, indent=1,
                                        default=lambda o: asdict(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
