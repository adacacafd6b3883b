"""The gateways of a site as this gateway sees them, and which of them holds a binding.

Gateways sharing one registry write a heartbeat in ``site_gateways`` with the URI the
others reach them at (``[site] uri``); each binding names the gateway whose flow it was
registered over (``bindings.owner``). A request for a phone that registered at another
gateway that is up goes there (it alone holds the phone's NAT binding or connection);
a binding whose owner is down, stopped or unknown is reached from here, as a single
gateway would (its phone takes it over by registering here again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

#: Least seconds between two reads of ``site_gateways`` asked for because a binding
#: named an owner this gateway did not know yet (one that has just started).
REFRESH_SPACING = 1.0


class SiteView:
    """The site's gateways as the last heartbeat read them (sans-IO: ``clock`` gives
    the time, ``refresh`` asks for a new read, which arrives through :meth:`update`)."""

    def __init__(self, own_id: str, clock: Callable[[], float],
                 refresh: Callable[[], None] = lambda: None) -> None:
        self.own_id = own_id
        self._clock = clock
        self._refresh = refresh
        self._refresh_asked = float("-inf")
        #: Every gateway of the registry (id, name, uri, started_at, heartbeat_at, state).
        self.gateways: list[dict[str, Any]] = []
        self._routes: dict[str, str] = {}  # id of a live other gateway -> its Route value
        self._uris: dict[str, str] = {}  # id of every gateway listed -> its site URI
        #: Ids of the gateways that are up, this one included.
        self.up: frozenset[str] = frozenset((own_id,))

    def update(self, gateways: list[dict[str, Any]]) -> None:
        """The gateways as ``site_gateways`` lists them now."""
        self.gateways = gateways
        self._uris = {g["id"]: g["uri"] for g in gateways}
        self._routes = {g["id"]: route_value(g["uri"]) for g in gateways
                        if g["state"] == "up" and g["uri"] and g["id"] != self.own_id}
        self.up = frozenset({self.own_id, *(g["id"] for g in gateways if g["state"] == "up")})

    def flow_lost(self, owner: str, own_uri: str) -> bool:
        """Whether a binding owned by ``owner`` lost its flow: it was registered at
        another gateway of the site (``site.uri`` not ``own_uri``) that is down or
        stopped, with the NAT binding or connection the phone had to it. A restart of
        this very gateway (same URI, same sockets) loses nothing."""
        if not own_uri or not owner or owner == self.own_id or owner in self.up:
            return False
        return self._uris.get(owner, "") not in ("", own_uri)

    def publisher(self, aor: str, owners: Iterable[str],
                  up: frozenset[str] | None = None) -> str:
        """The gateway that publishes ``aor`` in the overlay for the whole site, given
        the ``owners`` of its live bindings, most recent first: the first of them that
        is up (it received the phone's REGISTER); when none is, one of the gateways that
        are up, picked by the AoR (rendezvous hashing), so that every gateway with the
        same view picks the same one and a dead gateway's AoRs spread over the others."""
        alive = self.up if up is None else up
        if len(alive) == 1:
            return next(iter(alive))
        for owner in owners:
            if owner in alive:
                return owner
        return max(sorted(alive), key=lambda gateway: hashlib.sha256(
            f"{gateway} {aor}".encode()).digest())

    def holder_route(self, owner: str) -> str | None:
        """The Route value that leads to the gateway holding the flow of a binding owned
        by ``owner``, when that is another gateway of the site that is up; None when the
        binding is reached from here (ours, no owner, owner down or stopped)."""
        if not owner or owner == self.own_id:
            return None
        route = self._routes.get(owner)
        if route is None and owner not in self._uris:
            # A gateway that started after our last heartbeat: read the list again soon.
            now = self._clock()
            if now - self._refresh_asked >= REFRESH_SPACING:
                self._refresh_asked = now
                self._refresh()
        return route


def route_value(uri: str) -> str:
    """``uri`` as a loose-routing Route value (``<uri;lr>``)."""
    bare = uri.strip().strip("<>")
    params = bare.split(";")[1:]
    if not any(p.strip().lower() == "lr" for p in params):
        bare += ";lr"
    return f"<{bare}>"
