"""A two-port Ethernet bridge that delays every frame: the lab's stand-in for netem.

Run inside a namespace holding two interfaces (promiscuous, offloads off)::

    python delay_bridge.py WEST EAST DELAY_MS

Every frame received on one interface is sent out of the other ``DELAY_MS``
milliseconds later (order kept). It runs until SIGTERM; nothing is routed, so the hosts
on both sides see one Ethernet segment with a longer wire.
"""

from __future__ import annotations

import collections
import contextlib
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
MAX_FRAME = 65536
MAX_QUEUED = 100_000  # frames held at once; beyond that new ones are dropped (a full wire)


def open_port(ifname: str) -> socket.socket:
    """A raw packet socket on ``ifname`` that sees every frame arriving there."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


def main(argv: list[str]) -> int:
    """Bridge ``argv[0]`` and ``argv[1]`` with ``argv[2]`` ms of delay each way."""
    west, east = open_port(argv[0]), open_port(argv[1])
    delay = float(argv[2]) / 1000.0
    other = {west.fileno(): east, east.fileno(): west}
    queue: collections.deque[tuple[float, socket.socket, bytes]] = collections.deque()
    running = True

    def stop(_signum: int, _frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    poller = select.poll()
    poller.register(west, select.POLLIN)
    poller.register(east, select.POLLIN)
    while running:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, out, frame = queue.popleft()
            with contextlib.suppress(OSError):  # a frame not taken is lost, as on a wire
                out.send(frame)
        wait_ms = 200 if not queue else max(0, int((queue[0][0] - now) * 1000))
        for fd, _ in poller.poll(wait_ms):
            sock = west if fd == west.fileno() else east
            for _ in range(256):  # bounded per wake-up
                try:
                    frame, address = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if address[2] == socket.PACKET_OUTGOING:
                    continue  # our own send, seen on the way out
                if len(queue) < MAX_QUEUED:
                    queue.append((time.monotonic() + delay, other[fd], frame))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
