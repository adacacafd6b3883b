"""The node's local storage: signed record bundles merged per signer, with expiry from
the records themselves (kademlia's ``ForgetfulStorage`` keeps one opaque value per key
for a week and lets any node overwrite it: see OVERLAY-NOTES.md).

Only records that are entitled to travel are kept (and so served, merged and repaired
onto other nodes): each must belong under the key it is stored at, pass
:func:`gateway.overlay.trust.entitlement` (signed by the AoR's own key or by a
certificate naming its domain; not issued in the future; not living too long) and be
at most :data:`MAX_RECORD_BYTES`. At most :data:`MAX_SIGNERS` signers hold a key: the
ones there first keep their places (a flood of new signers waits for one to expire),
and bundles are served in that order, so a flood cannot push a publisher out."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from kademlia.storage import IStorage

from gateway.overlay.record import Record, canonical, decode_bundle, encode_bundle, merge
from gateway.overlay.trust import entitlement

#: Most keys one node keeps (a bound whatever the network stores here).
MAX_KEYS = 100_000
#: Most signers one key holds (a gateway, the user's own peer, a spare).
MAX_SIGNERS = 4
#: Largest record kept (canonical JSON; a record with a certificate is ~1.3 KiB).
MAX_RECORD_BYTES = 3000


def travels(key: bytes, record: Record, now: float) -> bool:
    """Whether ``record`` may be stored and served under ``key``."""
    return (record.key == key and len(canonical(record.raw)) <= MAX_RECORD_BYTES
            and entitlement(record, now) is None)


class RecordStorage(IStorage):
    """Key (20-byte digest) → sealed records, one per (AoR, signer). A store merges the new
    bundle's valid records into what is there; values that are not signed records are
    refused (``accepts`` tells the protocol). Reading gives the merged bundle."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 tombstone_grace: float = 60.0) -> None:
        self.clock = clock
        #: Least time a tombstone is kept; longer while a record it replaced could
        #: still be alive elsewhere (until that record's own expiry).
        self.tombstone_grace = tombstone_grace
        # key -> (stored at, records); oldest change first, so eviction is cheap.
        self._data: OrderedDict[bytes, tuple[float, list[Record]]] = OrderedDict()
        self._tombstone_until: dict[bytes, dict[str, float]] = {}  # key -> signer -> until

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` holds at least one record whose signature verifies."""
        return bool(decode_bundle(value))

    def put_records(self, key: bytes, records: list[Record]) -> int:
        """Merge ``records`` into ``key``; returns how many of them were entitled to
        travel (the others are dropped unseen)."""
        now = self.clock()
        current = self._data.get(key, (now, []))[1]
        records = [r for r in records if travels(key, r, now)]
        for record in records:
            if record.is_tombstone:
                replaced = [r.expires for r in current
                            if r.signer == record.signer and r.seq < record.seq]
                until = max([record.issued + self.tombstone_grace, *replaced])
                slots = self._tombstone_until.setdefault(key, {})
                slots[record.signer] = max(until, slots.get(record.signer, 0.0))
        merged = self._seat(current, self._live(
            key, merge([*current, *records], now, float("inf")), now))
        if not merged:
            self._data.pop(key, None)
            return len(records)
        changed = {(r.signer, r.seq) for r in merged} != {(r.signer, r.seq) for r in current}
        stamp = now if changed else self._data.get(key, (now, []))[0]
        self._data[key] = (stamp, merged)
        self._data.move_to_end(key)
        while len(self._data) > MAX_KEYS:
            oldest, _ = self._data.popitem(last=False)
            self._forget_tombstones(oldest)
        self._cull(2)
        return len(records)

    @staticmethod
    def _seat(current: list[Record], merged: list[Record]) -> list[Record]:
        """``merged`` in the order the signers came (those already here first), cut to
        :data:`MAX_SIGNERS`."""
        order = {r.signer: i for i, r in enumerate(current)}
        merged.sort(key=lambda r: order.get(r.signer, len(order)))
        return merged[:MAX_SIGNERS]

    def _cull(self, count: int) -> None:
        """Look at the ``count`` entries at the front: drop them when nothing in them is
        live any more, else send them to the back. Amortised over the stores, every
        entry is looked at again and expired ones do not pile up between lookups."""
        for _ in range(min(count, len(self._data))):
            key = next(iter(self._data))
            if self.records(key):  # deletes the entry when nothing is left
                self._data.move_to_end(key)

    def _live(self, key: bytes, records: list[Record], now: float) -> list[Record]:
        kept = []
        for record in records:
            if record.is_tombstone:
                slots = self._tombstone_until.get(key, {})
                until = slots.get(record.signer, record.issued + self.tombstone_grace)
                if until <= now:
                    slots.pop(record.signer, None)
                    continue
            kept.append(record)
        return kept

    def _forget_tombstones(self, key: bytes) -> None:
        self._tombstone_until.pop(key, None)

    def records(self, key: bytes) -> list[Record]:
        """The live merged records of ``key`` (tombstones included)."""
        entry = self._data.get(key)
        if entry is None:
            return []
        now = self.clock()
        merged = self._seat(entry[1], self._live(key, merge(entry[1], now, float("inf")), now))
        if not merged:
            del self._data[key]
            self._forget_tombstones(key)
        return merged

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.put_records(key, decode_bundle(value))

    def __getitem__(self, key: bytes) -> bytes:
        records = self.records(key)
        if not records:
            raise KeyError(key)
        return encode_bundle(records)

    def get(self, key: bytes, default: Any = None) -> Any:
        """The merged bundle of ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        """Keys last changed more than ``seconds_old`` ago, with their bundles (what
        kademlia's hourly refresh re-publishes; expired records are gone by then)."""
        limit = self.clock() - seconds_old
        return [(key, encode_bundle(records)) for key, (stamp, _) in list(self._data.items())
                if stamp <= limit and (records := self.records(key))]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self._data):
            records = self.records(key)
            if records:
                yield key, encode_bundle(records)

    def held_keys(self) -> list[bytes]:
        """The keys held (some may turn out expired when read)."""
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)
