"""Overlay state in the SQL registry: the node cache (``overlay_nodes``, to bootstrap the
next start) and trust-on-first-use pins (``overlay_pins``). Blocking; the gateway runs
it in a worker thread, and keeps the pins in memory (:class:`PinDirectory`)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, insert, select
from twisted.internet.defer import Deferred

from gateway.log import get_logger
from gateway.registry.models import OverlayNodeRow, OverlayPinRow
from gateway.registry.runner import ThreadStoreRunner
from gateway.registry.store import (
    create_registry_engine,
    guard_database,
)

log = get_logger("gateway.registry.overlay_store")
_nodes = OverlayNodeRow.__table__
_pins = OverlayPinRow.__table__
MAX_CACHED_NODES = 64


class OverlayStore:
    """Blocking access to ``overlay_nodes`` and ``overlay_pins``."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self._engine = engine if engine is not None else create_registry_engine(url)
        self._owns_engine = engine is None

    def _guard(self, what: str, work: Any) -> Any:
        return guard_database(self._engine.url.render_as_string(hide_password=True), what,
                              work)

    def load_nodes(self) -> list[tuple[str, int]]:
        """Cached node addresses, most recently seen first."""
        def work() -> list[tuple[str, int]]:
            with self._engine.connect() as conn:
                rows = conn.execute(select(_nodes.c.host, _nodes.c.port).order_by(
                    _nodes.c.last_seen.desc()).limit(MAX_CACHED_NODES)).all()
            return [(host, int(port)) for host, port in rows]

        return self._guard("read the overlay node cache", work)

    def save_nodes(self, nodes: list[tuple[str, str, int]]) -> None:
        """Replace the node cache with ``(node_id_hex, host, port)`` entries."""
        now = time.time()

        def work() -> None:
            with self._engine.begin() as conn:
                conn.execute(delete(_nodes))
                if nodes:
                    conn.execute(insert(_nodes), [
                        {"node_id": node_id, "host": host, "port": port, "last_seen": now}
                        for node_id, host, port in nodes[:MAX_CACHED_NODES]])

        self._guard("write the overlay node cache", work)

    def load_pins(self) -> dict[str, str]:
        """Every TOFU pin: domain → fingerprint."""
        def work() -> dict[str, str]:
            with self._engine.connect() as conn:
                return dict(conn.execute(select(_pins.c.domain, _pins.c.fingerprint)).all())

        return self._guard("read the overlay pins", work)

    def save_pin(self, domain: str, fingerprint: str) -> None:
        """Record a first-seen pin (an existing one is kept)."""
        def work() -> None:
            with self._engine.begin() as conn:
                exists = conn.execute(select(_pins.c.domain).where(
                    _pins.c.domain == domain)).first()
                if exists is None:
                    conn.execute(insert(_pins).values(domain=domain, fingerprint=fingerprint,
                                                      first_seen=time.time()))

        self._guard("write an overlay pin", work)

    def close(self) -> None:
        """Release the connections."""
        if self._owns_engine:
            self._engine.dispose()


class PinDirectory:
    """TOFU pins in memory, written through to the registry in the background."""

    def __init__(self, runner: ThreadStoreRunner | None) -> None:
        self._runner = runner
        self._pins: dict[str, str] = {}

    def load(self, pins: dict[str, str]) -> None:
        """Start from the pins stored in the registry."""
        self._pins.update(pins)

    def get(self, domain: str) -> str | None:
        """The pinned fingerprint of ``domain``."""
        return self._pins.get(domain)

    def pin(self, domain: str, fingerprint: str) -> None:
        """Pin on first sight (kept in memory at once, in the registry soon)."""
        if domain in self._pins:
            return
        self._pins[domain] = fingerprint
        log.info("overlay: pinned the certificate {fingerprint} for {domain} (first use)",
                 fingerprint=fingerprint, domain=domain)
        if self._runner is not None:
            d: Deferred[Any] = self._runner.call("save_pin", domain, fingerprint)
            d.addErrback(lambda f: log.warn("cannot store the pin of {domain}: {error}",
                                            domain=domain, error=f.getErrorMessage()))
