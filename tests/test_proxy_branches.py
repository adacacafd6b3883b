"""The proxy's branch bookkeeping, driven directly through its IO interface (no
sockets): a branch that fails while it starts does not end the search before the other
targets are tried, and a finished request leaves no reference cycle behind (the cycles
piled up between the gateway's rare full garbage collections)."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

from sip_client import request as raw_request

from gateway.server.proxy import Proxy
from gateway.server.routing import Resolution, Target
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from gateway.sip.responses import build_response
from gateway.sip.transaction import ServerTransaction, State

UNREACHABLE_PORT = 1  # sends there fail at once, as a refused send does


class FakeIO:
    """The SIP core as the proxy sees it: records what the proxy sends and answers."""

    def __init__(self, *targets: str) -> None:
        self.proxy: Proxy | None = None
        self.answered: list[int] = []
        self.forwarded: list[tuple[Any, Request]] = []
        self.targets = tuple(Target(uri) for uri in targets)
        self.now = 0.0

    def resolve(self, uri: Any, request: Request) -> int:
        return 7  # answered by _handle with proxy.resolved(7, ...)

    def respond(self, txn: ServerTransaction, response: Any) -> None:
        txn.status = max(txn.status, response.status)
        self.answered.append(response.status)

    def start_client(self, request: Request, destination: Address, owner: object,
                     branch: str | None = None) -> Any:
        txn = SimpleNamespace(owner=owner, error="")
        if destination.port == UNREACHABLE_PORT:
            assert self.proxy is not None
            txn.error = "connection refused"
            self.proxy.client_event(ClientEvent.TRANSPORT_ERROR, txn, None)  # type: ignore[arg-type]
        else:
            self.forwarded.append((txn, request))
        return txn

    def send_stateless(self, request: Request, destination: Address) -> None:
        raise AssertionError("nothing is sent without state here")

    def is_me(self, host: str, port: int | None) -> bool:
        return False

    def local_address(self, transport: str, toward: str | None = None,
                      ) -> tuple[str, int] | None:
        return ("127.0.0.1", 5060)

    def flow_alive(self, flow: Address) -> bool:
        return True

    def contact_flow(self, contact: str) -> Address | None:
        return None

    def relay_flow(self, token: str) -> Address | None:
        return None

    def relay_route(self, toward: str) -> str:
        return ""

    def flow_token(self, flow: Address) -> str:
        return "t"

    def next_hop_failed(self, destination: Address) -> None:
        pass

    def locate(self, uri: Any) -> int:
        return 0

    def next_hop_dead(self, destination: Address) -> bool:
        return False

    def next_hop_answered(self, destination: Address) -> None:
        pass

    def token_flow(self, token: str) -> Address | None:
        return None


def _proxy(*targets: str) -> tuple[Proxy, FakeIO]:
    io = FakeIO(*targets)
    proxy = Proxy(io)  # type: ignore[arg-type]
    io.proxy = proxy
    return proxy, io


def _handle(proxy: Proxy, io: FakeIO, txn: ServerTransaction, request: Request) -> None:
    """The request arrives and its lookup answers with the fixed targets."""
    proxy.handle_request(txn, request)
    proxy.resolved(7, Resolution(io.targets))


def _incoming(method: str) -> tuple[ServerTransaction, Request]:
    message = parse_message(raw_request(method, "sip:bob@example.com", local_port=5999))
    assert isinstance(message, Request)
    txn = ServerTransaction(("k", method), method, Address("udp", "127.0.0.1", 5999),
                            message, State.PROCEEDING if method == "INVITE" else State.TRYING)
    return txn, message


def test_a_branch_failing_as_it_starts_does_not_end_the_search() -> None:
    proxy, io = _proxy(f"sip:bob@127.0.0.1:{UNREACHABLE_PORT}", "sip:bob@127.0.0.1:5070")
    txn, request = _incoming("OPTIONS")
    _handle(proxy, io, txn, request)
    assert io.answered == []  # not the 503 of the first branch: the second is out
    (client, forwarded), = io.forwarded
    proxy.client_event(ClientEvent.RESPONSE, client, build_response(forwarded, 200))
    assert io.answered == [200] and len(proxy) == 0


def test_a_finished_call_leaves_no_reference_cycle() -> None:
    proxy, io = _proxy("sip:bob@127.0.0.1:5070", "sip:bob@127.0.0.1:5071")
    txn, request = _incoming("INVITE")
    gc.disable()
    try:
        _handle(proxy, io, txn, request)
        (first, to_first), (second, to_second) = io.forwarded
        context = weakref.ref(first.owner.context)
        proxy.client_event(ClientEvent.RESPONSE, first, build_response(to_first, 180))
        proxy.client_event(ClientEvent.RESPONSE, second, build_response(to_second, 486))
        proxy.client_event(ClientEvent.RESPONSE, first, build_response(to_first, 200))
        assert io.answered == [100, 180, 200] and len(proxy) == 0
        assert context() is not None  # the lingering client transactions hold it
        # The transactions end (Timers D/M): with them gone, reference counting alone
        # frees the context and its branches.
        del first, second, to_first, to_second
        io.forwarded.clear()
        assert context() is None, "a reference cycle keeps the finished context alive"
    finally:
        gc.enable()
