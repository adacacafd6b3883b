"""Next hops that stopped answering: skipped for a while instead of tried again.

A gateway that died leaves its overlay records behind until they expire (up to
``overlay.record_lifetime``). Each call to one of its users would cost a full Timer B
(32 s) when its host is silent. The proxy reports every forward that timed out or hit a
transport error and every answer; a next hop that failed is *quarantined* for
``quarantine`` seconds, and the overlay resolver skips records routed to it (the
caller hears ``480`` with a Warning at once). Any answer from the hop ends its
quarantine; so does the quarantine running out (the next request tries it again).
"""

from __future__ import annotations

DEFAULT_QUARANTINE = 60.0
_MAX_ENTRIES = 4096


class NextHopHealth:
    """Which next hops (host, port) failed recently (sans-IO: callers pass the time)."""

    def __init__(self, quarantine: float = DEFAULT_QUARANTINE) -> None:
        self.quarantine = quarantine
        self._until: dict[tuple[str, int], float] = {}

    def failed(self, host: str, port: int, now: float) -> None:
        """A request to ``host:port`` timed out or could not be sent."""
        if len(self._until) >= _MAX_ENTRIES:
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= _MAX_ENTRIES:
                self._until.clear()
        self._until[(host, port)] = now + self.quarantine

    def answered(self, host: str, port: int) -> None:
        """``host:port`` answered a request."""
        if self._until:
            self._until.pop((host, port), None)

    def dead(self, host: str, port: int, now: float) -> bool:
        """Whether ``host:port`` failed less than ``quarantine`` seconds ago."""
        until = self._until.get((host, port))
        if until is None:
            return False
        if until <= now:
            del self._until[(host, port)]
            return False
        return True
