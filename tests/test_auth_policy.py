"""Which requests the authenticator challenges (the policy), without sockets."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from gateway.app.config import defaults
from gateway.app.wiring import auth_policy
from gateway.registry.users import UserRecord
from gateway.server.authenticator import Authenticator
from gateway.server.myself import Myself
from gateway.sip.address import Address
from gateway.sip.message import Request
from gateway.sip.parser import parse_message

DEFAULT_POLICY = auth_policy(defaults())
SOURCE = Address("udp", "198.51.100.7", 5060)


class NoUsers:
    def get(self, username: str, realm: str) -> UserRecord | None:
        return None


def authenticator(methods: frozenset[str] | None = None) -> Authenticator:
    myself = Myself(lambda host: host in ("example.com", "192.0.2.1"),
                    [("udp", "192.0.2.1", 5060)])
    policy = replace(DEFAULT_POLICY, trusted_networks=(), methods=methods)
    return Authenticator(policy, NoUsers(), b"k" * 32, myself)


def request(method: str, uri: str = "sip:bob@example.com", *, sender: str = "alice@example.com",
            to_tag: str = "", route: str = "") -> Request:
    lines = [f"{method} {uri} SIP/2.0",
             "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKpolicy",
             "Max-Forwards: 70", f"From: <sip:{sender}>;tag=f", "To: <sip:bob@example.com>"
             + (f";tag={to_tag}" if to_tag else ""), "Call-ID: policy", f"CSeq: 1 {method}"]
    if route:
        lines.append(f"Route: {route}")
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def status(auth: Authenticator, message: Request) -> int | None:
    response = auth.check(message, SOURCE)
    return None if response is None else response.status


def test_register_gets_401_and_invite_407_by_default() -> None:
    auth = authenticator()
    assert status(auth, request("REGISTER", "sip:example.com")) == 401
    assert status(auth, request("INVITE")) == 407
    assert status(auth, request("MESSAGE")) == 407


def test_only_the_configured_methods_are_challenged() -> None:
    auth = authenticator(frozenset({"INVITE"}))
    assert status(auth, request("INVITE")) == 407
    assert status(auth, request("REGISTER", "sip:example.com")) is None
    assert status(auth, request("MESSAGE")) is None


def test_ack_cancel_and_record_routed_in_dialog_requests_are_not_challenged() -> None:
    auth = authenticator()
    assert status(auth, request("ACK")) is None
    assert status(auth, request("CANCEL")) is None
    assert status(auth, request("BYE", to_tag="t", route="<sip:192.0.2.1:5060;lr>")) is None
    # A to-tag alone proves nothing: routed elsewhere, it is authenticated.
    assert status(auth, request("BYE", to_tag="t", route="<sip:203.0.113.9;lr>")) == 407
    assert status(auth, request("BYE", to_tag="t")) == 407


@pytest.mark.parametrize(("uri", "route", "expected"), [
    ("sip:bob@example.com", "", None),  # a call in from another domain
    ("sip:bob@example.org", "", 403),  # relaying for strangers
    ("sip:bob@example.com", "<sip:203.0.113.9;lr>", 403),  # preloaded route elsewhere
])
def test_other_domains_reach_local_users_only(uri: str, route: str, expected) -> None:
    auth = authenticator()
    assert status(auth, request("INVITE", uri, sender="carol@example.org",
                                route=route)) == expected


def test_trusted_networks_and_trusted_peers_skip_everything() -> None:
    myself = Myself(lambda host: host in ("example.com", "192.0.2.1"),
                    [("udp", "192.0.2.1", 5060)])
    auth = Authenticator(replace(DEFAULT_POLICY, trusted_networks=(
        ipaddress.ip_network("198.51.100.0/24"),)), NoUsers(), b"k" * 32, myself)
    assert auth.check(request("INVITE"), SOURCE) is None
    assert auth.check(request("INVITE"), Address("udp", "203.0.113.1", 5060)) is not None
    assert auth.check(request("INVITE"), Address("tls", "203.0.113.1", 5061),
                      trusted_peer=True) is None


def _with_header(message: Request, name: str, value: str) -> Request:
    message.add_header(name, value)
    return message


def test_garbage_credentials_get_a_challenge_and_a_bad_nonce_count_a_syntax_error() -> None:
    from gateway.sip.errors import SipSyntaxError

    auth = authenticator()
    garbage = _with_header(request("REGISTER", "sip:example.com"), "Authorization",
                           'Digest username="x", realm="example.com", bogus')
    assert status(auth, garbage) == 401
    other_realm = _with_header(request("INVITE"), "Proxy-Authorization",
                               'Digest username="a", realm="elsewhere", nonce="n", uri="u", '
                               'response="r", qop=auth, nc=00000001, cnonce="c"')
    assert status(auth, other_realm) == 407
    bad_nc = _with_header(request("REGISTER", "sip:example.com"), "Authorization",
                          'Digest username="alice", realm="example.com", nonce="n", '
                          'uri="sip:example.com", response="r", qop=auth, nc=zz, cnonce="c"')
    with pytest.raises(SipSyntaxError):
        auth.check(bad_nc, SOURCE)
