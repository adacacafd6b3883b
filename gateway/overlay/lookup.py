"""Iterative Kademlia lookups that do not wait for the slowest node.

The package's crawl sends alpha queries, waits for *all* of them (one dead contact
stalls the round for the whole RPC timeout), and for values keeps the first round's
answer. Here queries are kept in flight continuously: whenever fewer than ``alpha``
are outstanding — or one has been outstanding longer than that contact's ``stall`` time
(its measured RTO, :mod:`gateway.overlay.rtt`), which then stops counting — the closest
not yet asked candidate is asked. The lookup ends when the
``k`` closest candidates that neither failed nor stalled have all answered, or, for
values, once
``enough`` nodes returned the key (the publisher stores on all k closest, so a few
holders are enough to see its newest record). Every bundle found is returned for
merging; the closest answered node that lacked the value is named for read repair.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kademlia.crawling import RPCFindResponse
from kademlia.node import Node

from gateway.overlay.record import Record, decode_bundle

log = logging.getLogger("gateway.overlay.node")


@dataclass
class LookupResult:
    """What one lookup found."""

    nodes: list[Node] = field(default_factory=list)  # the k closest that answered
    records: list[Record] = field(default_factory=list)
    holders: int = 0
    hops: int = 0  # depth of the first node that returned the value (seeds are 1)
    queries: int = 0
    without_value: Node | None = None


class IterativeLookup:
    """One FIND_NODE or FIND_VALUE lookup for ``target``."""

    def __init__(self, protocol: Any, target: Node, seeds: list[Node], k: int, alpha: int,
                 *, values: bool, stall: Callable[[tuple[str, int]], float],
                 enough: int = 3) -> None:
        """``stall`` tells how long a contact's silence is normal (by its address)."""
        self.protocol = protocol
        self.target = target
        self.k = k
        self.alpha = alpha
        self.values = values
        self.stall = stall
        self.enough = enough
        self._nodes: dict[bytes, Node] = {}
        self._depth: dict[bytes, int] = {}
        self._state: dict[bytes, str] = {}  # new, pending, done, failed
        self._stall_after: dict[bytes, float] = {}  # when a pending query stalls
        self._stalled: set[bytes] = set()
        self._tasks: dict[asyncio.Future[Any], bytes] = {}
        self.result = LookupResult()
        self._no_value: list[Node] = []
        for seed in seeds:
            self._add(seed, 1)

    def _add(self, node: Node, depth: int) -> None:
        if node.id == self.protocol.source_node.id or node.id in self._nodes:
            return
        self._nodes[node.id] = node
        self._depth[node.id] = depth
        self._state[node.id] = "new"

    def _closest(self, *, without_stalled: bool = False) -> list[bytes]:
        """The k closest candidates that have not failed (nor, with
        ``without_stalled``, stalled while still unanswered)."""
        stalled = self._stalled if without_stalled else ()
        alive = [i for i, s in self._state.items()
                 if s != "failed" and not (s == "pending" and i in stalled)]
        alive.sort(key=lambda i: self._nodes[i].distance_to(self.target))
        return alive[:self.k]

    async def run(self) -> LookupResult:
        """Run the lookup to its end."""
        while True:
            # A stalled node (no answer within ``stall``) is most likely gone: it gives
            # its place among the k closest to the next candidate, so the lookup goes
            # on past dead nodes instead of ending at them. Its RPC times out on its
            # own, and an answer that still comes is used.
            closest = self._closest(without_stalled=True)
            if self.values and self.result.holders >= self.enough:
                break
            active = [i for i, s in self._state.items()
                      if s == "pending" and i not in self._stalled]
            for node_id in closest:
                if len(active) >= self.alpha:
                    break
                if self._state[node_id] == "new":
                    self._ask(node_id)
                    active.append(node_id)
            if all(self._state[i] in ("done", "failed") for i in closest):
                break
            pending = [t for t, i in self._tasks.items() if self._state[i] == "pending"]
            if not pending:
                break
            now = time.monotonic()
            counting = [self._stall_after[i] for i in active if self._state[i] == "pending"]
            wait = max(0.005, min(counting) - now) if counting else None
            done, _ = await asyncio.wait(pending, timeout=wait,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                # Every query silent for longer than its contact's stall time stops
                # counting towards alpha.
                now = time.monotonic() + 1e-3
                self._stalled.update(i for i in active if self._state[i] == "pending"
                                     and self._stall_after[i] <= now)
                continue
            for task in done:
                self._handle(self._tasks.pop(task), task)
        self.result.nodes = [self._nodes[i] for i in self._closest()
                             if self._state[i] == "done"]
        if self._no_value:
            self.result.without_value = min(
                self._no_value, key=lambda n: n.distance_to(self.target))
        for task in self._tasks:  # stragglers end by their own RPC timeout
            task.add_done_callback(consume_exception)
        return self.result

    def _ask(self, node_id: bytes) -> None:
        node = self._nodes[node_id]
        call = self.protocol.call_find_value if self.values else self.protocol.call_find_node
        task = asyncio.ensure_future(call(node, self.target))
        self._tasks[task] = node_id
        self._state[node_id] = "pending"
        started = time.monotonic()
        self._stall_after[node_id] = started + self.stall((node.ip, node.port))
        self.result.queries += 1

    def _handle(self, node_id: bytes, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._state[node_id] = "failed"
            return
        response = RPCFindResponse(task.result())
        if not response.happened():
            self._state[node_id] = "failed"
            return
        self._state[node_id] = "done"
        depth = self._depth[node_id]
        if self.values and response.has_value():
            records = decode_bundle(response.get_value())
            if records:
                self.result.records.extend(records)
                self.result.holders += 1
                if not self.result.hops:
                    self.result.hops = depth
            return
        if self.values:
            self._no_value.append(self._nodes[node_id])
        try:
            for node in response.get_node_list():
                if isinstance(node.id, bytes) and len(node.id) == 20:
                    self._add(node, depth + 1)
        except (TypeError, ValueError):
            pass  # a malformed node list: that node's answer is ignored


def consume_exception(task: asyncio.Future[Any]) -> None:
    """Done-callback for tasks nobody awaits: retrieve (and drop) their exception, so
    asyncio does not report it as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("overlay task failed: %s", task.exception())
