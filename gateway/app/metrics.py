"""What the gateway counts, and how it is shown: Prometheus text (``/metrics``) and a
JSON status (``/status``, ``<data_dir>/status.json``, ``p2psip-admin status``).

Hot-path counters are plain integers and ``collections.Counter`` increments; the
Prometheus exposition is built at scrape time by a collector that reads them, so
counting costs the SIP path almost nothing.
"""

from __future__ import annotations

import bisect
import os
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

KNOWN_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK",
                           "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE",
                           "UPDATE"})


class Histogram:
    """Fixed-bucket latency histogram (seconds)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last (Prometheus order)."""
        result, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


class Metrics:
    """Counters the SIP core, the registry and the overlay update."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.registrations = 0
        self.rate_limited = 0
        self.malformed = 0  # unparseable, invalid or too big (see rejected())
        self.db_write = Histogram((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                   1.0, 2.5))
        #: From another gateway's registry commit to this one's memory (shared registry).
        self.sync_delay = Histogram((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1.0, 2.5))
        self.overlay_lookup = Histogram((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                         5.0))
        self.overlay_lookup_results: Counter[str] = Counter()

    def request(self, method: str) -> None:
        """A request arrived (unknown methods are counted as OTHER)."""
        self.requests[method if method in KNOWN_METHODS else "OTHER"] += 1

    def response(self, status: int) -> None:
        """A response was sent."""
        self.responses[str(status)] += 1

    def registered(self) -> None:
        """A REGISTER was answered 200 after its bindings were committed."""
        self.registrations += 1

    def limited(self) -> None:
        """A request was refused by the per-source rate limit."""
        self.rate_limited += 1

    def observe_overlay_lookup(self, seconds: float, outcome: str) -> None:
        """An overlay lookup ended after ``seconds``: found, not_found or error."""
        self.overlay_lookup.observe(seconds)
        self.overlay_lookup_results[outcome] += 1

    def rejected(self, status: int) -> None:
        """A message could not be parsed (transport) or lacked valid mandatory headers
        (core): answered with ``status``, or dropped (0)."""
        self.malformed += 1
        if status:
            self.response(status)


class GatewayCollector:
    """Prometheus collector over a running gateway's counters and state."""

    def __init__(self, metrics: Metrics, state: Callable[[], dict[str, Any]]) -> None:
        self.metrics = metrics
        self.state = state

    def collect(self) -> Iterator[Any]:
        """The metric families, read now."""
        m = self.metrics
        status = self.state()
        yield _by_label("sip_requests", "SIP requests received", "method", m.requests)
        yield _by_label("sip_responses", "SIP responses sent", "status", m.responses)
        yield CounterMetricFamily("sip_registrations", "REGISTERs answered 200",
                                  value=m.registrations)
        yield CounterMetricFamily("sip_rate_limited", "requests refused by the per-source "
                                  "rate limit (503)", value=m.rate_limited)
        overload = status.get("overload", {})
        yield CounterMetricFamily("sip_overload_shed", "new requests answered 503 by "
                                  "overload control", value=overload.get("shed_503", 0))
        yield CounterMetricFamily("sip_overload_dropped", "new requests dropped unread by "
                                  "overload control", value=overload.get("dropped", 0))
        yield GaugeMetricFamily("sip_overload_admitted_fraction", "share of new requests "
                                "admitted (1: no overload)",
                                value=overload.get("admitted_fraction", 1.0))
        yield CounterMetricFamily("sip_malformed_messages", "messages that could not be "
                                  "parsed, lacked valid mandatory headers or were too big "
                                  "(answered 400/505, or dropped), and refused WebSocket "
                                  "handshakes", value=m.malformed)
        yield CounterMetricFamily("sip_auth_failures", "failed digest authentications",
                                  value=status["auth"]["failures"])
        yield GaugeMetricFamily("sip_server_transactions", "live server transactions",
                                value=status["transactions"]["server"])
        yield GaugeMetricFamily("sip_client_transactions", "live client transactions",
                                value=status["transactions"]["client"])
        yield GaugeMetricFamily("sip_proxy_contexts", "requests being proxied",
                                value=status["transactions"]["proxied"])
        yield GaugeMetricFamily("registry_bindings", "live bindings",
                                value=status["registry"]["bindings"])
        yield GaugeMetricFamily("registry_aors", "AoRs with bindings",
                                value=status["registry"]["aors"])
        yield CounterMetricFamily("registry_commit_failures", "registry transactions that "
                                  "failed", value=status["registry"]["commit_failures"])
        yield _histogram("registry_write_seconds", "registry transaction duration",
                         m.db_write)
        yield _histogram("registry_sync_delay_seconds", "from another gateway's commit to "
                         "this gateway's memory having it", m.sync_delay)
        overlay = status["overlay"]
        yield GaugeMetricFamily("overlay_joined", "1 when the overlay node is joined",
                                value=1 if overlay.get("state") in ("joined", "alone") else 0)
        yield GaugeMetricFamily("overlay_neighbours", "nodes in the routing table",
                                value=overlay.get("contacts", 0))
        yield _by_label("overlay_lookups", "overlay lookups", "result",
                        m.overlay_lookup_results)
        published = overlay.get("dns_publish") or {}
        if published:
            yield GaugeMetricFamily("overlay_dns_publish_ok", "1 when the last check of the "
                                    "overlay's DNS bootstrap records succeeded",
                                    value=1 if published.get("state") == "ok" else 0)
            yield GaugeMetricFamily("overlay_dns_entries", "nodes the overlay's DNS name "
                                    "lists", value=len(published.get("entries", ())))
            yield CounterMetricFamily("overlay_dns_updates", "RFC 2136 updates this "
                                      "gateway made", value=published.get("updates", 0))
        yield _histogram("overlay_lookup_seconds", "overlay lookup duration",
                         m.overlay_lookup)
        yield GaugeMetricFamily("gateway_uptime_seconds", "seconds since start",
                                value=time.time() - m.started)
        yield GaugeMetricFamily("python_allocated_blocks", "memory blocks Python's "
                                "allocator has handed out (live objects; a steady value "
                                "with a growing RSS is fragmentation, not a leak)",
                                value=status["memory"]["python_blocks"])


def process_memory() -> dict[str, float | int | None]:
    """This process' resident memory (MiB; None where /proc is missing), the number
    of blocks Python's allocator has handed out, and, when the process runs under
    ``tracemalloc`` (``PYTHONTRACEMALLOC=1``), the Python heap it counts (MiB)."""
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
        rss: float | None = round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        rss = None
    heap = (round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
            if tracemalloc.is_tracing() else None)
    return {"rss_mib": rss, "python_blocks": sys.getallocatedblocks(),
            "python_heap_mib": heap}


def _by_label(name: str, documentation: str, label: str,
              counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=histogram.cumulative(),
                                 sum_value=histogram.total)


def prometheus_text(metrics: Metrics, state: Callable[[], dict[str, Any]]) -> bytes:
    """The Prometheus text exposition of the gateway."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(metrics, state))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU, open fds
    return generate_latest(registry)

