"""Round-trip time estimates for overlay contacts, as TCP keeps them (RFC 6298).

Each contact that answered has a smoothed RTT and its variation; the retransmission
timeout of RFC 6298 (SRTT + 4·RTTVAR) tells how long a silence from it is normal. A
contact never measured gets the estimate of all contacts together, so a node on a slow
path (a satellite link, another continent) waits long enough for everybody, and a node
on a LAN gives up on the dead quickly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(slots=True)
class Estimate:
    """Smoothed RTT and RTT variation (seconds) of RFC 6298 §2."""

    srtt: float
    rttvar: float

    def update(self, sample: float) -> None:
        """Fold in one measurement (RFC 6298 §2.3, alpha 1/8, beta 1/4)."""
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample

    @property
    def rto(self) -> float:
        """SRTT + 4·RTTVAR."""
        return self.srtt + 4 * self.rttvar


class RttTable:
    """RTT estimates per contact address (the most recent ``capacity`` ones) and for all
    contacts together."""

    def __init__(self, initial: float, *, floor: float = 0.1, ceiling: float = 60.0,
                 capacity: int = 4096) -> None:
        """``initial``: the timeout before anything was measured; every timeout is kept
        within [``floor``, ``ceiling``]."""
        self.initial = initial
        self.floor = floor
        self.ceiling = ceiling
        self.capacity = capacity
        self._contacts: OrderedDict[Address, Estimate] = OrderedDict()
        self._all: Estimate | None = None

    def __len__(self) -> int:
        return len(self._contacts)

    def observe(self, address: Address, seconds: float) -> None:
        """``address`` answered after ``seconds``."""
        if seconds < 0:
            return
        estimate = self._contacts.get(address)
        if estimate is None:
            self._contacts[address] = Estimate(seconds, seconds / 2)
            if len(self._contacts) > self.capacity:
                self._contacts.popitem(last=False)
        else:
            estimate.update(seconds)
            self._contacts.move_to_end(address)
        if self._all is None:
            self._all = Estimate(seconds, seconds / 2)
        else:
            self._all.update(seconds)

    def timeout(self, address: Address) -> float:
        """How long a silence from ``address`` is normal: its RTO, else that of all
        contacts, else ``initial``."""
        estimate = self._contacts.get(address) or self._all
        value = self.initial if estimate is None else estimate.rto
        return min(self.ceiling, max(self.floor, value))

    def measured(self, address: Address) -> float | None:
        """The smoothed RTT of ``address``, None when never measured."""
        estimate = self._contacts.get(address)
        return None if estimate is None else estimate.srtt
