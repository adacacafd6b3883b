"""Iterative Kademlia lookups over disjoint paths (S/Kademlia), bounded, that do not
wait for the slowest node.

The ``k`` closest contacts this node knows are dealt round robin to ``paths`` lookups
that run side by side. A path learns candidates only from the answers of its own nodes,
and every node is asked by one path only, so a hostile node that answers with hostile
contacts captures at most the path that asked it: the others go on through the nodes
they were dealt. Within a path, queries are kept in flight continuously: whenever fewer
than ``alpha`` are outstanding — or one has been outstanding longer than that contact's
``stall`` time (its measured RTO, :mod:`gateway.overlay.rtt`), which then stops
counting — the closest candidate not yet asked is asked.

A path ends when the ``2k / paths`` closest candidates it may still ask (not failed, not stalled,
not taken by another path) have all answered, after ``max_queries`` queries, or, for
values, once ``enough`` of its nodes returned a bundle holding a record the caller
accepts (``accept``: a bundle of records the reader would refuse ends nothing). The
lookup ends when every path has ended or at ``deadline``; what was found until then is
returned. Candidates come only with a credential that proves their id
(:mod:`gateway.overlay.identity`), at most ``per_address`` per IP address and path, and a
node's answer counts only when it is signed by the key its id comes from (the protocol
checks that before the answer gets here).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kademlia.node import Node

from gateway.overlay.record import Record, decode_bundle

log = logging.getLogger("gateway.overlay.node")

#: Disjoint paths per lookup (S/Kademlia finds 4-8 enough at k = 20).
PATHS = 4


@dataclass
class LookupResult:
    """What one lookup found."""

    nodes: list[Node] = field(default_factory=list)  # the k closest that answered
    records: list[Record] = field(default_factory=list)
    holders: int = 0
    hops: int = 0  # depth of the first node that returned the value (seeds are 1)
    queries: int = 0
    without_value: Node | None = None
    timed_out: bool = False
    #: Per node that returned a bundle: (its path, its id, the signers in the order it
    #: served them). Readers that have not pinned a domain yet weigh the replicas.
    served: list[tuple[int, bytes, list[str]]] = field(default_factory=list)


@functools.lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    """Whether ``ip`` is a loopback address (one machine's test networks: exempt from
    the ids-per-address bound)."""
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@dataclass
class _Path:
    """One of the disjoint paths: its candidates and their states."""

    index: int
    nodes: dict[bytes, Node] = field(default_factory=dict)
    depth: dict[bytes, int] = field(default_factory=dict)
    state: dict[bytes, str] = field(default_factory=dict)  # new, pending, done, failed
    per_ip: dict[str, int] = field(default_factory=dict)
    stall_after: dict[bytes, float] = field(default_factory=dict)
    stalled: set[bytes] = field(default_factory=set)
    queries: int = 0
    holders: int = 0
    finished: bool = False


class IterativeLookup:
    """One FIND_NODE or FIND_VALUE lookup for ``target`` over disjoint paths."""

    def __init__(self, protocol: Any, target: Node, seeds: list[Node], k: int, alpha: int,
                 *, values: bool, stall: Callable[[tuple[str, int]], float],
                 enough: int = 2, paths: int = PATHS, max_queries: int | None = None,
                 deadline: float | None = None, per_address: int = 2,
                 candidate: Callable[[Any], Node | None] | None = None,
                 accept: Callable[[Record], bool] | None = None) -> None:
        """``stall`` tells how long a contact's silence is normal (by its address);
        ``candidate`` turns an entry of a node list into a node, or None when its
        credential does not prove its id; ``deadline``: a ``time.monotonic()`` instant."""
        self.protocol = protocol
        self.target = target
        self.k = k
        self.alpha = alpha
        self.values = values
        self.stall = stall
        self.enough = enough
        self.max_queries = max_queries if max_queries is not None else 3 * k
        # A path counts on its ``span`` closest candidates: together the paths cover
        # the k closest twice over without each of them asking k nodes.
        self.span = max(alpha, -(-2 * k // max(1, min(paths, len(seeds)))))
        self.deadline = deadline
        self.per_address = per_address
        self.candidate = candidate
        self.accept = accept
        self._own = protocol.source_node.id
        count = max(1, min(paths, len(seeds)))
        self._paths = [_Path(i) for i in range(count)]
        self._owner: dict[bytes, int] = {}  # node id -> the path that asked it
        self._tasks: dict[asyncio.Future[Any], tuple[int, bytes]] = {}
        self.result = LookupResult()
        self._no_value: list[Node] = []
        self._target_id = target.long_id
        self._distance: dict[bytes, int] = {}  # node id -> its distance to the target
        ordered = sorted(seeds, key=lambda n: n.distance_to(target))
        for position, seed in enumerate(ordered):
            self._add(self._paths[position % count], seed, 1)

    def _add(self, path: _Path, node: Node, depth: int) -> None:
        if node.id == self._own or node.id in path.nodes:
            return
        if not is_loopback(node.ip) and path.per_ip.get(node.ip, 0) >= self.per_address:
            return
        path.per_ip[node.ip] = path.per_ip.get(node.ip, 0) + 1
        path.nodes[node.id] = node
        self._distance.setdefault(node.id, self._target_id ^ node.long_id)
        path.depth[node.id] = depth
        path.state[node.id] = "new"

    def _closest(self, path: _Path, *, without_stalled: bool = False) -> list[bytes]:
        """The k closest candidates of ``path`` it may still count on: not failed, not
        asked by another path (nor, with ``without_stalled``, stalled unanswered)."""
        stalled = path.stalled if without_stalled else ()
        alive = [i for i, s in path.state.items()
                 if s != "failed" and self._owner.get(i, path.index) == path.index
                 and not (s == "pending" and i in stalled)]
        alive.sort(key=self._distance.__getitem__)
        return alive[:self.span]

    def _step(self, path: _Path) -> None:
        """Ask more nodes on ``path``, or mark it finished."""
        if path.finished:
            return
        if self.values and path.holders >= self.enough:
            path.finished = True
            return
        closest = self._closest(path, without_stalled=True)
        active = [i for i, s in path.state.items() if s == "pending" and i not in path.stalled]
        for node_id in closest:
            if len(active) >= self.alpha or path.queries >= self.max_queries:
                break
            if path.state[node_id] == "new" and node_id not in self._owner:
                self._ask(path, node_id)
                active.append(node_id)
        if all(path.state[i] in ("done", "failed") for i in closest) or (
                path.queries >= self.max_queries and not active):
            path.finished = True
        elif not any(path.state[i] == "pending" for i in path.state):
            path.finished = True  # nothing in flight and nothing left to ask

    async def run(self) -> LookupResult:
        """Run the lookup to its end (or its deadline)."""
        while True:
            for path in self._paths:
                self._step(path)
            if all(p.finished for p in self._paths):
                break
            pending = [t for t, (p, i) in self._tasks.items()
                       if self._paths[p].state[i] == "pending"]
            if not pending:
                break
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                self.result.timed_out = True
                break
            counting = [path.stall_after[i] for path in self._paths if not path.finished
                        for i, s in path.state.items()
                        if s == "pending" and i not in path.stalled]
            wait = max(0.005, min(counting) - now) if counting else None
            if self.deadline is not None:
                wait = min(wait if wait is not None else 1e9, max(0.0, self.deadline - now))
            done, _ = await asyncio.wait(pending, timeout=wait,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                # Every query silent for longer than its contact's stall time stops
                # counting towards alpha: most likely that node is gone.
                now = time.monotonic() + 1e-3
                for path in self._paths:
                    path.stalled.update(i for i, s in path.state.items()
                                        if s == "pending" and path.stall_after[i] <= now)
                continue
            for task in done:
                path_index, node_id = self._tasks.pop(task)
                self._handle(self._paths[path_index], node_id, task)
        answered = {i: p.nodes[i] for p in self._paths for i, s in p.state.items()
                    if s == "done"}
        self.result.nodes = sorted(answered.values(),
                                   key=lambda n: n.distance_to(self.target))[:self.k]
        if self._no_value:
            self.result.without_value = min(
                self._no_value, key=lambda n: n.distance_to(self.target))
        for task in self._tasks:  # stragglers end by their own RPC timeout
            task.add_done_callback(consume_exception)
        return self.result

    def _ask(self, path: _Path, node_id: bytes) -> None:
        node = path.nodes[node_id]
        call = self.protocol.call_find_value if self.values else self.protocol.call_find_node
        task = asyncio.ensure_future(call(node, self.target))
        self._tasks[task] = (path.index, node_id)
        self._owner[node_id] = path.index
        path.state[node_id] = "pending"
        path.stall_after[node_id] = time.monotonic() + self.stall((node.ip, node.port))
        path.queries += 1
        self.result.queries += 1

    def _handle(self, path: _Path, node_id: bytes, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            path.state[node_id] = "failed"
            return
        ok, answer = task.result()
        if not ok:
            path.state[node_id] = "failed"
            return
        path.state[node_id] = "done"
        depth = path.depth[node_id]
        if self.values and isinstance(answer, dict) and "value" in answer:
            records = decode_bundle(answer["value"])
            if records:
                self.result.records.extend(records)
                self.result.served.append((path.index, node_id,
                                           [r.signer for r in records]))
                if self.accept is None or any(self.accept(r) for r in records):
                    path.holders += 1
                    self.result.holders += 1
                    if not self.result.hops:
                        self.result.hops = depth
            # A holder also names its closest contacts: the other holders, most likely.
            answer = answer.get("nodes")
        elif self.values:
            self._no_value.append(path.nodes[node_id])
        if not isinstance(answer, list | tuple):
            return
        for entry in answer[:2 * self.k]:
            node = self.candidate(entry) if self.candidate is not None else None
            if node is not None:
                self._add(path, node, depth + 1)


def consume_exception(task: asyncio.Future[Any]) -> None:
    """Done-callback for tasks nobody awaits: retrieve (and drop) their exception, so
    asyncio does not report it as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("overlay task failed: %s", task.exception())
