"""What the sans-IO core asks its driver to do, and the one interface its other
transaction users implement.

Every entry point of :class:`gateway.server.core.SipCore` takes an event (a message from
a flow, a timer that fired, a lookup result, a committed write) and returns a list of
these actions, in order. :class:`gateway.server.driver.CoreDriver` executes them and
feeds the outcome of each asynchronous one back as the next event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.registry.binding import Binding
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent, ClientTransaction
from gateway.sip.message import Request, Response
from gateway.sip.uri import SipUri


@dataclass(frozen=True, slots=True)
class Send:
    """Put ``data`` on the wire to ``address``. ``client`` is set for the first send of
    a client transaction's request: when it cannot be delivered the driver reports it
    with :meth:`SipCore.send_failed` (RFC 3261 §17.1.4)."""

    data: bytes
    address: Address
    client: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Wake:
    """Call :meth:`SipCore.timer_fired` at ``at`` (a transaction or Timer C deadline);
    replaces any earlier Wake."""

    at: float


@dataclass(frozen=True, slots=True)
class Resolve:
    """Find targets for ``uri`` with the resolver chain; answer with
    :meth:`SipCore.resolved` or :meth:`SipCore.resolve_failed` and ``token``."""

    token: int
    uri: SipUri
    request: Request


@dataclass(frozen=True, slots=True)
class Locate:
    """Find the servers of a next hop named by a host name (RFC 3263); answer with
    :meth:`SipCore.located` and ``token``."""

    token: int
    uri: SipUri


@dataclass(frozen=True, slots=True)
class WriteBindings:
    """Make ``bindings`` the complete, durable binding set of ``aor``; answer with
    :meth:`SipCore.committed` or :meth:`SipCore.write_failed` and ``token``."""

    token: int
    aor: str
    bindings: tuple[Binding, ...]


class TransactionUser(Protocol):
    """A user of client transactions other than the proxy (the upstream
    registrations): it hears of its transactions' responses, timeouts and transport
    errors through :class:`Deliver`."""

    def client_event(self, event: ClientEvent, txn: ClientTransaction,
                     response: Response | None) -> None:
        """A response, timeout or transport error of one of its transactions."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand a client transaction event to its (non-proxy) transaction user."""

    user: TransactionUser
    event: ClientEvent
    txn: ClientTransaction
    response: Response | None


Action = Send | Wake | Resolve | WriteBindings | Deliver
