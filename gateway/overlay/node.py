"""The gateway's Kademlia node: the ``kademlia`` package with the faults listed in
OVERLAY-NOTES.md fixed in subclasses, and record-aware storage and lookups.

Fixes over kademlia 2.2.3 / rpcudp 5.0.1:

- RPCs time out after ``rpc_timeout`` (default 1 s, not 5 s), or twice the contact's
  measured RTO when that is longer (:mod:`gateway.overlay.rtt`), and a timeout is not
  logged as an error twice;
- incoming datagrams are unpacked under a guard: garbage cannot raise into the loop;
- ``find_neighbors`` looks at every bucket, so it returns the k closest known nodes
  (the package's traverser stops early when one side runs out);
- a contact in a bucket's replacement cache is not "new" on every message (the package
  re-sent its hand-over STOREs for ever), and the hand-over uses the key as it is (the
  package hashed an already hashed key);
- STORE accepts only signed records and merges them (:class:`RecordStorage`);
- lookups keep alpha queries in flight without waiting for the slowest node
  (:mod:`gateway.overlay.lookup`) and merge every bundle found instead of keeping the
  first value seen, then repair the closest node that lacked it.

Client mode (P2PP's and RELOAD's overlay clients): a node that others cannot reach
(behind NAT) or that lives for one command (``p2psip-peer lookup``) sends its RPCs with
its id and one extra byte. Every node of ours takes only 20-byte ids into its routing
table (:meth:`OverlayProtocol.welcome_if_new`), so a client uses the overlay without
becoming a contact that others would wait on.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import operator
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import umsgpack
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from kademlia.utils import digest

from gateway.overlay.lookup import IterativeLookup, LookupResult, consume_exception
from gateway.overlay.record import Record, decode_bundle, encode_bundle, merge
from gateway.overlay.rtt import RttTable
from gateway.overlay.storage import RecordStorage

log = logging.getLogger("gateway.overlay.node")
# The package logs every unanswered RPC as a warning (and twice): routine in a DHT.
logging.getLogger("kademlia").setLevel(logging.ERROR)
logging.getLogger("rpcudp").setLevel(logging.CRITICAL)


#: Appended to a client's node id in its requests: 21 bytes is not a routing-table id.
CLIENT_MARK = b"\x00"


def key_for(aor: str) -> bytes:
    """The DHT key of an AoR: SHA-1 of its canonical form (kademlia's ``digest``)."""
    return digest(aor)


class CompleteRoutingTable(RoutingTable):
    """A routing table whose neighbour search considers every bucket."""

    def find_neighbors(self, node: Node, k: int | None = None,
                       exclude: Node | None = None) -> list[Node]:
        """The ``k`` known nodes closest to ``node`` (excluding ``exclude``'s address)."""
        k = k or self.ksize
        candidates = [
            (node.distance_to(neighbor), neighbor)
            for bucket in self.buckets for neighbor in bucket.nodes.values()
            if neighbor.id != node.id and (exclude is None or not neighbor.same_home_as(exclude))
        ]
        return [n for _, n in heapq.nsmallest(k, candidates, key=operator.itemgetter(0))]

    def is_new_node(self, node: Node) -> bool:
        """Neither in its bucket nor waiting in that bucket's replacement cache."""
        bucket = self.buckets[self.get_bucket_for(node)]
        return node.id not in bucket.nodes and node.id not in bucket.replacement_nodes


class OverlayProtocol(KademliaProtocol):
    """Kademlia RPCs with short timeouts, a guarded decoder and signed-record STOREs."""

    def __init__(self, source_node: Node, storage: RecordStorage, ksize: int,
                 rpc_timeout: float, client: bool = False) -> None:
        super().__init__(source_node, storage, ksize)
        self.client = client
        self.rpc_timeout = rpc_timeout
        self._wait_timeout = rpc_timeout
        self.router = CompleteRoutingTable(self, ksize, source_node)
        self.storage: RecordStorage = storage
        self.rtt = RttTable(initial=rpc_timeout)
        #: The SIP URI NATed gateways open a relay flow to ("" offers none).
        self.offered_relay = ""

    def rpc_deadline(self, address: tuple[str, int]) -> float:
        """Seconds to wait for an answer from ``address``: ``rpc_timeout``, or twice the
        contact's RTO (or, for a contact not measured yet, that of all contacts) on a
        path slower than that."""
        # Without any measurement that is 2 x rpc_timeout: an RPC is one datagram,
        # never retransmitted, and the first one on a cold path also waits for ARP.
        return min(self.rtt.ceiling, max(self.rpc_timeout, 2 * self.rtt.timeout(address)))

    async def timed(self, address: tuple[str, int],
                    call: Callable[[], Awaitable[tuple[bool, Any]]]) -> tuple[bool, Any]:
        """Make the RPC ``call()`` to ``address`` with that contact's deadline, and learn
        its round-trip time from the answer."""
        # rpcudp reads _wait_timeout when the call sends its datagram, which happens
        # synchronously as the call starts below: no other call can interleave.
        self._wait_timeout = self.rpc_deadline(address)
        started = time.monotonic()
        result = await call()
        if result[0]:
            self.rtt.observe(address, time.monotonic() - started)
        return result

    @property
    def announced_id(self) -> bytes:
        """The id this node sends in its requests (marked when it is a client)."""
        return self.source_node.id + CLIENT_MARK if self.client else self.source_node.id

    async def _call(self, node_to_ask: Node, method: str, *args: Any) -> Any:
        address = (node_to_ask.ip, node_to_ask.port)
        stub = getattr(self, method)  # rpcudp's stub: sends the request datagram
        result = await self.timed(address, lambda: stub(address, self.announced_id, *args))
        return self.handle_call_response(result, node_to_ask)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> Any:
        """FIND_NODE, timed."""
        return await self._call(node_to_ask, "find_node", node_to_find.id)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> Any:
        """FIND_VALUE, timed."""
        return await self._call(node_to_ask, "find_value", node_to_find.id)

    async def call_ping(self, node_to_ask: Node) -> Any:
        """PING, timed."""
        return await self._call(node_to_ask, "ping")

    async def call_store(self, node_to_ask: Node, key: bytes, value: Any) -> Any:
        """STORE, timed."""
        return await self._call(node_to_ask, "store", key, value)

    async def observed_address(self, address: tuple[str, int]) -> tuple[str, int] | None:
        """Where the node at ``address`` sees this node's datagrams come from (the
        package's STUN RPC): this node's address beyond any NAT on the way."""
        stub = self.stun
        ok, answer = await self.timed(address, lambda: stub(address))
        if (ok and isinstance(answer, list | tuple) and len(answer) == 2
                and isinstance(answer[0], str) and isinstance(answer[1], int)):
            return answer[0], answer[1]
        return None

    async def ask_relay_offer(self, address: tuple[str, int]) -> str:
        """The SIP URI the node at ``address`` relays through, "" when it offers none
        (or does not know the RPC: older nodes do not answer it)."""
        stub = self.relay_offer  # rpcudp's stub for rpc_relay_offer
        ok, answer = await self.timed(address, lambda: stub(address, self.announced_id))
        return answer if ok and isinstance(answer, str) and len(answer) < 512 else ""

    def rpc_relay_offer(self, sender: Any, nodeid: bytes) -> str:
        """Where a NATed gateway may open a relay flow to this one ("" for nowhere)."""
        return self.offered_relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Decode under a guard; a bad datagram is dropped."""
        if len(data) < 22 or data[:1] not in (b"\x00", b"\x01"):
            return
        try:
            payload = umsgpack.unpackb(data[21:])
        except Exception:  # umsgpack raises many types on garbage
            log.debug("undecodable datagram from %s", addr)
            return
        msg_id = data[1:21]
        if data[:1] == b"\x01":
            self._accept_response(msg_id, payload, addr)
            return
        if not isinstance(payload, list) or len(payload) != 2 or not isinstance(
                payload[1], list | tuple):
            return
        task = asyncio.ensure_future(self._guarded_request(msg_id, payload, addr))
        task.add_done_callback(consume_exception)

    async def _guarded_request(self, msg_id: bytes, payload: list[Any], addr: Any) -> None:
        try:
            await self._accept_request(msg_id, payload, addr)
        except Exception as exc:  # a malformed RPC from the network
            log.debug("bad request from %s: %s", addr, exc)

    def _accept_response(self, msg_id: bytes, data: Any, address: Any) -> None:
        entry = self._outstanding.pop(msg_id, None)
        if entry is None:
            return
        future, timeout = entry
        timeout.cancel()
        if not future.done():
            future.set_result((True, data))

    def _timeout(self, msg_id: bytes) -> None:
        entry = self._outstanding.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    def rpc_store(self, sender: Any, nodeid: bytes, key: bytes, value: Any) -> bool:
        """Store only signed records, merged with what is here."""
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        records = decode_bundle(value)
        if not records or not isinstance(key, bytes) or len(key) != 20:
            return False
        self.storage.put_records(key, records)
        return True

    def welcome_if_new(self, node: Node) -> None:
        """Hand over the keys a new close node should hold (keys used as they are)."""
        if not isinstance(node.id, bytes) or len(node.id) != 20:
            return
        if not self.router.is_new_node(node):
            self.router.add_contact(node)  # refresh its position
            return
        for key, value in self.storage:
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                last = neighbors[-1].distance_to(keynode)
                new_node_close = node.distance_to(keynode) < last
                first = neighbors[0].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < first
            if not neighbors or (new_node_close and this_closest):
                task = asyncio.ensure_future(self.call_store(node, key, value))
                task.add_done_callback(consume_exception)
        self.router.add_contact(node)


class OverlayNode(Server):
    """A Kademlia node that stores and finds signed record bundles by AoR."""

    protocol_class = OverlayProtocol

    def __init__(self, ksize: int = 20, alpha: int = 3, node_id: bytes | None = None,
                 rpc_timeout: float = 1.0, client: bool = False) -> None:
        """``client``: use the overlay without joining others' routing tables."""
        super().__init__(ksize, alpha, node_id or os.urandom(20))
        # Set here: an empty RecordStorage is falsy, and Server would replace it.
        self.storage: RecordStorage = RecordStorage()
        self.rpc_timeout = rpc_timeout
        self._client = client

    @property
    def client(self) -> bool:
        """Whether this node is an overlay client (in nobody's routing table)."""
        return self._client

    @client.setter
    def client(self, value: bool) -> None:
        self._client = value
        if self.protocol is not None:
            self.protocol.client = value

    def _create_protocol(self) -> OverlayProtocol:
        return OverlayProtocol(self.node, self.storage, self.ksize, self.rpc_timeout,
                               self._client)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where this node listens."""
        if self.transport is None:
            return None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def neighbors(self) -> list[tuple[str, int]]:
        """Known nodes, closest to us first (for the node cache)."""
        if self.protocol is None:
            return []
        return [(n.ip, n.port) for n in self.protocol.router.find_neighbors(self.node)]

    def contact_count(self) -> int:
        """Nodes in the routing table."""
        if self.protocol is None:
            return 0
        return sum(len(b) for b in self.protocol.router.buckets)

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        """PING a bootstrap address (timed, so the first RTT is known at once)."""
        assert self.protocol is not None
        result = await self.protocol.timed(
            addr, lambda: self.protocol.ping(addr, self.protocol.announced_id))
        return Node(result[1], addr[0], addr[1]) if result[0] else None

    async def join(self, addresses: Iterable[tuple[str, int]]) -> int:
        """Bootstrap from ``addresses`` (IPs); returns how many answered."""
        addresses = [a for a in addresses if a != self.address]
        if not addresses:
            return 0
        answered = [n for n in await asyncio.gather(*map(self.bootstrap_node, addresses))
                    if n is not None]
        if answered:
            await self._lookup(self.node, answered, values=False)
        return len(answered)

    async def publish(self, aor: str, records: list[Record]) -> int:
        """Store ``records`` under ``aor`` on the k closest nodes (and here when we are
        among them or alone); returns how many nodes took them."""
        key = key_for(aor)
        value = encode_bundle(records)
        target = Node(key)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            self.storage.put_records(key, records)
            return 0
        nodes = (await self._lookup(target, nearest, values=False)).nodes
        if not nodes or self.node.distance_to(target) < max(n.distance_to(target)
                                                            for n in nodes):
            self.storage.put_records(key, records)
        results = await asyncio.gather(*(self.protocol.call_store(n, key, value)
                                         for n in nodes))
        return sum(1 for ok, answer in results if ok and answer)

    async def lookup(self, aor: str) -> list[Record]:
        """Every valid record for ``aor`` found here and on the closest nodes, merged
        (one per signer, the newest). Signatures are checked; entitlement is not."""
        return (await self.lookup_detail(aor))[0]

    async def lookup_detail(self, aor: str) -> tuple[list[Record], LookupResult | None]:
        """:meth:`lookup` with the lookup's statistics (hops, queries) for benchmarks."""
        key = key_for(aor)
        found = list(self.storage.records(key))
        target = Node(key)
        nearest = self.protocol.router.find_neighbors(target, self.alpha * 2)
        if not nearest:
            return [r for r in merge(found) if r.aor == aor], None
        result = await self._lookup(target, nearest, values=True)
        merged = merge([*found, *result.records])
        if result.without_value is not None and merged:
            # Read repair: the closest node that answered without the value gets it.
            task = asyncio.ensure_future(self.protocol.call_store(
                result.without_value, key, encode_bundle(merged)))
            task.add_done_callback(consume_exception)
        return [r for r in merged if r.aor == aor], result

    async def _lookup(self, target: Node, seeds: list[Node], *, values: bool) -> LookupResult:
        lookup = IterativeLookup(self.protocol, target, seeds, self.ksize, self.alpha,
                                 values=values, stall=self.protocol.rtt.timeout)
        return await lookup.run()
