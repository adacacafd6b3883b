"""The overlay node on its own: several nodes (ours and plain ``kademlia`` ones) on
loopback UDP in this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest_twisted
from kademlia.network import Server
from tls_certs import domain_signer
from twisted.internet.defer import Deferred

from gateway.overlay.node import OverlayNode, key_for
from gateway.overlay.record import Contact, Signer, decode_bundle

#: Puzzle bits for the nodes of these tests (the default, 20, costs 0.7 s a node).
TEST_DIFFICULTY = 8
# Made when the module is collected: live for longer than the whole suite runs.
CONTACTS = [Contact("sip:bob@127.0.0.1:5090", 1.0, time.time() + 6 * 3600)]


def run(coroutine):  # noqa: ANN001, ANN201 - an asyncio coroutine as a Deferred
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


async def overlay(count: int, k: int = 4, plain: int = 0) -> tuple[list[OverlayNode],
                                                                  list[Server]]:
    nodes = [OverlayNode(ksize=k, rpc_timeout=0.3, difficulty=TEST_DIFFICULTY)
             for _ in range(count)]
    plains = [Server(ksize=k) for _ in range(plain)]
    for node in [*nodes, *plains]:
        await node.listen(0, "127.0.0.1")
    first = nodes[0].address
    for node in nodes[1:]:
        await node.join([first])
    for node in plains:
        # A plain node cannot read our signed answers (its bootstrap fails), and its
        # requests, with a bare id, do not make it a contact of ours.
        with contextlib.suppress(Exception):
            await node.bootstrap([first])
        await node.protocol.ping(first, node.node.id)
    for node in nodes:  # a second round so that every table knows more than the seed
        await node.join([first])
    return nodes, plains


def record(signer: Signer, aor: str, route: str = "sip:127.0.0.1:5060;lr") -> list:
    return decode_bundle(signer.sign(aor, CONTACTS, route, 600))


@pytest_twisted.ensureDeferred
async def test_lookups_still_succeed_after_storing_nodes_are_killed() -> None:
    async def scenario() -> tuple[int, int]:
        nodes, _ = await overlay(12, k=4)
        signer = domain_signer("b.example")
        try:
            stored = await nodes[1].publish("sip:bob@b.example", record(signer,
                                                                        "sip:bob@b.example"))
            holders = [n for n in nodes
                       if n.storage.records(key_for("sip:bob@b.example"))]
            killed = holders[:max(1, len(holders) // 2)]
            for node in killed:  # gone without a word
                node.stop()
            alive = [n for n in nodes if n not in killed and n is not nodes[1]]
            found = 0
            for node in alive:
                if await node.lookup("sip:bob@b.example"):
                    found += 1
            return stored, found - len(alive)
        finally:
            for node in nodes:
                node.stop()

    stored, missing = await run(scenario())
    assert stored >= 2
    assert missing == 0


@pytest_twisted.ensureDeferred
async def test_two_publishers_of_one_aor_coexist_and_plain_kademlia_nodes_stay_out() -> None:
    async def scenario() -> tuple[set[str], int]:
        nodes, plains = await overlay(6, k=5, plain=3)
        first = domain_signer("c.example")
        second = domain_signer("c.example")
        try:
            await nodes[1].publish("sip:carol@c.example",
                                   record(first, "sip:carol@c.example", "sip:127.0.0.1:1;lr"))
            await nodes[2].publish("sip:carol@c.example",
                                   record(second, "sip:carol@c.example", "sip:127.0.0.1:2;lr"))
            found = await nodes[5].lookup("sip:carol@c.example")
            # Plain nodes answer unsigned: none of ours takes them as a contact.
            plain_ports = {p.transport.get_extra_info("sockname")[1] for p in plains}
            taken = sum(1 for node in nodes for bucket in node.protocol.router.buckets
                        for contact in bucket.get_nodes() if contact.port in plain_ports)
            return {r.route for r in found}, taken
        finally:
            for node in [*nodes, *plains]:
                node.stop()

    routes, taken = await run(scenario())
    assert routes == {"sip:127.0.0.1:1;lr", "sip:127.0.0.1:2;lr"}
    assert taken == 0


@pytest_twisted.ensureDeferred
async def test_garbage_datagrams_and_unsigned_stores_are_ignored() -> None:
    async def scenario() -> tuple[bool, int]:
        nodes, _ = await overlay(3, k=3)
        try:
            target = nodes[0]
            sender = nodes[1]
            transport = sender.transport
            for payload in (b"", b"\x00" * 21 + b"\xc1", os.urandom(200),
                            b"\x00" + os.urandom(20) + b"\x92\xa5store\x90"):
                transport.sendto(payload, target.address)
            accepted = await sender.protocol.call_store(_node(target), key_for("x"),
                                                        b"unsigned value")
            await asyncio.sleep(0.2)
            return accepted[1], len(target.storage)
        finally:
            for node in nodes:
                node.stop()

    accepted, stored = await run(scenario())
    assert accepted is False and stored == 0


def _node(server: OverlayNode):  # noqa: ANN202 - a kademlia Node with an address
    from kademlia.node import Node

    host, port = server.address
    return Node(server.node.id, host, port)


@pytest_twisted.ensureDeferred
async def test_a_client_node_uses_the_overlay_without_entering_routing_tables() -> None:
    async def scenario() -> tuple[int, int, int, bool, int, tuple[str, int] | None]:
        nodes, _ = await overlay(6, k=4)
        client = OverlayNode(ksize=4, rpc_timeout=0.3, client=True,
                             difficulty=TEST_DIFFICULTY)
        await client.listen(0, "127.0.0.1")
        signer = domain_signer("b.example")
        try:
            answered = await client.join([nodes[0].address])
            await nodes[1].publish("sip:bob@b.example", record(signer, "sip:bob@b.example"))
            found = await client.lookup("sip:bob@b.example")
            stored = await client.publish("sip:carol@b.example",
                                          record(signer, "sip:carol@b.example"))
            by_others = bool(await nodes[3].lookup("sip:carol@b.example"))
            in_tables = sum(1 for node in nodes for bucket in node.protocol.router.buckets
                            for contact in bucket.get_nodes()
                            if contact.port == client.address[1])
            seen = await client.protocol.observed_address(nodes[2].address)
            return answered, len(found), stored, by_others, in_tables, seen
        finally:
            for node in [*nodes, client]:
                node.stop()

    answered, found, stored, by_others, in_tables, seen = await run(scenario())
    assert answered == 1 and found == 1 and stored >= 2 and by_others
    assert in_tables == 0
    assert seen is not None and seen[0] == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_a_new_contact_is_handed_the_keys_it_is_now_closest_to() -> None:
    """A node alone with more keys than one hand-over slice: the node that joins it gets
    every key (the hand-over runs in slices, with the loop free in between)."""
    from gateway.overlay.node import HANDOVER_SLICE

    async def scenario() -> tuple[int, int]:
        holder = OverlayNode(ksize=4, rpc_timeout=0.3, difficulty=TEST_DIFFICULTY)
        await holder.listen(0, "127.0.0.1")
        signer = domain_signer("b.example")
        aors = [f"sip:u{i}@b.example" for i in range(HANDOVER_SLICE * 2 + 10)]
        for aor in aors:
            holder.storage.put_records(key_for(aor), record(signer, aor))
        newcomer = OverlayNode(ksize=4, rpc_timeout=0.3, difficulty=TEST_DIFFICULTY)
        await newcomer.listen(0, "127.0.0.1")
        try:
            await newcomer.join([holder.address])
            deadline = time.monotonic() + 10
            while len(newcomer.storage) < len(aors) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            opened = decode_bundle(newcomer.storage[key_for(aors[-1])], aors[-1])
            return len(newcomer.storage), len(opened)
        finally:
            holder.stop()
            newcomer.stop()

    handed, opened = await run(scenario())
    assert handed == HANDOVER_SLICE * 2 + 10 and opened == 1


def test_the_neighbour_search_finds_the_k_closest_of_every_bucket() -> None:
    """The search visits buckets nearest first and stops early; whatever it skips, it
    must return what sorting every contact by distance returns (with a full table of
    split buckets, random targets, and with an address excluded)."""
    import random

    from kademlia.node import Node

    from gateway.overlay.node import CompleteRoutingTable

    class Quiet:  # a full bucket pings its head: nobody answers
        source_node = Node(os.urandom(20))

        async def call_ping(self, node: Node) -> None:
            return None

    rng = random.Random(7)
    protocol = Quiet()
    table = CompleteRoutingTable(protocol, 8, protocol.source_node)
    for port in range(1, 3000):
        table.add_contact(Node(rng.randbytes(20), "127.0.0.1", port))
    contacts = [n for bucket in table.buckets for n in bucket.nodes.values()]
    assert len(table.buckets) > 10 and len(contacts) > 80
    for _ in range(300):
        target = Node(rng.randbytes(20))
        exclude = rng.choice(contacts) if rng.random() < 0.5 else None
        everyone = sorted((n for n in contacts
                           if exclude is None or (n.ip, n.port) != (exclude.ip, exclude.port)),
                          key=lambda n: n.long_id ^ target.long_id)
        k = rng.choice((1, 8, 20))
        found = table.find_neighbors(target, k, exclude=exclude)
        assert [n.id for n in found] == [n.id for n in everyone[:k]]


@pytest_twisted.ensureDeferred
async def test_a_key_is_handed_over_once_the_closer_contact_has_left() -> None:
    """A node holding a key that a contact is closer to leaves the hand-over of that key
    to it (and remembers so); once that contact has left the table, the next newcomer
    among the closest is handed the key by this node."""
    from gateway.overlay.node import Peer

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        holder = OverlayNode(ksize=4, rpc_timeout=0.3, difficulty=TEST_DIFFICULTY)
        await holder.listen(0, "127.0.0.1")
        try:
            protocol = holder.protocol
            aor = "sip:carol@b.example"
            key = key_for(aor)
            protocol.storage.put_records(key, record(domain_signer("b.example"), aor))
            target = int.from_bytes(key, "big")
            mine = holder.node.long_id ^ target

            def near(distance: int, port: int) -> Peer:
                node_id = (target ^ distance).to_bytes(20, "big")
                return Peer(node_id, "127.0.0.9", port, b"")

            handed: list[bytes] = []

            async def call_store(node, stored_key, value):  # noqa: ANN001, ANN202
                handed.append(node.id)
                return True, True

            protocol.call_store = call_store
            closer = near(mine // 4, 1)
            protocol.router.add_contact(closer)
            first = near(mine // 2, 2)
            protocol._hand_over_key(first, key)  # noqa: SLF001 - the rule on its own
            await asyncio.sleep(0.01)
            before = list(handed)
            protocol.router.remove_contact(closer)
            second = near(mine // 3, 3)
            protocol._hand_over_key(second, key)  # noqa: SLF001
            await asyncio.sleep(0.01)
            return before, handed
        finally:
            holder.stop()

    before, after = await run(scenario())
    assert before == []  # the closer contact's job
    assert len(after) == 1  # its job is ours once it has gone


@pytest_twisted.ensureDeferred
async def test_a_holder_answers_find_value_with_its_closest_contacts_too() -> None:
    """FIND_VALUE at a node holding the key: the bundle and the node's closest proven
    contacts (readers take their path's next holder from them)."""

    async def scenario() -> tuple[bool, int]:
        nodes, _ = await overlay(4, k=4)
        try:
            aor = "sip:dave@b.example"
            holder = nodes[1]
            holder.storage.put_records(key_for(aor), record(domain_signer("b.example"), aor))
            asker = nodes[2]
            there = Node(holder.node.id, *holder.address)
            ok, value = await asker.protocol.call_find_value(there, Node(key_for(aor)))
            assert ok, "the holder did not answer"
            return "value" in value, len(value.get("nodes", []))
        finally:
            for node in nodes:
                node.stop()

    from kademlia.node import Node

    has_value, contacts = await run(scenario())
    assert has_value and contacts >= 2
