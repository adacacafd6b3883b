"""The value type shared by the registrar, the location store and the admin CLI."""

from __future__ import annotations

from typing import NamedTuple

SOURCE_LOCAL = "local"
SOURCE_OVERLAY = "overlay"


class Binding(NamedTuple):
    """One contact registered for an address-of-record (RFC 3261 §10).

    ``expires`` is an absolute POSIX timestamp (seconds); the binding is live while
    ``expires > now``. ``contact`` is the Contact URI as the UA sent it (without the
    enclosing ``<>`` and without header parameters such as ``expires`` or ``q``).
    ``received`` is where the REGISTER came from (``host:port``) and ``transport`` the
    transport it came over (``udp``/``tcp``/``tls``), so requests can reach a UA behind
    NAT and reuse its connection. ``owner`` is the gateway that received the REGISTER:
    on a site of several gateways the others reach the phone through it.

    A named tuple: cheap to pickle to and from the registry worker process, and
    ``tuple(binding)`` is the plain form the location service keeps in memory.
    """

    aor: str
    contact: str
    expires: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()
    received: str = ""
    transport: str = "udp"
    instance_id: str = ""
    reg_id: int = 0
    user_agent: str = ""
    source: str = SOURCE_LOCAL
    registered_at: float = 0.0
    #: The gateway of the site that holds the flow this binding was registered over
    #: (its id in ``site_gateways``); "" when none does (written by p2psip-admin).
    owner: str = ""

    def remaining(self, now: float) -> int:
        """Seconds left before the binding expires (0 when already expired)."""
        return max(0, int(self.expires - now + 0.5))

    def is_live(self, now: float) -> bool:
        """Whether the binding has not yet expired at ``now``."""
        return self.expires > now
