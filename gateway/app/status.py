"""What ``/status``, ``status.json`` and ``p2psip-admin status`` show of a gateway."""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from typing import Any

from gateway import __version__
from gateway.app.assembly import Gateway
from gateway.app.metrics import process_memory


def gateway_status(gateway: Gateway, *, stopped: bool = False) -> dict[str, Any]:
    """The gateway's state now, as plain JSON-able values."""
    location, metrics, core = gateway.location, gateway.metrics, gateway.core
    upstream = gateway.upstream
    return {
        "state": "stopped" if stopped else "running",
        "version": __version__, "pid": os.getpid(),
        "uptime_seconds": round(time.time() - metrics.started, 1),
        "updated": time.time(),
        "listeners": gateway.transports.listening_descriptions(),
        "domains": sorted(gateway.local_domains.names),
        "registry": {
            "database": gateway.prepared.store.safe_url,
            "state": "failing" if location.last_error else "ok",
            "last_error": location.last_error, "bindings": location.binding_count(),
            "aors": location.aor_count(), "commits": location.commits,
            "commit_failures": location.commit_failures,
            "last_commit_ms": round(1000 * location.last_commit_seconds, 2),
            "gateway_id": location.gateway_id, "site": location.site,
            "sync_delay_ms": _delays(location.sync_delays),
            "change_feed": location.change_feed.status()
            if location.change_feed is not None else None},
        "transactions": {"server": len(core.transactions), "client": len(core.clients),
                         "proxied": len(core.proxy)},
        "overlay": gateway.overlay.status() if gateway.overlay is not None
        else {"state": "disabled"},
        "upstream": {"uri": upstream.settings.uri, "registered_ok": upstream.ok,
                     "failed": upstream.failed} if upstream is not None else None,
        "auth": {"users": len(gateway.users), "failures": gateway.authenticator.failures},
        "requests": dict(metrics.requests),
        "responses": dict(metrics.responses),
        "registrations": metrics.registrations,
        "rate_limited": metrics.rate_limited,
        "overload": gateway.transports.overload.status()
        if gateway.transports.overload is not None and gateway.transports.overload.enabled
        else {"state": "off"},
        "malformed": metrics.malformed,
        "memory": process_memory(),
    }


def _delays(seconds: Collection[float]) -> dict[str, float] | None:
    """Median and 99th percentile (ms) of the latest sync delays; None before any."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    return {"p50": round(1000 * ordered[len(ordered) // 2], 2),
            "p99": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "count": len(ordered)}
