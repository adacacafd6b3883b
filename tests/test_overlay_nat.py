"""What other nodes see of this one decides whether it is behind a NAT (pure)."""

from __future__ import annotations

from gateway.overlay.nat import classify

OWN = {"10.4.0.2", "127.0.0.1"}.__contains__


def test_its_own_address_seen_means_no_nat() -> None:
    finding = classify([("10.4.0.2", 6084)], OWN, None)
    assert finding.kind == "direct" and finding.observed == ("10.4.0.2", 6084)


def test_another_address_seen_means_a_nat_and_says_what_is_seen() -> None:
    finding = classify([("198.18.4.2", 40001)], OWN, None)
    assert finding.kind == "nat" and "198.18.4.2:40001" in finding.detail


def test_the_configured_external_address_seen_means_forwarding() -> None:
    assert classify([("198.18.4.2", 6084)], OWN, "198.18.4.2").kind == "forwarded"
    wrong = classify([("198.18.9.9", 6084)], OWN, "198.18.4.2")
    assert wrong.kind == "nat" and "198.18.4.2" in wrong.detail


def test_the_most_common_address_wins_whatever_the_ports() -> None:
    # A symmetric NAT shows every node another port; one liar is outvoted.
    seen = [("198.18.4.2", 40001), ("10.4.0.2", 6084), ("198.18.4.2", 40002)]
    assert classify(seen, OWN, None).observed == ("198.18.4.2", 40001)
    assert classify([], OWN, None).kind == "unknown"
