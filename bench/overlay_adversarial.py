"""Adversarial overlay benchmark: lookups through an overlay with hostile nodes.

One process hosts N overlay nodes, each on its own loopback address (127.1.x.y), each
joined through an earlier one; a fraction f of them (chosen at random, never the
publishing gateway) turns hostile once the overlay is built. The gateway (node 0) then
publishes ``--keys`` AoRs of ``bench.example`` twice, v1 and then v2, signed with its
certificate as a gateway does; the attackers do their work; then every AoR is looked up
by a random honest node and judged by the gateway's own acceptance rules
(:class:`gateway.overlay.acceptance.RecordAcceptance`, trust on first use with the
reader's own pins). A lookup is **correct** when the newest genuine record (v2) is
accepted and no forged one; **forged** / **replayed** count lookups that accepted a
record of another signer / an older genuine record.

Hostile behaviours (``--behaviours``):

- ``blackhole``: acknowledges STOREs, keeps nothing, answers FIND_VALUE with nodes;
- ``silent``: never answers anything;
- ``stale``: keeps the first version of each record it stores and serves it forever;
- ``forge``: serves a record for the AoR signed by its own certificate naming the
  domain (newer seq), and stores that forgery on the nodes closest to the AoR;
- ``eclipse``: answers every lookup with contacts close to the key — invented ids on
  hostile addresses, and the hostile nodes closest to it — and never a value; each
  hostile node makes ``--grind`` keys (each with its puzzle) and keeps the one whose id
  is closest to one of the AoRs' keys, and PINGs honest nodes with unsolved
  credentials and other hostile nodes' credentials;
- ``flood``: stores and serves many future-dated records for the AoR from throw-away
  certificates naming the domain;
- ``all``: every hostile node eclipses, forges, floods and replays, colluding.

Readers use ``overlay.trust = tofu`` (the default), each with its own pins, kept across
its lookups. ``--first-pin dns`` (the gateway's default): the domain publishes its
gateway's certificate fingerprint in DNS and readers know it (as
``overlay.dns_fingerprints`` makes a gateway read it), which is how a reader on that
rule first trusts a domain. ``--first-pin replicas``: the domain publishes nothing and
readers pin what a strict majority of the closest replicas list first. Every node's id needs
``--difficulty`` puzzle bits (8 by default, to build 1 000 nodes in seconds; the
gateway's default is 20).

Usage::

    python bench/overlay_adversarial.py [--sizes 300,1000] [--fractions 0,0.1,0.2,0.3]
        [--behaviours blackhole,silent,stale,forge,eclipse,flood,all] [--keys 200]
        [--difficulty 8] [--grind 64] [--paths 4] [--first-pin dns|replicas]
        [--json out.json]

Everything runs on loopback addresses in this process; it ends by closing every socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kademlia.node import Node  # noqa: E402

from gateway.overlay.acceptance import RecordAcceptance  # noqa: E402
from gateway.overlay.identity import NodeIdentity  # noqa: E402
from gateway.overlay.lookup import PATHS  # noqa: E402
from gateway.overlay.node import OverlayNode, OverlayProtocol, key_for  # noqa: E402
from gateway.overlay.record import Contact, Record, Signer, encode_bundle  # noqa: E402
from gateway.overlay.trust import FIRST_PIN_RULES, MemoryPins, RecordTrust  # noqa: E402
from gateway.sip.tls import self_signed  # noqa: E402

logging.getLogger("kademlia").setLevel(logging.CRITICAL)
logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
logging.getLogger("asyncio").setLevel(logging.CRITICAL)
logging.getLogger("gateway").setLevel(logging.CRITICAL)

DOMAIN = "bench.example"
BEHAVIOURS = ("blackhole", "silent", "stale", "forge", "eclipse", "flood", "all")
FLOOD_SIGNERS = 16
LOOKUP_DEADLINE = 4.0  # the gateway's overlay lookup timeout


def domain_signer() -> Signer:
    """A key and a self-signed certificate naming the domain (as a gateway makes)."""
    certificate, key = self_signed([DOMAIN], [])
    return Signer(key, certificate)


def address(index: int) -> str:
    """Node ``index``'s own loopback address."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


