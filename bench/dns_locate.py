"""The cost of DNS on the call path: RFC 3263 location of a SIP domain, cache miss vs.
cache hit.

Starts Knot DNS (Debian ``knot``) on a free loopback port with a zone for
``sip.example`` (NAPTR for UDP and TCP, two SRV targets each, A and AAAA), then locates
``sip:bob@sip.example`` ``--count`` times with an empty cache each time (every NAPTR,
SRV, A and AAAA question goes to the server: what a call to a domain not seen for a TTL
pays) and ``--count`` times from the cache (what every other call pays), one at a time.
Prints p50/p99/max in microseconds and the questions sent per location.

Usage::

    python bench/dns_locate.py [--count 2000] [--json out.json]

Loopback only; knotd is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dns_server import KnotServer, available, zone  # noqa: E402

from gateway.sip.dns import DnsClient  # noqa: E402
from gateway.sip.locate import SipLocator  # noqa: E402
from gateway.sip.uri import SipUri, parse_uri  # noqa: E402

ZONE = zone(
    "sip.example",
    '@ NAPTR 10 50 "s" "SIP+D2U" "" _sip._udp',
    '@ NAPTR 20 50 "s" "SIP+D2T" "" _sip._tcp',
    "_sip._udp SRV 10 10 5060 a", "_sip._udp SRV 20 10 5060 b",
    "_sip._tcp SRV 10 10 5060 a", "_sip._tcp SRV 20 10 5060 b",
    "a A 127.0.0.1", "a AAAA ::1", "b A 127.0.0.2", "b AAAA ::1",
    ttl=3600)


async def measure(server: tuple[str, int], count: int) -> dict[str, object]:
    """Miss and hit timings (seconds) and the questions per miss."""
    client = DnsClient([server])
    locator = SipLocator(client, ("udp", "tcp"))
    uri = parse_uri("sip:bob@sip.example")
    assert isinstance(uri, SipUri)
    found = await locator.locate(uri)
    assert len(found.targets) == 6, found  # b shares a's AAAA: counted once
    misses, hits = [], []
    sent_before = client.sent
    for _ in range(count):
        client.forget()
        started = time.perf_counter()
        await locator.locate(uri)
        misses.append(time.perf_counter() - started)
    questions = (client.sent - sent_before) / count
    for _ in range(count):
        started = time.perf_counter()
        await locator.locate(uri)
        hits.append(time.perf_counter() - started)
    return {"miss": misses, "hit": hits, "questions_per_miss": questions}


def summary(name: str, seconds: list[float]) -> str:
    """p50 / p99 / max in microseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{name}: p50 {statistics.median(ordered) * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs, "
            f"max {ordered[-1] * 1e6:.0f} µs")


def main() -> int:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reason = available()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        knot = KnotServer(Path(tmp), {"sip.example": ZONE})
        knot.start()
        try:
            result = asyncio.run(measure(knot.address, args.count))
        finally:
            knot.stop()
    print(summary("cache miss (every question to Knot)", result["miss"]))  # type: ignore[arg-type]
    print(summary("cache hit", result["hit"]))  # type: ignore[arg-type]
    print(f"questions per miss: {result['questions_per_miss']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
