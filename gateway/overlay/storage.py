"""The node's local storage: signed record bundles merged per signer, with expiry from
the records themselves (kademlia's ``ForgetfulStorage`` keeps one opaque value per key
for a week and lets any node overwrite it: see OVERLAY-NOTES.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from kademlia.storage import IStorage

from gateway.overlay.record import Record, decode_bundle, encode_bundle, merge

#: Most keys one node keeps (a bound whatever the network stores here).
MAX_KEYS = 100_000


class RecordStorage(IStorage):
    """Key (20-byte digest) → records, one per (AoR, signer). A store merges the new
    bundle's valid records into what is there; values that are not signed records are
    refused (``accepts`` tells the protocol). Reading gives the merged bundle."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 tombstone_grace: float = 3600.0) -> None:
        self.clock = clock
        self.tombstone_grace = tombstone_grace
        self._data: dict[bytes, tuple[float, list[Record]]] = {}  # key -> (stored at, records)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` holds at least one record whose signature verifies."""
        return bool(decode_bundle(value))

    def put_records(self, key: bytes, records: list[Record]) -> bool:
        """Merge ``records`` into ``key``; True when something changed."""
        now = self.clock()
        current = self._data.get(key, (now, []))[1]
        merged = merge([*current, *records], now, self.tombstone_grace)
        if not merged:
            self._data.pop(key, None)
            return bool(current)
        changed = {(r.signer, r.seq) for r in merged} != {(r.signer, r.seq) for r in current}
        stamp = now if changed else self._data.get(key, (now, []))[0]
        self._data[key] = (stamp, merged)
        if len(self._data) > MAX_KEYS:
            oldest = min(self._data, key=lambda k: self._data[k][0])
            del self._data[oldest]
        return changed

    def records(self, key: bytes) -> list[Record]:
        """The live merged records of ``key`` (tombstones included)."""
        entry = self._data.get(key)
        if entry is None:
            return []
        merged = merge(entry[1], self.clock(), self.tombstone_grace)
        if not merged:
            del self._data[key]
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

    def __len__(self) -> int:
        return len(self._data)
