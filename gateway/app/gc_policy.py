"""Garbage-collector settings for a long-running gateway process.

CPython's cyclic collector periodically walks every tracked object. A busy gateway holds
hundreds of thousands of them (a transaction per request for 32 s, a binding per
contact), and with the default thresholds the full collections came every 0.5–1 s under
5 000 REGISTER/s and grew to 250–350 ms each: longer than SIP's 500 ms retransmission
timer once queued work is added, so phones retransmitted and throughput collapsed
(docs/benchmarks.md). Reference counting frees almost everything the gateway drops;
the collector is only needed for the rare reference cycle. So:

- everything alive once the gateway is ready (modules, the loaded registry) is moved
  out of the collector's sight with :func:`gc.freeze`;
- collections of the young generations run less often (larger thresholds), so
  short-lived objects die by reference counting before a collection sees them and are
  not promoted, and full collections become rare.
"""

from __future__ import annotations

import gc

#: Allocations between young collections, young collections per middle one, and
#: middle collections per full one (CPython defaults: 700, 10, 10).
THRESHOLDS = (20_000, 20, 50)


def tune_garbage_collector() -> None:
    """Collect once, freeze the survivors and raise the thresholds (call once ready)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
