"""Is this node behind a NAT? Other nodes tell it where its datagrams come from (the
``kademlia`` package's STUN RPC); an address that is not this machine's means a NAT on
the way. Pure decisions here; :class:`~gateway.overlay.service.OverlayService` asks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.overlay.node import OverlayProtocol


@dataclass(frozen=True)
class NatFinding:
    """What the other nodes see of this one.

    ``kind``: ``direct`` (they see one of this machine's addresses), ``forwarded``
    (they see the configured external address: a NAT with port forwarding), ``nat``
    (they see another address: a NAT that nothing was forwarded through, or a wrong
    external address), ``unknown`` (nobody answered)."""

    kind: str
    observed: tuple[str, int] | None = None
    detail: str = ""

    def as_status(self) -> dict[str, object]:
        """For the overlay status."""
        observed = f"{self.observed[0]}:{self.observed[1]}" if self.observed else ""
        return {"kind": self.kind, "observed": observed, "detail": self.detail}


async def observe(protocol: OverlayProtocol, peers: Sequence[tuple[str, int]],
                  ) -> dict[tuple[str, int], tuple[str, int]]:
    """Each of ``peers`` that answered: the address it sees this node at (all asked at
    once; the most common answer decides, so a single liar does not)."""
    answers = await asyncio.gather(*(protocol.observed_address(p) for p in peers),
                                   return_exceptions=True)
    return {peer: answer for peer, answer in zip(peers, answers, strict=True)
            if isinstance(answer, tuple)}


def classify(observed: Sequence[tuple[str, int]], is_own: Callable[[str], bool],
             external_host: str | None) -> NatFinding:
    """The finding from what the nodes answered (the most common address wins)."""
    if not observed:
        return NatFinding("unknown", None, "no overlay node answered the address check")
    # The address decides: a symmetric NAT shows each node another port.
    host = Counter(h for h, _ in observed).most_common(1)[0][0]
    seen = next(a for a in observed if a[0] == host)
    port = seen[1]
    if is_own(host):
        return NatFinding("direct", seen, "other nodes see this machine's own address")
    if external_host is not None and host == external_host:
        return NatFinding("forwarded", seen, f"other nodes see the external address "
                                             f"{host} (sip.external_address)")
    if external_host is not None:
        return NatFinding("nat", seen, f"other nodes see {host}:{port}, not the "
                                       f"configured sip.external_address {external_host}")
    return NatFinding("nat", seen, f"behind NAT: other nodes see {host}:{port}, an "
                                   f"address of no interface of this machine")
