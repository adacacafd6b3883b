"""Long fuzz run: mutated SIP messages over UDP and TCP against a gateway started in
this process (so a loopback guard can keep it from sending anywhere else), then an
OPTIONS check and a count of unhandled errors in its log.

Usage::

    python bench/fuzz.py [--udp 100000] [--tcp 20000] [--seed 1]

Exit status 0 when the gateway still answers and logged no unhandled error.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()
import empty_dns  # noqa: E402
from fuzzing import LoopbackGuard, messages, send_tcp, send_udp  # noqa: E402
from sip_client import UdpClient, request  # noqa: E402
from twisted.internet import reactor, threads  # noqa: E402
from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.logger import LogLevel, globalLogPublisher  # noqa: E402

from gateway.app.service import GatewayService, prepare  # noqa: E402


async def run(args: argparse.Namespace) -> int:
    """Start the gateway, fuzz it, check it, stop it."""
    failures: list[str] = []
    globalLogPublisher.addObserver(lambda e: failures.append(str(e.get("log_format")))
                                   if "log_failure" in e or e.get("log_level") is
                                   LogLevel.critical else None)
    data_dir = Path(tempfile.mkdtemp(prefix="fuzz-"))
    service = GatewayService(prepare(None, {
        "gateway.data_dir": str(data_dir), "sip.listen_udp": "127.0.0.1:0",
        "sip.listen_tcp": "127.0.0.1:0", "tls.listen": "", "overlay.listen": "127.0.0.1:0",
        "database.worker": "thread", "limits.source_rate": "0",
        "sip.shutdown_grace": "0",
        # Fuzzed Request-URIs name random hosts: DNS must not leave this machine either.
        "dns.servers": empty_dns.shared().setting}), reactor)
    service.startService()
    await service.ready
    guard = LoopbackGuard(service.transports.send)
    service.transports.send = guard
    ports = {kind: port for kind, _, port in service.transports.listening_addresses()}
    started = time.monotonic()
    sent_udp = await threads.deferToThread(send_udp, ports["udp"],
                                           messages(args.seed, args.udp, ports["udp"]))
    sent_tcp = await threads.deferToThread(send_tcp, ports["tcp"],
                                           messages(args.seed + 1, args.tcp, ports["tcp"]),
                                           random.Random(args.seed + 2))
    elapsed = time.monotonic() - started

    def ping() -> int:
        client = UdpClient(ports["udp"], timeout=10)
        try:
            return client.ask(request("OPTIONS", f"sip:127.0.0.1:{ports['udp']}",
                                      local_port=client.port)).status
        finally:
            client.close()

    status = await threads.deferToThread(ping)
    handled = sum(service.metrics.requests.values())
    await service.stopService()
    print(f"sent {sent_udp} UDP datagrams and {sent_tcp} TCP messages in {elapsed:.1f} s; "
          f"{handled} parsed as requests and handled; OPTIONS afterwards: {status}; "
          f"unhandled errors logged: {len(failures)}; sends blocked by the loopback "
          f"guard: {guard.blocked}")
    for failure in failures[:10]:
        print("  ", failure)
    return 0 if status == 200 and not failures else 1


def main() -> int:
    """Parse the arguments and run on the reactor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--udp", type=int, default=100_000)
    parser.add_argument("--tcp", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result: list[int] = []

    def done(code: int) -> None:
        result.append(code)
        reactor.stop()

    def failed(failure: object) -> None:
        print(failure)
        result.append(2)
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(run(args)).addCallbacks(done, failed))
    reactor.run()
    return result[0] if result else 2


if __name__ == "__main__":
    sys.exit(main())
