"""The upstream server given by name (RFC 3263): REGISTERs go to the first server DNS
gives, move to the next when one fails, and stop when all failed (DNS is asked again at
the next change or refresh, never in a tight loop)."""

from __future__ import annotations

from twisted.internet.task import Clock

from gateway.server.upstream import UpstreamRegistrations, UpstreamServer, UpstreamSettings
from gateway.sip.address import Address
from gateway.sip.client_transaction import ClientEvent
from gateway.sip.locate import Located
from gateway.sip.message import Request
from gateway.sip.uri import SipUri

SERVERS = (Address("udp", "198.51.100.61", 5060, 0, "provider.example"),
           Address("udp", "198.51.100.62", 5060, 0, "provider.example"))


class Location:
    """One AoR with a live binding."""

    def __init__(self) -> None:
        self.watchers: list = []
        self.expiry_watchers: list = []

    def lookup(self, aor: str) -> list[str]:
        return ["binding"]

    def snapshot(self) -> list[str]:
        return ["sip:alice@a.example"]


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[Request, Address, object]] = []

    def send_request(self, request: Request, destination: Address, user: object,
                     branch: str) -> None:
        self.sent.append((request, destination, user))

    def local_address(self, transport: str, toward: str | None = None):  # noqa: ANN201
        return ("10.0.0.1", 5060)


class Locator:
    def __init__(self) -> None:
        self.asked = 0

    async def locate(self, uri: SipUri) -> Located:
        self.asked += 1
        return Located(SERVERS)


class Txn:
    def __init__(self, destination: Address) -> None:
        self.destination = destination


def test_registrations_fail_over_and_stop_when_every_server_failed() -> None:
    settings = UpstreamSettings("sip:provider.example", "", True, "", "", 120)
    server = UpstreamServer.from_settings(settings)
    assert server.destination is None and server.route == "sip:provider.example;lr"
    sender, locator, clock = Sender(), Locator(), Clock()
    registrations = UpstreamRegistrations(server, sender, Location(), clock, locator)
    registrations._located(Located(SERVERS))  # noqa: SLF001 - as DNS would answer
    registrations._send("sip:alice@a.example")  # noqa: SLF001
    assert [to for _, to, _ in sender.sent] == [SERVERS[0]]
    assert server.is_upstream("198.51.100.62", 5060)  # every located address counts
    for expected in (SERVERS[1], None):
        _, to, owner = sender.sent[-1]
        owner.client_event(ClientEvent.TRANSPORT_ERROR, Txn(to), None)
        if expected is not None:
            assert sender.sent[-1][1] == expected
    assert len(sender.sent) == 2  # both failed: nothing more until a change or refresh
    assert not registrations._locating and locator.asked == 0  # noqa: SLF001 - DNS not asked again
