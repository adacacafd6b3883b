"""Run plain ``kademlia`` nodes (the package's own ``Server``) for overlay tests.

    python tests/plain_nodes.py COUNT BOOTSTRAP_HOST:PORT

Prints one line ``ready PORT PORT ...`` once every node has bootstrapped, then runs
until SIGTERM (bounded: it exits by itself after 10 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from kademlia.network import Server

logging.getLogger("kademlia").setLevel(logging.CRITICAL)
logging.getLogger("rpcudp").setLevel(logging.CRITICAL)


async def main(count: int, bootstrap: tuple[str, int]) -> None:
    nodes = [Server() for _ in range(count)]
    for node in nodes:
        await node.listen(0, "127.0.0.1")
        await node.bootstrap([bootstrap])
    ports = [node.transport.get_extra_info("sockname")[1] for node in nodes]
    print("ready", *ports, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 600)
    for node in nodes:
        node.stop()


if __name__ == "__main__":
    host, _, port = sys.argv[2].rpartition(":")
    asyncio.run(main(int(sys.argv[1]), (host, int(port))))
