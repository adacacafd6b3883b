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

    def list_pins(self) -> list[tuple[str, str, float]]:
        """Every TOFU pin: (domain, fingerprint, first seen), by domain."""
        def work() -> list[tuple[str, str, float]]:
            with self._engine.connect() as conn:
                rows = conn.execute(select(_pins.c.domain, _pins.c.fingerprint,
                                           _pins.c.first_seen).order_by(_pins.c.domain)).all()
            return [(domain, fp, float(seen)) for domain, fp, seen in rows]

        return self._guard("read the overlay pins", work)

    def replace_pin(self, domain: str, fingerprint: str) -> None:
        """Pin ``fingerprint`` for ``domain``, replacing any pin it had."""
        def work() -> None:
            with self._engine.begin() as conn:
                conn.execute(delete(_pins).where(_pins.c.domain == domain))
                conn.execute(insert(_pins).values(domain=domain, fingerprint=fingerprint,
                                                  first_seen=time.time()))

        self._guard("write an overlay pin", work)

    def forget_pin(self, domain: str) -> bool:
        """Drop the pin of ``domain`` (the next certificate seen is pinned); whether
        there was one."""
        def work() -> bool:
            with self._engine.begin() as conn:
                return bool(conn.execute(delete(_pins).where(
                    _pins.c.domain == domain)).rowcount)

        return self._guard("remove an overlay pin", work)

    def close(self) -> None:
        """Release the connections."""
        if self._owns_engine:
            self._engine.dispose()


class PinDirectory:
    """TOFU pins in memory, written through to the registry in the background."""

    def __init__(self, runner: ThreadStoreRunner | None) -> None:
        self._runner = runner
        self._pins: dict[str, str] = {}
        # Domains whose pin is being written: a reload must not drop them meanwhile.
        self._writing: set[str] = set()

    def load(self, pins: dict[str, str]) -> None:
        """Start from the pins stored in the registry."""
        self._pins.update(pins)

    def reload(self, pins: dict[str, str]) -> None:
        """Follow the registry (``p2psip-admin overlay pins`` changes it): pins removed
        there are forgotten, changed ones replaced (pins still being written stay)."""
        fresh = dict(pins)
        for domain in self._writing:
            if domain in self._pins:
                fresh[domain] = self._pins[domain]
        for domain in set(self._pins) - set(fresh):
            log.info("overlay: the pin of {domain} was removed", domain=domain)
        for domain, fingerprint in fresh.items():
            if self._pins.get(domain) not in (None, fingerprint):
                log.info("overlay: {domain} is now pinned to {fingerprint}", domain=domain,
                         fingerprint=fingerprint)
        self._pins = fresh

    def pins(self) -> dict[str, str]:
        """Every pin held (domain → fingerprint)."""
        return dict(self._pins)

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
        self._write("save_pin", domain, fingerprint)

    def repin(self, domain: str, fingerprint: str) -> None:
        """Replace the pin of ``domain`` (the pinned certificate announced its successor)."""
        self._pins[domain] = fingerprint
        log.warn("overlay: {domain} rolled its certificate over to {fingerprint} (announced "
                 "by the pinned one); re-pinned", domain=domain, fingerprint=fingerprint)
        self._write("replace_pin", domain, fingerprint)

    def _write(self, method: str, domain: str, fingerprint: str) -> None:
        if self._runner is None:
            return
        self._writing.add(domain)
        d: Deferred[Any] = self._runner.call(method, domain, fingerprint)
        d.addErrback(lambda f: log.warn("cannot store the pin of {domain}: {error}",
                                        domain=domain, error=f.getErrorMessage()))
        d.addBoth(lambda _: self._writing.discard(domain))
