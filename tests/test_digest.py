"""Digest primitives, nonces, nonce counts and the brute-force limiter, without sockets."""

from __future__ import annotations

import pytest

from gateway.server.auth_guard import FailureLimiter, NonceCounts
from gateway.sip.digest import (
    NonceFactory,
    NonceState,
    challenge,
    expected_response,
    ha1,
    parse_credentials,
)
from gateway.sip.errors import SipSyntaxError
from tests.digest_client import authorization, parse_challenge

# RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
RFC7616 = {"username": "Mufasa", "realm": "http-auth@example.org",
           "password": "Circle of Life", "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
           "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "uri": "/dir/index.html"}


@pytest.mark.parametrize(("algorithm", "response"), [
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
])
def test_response_matches_the_rfc_7616_example(algorithm: str, response: str) -> None:
    v = RFC7616
    stored = ha1(algorithm, v["username"], v["realm"], v["password"])
    assert expected_response(algorithm, stored, v["nonce"], "00000001", v["cnonce"], "auth",
                             "GET", v["uri"]) == response


def test_credentials_are_parsed_with_quoted_commas_and_escapes() -> None:
    credentials = parse_credentials(
        'Digest username="a\\"b,c", realm="example.com", nonce="n1", '
        'uri="sip:example.com", response="ABCDEF", algorithm=SHA-256, cnonce="x", '
        'qop=auth, nc=00000001, opaque="o"')
    assert credentials.username == 'a"b,c'
    assert credentials.response == "abcdef"
    assert (credentials.algorithm, credentials.qop, credentials.nc) == ("SHA-256", "auth",
                                                                        "00000001")


@pytest.mark.parametrize("value", [
    'Basic YWxhZGRpbjpvcGVuc2VzYW1l',
    'Digest realm="r", nonce="n", uri="u", response="x"',  # no username
    'Digest username="a", realm="r", nonce="n", uri="u", response="x", bad name=1',
    'Digest username="unterminated',
])
def test_bad_credentials_raise_a_syntax_error(value: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse_credentials(value)


def test_challenge_round_trips_through_an_independent_client() -> None:
    nonces = NonceFactory(b"k" * 32, 300)
    nonce = nonces.issue("example.com", 1000.0)
    value = challenge("example.com", nonce, nonces.opaque("example.com"), "SHA-256", False)
    parsed = parse_challenge(value)
    assert parsed["qop"] == "auth" and parsed["algorithm"] == "SHA-256"
    header = authorization(parsed, method="REGISTER", uri="sip:example.com",
                           username="alice", password="pw")
    credentials = parse_credentials(header)
    stored = ha1("SHA-256", "alice", "example.com", "pw")
    assert expected_response("SHA-256", stored, credentials.nonce, credentials.nc,
                             credentials.cnonce, "auth", "REGISTER",
                             credentials.uri) == credentials.response
    assert "stale=true" in challenge("r", nonce, "o", "MD5", True)


def test_nonce_is_valid_then_stale_and_foreign_ones_are_invalid() -> None:
    nonces = NonceFactory(b"s" * 32, 300)
    nonce = nonces.issue("example.com", 1000.0)
    assert nonces.check(nonce, "example.com", 1100.0) == (NonceState.VALID, 1000.0)
    assert nonces.check(nonce, "example.com", 1301.0)[0] is NonceState.STALE
    assert nonces.check(nonce, "other.example.com", 1100.0)[0] is NonceState.INVALID
    assert NonceFactory(b"t" * 32, 300).check(nonce, "example.com", 1100.0)[0] is \
        NonceState.INVALID
    tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    assert nonces.check(tampered, "example.com", 1100.0)[0] is NonceState.INVALID
    assert nonces.check("not base64 !", "example.com", 1100.0)[0] is NonceState.INVALID
    assert nonces.issue("example.com", 1000.0) != nonce


def test_nonce_count_replays_are_refused_and_late_counts_within_the_window_pass() -> None:
    counts = NonceCounts(lifetime=300)
    assert counts.use("n", 1000.0, 1)
    assert not counts.use("n", 1000.0, 1)  # replay
    assert counts.use("n", 1000.0, 3)
    assert counts.use("n", 1000.0, 2)  # out of order, first time
    assert not counts.use("n", 1000.0, 2)
    assert counts.use("n", 1000.0, 40)
    assert not counts.use("n", 1000.0, 3)  # fell out of the window
    assert counts.use("other", 1000.0, 1)


def test_nonce_counts_stay_bounded_and_dropped_nonces_count_as_forgotten() -> None:
    counts = NonceCounts(lifetime=300, capacity=10)
    for index in range(50):
        counts.use(f"n{index}", 1000.0 + index, 1)
    assert len(counts) <= 10
    assert counts.forgotten(1000.0)  # n0 was dropped while still valid
    assert not counts.forgotten(1049.0)


def test_failures_lock_out_the_pair_then_expire() -> None:
    limiter = FailureLimiter(max_failures=3, lockout=60)
    assert not limiter.failed("192.0.2.1", "alice", 0.0)
    assert not limiter.failed("192.0.2.1", "alice", 1.0)
    assert limiter.failed("192.0.2.1", "alice", 2.0)
    assert limiter.locked("192.0.2.1", "alice", 30.0)
    assert not limiter.locked("192.0.2.2", "alice", 30.0)
    assert not limiter.locked("192.0.2.1", "bob", 30.0)
    assert not limiter.locked("192.0.2.1", "alice", 63.0)


def test_success_clears_failures_and_old_failures_stop_counting() -> None:
    limiter = FailureLimiter(max_failures=2, lockout=60)
    limiter.failed("h", "u", 0.0)
    limiter.succeeded("h", "u")
    assert not limiter.failed("h", "u", 1.0)
    assert not limiter.failed("h", "u", 100.0)  # the one at 1.0 is too old to count
    limiter = FailureLimiter(max_failures=5, lockout=60, capacity=100)
    for index in range(1000):
        limiter.failed(f"h{index}", "u", 0.0)
    assert len(limiter) == 100
