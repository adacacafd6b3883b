"""A SipCore with a fake clock, an in-memory registry and no sockets: tests feed it
events and look at the actions it returns (the driver's job, done by hand)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.registry.binding import Binding
from gateway.server.actions import Action, Deliver, Resolve, Send, Wake, WriteBindings
from gateway.server.core import SipCore
from gateway.server.myself import LocalDomains, Myself
from gateway.server.registrar import Registrar, RegistrarPolicy
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientTransactionLayer
from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.transaction import TransactionLayer

START = 1_800_000_000.0  # a fixed "now": bindings expire in absolute time
PHONE = Address("udp", "127.0.0.1", 5999)
GATEWAY = ("udp", "127.0.0.1", 5060)


class MemoryBindings:
    """The registry as the core reads it; writes are applied by :class:`CoreHarness`."""

    def __init__(self) -> None:
        self.by_aor: dict[str, list[Binding]] = {}

    def current(self, aor: str) -> list[Binding]:
        return list(self.by_aor.get(aor, []))

    def lookup(self, aor: str, now: float | None = None) -> list[Binding]:
        return [b for b in self.current(aor) if now is None or b.is_live(now)]

    def read_through(self, aor: str) -> None:
        return None  # not shared: memory is all there is

    def holder_route(self, binding: Binding) -> None:
        return None  # one gateway: every flow is held here

    def flow_lost(self, binding: Binding) -> bool:
        return False

    def by_contact(self, contact: str) -> Binding | None:
        return next((b for bs in self.by_aor.values() for b in bs if b.contact == contact),
                    None)


@dataclass
class CoreHarness:
    """The core and what it asked for so far."""

    timer_c: float = 180.0
    now: float = START
    bindings: MemoryBindings = field(default_factory=MemoryBindings)
    core: SipCore = field(init=False)
    wake: float | None = None

    def __post_init__(self) -> None:
        domains = LocalDomains(["example.com"], ["127.0.0.1"])
        self.core = SipCore(Registrar(RegistrarPolicy(60, 3600, 3600, 10, 20), domains),
                            self.bindings, TransactionLayer(0.5, 4.0, 5.0),
                            ClientTransactionLayer(0.5, 4.0, 5.0),
                            Myself(domains, [GATEWAY]), timer_c=self.timer_c)

    def take(self, actions: list[Action]) -> list[Action]:
        """Remember the latest Wake; return the actions."""
        for action in actions:
            if isinstance(action, Wake):
                self.wake = action.at
        return actions

    def receive(self, data: str, source: Address = PHONE) -> list[Action]:
        message = parse_message(data.replace("\n", "\r\n").encode())
        return self.take(self.core.receive(message, source, self.now))

    def advance(self, seconds: float) -> list[Action]:
        """Move the clock, firing the core's timer whenever it asked to be woken."""
        until = self.now + seconds
        actions: list[Action] = []
        for _ in range(10_000):  # bounded
            if self.wake is None or self.wake > until:
                break
            self.now, self.wake = max(self.now, self.wake), None
            actions += self.take(self.core.timer_fired(self.now))
        self.now = until
        return actions

    def commit(self, write: WriteBindings) -> list[Action]:
        self.bindings.by_aor[write.aor] = list(write.bindings)
        return self.take(self.core.committed(write.token, self.now))


def sends(actions: list[Action]) -> list[tuple[Request | Response, Address]]:
    """The messages of the Send actions, parsed."""
    return [(parse_message(a.data), a.address) for a in actions if isinstance(a, Send)]


def statuses(actions: list[Action]) -> list[int]:
    """The statuses of the responses sent."""
    return [m.status for m, _ in sends(actions) if isinstance(m, Response)]


def only(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


__all__ = ["Deliver", "Resolve", "Send", "Wake", "WriteBindings"]
