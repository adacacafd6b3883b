"""In-memory state that protects digest authentication: nonce-count replay detection
and brute-force lock-outs. Both are bounded, whatever the network sends."""

from __future__ import annotations

from collections import OrderedDict

#: Nonce counts below the highest seen that may still arrive (out of order, as with
#: concurrent requests on one nonce), like Kamailio's ``nc`` window.
NC_WINDOW = 32


class NonceCounts:
    """Which ``nc`` values each nonce has been used with (RFC 7616 §3.4.5 replay
    protection). Entries live as long as their nonce; when more than ``capacity``
    nonces are tracked the oldest are dropped, and a nonce issued before the newest
    dropped one no longer counts as fresh (so dropping never re-opens a replay)."""

    def __init__(self, lifetime: float, capacity: int = 200_000) -> None:
        self.lifetime = lifetime
        self.capacity = capacity
        # nonce -> (issued, highest nc, bitmap of the NC_WINDOW counts below it)
        self._seen: OrderedDict[str, tuple[float, int, int]] = OrderedDict()
        self._forgotten_until = 0.0  # nonces issued up to here may have been dropped

    def __len__(self) -> int:
        return len(self._seen)

    def forgotten(self, issued: float) -> bool:
        """Whether a nonce issued at ``issued`` may have been dropped (treat as stale)."""
        return issued <= self._forgotten_until

    def use(self, nonce: str, issued: float, nc: int) -> bool:
        """Record a use of ``nonce`` with count ``nc``; False when that count was used
        before (a replay) or lies below the window."""
        entry = self._seen.get(nonce)
        if entry is None:
            self._seen[nonce] = (issued, nc, 0)
            self._trim(issued)
            return True
        _, highest, window = entry
        if nc > highest:
            shift = nc - highest
            window = ((window << shift) | (1 << (shift - 1))) & ((1 << NC_WINDOW) - 1) \
                if shift <= NC_WINDOW else 0
            self._seen[nonce] = (issued, nc, window)
            return True
        back = highest - nc
        if back == 0 or back > NC_WINDOW or window & (1 << (back - 1)):
            return False
        self._seen[nonce] = (issued, highest, window | (1 << (back - 1)))
        return True

    def _trim(self, now_issued: float) -> None:
        expired_before = now_issued - self.lifetime - 5
        while self._seen:
            oldest_nonce, (issued, _, _) = next(iter(self._seen.items()))
            if issued >= expired_before and len(self._seen) <= self.capacity:
                break
            del self._seen[oldest_nonce]
            if issued >= expired_before:
                self._forgotten_until = max(self._forgotten_until, issued)


class FailureLimiter:
    """Failed attempts per (source address, username); ``max_failures`` of them within
    ``lockout`` seconds of each other lock that pair out for ``lockout`` seconds."""

    def __init__(self, max_failures: int, lockout: float, capacity: int = 100_000) -> None:
        self.max_failures = max_failures
        self.lockout = lockout
        self.capacity = capacity
        # key -> (failures, time of the last failure, locked until)
        self._entries: OrderedDict[tuple[str, str], tuple[int, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def locked(self, source: str, username: str, now: float) -> bool:
        """Whether the pair is locked out now."""
        entry = self._entries.get((source, username))
        return entry is not None and entry[2] > now

    def failed(self, source: str, username: str, now: float) -> bool:
        """Count one failure; True when it locks the pair out."""
        key = (source, username)
        count, last, _ = self._entries.pop(key, (0, 0.0, 0.0))
        if now - last > self.lockout:
            count = 0  # the earlier failures are too old to count
        count += 1
        until = now + self.lockout if count >= self.max_failures else 0.0
        self._entries[key] = (0 if until else count, now, until)
        self._trim(now)
        return bool(until)

    def succeeded(self, source: str, username: str) -> None:
        """A correct login clears the pair's failures."""
        self._entries.pop((source, username), None)

    def _trim(self, now: float) -> None:
        # The pair that failed longest ago goes first (entries move to the end on
        # every failure).
        while len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]
