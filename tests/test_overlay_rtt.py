"""RTT estimates of overlay contacts (RFC 6298) and the timeouts taken from them."""

from __future__ import annotations

import pytest

from gateway.overlay.rtt import RttTable

SLOW, FAST, NEW = ("198.18.9.1", 6084), ("198.18.9.2", 6084), ("198.18.9.3", 6084)


def test_before_any_answer_the_initial_timeout_holds() -> None:
    assert RttTable(initial=1.0).timeout(NEW) == 1.0


def test_first_sample_gives_srtt_plus_two_samples_as_rfc_6298_says() -> None:
    table = RttTable(initial=1.0)
    table.observe(SLOW, 0.6)
    # SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR = 3R
    assert table.timeout(SLOW) == pytest.approx(1.8)
    for _ in range(50):
        table.observe(SLOW, 0.6)
    assert table.timeout(SLOW) == pytest.approx(0.6, abs=0.01)


def test_each_contact_has_its_own_and_strangers_get_the_estimate_of_all() -> None:
    table = RttTable(initial=1.0, floor=0.01)
    for _ in range(50):
        table.observe(SLOW, 0.6)
        table.observe(FAST, 0.001)
    assert table.timeout(SLOW) == pytest.approx(0.6, abs=0.01)
    assert table.timeout(FAST) < 0.05
    # Contacts this different make the estimate of all of them vary widely: a stranger
    # is given at least as long as the slow path takes, never the LAN's 1 ms.
    assert table.timeout(NEW) > table.timeout(SLOW)
    uniform = RttTable(initial=1.0, floor=0.01)
    for _ in range(50):
        uniform.observe(FAST, 0.001)
    assert uniform.timeout(NEW) == uniform.timeout(FAST)


def test_timeouts_stay_within_floor_and_ceiling_and_the_table_is_bounded() -> None:
    table = RttTable(initial=1.0, floor=0.1, ceiling=5.0, capacity=3)
    table.observe(FAST, 0.0001)
    assert table.timeout(FAST) == 0.1
    table.observe(SLOW, 30.0)
    assert table.timeout(SLOW) == 5.0
    for port in range(10):
        table.observe(("198.18.9.9", port), 0.2)
    assert len(table) == 3
    assert table.measured(FAST) is None  # the oldest were dropped