@dataclass
class Attack:
    """What the hostile nodes share (they collude)."""

    behaviour: str
    hostile: list[OverlayNode] = field(default_factory=list)
    targets: dict[bytes, str] = field(default_factory=dict)  # DHT key -> AoR
    forgers: dict[str, Record] = field(default_factory=dict)  # AoR -> forged record
    floods: dict[str, list[Record]] = field(default_factory=dict)
    active: bool = False

    def does(self, what: str) -> bool:
        """Whether hostile nodes behave as ``what`` (``all`` does everything but
        ``silent`` and ``blackhole``)."""
        if not self.active:
            return False
        if self.behaviour == "all":
            return what in ("eclipse", "forge", "flood", "stale")
        return self.behaviour == what

    def closest_hostile(self, key: bytes, k: int) -> list[tuple[Any, ...]]:
        """Contacts for ``key``: invented ids next to it on hostile addresses (with a
        hostile node's credential), then the real hostile nodes closest to it."""
        target = Node(key)
        real = sorted((n for n in self.hostile if n.protocol is not None),
                      key=lambda n: n.node.distance_to(target))[:k]
        invented = []
        for index, node in enumerate(real[:k // 2]):
            fake = key[:19] + bytes([(key[19] + index + 1) % 256])
            invented.append((fake, node.node.ip, node.node.port, node.identity.credential))
        return invented + [(n.node.id, n.node.ip, n.node.port, n.identity.credential)
                           for n in real]


class HostileProtocol(OverlayProtocol):
    """An overlay protocol that misbehaves once its attack is active."""

    attack: Attack

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """``silent`` drops everything."""
        if self.attack.does("silent"):
            return
        super().datagram_received(data, addr)

    def rpc_store(self, sender: Any, nodeid: Any, key: bytes, value: Any) -> bool:
        """Acknowledge; keep nothing (or, stale, only the first version of each)."""
        if not self.attack.active:
            return super().rpc_store(sender, nodeid, key, value)
        if self.attack.does("stale"):
            from gateway.overlay.record import decode_bundle
            held = {r.signer for r in self.storage.records(key)}
            fresh = [r for r in decode_bundle(value) if r.signer not in held]
            if fresh:
                self.storage.put_records(key, fresh)
        return True

    def rpc_find_node(self, sender: Any, nodeid: Any, key: bytes) -> Any:
        """``eclipse``: hostile contacts only."""
        if self.attack.does("eclipse"):
            return self.attack.closest_hostile(key, self.router.ksize)
        return super().rpc_find_node(sender, nodeid, key)

    def rpc_find_value(self, sender: Any, nodeid: Any, key: bytes) -> Any:
        """Serve forgeries, floods and stale copies; eclipse never serves a value."""
        if not self.attack.active:
            return super().rpc_find_value(sender, nodeid, key)
        served: list[Record] = []
        aor = self.attack.targets.get(key)
        if aor is not None:
            if self.attack.does("forge") and aor in self.attack.forgers:
                served.append(self.attack.forgers[aor])
            if self.attack.does("flood"):
                served.extend(self.attack.floods.get(aor, []))
            if self.attack.does("stale"):
                served.extend(self.storage.records(key))
        if served:
            return {"value": encode_bundle(served)}
        if self.attack.does("eclipse"):
            return self.attack.closest_hostile(key, self.router.ksize)
        return self.rpc_find_node(sender, nodeid, key)


class HostileNode(OverlayNode):
    """A node whose protocol is :class:`HostileProtocol`."""

    def __init__(self, attack: Attack, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attack = attack

    protocol_class = HostileProtocol

    def _create_protocol(self) -> OverlayProtocol:
        protocol = super()._create_protocol()
        assert isinstance(protocol, HostileProtocol)
        protocol.attack = self.attack
        return protocol


@dataclass
class Cell:
    """One (N, behaviour, f) run."""

    size: int
    behaviour: str
    fraction: float
    lookups: int = 0
    correct: int = 0
    forged: int = 0
    replayed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Rates and percentiles."""
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")
        return {"size": self.size, "behaviour": self.behaviour, "fraction": self.fraction,
                "lookups": self.lookups, "correct_pct": 100 * self.correct / max(1, self.lookups),
                "forged": self.forged, "replayed": self.replayed,
                "p50_ms": round(pct(50), 1), "p99_ms": round(pct(99), 1),
                "queries_mean": round(sum(self.queries) / max(1, len(self.queries)), 1)}


def ground_identity(target: bytes, tries: int, difficulty: int) -> NodeIdentity:
    """The identity closest to ``target`` among ``tries`` made: an attacker grinding
    keys for an id next to a key (each costs the puzzle)."""
    goal = Node(target)
    made = [NodeIdentity.generate(difficulty) for _ in range(tries)]
    return min(made, key=lambda i: Node(i.node_id).distance_to(goal))


async def build(size: int, fraction: float, attack: Attack, aors: list[str],
                options: argparse.Namespace) -> list[OverlayNode]:
    """Start ``size`` nodes (node 0 is the gateway), each joined through an earlier one."""
    hostile = set(random.sample(range(1, size), int(round(size * fraction))))
    keys = [key_for(a) for a in aors]
    nodes: list[OverlayNode] = []
    common = {"ksize": 20, "alpha": 3, "difficulty": options.difficulty,
              "paths": options.paths}
    for index in range(size):
        if index in hostile:
            identity = (ground_identity(keys[len(attack.hostile) % len(keys)], options.grind,
                                        options.difficulty)
                        if attack.behaviour in ("eclipse", "all") else None)
            node: OverlayNode = HostileNode(attack, identity=identity, **common)
            attack.hostile.append(node)
        else:
            node = OverlayNode(**common)
        await node.listen(0, address(index))
        if index:
            seed = random.choice(nodes[:index])
            assert seed.address is not None
            await node.join([seed.address])
        nodes.append(node)
    return nodes


async def inject(attack: Attack, honest: list[OverlayNode], per_node: int = 4) -> None:
    """Eclipse attackers announce other ids to honest nodes (a PING carries the
    sender's credential): credentials whose puzzle is not solved, and other hostile
    nodes' credentials sent from this address. Nodes that took ids on trust would put
    them in their routing tables."""
    pings = []
    for node in attack.hostile:
        protocol = node.protocol
        assert protocol is not None
        for peer in random.sample(honest, min(50, len(honest))):
            assert peer.address is not None
            for _ in range(per_node):
                other = random.choice(attack.hostile).identity.credential
                unsolved = os.urandom(40)
                for credential in (other, unsolved):
                    pings.append(protocol.request(peer.address, "ping", credential))
    for start in range(0, len(pings), 200):
        await asyncio.gather(*pings[start:start + 200], return_exceptions=True)


async def attack_records(attack: Attack, aors: list[str]) -> None:
    """Forgers and flooders make their records and store them near each AoR."""
    now = time.time()
    if attack.behaviour in ("forge", "all"):
        forgers = [domain_signer() for _ in range(min(8, len(attack.hostile)))]
        for aor in aors:
            signer = random.choice(forgers)
            signer._last_seq = int(now * 1000) + 10_000_000  # newer than the genuine one
            attack.forgers[aor] = signer.sign_record(
                aor, [Contact("sip:victim@127.0.0.66", 1.0, now + 7200)],
                "sip:127.0.0.66:5060;lr", 7200, now)
    if attack.behaviour in ("flood", "all"):
        throwaway = [domain_signer() for _ in range(FLOOD_SIGNERS)]
        for aor in aors:
            attack.floods[aor] = [s.sign_record(
                aor, [Contact("sip:flood@127.0.0.67", 1.0, now + 86400 * 2)],
                "sip:127.0.0.67:5060;lr", 86400, now + 86400) for s in throwaway]
    if not attack.hostile:
        return
    stores = []
    for aor in aors:
        pushed = ([attack.forgers[aor]] if aor in attack.forgers else []) + \
            attack.floods.get(aor, [])
        node = random.choice(attack.hostile)
        for start in range(0, len(pushed), 4):
            stores.append(node.publish(aor, pushed[start:start + 4]))
    for start in range(0, len(stores), 50):
        await asyncio.gather(*stores[start:start + 50], return_exceptions=True)


async def run_cell(size: int, behaviour: str, fraction: float, keys: int,
                   concurrency: int, options: argparse.Namespace) -> Cell:
    """Build, attack, publish v1 and v2, look every AoR up, tear down."""
    random.seed(f"{size}-{behaviour}-{fraction}")
    aors = [f"sip:user{i}@{DOMAIN}" for i in range(keys)]
    attack = Attack(behaviour, targets={key_for(a): a for a in aors})
    nodes = await build(size, fraction, attack, aors, options)
    cell = Cell(size, behaviour + (" +replicas" if options.first_pin == "replicas" else ""),
                fraction)
    try:
        gateway = nodes[0]
        signer = domain_signer()
        attack.active = True
        honest = [n for n in nodes[1:] if n not in attack.hostile]
        if behaviour in ("eclipse", "all"):
            await inject(attack, [nodes[0], *honest])
        latest: dict[str, int] = {}
        for version in (1, 2):
            now = time.time()
            records = [signer.sign_record(
                aor, [Contact(f"sip:{aor[4:].split('@')[0]}@127.0.0.{version}", 1.0,
                              now + 3600)], "sip:127.0.0.10:5060;lr", 3600, now)
                for aor in aors]
            for start in range(0, len(records), 50):
                await asyncio.gather(*(gateway.publish(r.aor, [r])
                                       for r in records[start:start + 50]))
            latest = {r.aor: r.seq for r in records}
        await attack_records(attack, aors)
        # --first-pin dns: bench.example publishes its gateway's fingerprint
        # (_p2psip-cert.bench.example); the answer is handed to the readers as their DNS
        # client's cache would (the DNS path itself is tested against Knot).
        published = frozenset({signer.signer_id})
        by_dns = options.first_pin == "dns"

        def fingerprints(domain: str) -> frozenset[str]:
            return published if by_dns and domain == DOMAIN else frozenset()

        readers = {id(n): RecordAcceptance(RecordTrust("tofu", pin_store=MemoryPins(),
                                                       published=fingerprints,
                                                       first_pin=options.first_pin))
                   for n in honest}

        async def one(aor: str) -> None:
            reader = random.choice(honest)
            started = time.perf_counter()
            try:
                acceptance = readers[id(reader)]
                records, detail = await asyncio.wait_for(
                    reader.lookup_detail(aor, acceptance.acceptable, LOOKUP_DEADLINE),
                    LOOKUP_DEADLINE + 1)
            except (TimeoutError, Exception):
                records, detail = [], None
            cell.latencies_ms.append(1000 * (time.perf_counter() - started))
            verdict = readers[id(reader)].judge(
                aor, records, served=detail.served if detail is not None else [])
            cell.lookups += 1
            if detail is not None:
                cell.queries.append(detail.queries)
            accepted = verdict.accepted
            if any(r.signer != signer.signer_id for r in accepted):
                cell.forged += 1
            elif any(r.seq == latest[aor] for r in accepted):
                cell.correct += 1
            elif accepted:
                cell.replayed += 1

        for start in range(0, len(aors), concurrency):
            await asyncio.gather(*(one(a) for a in aors[start:start + concurrency]))
        return cell
    finally:
        for node in nodes:
            node.stop()
        await asyncio.sleep(0.2)


def _row(s: dict[str, Any]) -> str:
    return (f"| {s['size']} | {s['behaviour']} | {int(s['fraction'] * 100)} % | "
            f"{s['correct_pct']:.1f} % | {s['forged']} | {s['replayed']} | "
            f"{s['p50_ms']} / {s['p99_ms']} | {s['queries_mean']} |")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (size, behaviour, fraction) in turn; f = 0 once per size."""
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for fraction in [float(f) for f in args.fractions.split(",")]:
            for behaviour in (["none"] if fraction == 0 else args.behaviours.split(",")):
                cell = await run_cell(size, behaviour, fraction, args.keys, args.concurrency,
                                      args)
                results.append(cell.summary())
                print(_row(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the matrix and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300")
    parser.add_argument("--fractions", default="0,0.1,0.2,0.3")
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS))
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--difficulty", type=int, default=8,
                        help="puzzle bits of every node id (the default 20 costs 0.7 s a node)")
    parser.add_argument("--grind", type=int, default=64,
                        help="keys each eclipse attacker makes to pick an id near a key")
    parser.add_argument("--paths", type=int, default=PATHS)
    parser.add_argument("--first-pin", choices=FIRST_PIN_RULES, default="dns",
                        help="dns: the domain publishes its gateway's certificate "
                             "fingerprint in DNS and readers know it (the gateway's "
                             "default rule); replicas: it publishes none and readers pin "
                             "by the replicas' agreement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print("| N | hostile | f | correct | forged accepted | replays accepted | "
          "p50 / p99 (ms) | queries |")
    print("|---|---|---|---|---|---|---|---|")
    started = time.time()
    results = asyncio.run(main_async(args))
    print(f"({time.time() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
