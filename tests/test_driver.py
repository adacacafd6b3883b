"""The driver executes the core's actions: sends go to the transports, a Wake arms the
one reactor timer that calls back into the core, and an action it does not know is
logged without stopping the actions after it."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from gateway.server.actions import Send, Wake
from gateway.server.driver import CoreDriver
from gateway.sip.address import Address

PHONE = Address("udp", "127.0.0.1", 5070)


class RecordingTransports:
    """Stands in for the TransportManager: remembers what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    def send(self, data: bytes, address: Address, on_error: Any = None) -> None:
        self.sent.append((data, address))


class TimerCore:
    """Stands in for SipCore: records when its timer fired, asks for nothing more."""

    def __init__(self) -> None:
        self.fired: list[float] = []

    def timer_fired(self, now: float) -> list[Any]:
        self.fired.append(now)
        return [Send(b"after the timer", PHONE)]


def make_driver(core: Any, clock: Clock) -> tuple[CoreDriver, RecordingTransports]:
    transports = RecordingTransports()
    driver = CoreDriver(core, clock, resolvers=None, registry=None,  # type: ignore[arg-type]
                        make_transports=lambda _sink: transports)  # type: ignore[arg-type,return-value]
    return driver, transports


def test_sends_go_to_the_transports_in_order() -> None:
    driver, transports = make_driver(TimerCore(), Clock())
    driver.execute([Send(b"one", PHONE), Send(b"two", PHONE)])
    assert transports.sent == [(b"one", PHONE), (b"two", PHONE)]


def test_a_wake_calls_the_core_at_its_deadline_and_a_later_wake_replaces_it() -> None:
    clock, core = Clock(), TimerCore()
    driver, transports = make_driver(core, clock)
    driver.execute([Wake(2.0)])
    driver.execute([Wake(5.0)])  # replaces the 2 s wake
    clock.advance(4.9)
    assert core.fired == []
    clock.advance(0.1)
    assert core.fired == [5.0]
    assert transports.sent == [(b"after the timer", PHONE)]
    clock.advance(100)
    assert core.fired == [5.0]  # one wake, one call


def test_an_unknown_action_is_logged_and_the_rest_still_run() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        driver, transports = make_driver(TimerCore(), Clock())
        driver.execute([object(), Send(b"still sent", PHONE)])  # type: ignore[list-item]
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert transports.sent == [(b"still sent", PHONE)]
    assert any(e.get("log_format", "").startswith("unknown action") for e in events)
