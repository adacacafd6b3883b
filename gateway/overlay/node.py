"""The gateway's Kademlia node: the ``kademlia`` package with the faults listed in
OVERLAY-NOTES.md fixed in subclasses, record-aware storage and lookups, and defences
against hostile nodes (docs/overlay.md, "Hostile nodes").

Wire protocol (version 2, not understood by plain ``kademlia`` nodes nor by gateways
before it: a flag day, see docs/overlay.md): rpcudp's framing, a request is
``0x00 msgid [method, [credential, args...]]``; every answer is
``0x01 msgid [credential, signature, body]`` where ``body`` is the msgpack answer and
``signature`` the answering node's Ed25519 signature over ``"p2psip-rpc1" + msgid +
body``. The credential is the node's public key and puzzle nonce
(:mod:`gateway.overlay.identity`), and its id is the hash of that key. So:

- an answer counts only when signed by the key the asked node's id comes from (a
  contact cannot be impersonated, and the random msgid means an answer cannot be
  replayed);
- a node enters a routing table only once it answered this node at its address: a
  request's sender is PINGed first (its source address could be forged), and only when
  it could enter its bucket; at most ``ids_per_address`` ids per IP address;
- node lists carry each contact's credential, so a lookup never asks an id its
  credential does not prove (an id chosen next to a key costs a new key and puzzle per
  try).

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
- STORE keeps only signed records entitled to their key, merged (:class:`RecordStorage`);
- lookups run over disjoint paths, keep queries in flight without waiting for the
  slowest node, stop at a deadline with what they found
  (:mod:`gateway.overlay.lookup`), merge every bundle found instead of keeping the
  first value seen, then repair the closest node that lacked it.

Client mode (P2PP's and RELOAD's overlay clients): a node that others cannot reach
(behind NAT) or that lives for one command (``p2psip-peer lookup``) sends its
credential with one extra byte. No node of ours takes such a sender into its routing
table, so a client uses the overlay without becoming a contact that others would wait
on.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from gateway.overlay.identity import DEFAULT_DIFFICULTY, CredentialCheck, NodeIdentity
from gateway.overlay.lookup import (
    PATHS,
    IterativeLookup,
    LookupResult,
    consume_exception,
    is_loopback,
)
from gateway.overlay.record import (
    Record,
    decode_bundle,
    encode_bundle,
    key_for,
    merge,
    open_record,
)
from gateway.overlay.rtt import RttTable
from gateway.overlay.storage import RecordStorage
from gateway.sip.transport import grow_udp_buffers

log = logging.getLogger("gateway.overlay.node")
# The package logs every unanswered RPC as a warning (and twice): routine in a DHT.
logging.getLogger("kademlia").setLevel(logging.ERROR)
logging.getLogger("rpcudp").setLevel(logging.CRITICAL)


#: Holders a path of a value lookup ends on. A stale replica serves an older record
#: that is still genuine; with one holder a path, a reader that never saw the newer one
#: accepts the older when all four paths end on stale replicas (a fraction f of them
#: hostile: about f^4 of lookups, 1 in 1 000 at 30 %), with two about f^8, for one
#: more query a path (bench/overlay_adversarial.py, docs/benchmarks.md).
HOLDERS_PER_PATH = 2

#: Appended to a client's node id in its requests: 21 bytes is not a routing-table id.
CLIENT_MARK = b"\x00"


def _nearest_possible(bounds: tuple[int, int], target: int) -> int:
    """The least XOR distance to ``target`` any id in ``bounds`` (inclusive) can have."""
    low, high = bounds
    free = (low ^ high).bit_length()
    return ((low ^ target) >> free) << free


class CompleteRoutingTable(RoutingTable):
    """A routing table whose neighbour search considers every bucket."""

    #: Bumped whenever a contact leaves: facts like "some contact is closer to this
    #: key than we are" hold while it stays the same (new contacts only add to them).
    removals = 0

    def remove_contact(self, node: Node) -> None:
        """Drop ``node`` (the package's rule), counting the removal."""
        self.removals += 1
        super().remove_contact(node)

    def find_neighbors(self, node: Node, k: int | None = None,
                       exclude: Node | None = None) -> list[Node]:
        """The ``k`` known nodes closest to ``node`` (excluding ``exclude``'s address)."""
        k = k or self.ksize
        target, own = node.long_id, node.id
        home = None if exclude is None else (exclude.ip, exclude.port)
        # Every FIND_NODE answer runs this, so buckets are visited nearest first and the
        # search stops at the first bucket that cannot hold anything closer than the
        # k-th found so far (all ids of a bucket's range share the bits above the
        # highest one its bounds differ in: no id in it is nearer than that prefix).
        ordered = sorted((_nearest_possible(bucket.range, target), index)
                         for index, bucket in enumerate(self.buckets))
        candidates: list[tuple[int, Node]] = []
        for bound, index in ordered:
            if len(candidates) >= k and bound > candidates[k - 1][0]:
                break
            candidates.extend(
                (target ^ neighbor.long_id, neighbor)
                for neighbor in self.buckets[index].nodes.values()
                if neighbor.id != own and (home is None or (neighbor.ip, neighbor.port) != home))
            candidates.sort(key=operator.itemgetter(0))
        return [n for _, n in candidates[:k]]

    def seeds(self, target: Node, extra: int) -> list[Node]:
        """Where a lookup for ``target`` starts: the k known nodes closest to it, and
        ``extra`` other known nodes drawn at random. An attacker can grind ids next to
        a key and fill the closest slots of a routing table with them; contacts drawn
        without regard to the key are hostile only as often as the overlay is, so each
        disjoint path gets one (:class:`gateway.overlay.lookup.IterativeLookup` deals
        seeds round robin by distance, and these come last)."""
        closest = self.find_neighbors(target)
        chosen = {n.id for n in closest}
        others = [n for bucket in self.buckets for n in bucket.nodes.values()
                  if n.id not in chosen and n.id != target.id]
        return closest + random.sample(others, min(extra, len(others)))

    def is_new_node(self, node: Node) -> bool:
        """Neither in its bucket nor waiting in that bucket's replacement cache."""
        bucket = self.buckets[self.get_bucket_for(node)]
        return node.id not in bucket.nodes and node.id not in bucket.replacement_nodes


class Peer(Node):
    """A contact whose id its credential proves (:mod:`gateway.overlay.identity`)."""

    def __init__(self, node_id: bytes, ip: str, port: int, credential: bytes) -> None:
        super().__init__(node_id, ip, port)
        self.credential = credential

    def entry(self) -> tuple[bytes, str, int, bytes]:
        """How node lists carry this contact: id, ip, port, credential."""
        return self.id, self.ip, self.port, self.credential


@dataclass(frozen=True)
class Reply:
    """The answer to one RPC: ``ok`` only when it came, signed by the key of the
    credential it carries (whose id is ``node_id``)."""

    ok: bool
    value: Any = None
    node_id: bytes | None = None
    credential: bytes | None = None


def pack(value: Any) -> bytes:
    """msgpack, as rpcudp writes it (the C implementation: umsgpack is pure Python)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """msgpack, as rpcudp reads it (bounded: a datagram is at most 64 KiB anyway)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


#: Signed into every answer with the request's id, so an answer cannot be replayed.
ANSWER_CONTEXT = b"p2psip-rpc1"
#: Requests from addresses not yet proven that are checked at once (a bound on the
#: PINGs a flood of forged requests can make this node send).
MAX_PENDING_CHECKS = 64
#: (credential, address) pairs whose signature was checked once (least recent go first).
MAX_PROVEN = 10_000
#: Keys looked at per turn of the loop when handing keys over to a new contact.
HANDOVER_SLICE = 256
#: Held keys remembered as another contact's to hand over (a bound on that memory).
MAX_NOT_MINE = 100_000


class OverlayProtocol(KademliaProtocol):
    """Kademlia RPCs with signed answers, proven contacts, short timeouts, a guarded
    decoder and signed-record STOREs."""

    def __init__(self, source_node: Node, storage: RecordStorage, ksize: int,
                 rpc_timeout: float, identity: NodeIdentity, check: CredentialCheck,
                 client: bool = False, ids_per_address: int = 2) -> None:
        super().__init__(source_node, storage, ksize)
        self.client = client
        self.identity = identity
        self.check = check
        self.ids_per_address = ids_per_address
        self.rpc_timeout = rpc_timeout
        self.router = CompleteRoutingTable(self, ksize, source_node)
        self.storage: RecordStorage = storage
        self.rtt = RttTable(initial=rpc_timeout)
        #: The SIP URI NATed gateways open a relay flow to ("" offers none).
        self.offered_relay = ""
        self._pending: dict[bytes, tuple[asyncio.Future[Reply], asyncio.TimerHandle]] = {}
        self._checking: set[tuple[str, int]] = set()
        self._proven: OrderedDict[tuple[bytes, tuple[str, int]], None] = OrderedDict()
        #: Answers dropped because their signature or credential did not verify.
        self.bad_answers = 0
        #: Contacts refused because their address already holds ``ids_per_address``.
        self.refused_contacts = 0
        # New contacts waiting for their hand-over (bounded: under churn the oldest go).
        self._arrivals: deque[Peer] = deque(maxlen=1000)
        self._handing_over: asyncio.Future[None] | None = None
        # Held keys another contact is closer to (no hand-over of ours), valid while
        # the table's ``removals`` stays at ``_not_mine_removals``.
        self._not_mine: set[bytes] = set()
        self._not_mine_removals = 0

    def connection_made(self, transport: Any) -> None:
        """Give the socket the SIP listeners' buffers (a lookup's answers come in
        bursts)."""
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            grow_udp_buffers(sock)

    def rpc_deadline(self, address: tuple[str, int]) -> float:
        """Seconds to wait for an answer from ``address``: ``rpc_timeout``, or twice the
        contact's RTO (or, for a contact not measured yet, that of all contacts) on a
        path slower than that."""
        # Without any measurement that is 2 x rpc_timeout: an RPC is one datagram,
        # never retransmitted, and the first one on a cold path also waits for ARP.
        return min(self.rtt.ceiling, max(self.rpc_timeout, 2 * self.rtt.timeout(address)))

    @property
    def announced(self) -> bytes:
        """What this node sends as its identity in requests: its credential, marked
        when it is a client (nobody takes a client into a routing table)."""
        return self.identity.credential + (CLIENT_MARK if self.client else b"")

    async def request(self, address: tuple[str, int], method: str, *args: Any) -> Reply:
        """Send one RPC and wait (the contact's deadline) for its signed answer; the
        round-trip time is learnt from it."""
        msg_id = os.urandom(20)
        data = pack([method, list(args)])
        if len(data) > 8192 or self.transport is None:
            return Reply(False)  # the peers' rpcudp refuses requests over 8 KiB
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        timer = loop.call_later(self.rpc_deadline(address), self._expire, msg_id)
        self._pending[msg_id] = (future, timer)
        started = time.monotonic()
        self.transport.sendto(b"\x00" + msg_id + data, address)
        reply = await future
        if reply.ok:
            self.rtt.observe(address, time.monotonic() - started)
        return reply

    def _expire(self, msg_id: bytes) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(Reply(False))

    async def call(self, node: Node, method: str, *args: Any) -> tuple[bool, Any]:
        """RPC to a contact: counts only when the answer is signed by the key its id
        comes from (then the contact is proven at this address and may enter the
        routing table); anything else is a failure and the contact leaves the table."""
        reply = await self.request((node.ip, node.port), method, self.announced, *args)
        if reply.ok and reply.node_id == node.id and reply.credential is not None:
            self.admit(Peer(node.id, node.ip, node.port, reply.credential))
            return True, reply.value
        self.router.remove_contact(node)
        return False, None

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> Any:
        """FIND_NODE, timed and verified."""
        return await self.call(node_to_ask, "find_node", node_to_find.id)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> Any:
        """FIND_VALUE, timed and verified."""
        return await self.call(node_to_ask, "find_value", node_to_find.id)

    async def call_ping(self, node_to_ask: Node) -> Any:
        """PING, timed and verified."""
        return await self.call(node_to_ask, "ping")

    async def call_store(self, node_to_ask: Node, key: bytes, value: Any) -> Any:
        """STORE, timed and verified."""
        return await self.call(node_to_ask, "store", key, value)

    async def ping_address(self, address: tuple[str, int]) -> Peer | None:
        """PING an address whose node is not known yet (bootstrap): the node that
        answers, proven, or None."""
        reply = await self.request(address, "ping", self.announced)
        if not reply.ok or reply.node_id is None or reply.credential is None:
            return None
        peer = Peer(reply.node_id, address[0], address[1], reply.credential)
        self.admit(peer)
        return peer

    def candidate(self, entry: Any) -> Peer | None:
        """A node-list entry (id, ip, port, credential) as a contact, or None when the
        credential does not prove the id (or the entry is malformed)."""
        if not isinstance(entry, list | tuple) or len(entry) != 4:
            return None
        node_id, ip, port, credential = entry
        if (not isinstance(ip, str) or not isinstance(port, int) or not 0 < port < 65536
                or self.check.node_id(credential) != node_id or node_id == self.source_node.id):
            return None
        return Peer(node_id, ip, port, credential)

    async def observed_address(self, address: tuple[str, int]) -> tuple[str, int] | None:
        """Where the node at ``address`` sees this node's datagrams come from (the
        package's STUN RPC): this node's address beyond any NAT on the way."""
        reply = await self.request(address, "stun")
        answer = reply.value
        if (reply.ok and isinstance(answer, list | tuple) and len(answer) == 2
                and isinstance(answer[0], str) and isinstance(answer[1], int)):
            return answer[0], answer[1]
        return None

    async def ask_relay_offer(self, address: tuple[str, int]) -> str:
        """The SIP URI the node at ``address`` relays through, "" when it offers none."""
        reply = await self.request(address, "relay_offer", self.announced)
        answer = reply.value
        return answer if reply.ok and isinstance(answer, str) and len(answer) < 512 else ""

    # --- answering ----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Decode under a guard; a bad datagram is dropped."""
        if len(data) < 22 or data[:1] not in (b"\x00", b"\x01"):
            return
        try:
            payload = unpack(data[21:])
        except Exception:  # umsgpack raises many types on garbage
            log.debug("undecodable datagram from %s", addr)
            return
        msg_id = data[1:21]
        if data[:1] == b"\x01":
            self._answer_received(msg_id, payload, (addr[0], addr[1]))
            return
        if not isinstance(payload, list) or len(payload) != 2 or not isinstance(
                payload[1], list | tuple):
            return
        self._answer_request(msg_id, payload, addr)

    def _answer_received(self, msg_id: bytes, payload: Any, address: tuple[str, int]) -> None:
        entry = self._pending.get(msg_id)
        if entry is None:
            return
        if not (isinstance(payload, list) and len(payload) == 3
                and all(isinstance(p, bytes) for p in payload)):
            self.bad_answers += 1
            return
        credential, signature, body = payload
        node_id = self.check.node_id(credential)
        if node_id is None or not self._authentic(credential, signature, msg_id, body,
                                                  address):
            self.bad_answers += 1  # not the key it claims: wait for the real answer
            return
        try:
            value = unpack(body)
        except Exception:
            self.bad_answers += 1
            return
        del self._pending[msg_id]
        future, timer = entry
        timer.cancel()
        if not future.done():
            future.set_result(Reply(True, value, node_id, credential))

    def _authentic(self, credential: bytes, signature: bytes, msg_id: bytes, body: bytes,
                   address: tuple[str, int]) -> bool:
        """Whether the answer is the credential's key's. The signature is checked the
        first time a credential answers from an address (an Ed25519 check costs
        ~100 µs); later answers from that key at that address are taken on the
        request's random id, which only the node we sent it to has seen."""
        proven = (credential, address)
        if proven in self._proven:
            self._proven.move_to_end(proven)
            return True
        if not self.check.verify(credential, signature, ANSWER_CONTEXT + msg_id + body):
            return False
        self._proven[proven] = None
        if len(self._proven) > MAX_PROVEN:
            self._proven.popitem(last=False)
        return True

    def _answer_request(self, msg_id: bytes, payload: list[Any], addr: Any) -> None:
        """Run the request's handler and send its signed answer: at once for the
        plain handlers (no task a datagram), later for a coroutine one."""
        name, args = payload
        handler = getattr(self, f"rpc_{name}", None) if isinstance(name, str) else None
        if handler is None or not callable(handler):
            return
        try:
            answer = handler(addr, *args)
        except Exception as exc:  # a malformed RPC from the network
            log.debug("bad request from %s: %s", addr, exc)
            return
        if asyncio.iscoroutine(answer):
            task = asyncio.ensure_future(self._send_later(msg_id, answer, addr))
            task.add_done_callback(consume_exception)
        else:
            self._send_answer(msg_id, answer, addr)

    async def _send_later(self, msg_id: bytes, answer: Any, addr: Any) -> None:
        try:
            value = await answer
        except Exception as exc:  # a malformed RPC from the network
            log.debug("bad request from %s: %s", addr, exc)
            return
        self._send_answer(msg_id, value, addr)

    def _send_answer(self, msg_id: bytes, answer: Any, addr: Any) -> None:
        try:
            body = pack(answer)
        except Exception as exc:  # an answer msgpack cannot carry
            log.debug("unpackable answer to %s: %s", addr, exc)
            return
        signature = self.identity.sign(ANSWER_CONTEXT + msg_id + body)
        if self.transport is not None:
            self.transport.sendto(
                b"\x01" + msg_id + pack([self.identity.credential, signature, body]),
                addr)

    def note_sender(self, sender: tuple[str, int], credential: Any) -> None:
        """A request came from ``sender`` claiming ``credential``: a known contact is
        refreshed; an unknown one is PINGed first (its address must be proven, a
        request's source can be forged) and enters the table when it answers."""
        node_id = self.check.node_id(credential)
        if node_id is None or node_id == self.source_node.id:
            return  # a client (or a credential that proves nothing): never a contact
        bucket = self.router.buckets[self.router.get_bucket_for(Node(node_id))]
        known = bucket.nodes.get(node_id)
        if known is not None and (known.ip, known.port) == tuple(sender):
            self.router.add_contact(known)
            return
        if known is None and len(bucket) >= self.router.ksize and not (
                bucket.has_in_range(self.source_node) or bucket.depth() % 5 != 0):
            return  # its bucket is full and will not split: it would not enter anyway
        address = (sender[0], sender[1])
        if address in self._checking or len(self._checking) >= MAX_PENDING_CHECKS:
            return
        self._checking.add(address)
        task = asyncio.ensure_future(self.call_ping(Peer(node_id, *address, credential)))
        task.add_done_callback(lambda t: (self._checking.discard(address),
                                          consume_exception(t)))

    def rpc_ping(self, sender: Any, credential: Any = None) -> bytes:
        """PING: this node's id."""
        self.note_sender(sender, credential)
        return self.source_node.id

    def rpc_stun(self, sender: Any, *_: Any) -> list[Any]:
        """Where the request came from."""
        return list(sender)

    def rpc_relay_offer(self, sender: Any, credential: Any = None) -> str:
        """Where a NATed gateway may open a relay flow to this one ("" for nowhere)."""
        return self.offered_relay

    def rpc_store(self, sender: Any, credential: Any, key: bytes, value: Any) -> bool:
        """Store only signed records, merged with what is here."""
        self.note_sender(sender, credential)
        if not isinstance(key, bytes) or len(key) != 20:
            return False
        # False when nothing was signed, or nothing entitled to travel: not stored.
        return self.storage.put_records(key, decode_bundle(value)) > 0

    def rpc_find_node(self, sender: Any, credential: Any, key: bytes) -> list[Any]:
        """The k closest proven contacts to ``key``, with their credentials."""
        self.note_sender(sender, credential)
        if not isinstance(key, bytes) or len(key) != 20:
            return []
        asker = Node(b"\x00" * 20, sender[0], sender[1])
        return [n.entry() for n in self.router.find_neighbors(Node(key), exclude=asker)
                if isinstance(n, Peer)]

    def rpc_find_value(self, sender: Any, credential: Any, key: bytes) -> Any:
        """The bundle stored under ``key`` with the closest contacts (where the reader's
        next holder is), else the closest contacts."""
        nodes = self.rpc_find_node(sender, credential, key)
        if isinstance(key, bytes) and len(key) == 20:
            value = self.storage.get(key, None)
            if value is not None:
                return {"value": value, "nodes": nodes}
        return nodes

    def admit(self, node: Peer) -> None:
        """Put a proven contact in the routing table (handing it the keys it should
        hold when it is new), unless its address already holds ``ids_per_address``
        other ids (loopback is exempt: one machine's test networks)."""
        if node.id == self.source_node.id:
            return
        if not self.router.is_new_node(node):
            self.router.add_contact(node)  # refresh its position (and address)
            return
        if not is_loopback(node.ip):
            same = sum(1 for bucket in self.router.buckets for n in bucket.nodes.values()
                       if n.ip == node.ip)
            if same >= self.ids_per_address:
                self.refused_contacts += 1
                return
        if self.storage.held_keys():
            self._arrivals.append(node)
            if self._handing_over is None or self._handing_over.done():
                self._handing_over = asyncio.ensure_future(self._hand_over())
                self._handing_over.add_done_callback(consume_exception)
        self.router.add_contact(node)

    async def _hand_over(self) -> None:
        """Give every new contact the keys it is now among the closest to, when this
        node is the closest to them (Kademlia's hand-over), in slices of
        :data:`HANDOVER_SLICE` keys with the loop free in between: a node holding
        thousands of keys must not stall its reactor for every contact that arrives."""
        while self._arrivals:
            node = self._arrivals.popleft()
            keys = self.storage.held_keys()
            for start in range(0, len(keys), HANDOVER_SLICE):
                for key in keys[start:start + HANDOVER_SLICE]:
                    self._hand_over_key(node, key)
                await asyncio.sleep(0)

    def _hand_over_key(self, node: Peer, key: bytes) -> None:
        router = self.router
        if self._not_mine_removals != router.removals:
            self._not_mine.clear()  # a contact left: the closer one may be gone
            self._not_mine_removals = router.removals
        if key in self._not_mine:
            return
        keynode = Node(key)
        target = keynode.long_id
        mine = self.source_node.long_id ^ target
        # Is another contact closer to the key than this node? Then the hand-over is its
        # job (and stays so while no contact leaves). The key's own bucket first: for
        # most keys a closer contact is found there at once, and the full neighbour
        # search below runs for few keys.
        for bucket in (router.buckets[router.get_bucket_for(keynode)], *router.buckets):
            for contact in bucket.nodes.values():
                if contact.id != node.id and contact.long_id ^ target <= mine:
                    if len(self._not_mine) < MAX_NOT_MINE:
                        self._not_mine.add(key)
                    return
        neighbors = router.find_neighbors(keynode, exclude=node)
        if neighbors and node.distance_to(keynode) >= neighbors[-1].distance_to(keynode):
            return  # the new contact is not among the closest
        value = self.storage.get(key)
        if value is not None:
            task = asyncio.ensure_future(self.call_store(node, key, value))
            task.add_done_callback(consume_exception)

    def welcome_if_new(self, node: Node) -> None:
        """Only proven contacts enter (:meth:`admit`); the package's unproven path is
        closed."""
        if isinstance(node, Peer):
            self.admit(node)


class OverlayNode(Server):
    """A Kademlia node that stores and finds signed record bundles by AoR."""

    protocol_class = OverlayProtocol

    def __init__(self, ksize: int = 20, alpha: int = 3, identity: NodeIdentity | None = None,
                 rpc_timeout: float = 1.0, client: bool = False, *,
                 difficulty: int = DEFAULT_DIFFICULTY, ids_per_address: int = 2,
                 paths: int = PATHS) -> None:
        """``client``: use the overlay without joining others' routing tables (a client
        needs no solved puzzle: nobody takes it as a contact); ``difficulty``: the puzzle
        bits this node's identity needs and every contact's must have."""
        if identity is None:
            identity = NodeIdentity.generate(0 if client else difficulty)
        super().__init__(ksize, alpha, identity.node_id)
        self.identity = identity
        self.check = CredentialCheck(difficulty)
        self.ids_per_address = ids_per_address
        self.paths = paths
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
        return self.protocol_class(self.node, self.storage, self.ksize, self.rpc_timeout,
                                   self.identity, self.check, self._client,
                                   self.ids_per_address)

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
        """PING a bootstrap address: the node there, proven, or None."""
        assert self.protocol is not None
        return await self.protocol.ping_address(addr)

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

    async def closest_nodes(self, key: bytes, deadline: float | None = None) -> list[Node]:
        """The k closest proven nodes to ``key``, found over disjoint paths."""
        target = Node(key)
        nearest = self.protocol.router.seeds(target, self.paths)
        if not nearest:
            return []
        return (await self._lookup(target, nearest, values=False, deadline=deadline)).nodes

    async def publish(self, aor: str, records: list[Record], timeout: float = 10.0) -> int:
        """Store ``records`` under ``aor`` on the k closest nodes, found over disjoint
        paths (and here when we are among them or alone); returns how many nodes took
        them (only signed answers count)."""
        key = key_for(aor)
        return await self.store_bundle(key, records, timeout)

    async def store_bundle(self, key: bytes, records: list[Record],
                           timeout: float = 10.0) -> int:
        """:meth:`publish` by DHT key."""
        deadline = time.monotonic() + timeout
        nodes = await self.closest_nodes(key, deadline)
        target = Node(key)
        if not nodes or self.node.distance_to(target) < max(n.distance_to(target)
                                                            for n in nodes):
            self.storage.put_records(key, records)
        if not nodes:
            return 0
        value = encode_bundle(records)
        results = await asyncio.gather(*(self.protocol.call_store(n, key, value)
                                         for n in nodes))
        return sum(1 for ok, answer in results if ok and answer is True)

    async def lookup(self, aor: str, accept: Callable[[Record], bool] | None = None,
                     timeout: float | None = None) -> list[Record]:
        """Every valid record for ``aor`` found here and on the closest nodes, merged
        (one per signer, the newest). Signatures are checked; entitlement is the
        caller's ``accept`` (a path stops only on records it accepts)."""
        return (await self.lookup_detail(aor, accept, timeout))[0]

    async def lookup_detail(self, aor: str, accept: Callable[[Record], bool] | None = None,
                            timeout: float | None = None,
                            ) -> tuple[list[Record], LookupResult | None]:
        """:meth:`lookup` with the lookup's statistics (hops, queries) for benchmarks;
        at ``timeout`` seconds it returns what was found until then."""
        key = key_for(aor)
        found = list(self.storage.records(key))
        target = Node(key)
        nearest = self.protocol.router.seeds(target, self.paths)
        if not nearest:
            return _opened(merge(found), aor), None

        def wanted(record: Record) -> bool:
            opened = open_record(record, aor)
            return opened is not None and (accept is None or accept(opened))

        deadline = None if timeout is None else time.monotonic() + timeout
        result = await self._lookup(target, nearest, values=True, accept=wanted,
                                    deadline=deadline)
        if found:  # this node's own replica weighs like another path's
            result.served.insert(0, (-1, self.node.id, [r.signer for r in found]))
        merged = merge([*found, *result.records])
        if result.without_value is not None and merged:
            # Read repair: the closest node that answered without the value gets it.
            task = asyncio.ensure_future(self.protocol.call_store(
                result.without_value, key, encode_bundle(merged)))
            task.add_done_callback(consume_exception)
        return _opened(merged, aor), result

    async def _lookup(self, target: Node, seeds: list[Node], *, values: bool,
                      accept: Callable[[Record], bool] | None = None,
                      deadline: float | None = None) -> LookupResult:
        # alpha is the parallelism of the whole lookup, spread over its paths.
        per_path = max(1, self.alpha // self.paths)
        lookup = IterativeLookup(self.protocol, target, seeds, self.ksize, per_path,
                                 values=values, enough=HOLDERS_PER_PATH,
                                 stall=self.protocol.rtt.timeout,
                                 paths=self.paths, deadline=deadline,
                                 per_address=self.ids_per_address,
                                 candidate=self.protocol.candidate, accept=accept)
        return await lookup.run()

    async def _refresh_table(self) -> None:
        """The hourly refresh: look up a random id in every bucket not used for an
        hour, then store again the bundles held here unchanged for an hour (the
        package's crawl would take unproven node lists)."""
        for node_id in self.protocol.get_refresh_ids():
            target = Node(node_id)
            nearest = self.protocol.router.find_neighbors(target)
            if nearest:
                await self._lookup(target, nearest, values=False)
        for key, value in self.storage.iter_older_than(3600):
            await self.store_bundle(key, decode_bundle(value))


def _opened(records: list[Record], aor: str) -> list[Record]:
    """The records of ``aor`` among ``records``, opened."""
    return [opened for record in records if (opened := open_record(record, aor)) is not None]
