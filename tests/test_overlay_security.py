"""Hostile overlay nodes (issue 16): node ids bound to keys, signed answers, proven
contacts, disjoint lookup paths, and only entitled records stored and served."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest_twisted
import umsgpack
from kademlia.node import Node
from tls_certs import domain_signer
from twisted.internet.defer import Deferred

from gateway.overlay.acceptance import RecordAcceptance
from gateway.overlay.identity import CredentialCheck, NodeIdentity, load_identity, node_id_of
from gateway.overlay.lookup import IterativeLookup
from gateway.overlay.node import OverlayNode, Peer
from gateway.overlay.record import Contact, Signer, decode_bundle, encode_bundle, key_for
from gateway.overlay.storage import MAX_SIGNERS, RecordStorage
from gateway.overlay.trust import MemoryPins, RecordTrust

DIFFICULTY = 8
# Made when the module is collected: live for longer than the whole suite runs.
CONTACTS = [Contact("sip:bob@127.0.0.1:5090", 1.0, time.time() + 6 * 3600)]
ROUTE = "sip:127.0.0.1:5060;lr"


def run(coroutine):  # noqa: ANN001, ANN201 - an asyncio coroutine as a Deferred
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


async def started(count: int, k: int = 4) -> list[OverlayNode]:
    nodes = [OverlayNode(ksize=k, rpc_timeout=0.3, difficulty=DIFFICULTY) for _ in range(count)]
    for node in nodes:
        await node.listen(0, "127.0.0.1")
    for node in nodes[1:]:
        await node.join([nodes[0].address])
    return nodes


def contacts_of(node: OverlayNode) -> list[Node]:
    return [n for bucket in node.protocol.router.buckets for n in bucket.get_nodes()]


# --- identities -----------------------------------------------------------------------



def _voting(pins: MemoryPins | None = None) -> RecordTrust:
    """TOFU whose first pins the replicas' agreement decides (``first_pin = replicas``,
    what these tests weigh)."""
    return RecordTrust("tofu", pin_store=pins or MemoryPins(), first_pin="replicas")

def test_an_identity_proves_its_id_and_its_puzzle(tmp_path: Path) -> None:
    identity = NodeIdentity.generate(DIFFICULTY)
    assert identity.bits() >= DIFFICULTY
    check = CredentialCheck(DIFFICULTY)
    assert check.node_id(identity.credential) == identity.node_id == node_id_of(
        identity.public_key)
    unsolved = os.urandom(40)
    assert CredentialCheck(24).node_id(unsolved) is None
    assert check.node_id(identity.credential[:39]) is None
    # Saved and read back; a saved one too weak for a higher difficulty is replaced.
    saved = load_identity(str(tmp_path), DIFFICULTY)
    assert load_identity(str(tmp_path), DIFFICULTY).node_id == saved.node_id
    stronger = load_identity(str(tmp_path), saved.bits() + 1)
    assert stronger.node_id != saved.node_id and stronger.bits() > saved.bits()


@pytest_twisted.ensureDeferred
async def test_a_contact_cannot_be_impersonated_and_lists_prove_their_ids() -> None:
    async def scenario() -> dict[str, Any]:
        nodes = await started(3)
        real, impostor, asker = nodes
        try:
            protocol = asker.protocol
            # The impostor's address under the real node's id and credential: the answer
            # is signed by the impostor's key, so it does not count.
            posing = Peer(real.node.id, *impostor.address, real.identity.credential)
            ok, _ = await protocol.call_ping(posing)
            fake_id = bytes(20)
            return {
                "impersonated": ok,
                "posing_admitted": any(n.id == real.node.id and n.port == impostor.address[1]
                                       for n in contacts_of(asker)),
                "honest": protocol.candidate((real.node.id, *real.address,
                                              real.identity.credential)),
                "chosen_id": protocol.candidate((fake_id, *real.address,
                                                 real.identity.credential)),
                "unsolved": protocol.candidate((node_id_of(b"x" * 32), *real.address,
                                                b"x" * 40)),
                "three_fields": protocol.candidate((real.node.id, *real.address)),
            }
        finally:
            for node in nodes:
                node.stop()

    seen = await run(scenario())
    assert seen["impersonated"] is False and seen["posing_admitted"] is False
    assert isinstance(seen["honest"], Peer)
    assert seen["chosen_id"] is None and seen["unsolved"] is None
    assert seen["three_fields"] is None


@pytest_twisted.ensureDeferred
async def test_a_request_makes_its_sender_a_contact_only_once_it_answers() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        nodes = await started(2)
        target, other = nodes
        mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mute.bind(("127.0.0.1", 0))
        newcomer = OverlayNode(ksize=4, rpc_timeout=0.3, difficulty=DIFFICULTY)
        await newcomer.listen(0, "127.0.0.1")
        try:
            # A PING from a socket that never answers, claiming a valid credential.
            claimed = NodeIdentity.generate(DIFFICULTY)
            mute.sendto(b"\x00" + os.urandom(20)
                        + umsgpack.packb(["ping", [claimed.credential]]), target.address)
            # A real node that only sends a request: PINGed back, it answers.
            await newcomer.protocol.request(target.address, "ping",
                                            newcomer.identity.credential)
            await asyncio.sleep(1.0)
            ids = {n.id for n in contacts_of(target)}
            return claimed.node_id in ids, newcomer.node.id in ids, target.protocol.bad_answers
        finally:
            mute.close()
            for node in [*nodes, newcomer]:
                node.stop()

    mute_taken, newcomer_taken, bad = await run(scenario())
    assert not mute_taken
    assert newcomer_taken
    assert bad == 0


@pytest_twisted.ensureDeferred
async def test_one_address_holds_at_most_ids_per_address_contacts() -> None:
    async def scenario() -> tuple[int, int]:
        (node,) = await started(1)
        try:
            for _ in range(4):
                identity = NodeIdentity.generate(DIFFICULTY)
                # 192.0.2.1 only enters the table here: nothing is ever sent there.
                node.protocol.admit(Peer(identity.node_id, "192.0.2.1", 6084,
                                         identity.credential))
            same = sum(1 for n in contacts_of(node) if n.ip == "192.0.2.1")
            return same, node.protocol.refused_contacts
        finally:
            node.stop()

    same, refused = await run(scenario())
    assert same == 2 and refused == 2


# --- disjoint paths -------------------------------------------------------------------


class ScriptedProtocol:
    """Answers lookups from a script: node id -> answer (a value or a node list);
    ids missing from the script never answer."""

    def __init__(self, script: dict[bytes, Any]) -> None:
        self.source_node = Node(b"\xff" * 20)
        self.script = script

    async def call_find_value(self, node: Node, target: Node) -> tuple[bool, Any]:
        if node.id not in self.script:
            await asyncio.sleep(3600)
        await asyncio.sleep(0.001)
        return True, self.script[node.id]

    call_find_node = call_find_value


def _id(value: int) -> bytes:
    return value.to_bytes(20, "big")


def _eclipse_script(record_bundle: bytes) -> tuple[list[Node], dict[bytes, Any]]:
    """The target is 0. A hostile seed (id 50) answers with ever closer hostile ids
    (9..1, each answering with the next); an honest seed (id 60) knows the holder
    (id 20, farther from the target than every hostile id)."""
    hostile = [_id(i) for i in range(9, 0, -1)]
    script: dict[bytes, Any] = {}
    chain = [_id(50), *hostile]
    for here, after in zip(chain, chain[1:], strict=False):
        script[here] = [(after, "127.0.0.1", 1)]
    script[hostile[-1]] = []
    script[_id(60)] = [(_id(20), "127.0.0.1", 2)]
    script[_id(20)] = {"value": record_bundle}
    seeds = [Node(_id(50), "127.0.0.1", 3), Node(_id(60), "127.0.0.1", 4)]
    return seeds, script


@pytest_twisted.ensureDeferred
async def test_a_hostile_path_does_not_hide_the_value_from_the_other_paths() -> None:
    signer = domain_signer("b.example")
    bundle = encode_bundle([signer.sign_record("sip:bob@b.example", CONTACTS, ROUTE, 600)])

    async def lookup(paths: int) -> int:
        seeds, script = _eclipse_script(bundle)
        search = IterativeLookup(ScriptedProtocol(script), Node(_id(0)), seeds, k=2,
                                 alpha=1, values=True, stall=lambda _: 5.0, paths=paths,
                                 candidate=lambda entry: Node(*entry),
                                 deadline=time.monotonic() + 5)
        return len((await search.run()).records)

    # One path: the hostile ids are closer than the holder and fill its k closest.
    assert await run(lookup(1)) == 0
    assert await run(lookup(2)) == 1


@pytest_twisted.ensureDeferred
async def test_a_holder_names_the_next_holder_of_its_path() -> None:
    """A holder's FIND_VALUE answer carries its closest contacts with the value: the path
    asks the holder it names (known from nowhere else) before its own farther seed."""
    signer = domain_signer("b.example")
    bundle = encode_bundle([signer.sign_record("sip:bob@b.example", CONTACTS, ROUTE, 600)])
    script: dict[bytes, Any] = {
        _id(30): {"value": bundle, "nodes": [(_id(10), "127.0.0.1", 10)]},
        _id(10): {"value": bundle, "nodes": []},
        _id(40): [],
    }
    seeds = [Node(_id(30), "127.0.0.1", 30), Node(_id(40), "127.0.0.1", 40)]

    async def lookup() -> tuple[int, int]:
        search = IterativeLookup(ScriptedProtocol(script), Node(_id(0)), seeds, k=4,
                                 alpha=1, values=True, stall=lambda _: 5.0, paths=1,
                                 enough=2, candidate=lambda entry: Node(*entry),
                                 deadline=time.monotonic() + 5)
        result = await search.run()
        return result.holders, result.queries

    holders, queries = await run(lookup())
    assert (holders, queries) == (2, 2)


@pytest_twisted.ensureDeferred
async def test_a_lookup_returns_what_it_found_when_its_deadline_comes() -> None:
    signer = domain_signer("b.example")
    bundle = encode_bundle([signer.sign_record("sip:bob@b.example", CONTACTS, ROUTE, 600)])
    # Seed 1 holds the value; seeds 2 and 3 never answer.
    script = {_id(1): {"value": bundle}}
    seeds = [Node(_id(i), "127.0.0.1", i) for i in (1, 2, 3)]

    async def lookup() -> tuple[int, bool, float]:
        search = IterativeLookup(ScriptedProtocol(script), Node(_id(0)), seeds, k=3,
                                 alpha=1, values=True, stall=lambda _: 60.0, paths=3,
                                 enough=1, candidate=lambda entry: Node(*entry),
                                 deadline=time.monotonic() + 0.5)
        begun = time.monotonic()
        result = await search.run()
        return len(result.records), result.timed_out, time.monotonic() - begun

    found, timed_out, took = await run(lookup())
    assert found == 1 and timed_out and took < 2


@pytest_twisted.ensureDeferred
async def test_a_path_ends_only_on_records_the_reader_accepts() -> None:
    genuine = domain_signer("b.example")
    forger = domain_signer("b.example")
    trust = _voting()
    acceptance = RecordAcceptance(trust)
    assert not trust.check(genuine.sign_record("sip:bob@b.example", CONTACTS, ROUTE, 60))
    forged = encode_bundle([forger.sign_record("sip:bob@b.example", CONTACTS, ROUTE, 60)])
    real = encode_bundle([genuine.sign_record("sip:bob@b.example", CONTACTS, ROUTE, 60)])
    # Seed 3 serves a forgery (its certificate names the domain, but another one is
    # pinned); seed 9 lists the genuine holder (id 8).
    script = {_id(3): {"value": forged}, _id(9): [(_id(8), "127.0.0.1", 8)],
              _id(8): {"value": real}}
    seeds = [Node(_id(3), "127.0.0.1", 3), Node(_id(9), "127.0.0.1", 9)]

    async def lookup() -> set[str]:
        search = IterativeLookup(ScriptedProtocol(script), Node(_id(0)), seeds, k=4,
                                 alpha=1, values=True, stall=lambda _: 5.0, paths=1,
                                 enough=1, candidate=lambda entry: Node(*entry),
                                 accept=acceptance.acceptable,
                                 deadline=time.monotonic() + 5)
        return {r.signer for r in (await search.run()).records}

    assert await run(lookup()) == {forger.signer_id, genuine.signer_id}


# --- what storage keeps and serves ----------------------------------------------------


def test_storage_keeps_only_records_entitled_to_their_key() -> None:
    storage = RecordStorage()
    aor = "sip:bob@b.example"
    key = key_for(aor)
    now = time.time()
    bare = Signer(domain_signer("b.example").private_key, None)
    stranger = domain_signer("c.example")
    own = domain_signer("b.example")
    refused = [
        bare.sign_record(aor, CONTACTS, ROUTE, 600),
        stranger.sign_record(aor, CONTACTS, ROUTE, 600),
        own.sign_record("sip:carol@b.example", CONTACTS, ROUTE, 600),  # another key's
        own.sign_record(aor, CONTACTS, ROUTE, 600, now=now + 3600),  # issued in an hour
        own.sign_record(aor, CONTACTS, ROUTE, 10 * 86400),  # lives too long
    ]
    for record in refused:
        storage.put_records(key, [record])
    assert storage.records(key) == []
    storage.put_records(key, [own.sign_record(aor, CONTACTS, ROUTE, 600)])
    assert [r.signer for r in storage.records(key)] == [own.signer_id]


def test_a_self_certifying_aor_takes_only_its_own_key() -> None:
    from gateway.overlay.record import self_certifying_user

    own = Signer(domain_signer("overlay.example").private_key, None)
    user = self_certifying_user(own.sign_record("sip:x@overlay.example", CONTACTS, ROUTE,
                                                60).public_key_der)
    aor = f"sip:{user}@overlay.example"
    domain_cert = domain_signer("overlay.example")
    key = key_for(aor)
    storage = RecordStorage()
    # A storing node gets records sealed, as they travel.
    storage.put_records(key, decode_bundle(own.sign(aor, CONTACTS, ROUTE, 600)))
    forged = domain_cert.sign(aor, CONTACTS, ROUTE, 600)
    # It cannot tell that a certificate signs for a self-certifying AoR (it does not
    # know the AoR): the forger gets a seat behind the owner, no more.
    storage.put_records(key, decode_bundle(forged))
    assert [r.signer for r in storage.records(key)][0] == own.signer_id
    # A bare key for an AoR that is not its own is refused even sealed.
    stranger = Signer(domain_signer("overlay.example").private_key, None)
    assert storage.put_records(key, decode_bundle(stranger.sign(aor, CONTACTS, ROUTE, 600))) == 0
    # Readers open the records and refuse the certificate's.
    acceptance = RecordAcceptance(_voting())
    verdict = acceptance.judge(aor, decode_bundle(storage[key], aor))
    assert [r.signer for r in verdict.accepted] == [own.signer_id]
    assert "only be signed by its own key" in verdict.reason


def test_a_flood_of_signers_cannot_push_the_first_ones_out() -> None:
    storage = RecordStorage()
    aor = "sip:bob@b.example"
    key = key_for(aor)
    genuine = domain_signer("b.example")
    storage.put_records(key, [genuine.sign_record(aor, CONTACTS, ROUTE, 600)])
    flood = [domain_signer("b.example") for _ in range(MAX_SIGNERS + 3)]
    for signer in flood:
        storage.put_records(key, [signer.sign_record(aor, CONTACTS, ROUTE, 600)])
    kept = storage.records(key)
    assert len(kept) == MAX_SIGNERS and kept[0].signer == genuine.signer_id
    # The incumbent's newer record replaces its old one in place, first.
    storage.put_records(key, [genuine.sign_record(aor, CONTACTS, "sip:127.0.0.9;lr", 600)])
    kept = storage.records(key)
    assert kept[0].signer == genuine.signer_id and kept[0].route == "sip:127.0.0.9;lr"
    assert decode_bundle(storage[key])[0].signer == genuine.signer_id


def test_the_replay_memory_forgets_least_recently_used_first() -> None:
    signer = domain_signer("b.example")
    acceptance = RecordAcceptance(_voting(), memory=2)
    first = signer.sign_record("sip:a@b.example", CONTACTS, ROUTE, 600)
    acceptance.judge("sip:a@b.example", [first])
    for user in ("b", "c"):
        acceptance.judge(f"sip:{user}@b.example",
                         [signer.sign_record(f"sip:{user}@b.example", CONTACTS, ROUTE, 600)])
    assert acceptance.seen("sip:a@b.example", signer.signer_id) == 0
    assert acceptance.seen("sip:c@b.example", signer.signer_id) > 0
    newer = signer.sign_record("sip:c@b.example", CONTACTS, ROUTE, 600)
    older_c = acceptance.seen("sip:c@b.example", signer.signer_id)
    acceptance.judge("sip:c@b.example", [newer])
    assert acceptance.seen("sip:c@b.example", signer.signer_id) > older_c


def test_a_first_pin_goes_to_the_certificate_most_replicas_list_first() -> None:
    genuine, forger = domain_signer("b.example"), domain_signer("b.example")
    aor = "sip:bob@b.example"
    records = [genuine.sign_record(aor, CONTACTS, ROUTE, 600),
               forger.sign_record(aor, CONTACTS, ROUTE, 600)]
    g, f = genuine.signer_id, forger.signer_id
    # Honest replicas keep the first signer first; the forger's own nodes serve its own.
    majority = [(0, _id(1), [g, f]), (1, _id(2), [g, f]), (2, _id(3), [g]),
                (3, _id(4), [f])]
    pins = MemoryPins()
    acceptance = RecordAcceptance(_voting(pins))
    assert not acceptance.acceptable(records[0])  # unpinned: a lookup does not end on it
    verdict = acceptance.judge(aor, records, served=majority)
    assert [r.signer for r in verdict.accepted] == [g]
    assert "listed first by most replicas (3 of 4)" in verdict.reason
    assert pins.get("b.example") is not None and acceptance.acceptable(records[0])
    far = (1 << 159).to_bytes(20, "big")
    for split in ([(0, _id(1), [g, f]), (1, _id(2), [f, g])],  # no strict majority
                  [(0, _id(1), [g, f]), (0, _id(2), [g]), (1, _id(3), [f])],  # one path
                  # Far replicas do not vote: the two closest disagree.
                  [(0, _id(1), [g, f]), (1, _id(2), [f]), *((2, far, [g]),) * 3],
                  []):  # nothing known of the replicas
        fresh = RecordAcceptance(_voting(), replicas=2)
        verdict = fresh.judge(aor, records, served=split)
        assert verdict.accepted == [] and "do not agree" in verdict.reason
    # One claimant only: pinned on first sight, as before.
    alone = RecordAcceptance(_voting())
    assert [r.signer for r in alone.judge(aor, records[:1]).accepted] == [g]


def test_overlay_status_shows_refused_contacts_and_bad_answers(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import json

    from gateway.app.admin import main as admin_main

    status = {"state": "joined", "since": time.time(), "updated": time.time(),
              "pid": os.getpid(), "contacts": 7, "refused_contacts": 3, "bad_answers": 2}
    (tmp_path / "overlay-status.json").write_text(json.dumps(status))
    admin_main(["--data-dir", str(tmp_path), "overlay", "status"])
    out = capsys.readouterr().out
    assert "7; refused 3 (ids per address), 2 answers with bad signatures" in out


def test_every_path_starts_from_a_contact_drawn_regardless_of_the_key() -> None:
    """Ids ground next to a key fill the closest slots of a routing table; each
    disjoint path still gets one seed drawn at random from the rest of the table."""
    from gateway.overlay.node import CompleteRoutingTable

    class Pings(ScriptedProtocol):
        async def call_ping(self, node: Node) -> None:  # a full bucket pings its head
            return None

    own = Node(b"\xff" * 20)
    table = CompleteRoutingTable(Pings({}), 20, own)
    ground = [Node(_id(i), "127.0.0.1", i) for i in range(1, 13)]  # next to key 0
    spread = [Node(bytes([i]) + os.urandom(19), "127.0.0.2", i) for i in range(16, 240, 9)]
    for node in ground + spread:
        table.add_contact(node)
    known = {n.id for bucket in table.buckets for n in bucket.nodes.values()}
    nearest = [n for n in ground if n.id in known]
    assert len(nearest) >= 4  # the table took enough ground ids to fill every path's seeds
    seeds = table.seeds(Node(_id(0)), 4)
    assert [n.id for n in seeds[:len(seeds) - 4]] == [
        n.id for n in table.find_neighbors(Node(_id(0)))]
    drawn = seeds[-4:]
    assert len({n.id for n in drawn}) == 4 and not {n.id for n in drawn} & {n.id for n in ground}
    lookup = IterativeLookup(ScriptedProtocol({}), Node(_id(0)), seeds, 20, 1, values=True,
                             stall=lambda _: 1.0, paths=4)
    for path in lookup._paths:  # noqa: SLF001 - how the seeds were dealt
        assert {n.id for n in drawn} & set(path.nodes), path.index
