"""Per-source request rate limit: a token bucket per source address, bounded in memory.

Each source may send ``rate`` requests a second on average and ``burst`` at once;
beyond that the core answers 503 with Retry-After (RFC 3261 §21.5.4) without creating
any transaction state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_SOURCES = 100_000


class SourceRateLimiter:
    """Token buckets by source address."""

    def __init__(self, rate: float, burst: float,
                 exempt: Callable[[str], bool] = lambda _host: False) -> None:
        self.rate = rate
        self.burst = burst
        self.exempt = exempt
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, host: str, now: float) -> bool:
        """Take one token for ``host`` at time ``now``; False when its bucket is empty."""
        if self.rate <= 0 or self.exempt(host):
            return True
        tokens, at = self._buckets.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[host] = (tokens, now)
        if len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)  # the source idle the longest
        return allowed

    def retry_after(self, host: str, now: float) -> int:
        """Seconds after ``now`` until ``host`` has a token again (at least 1)."""
        tokens, at = self._buckets.get(host, (0.0, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        return max(1, int((1.0 - tokens) / self.rate + 0.999)) if self.rate > 0 else 1
