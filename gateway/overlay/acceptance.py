"""What a reader accepts of the records a lookup found: records for the AoR asked
about, whose signer the trust rules entitle to it, not older than one already seen from
that signer (a replay), live, with at least one live contact.

One place for these rules, used by the gateway's overlay resolver, ``p2psip-peer`` and
the adversarial benchmark, so what is measured is what the gateway does.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from gateway.overlay.record import Record, key_for
from gateway.overlay.trust import RecordTrust, domain_of, entitlement, is_self_certifying

#: (AoR, signer) pairs whose highest seq is remembered (least recently used go first).
REPLAY_MEMORY = 100_000


@dataclass
class Verdict:
    """The records accepted from one lookup, and why the others were not."""

    accepted: list[Record] = field(default_factory=list)
    #: (record, reason) for every record refused.
    rejected: list[tuple[Record, str]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The last refusal's reason ("" when none was refused)."""
        return self.rejected[-1][1] if self.rejected else ""


class RecordAcceptance:
    """The trust rules plus a bounded replay memory: the highest ``seq`` accepted per
    (AoR, signer), forgotten least recently used first."""

    def __init__(self, trust: RecordTrust, own_signer: str = "",
                 memory: int = REPLAY_MEMORY, replicas: int = 20) -> None:
        """``own_signer``: records this reader signed itself are not returned (it does
        not route to itself through the overlay); ``replicas``: how many of the
        replicas closest to a key vote on a first pin (the overlay's k)."""
        self.trust = trust
        self.own_signer = own_signer
        self.memory = memory
        self.replicas = replicas
        self._seen_seq: OrderedDict[tuple[str, str], int] = OrderedDict()

    def seen(self, aor: str, signer: str) -> int:
        """The highest seq accepted from ``signer`` for ``aor`` (0: none)."""
        return self._seen_seq.get((aor, signer), 0)

    def acceptable(self, record: Record) -> bool:
        """Whether :meth:`judge` would accept ``record`` as far as one record tells
        (nothing is pinned or remembered): what a lookup may end on. A record whose
        domain is not pinned yet ends nothing: the first pin weighs every replica."""
        if self._unpinned(record):
            return False
        return (self.trust.check(record, commit=False) is None
                and record.seq >= self.seen(record.aor, record.signer))

    def _unpinned(self, record: Record) -> bool:
        """A domain AoR whose domain trust on first use may pin by the replicas'
        agreement (``first_pin = replicas``) and has not pinned yet, and whose DNS
        publishes no fingerprints."""
        store = self.trust.pin_store
        if (self.trust.mode != "tofu" or self.trust.first_pin != "replicas" or store is None
                or is_self_certifying(record.aor)
                or record.signer == self.own_signer):
            return False
        domain = domain_of(record.aor)
        return store.get(domain) is None and not self.trust.published_for(domain)

    def _first_pin(self, aor: str, records: list[Record],
                   served: list[tuple[int, bytes, list[str]]]) -> dict[str, str]:
        """When the domain is not pinned and several certificates claim it: the one a
        strict majority of the ``replicas`` replicas closest to the key list first
        (storing nodes keep the signers that came first at the front), on at least two
        disjoint paths, wins; every other claimant is refused (all of them without such
        a majority). Returns the refused signers with the reason."""
        now = time.time()
        claimants = {r.signer for r in records
                     if r.aor == aor and self._unpinned(r) and entitlement(r, now) is None}
        if len(claimants) < 2:
            return {}
        # Only the replicas closest to the key vote: the publisher stored on those, and
        # a forger cannot add voters by storing its record farther out.
        target = int.from_bytes(key_for(aor), "big")
        voters = sorted((entry for entry in served
                         if any(s in claimants for s in entry[2])),
                        key=lambda entry: int.from_bytes(entry[1], "big") ^ target)
        firsts = [(path, next(s for s in signers if s in claimants))
                  for path, _, signers in voters[:self.replicas]]
        votes = Counter(signer for _, signer in firsts)
        winner, count = votes.most_common(1)[0] if votes else ("", 0)
        paths = {path for path, signer in firsts if signer == winner}
        domain = domain_of(aor)
        if count * 2 > len(firsts) and len(paths) >= 2:
            why = (f"another certificate for {domain} is listed first by most replicas "
                   f"({count} of {len(firsts)})")
            return {s: why for s in claimants if s != winner}
        why = (f"{len(claimants)} certificates claim {domain}, none pinned, and the "
               f"replicas do not agree on one; pin it (p2psip-admin overlay pins pin) or "
               f"publish its fingerprint in DNS (_p2psip-cert.{domain})")
        return dict.fromkeys(claimants, why)

    def judge(self, aor: str, records: list[Record], now: float | None = None,
              served: list[tuple[int, bytes, list[str]]] | None = None) -> Verdict:
        """Sort ``records`` (a lookup's merged result) into accepted and refused;
        ``served``: what each replica served, on which path
        (:attr:`gateway.overlay.lookup.LookupResult.served`)."""
        now = time.time() if now is None else now
        verdict = Verdict()
        contested = self._first_pin(aor, records, served or [])
        for record in records:
            if record.aor != aor:
                continue
            reason = contested.get(record.signer) or self.trust.check(record)
            key = (aor, record.signer)
            if reason is None and record.seq < self._seen_seq.get(key, 0):
                reason = "older than a record already seen (replay)"
            if reason is not None:
                verdict.rejected.append((record, reason))
                continue
            self._remember(key, record.seq)
            if (record.live(now) and record.signer != self.own_signer
                    and any(c.expires > now for c in record.contacts)):
                verdict.accepted.append(record)
        return verdict

    def _remember(self, key: tuple[str, str], seq: int) -> None:
        self._seen_seq[key] = max(seq, self._seen_seq.get(key, 0))
        self._seen_seq.move_to_end(key)
        while len(self._seen_seq) > self.memory:
            self._seen_seq.popitem(last=False)
