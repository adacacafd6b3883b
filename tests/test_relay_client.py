"""The NATed gateway's side of relaying (gateway/server/relay_client.py): it opens a
flow to the first relay offered, publishes the Path the relay answers with, refreshes
at the relay's Flow-Timer, and moves to the next relay when one fails. The REGISTERs go
to a recording sender; time is a Twisted test clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from gateway.server.relay_client import RETRY_AFTER, RelayClient
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent
from gateway.sip.message import Request
from gateway.sip.responses import build_response

FIRST, SECOND = "sip:198.51.100.1:5060;transport=tcp", "sip:198.51.100.2:5060;transport=tcp"


class RecordingSender:
    """Keeps what the client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Address, object]] = []

    def send_request(self, request: Request, destination: Address, user: object,
                     branch: str) -> None:
        self.sent.append((request, destination, user))

    def local_address(self, transport: str, toward: str | None = None,
                      ) -> tuple[str, int] | None:
        return ("10.4.0.2", 5060)


def answer(client: RelayClient, request: Request, status: int, **headers: str) -> None:
    response = build_response(request, status, headers=[
        (name.replace("_", "-"), value) for name, value in headers.items()])
    client.client_event(ClientEvent.RESPONSE, None, response)  # type: ignore[arg-type]


def test_the_first_relay_that_answers_gives_the_route_and_is_refreshed() -> None:
    sender, clock, routes = RecordingSender(), Clock(), []
    client = RelayClient(sender, clock, routes.append)
    client.use([FIRST, SECOND])
    (request, destination, _), = sender.sent
    assert destination == Address("tcp", "198.51.100.1", 5060)
    assert request.header("require") == "p2psip-relay" and str(request.uri) == FIRST
    path = "sip:198.51.100.1:5060;transport=tcp;lr;relay=abc"
    answer(client, request, 200, Path=f"<{path}>", Flow_Timer="40", Expires="120")
    assert routes == [path] and client.route == path
    clock.advance(39)
    assert len(sender.sent) == 1
    clock.advance(1)
    refresh = sender.sent[-1][0]
    assert refresh.call_id == request.call_id and refresh.cseq.number == 2
    # Offers that still include the working relay keep it.
    client.use([SECOND, FIRST])
    assert len(sender.sent) == 2


def test_a_failing_relay_withdraws_the_route_and_the_next_one_is_tried() -> None:
    sender, clock, routes = RecordingSender(), Clock(), []
    client = RelayClient(sender, clock, routes.append)
    client.use([FIRST, SECOND])
    answer(client, sender.sent[0][0], 200, Path="<sip:198.51.100.1:5060;lr;relay=abc>")
    clock.advance(60)
    client.client_event(ClientEvent.TIMEOUT, None, None)  # type: ignore[arg-type]
    assert routes == ["sip:198.51.100.1:5060;lr;relay=abc", ""]
    assert sender.sent[-1][1].host == "198.51.100.2"
    answer(client, sender.sent[-1][0], 420, Unsupported="p2psip-relay")
    assert "420" in client.status()["last_error"]
    # Every relay failed: all are tried again later.
    count = len(sender.sent)
    clock.advance(RETRY_AFTER)
    assert len(sender.sent) == count + 1 and sender.sent[-1][1].host == "198.51.100.1"
