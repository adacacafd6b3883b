"""The resolver chain's rules: the first final answer wins; without one, the first
non-final answer does, with the Warnings of the non-final answers after it; when every
resolver passes, 404."""

from __future__ import annotations

from twisted.internet.defer import succeed

from gateway.server.routing import Resolution, ResolverChain, Target, fallback_answer
from gateway.sip.message import Request
from gateway.sip.uri import parse_uri

URI = parse_uri("sip:bob@far.example")


class Fixed:
    """A resolver that always gives ``answer`` (None: passes) and counts its calls."""

    def __init__(self, name: str, answer: Resolution | None, deferred: bool = False) -> None:
        self.name, self.answer, self.deferred, self.asked = name, answer, deferred, 0

    def resolve(self, uri, request):  # noqa: ANN001, ANN201 - ITargetResolver
        self.asked += 1
        return succeed(self.answer) if self.deferred else self.answer


def outcome(*resolvers: Fixed) -> Resolution:
    results: list[Resolution] = []
    ResolverChain(resolvers).resolve(URI, Request("INVITE", URI)).addCallback(
        results.append)
    assert len(results) == 1
    return results[0]


OVERLAY_DOWN = fallback_answer(480, "Temporarily Unavailable (overlay unreachable)",
                               "overlay unreachable", "alone")
NOT_IN_DNS = fallback_answer(404, "Not Found (not in DNS)", "DNS", "far.example: NXDOMAIN")
FOUND = Resolution(targets=(Target("sip:bob@192.0.2.7"),))


def test_every_resolver_passing_ends_in_404() -> None:
    answer = outcome(Fixed("a", None), Fixed("b", None, deferred=True))
    assert (answer.status, answer.targets) == (404, ())


def test_a_final_answer_stops_the_chain() -> None:
    later = Fixed("later", FOUND)
    assert outcome(Fixed("local", Resolution(status=404)), later).status == 404
    assert later.asked == 0


def test_a_later_resolver_with_targets_beats_an_earlier_non_final_answer() -> None:
    answer = outcome(Fixed("overlay", OVERLAY_DOWN), Fixed("dns", FOUND, deferred=True))
    assert answer.targets == FOUND.targets


def test_the_first_non_final_answer_stands_with_every_warning() -> None:
    answer = outcome(Fixed("overlay", OVERLAY_DOWN), Fixed("upstream", None),
                     Fixed("dns", NOT_IN_DNS, deferred=True))
    assert (answer.status, answer.reason) == (480, OVERLAY_DOWN.reason)
    assert [value for name, value in answer.headers if name == "Warning"] == [
        '399 p2psip-gateway "overlay unreachable: alone"',
        '399 p2psip-gateway "DNS: far.example: NXDOMAIN"']
