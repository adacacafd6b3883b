"""SIP and SIPS URIs (RFC 3261 §19.1) and other absolute URIs."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipSyntaxError
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri, split_host_port, valid_host


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


# --- structure ------------------------------------------------------------------------------


def test_sip_uri_with_user_and_host_only():
    uri = sip("sip:alice@atlanta.com")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip", "alice", None, "atlanta.com", None)
    assert uri.params == () and uri.headers == ()
    assert not uri.secure


def test_sips_uri_is_secure():
    uri = sip("sips:alice@atlanta.com")
    assert uri.scheme == "sips" and uri.secure


def test_uri_with_password_and_port():
    uri = sip("sip:alice:secretword@atlanta.com:5061;transport=tcp")
    assert uri.user == "alice"
    assert uri.password == "secretword"
    assert uri.port == 5061
    assert uri.transport == "tcp"


def test_empty_password_is_kept_apart_from_no_password():
    assert sip("sip:alice:@atlanta.com").password == ""
    assert sip("sip:alice@atlanta.com").password is None


def test_uri_without_user_part():
    uri = sip("sip:registrar.biloxi.com")
    assert uri.user is None and uri.host == "registrar.biloxi.com"


def test_ipv4_host_and_port():
    uri = sip("sip:bob@192.0.2.4:5080")
    assert (uri.host, uri.port) == ("192.0.2.4", 5080)


def test_ipv6_reference_keeps_brackets_and_separates_port():
    uri = sip("sip:bob@[2001:DB8::10]:5070;transport=udp")
    assert uri.host == "[2001:db8::10]"
    assert uri.port == 5070
    assert str(uri) == "sip:bob@[2001:db8::10]:5070;transport=udp"


def test_ipv6_reference_without_port():
    assert sip("sip:[::1]").host == "[::1]"


def test_uri_parameters_keep_order_and_valueless_ones():
    uri = sip("sip:alice@atlanta.com;maddr=239.255.255.1;ttl=15;lr")
    assert uri.params == (("maddr", "239.255.255.1"), ("ttl", "15"), ("lr", None))
    assert uri.param("LR") == ""
    assert uri.param("ttl") == "15"
    assert uri.param("missing") is None


def test_uri_headers_follow_parameters():
    uri = sip("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com&priority=urgent")
    assert uri.params == (("method", "REGISTER"),)
    assert uri.headers == (("to", "alice%40atlanta.com"), ("priority", "urgent"))


def test_uri_header_may_have_an_empty_value():
    assert sip("sip:bob@biloxi.com?subject=&x=1").headers == (("subject", ""), ("x", "1"))


def test_telephone_subscriber_user_with_visual_separators():
    uri = sip("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert uri.user == "+1-212-555-1212"
    assert uri.password == "1234"
    assert uri.param("user") == "phone"


def test_user_part_may_hold_semicolon_and_escaped_at():
    # RFC 4475 §3.1.1.9 (semiuri): the user part is "user;par=u%40example.net".
    uri = sip("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == ()


def test_scheme_and_host_are_case_insensitive_and_normalised():
    uri = sip("SIP:Alice@AtLanTa.CoM")
    assert uri.scheme == "sip"
    assert uri.host == "atlanta.com"
    assert uri.user == "Alice"  # the user part is case-sensitive


def test_string_form_round_trips():
    text = "sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=y"
    assert str(sip(text)) == text
    assert sip(str(sip(text))) == sip(text)


def test_non_sip_scheme_is_kept_as_text():
    uri = parse_uri("tel:+1-201-555-0123")
    assert isinstance(uri, AbsoluteUri)
    assert (uri.scheme, uri.rest) == ("tel", "+1-201-555-0123")
    assert str(uri) == "tel:+1-201-555-0123"
    assert uri.param("user") is None and not uri.secure


# --- address-of-record and comparison -------------------------------------------------------


def test_aor_drops_parameters_port_and_password_and_unescapes_user():
    uri = sip("sips:%61lice:pw@ATLANTA.com:5061;transport=tls")
    assert uri.aor() == "sip:alice@atlanta.com"


def test_aor_keeps_an_escaped_nul_in_the_user_part():
    # RFC 4475 §3.1.1.4 (escnull): the AoR must not be cut short at the NUL.
    assert sip("sip:null-%00-null@example.com").aor() == "sip:null-\x00-null@example.com"


def test_matching_key_equal_for_equivalent_uris():
    a = sip("sip:%61lice@AtLanTa.CoM;Transport=TCP;lr")
    b = sip("sip:alice@atlanta.com;lr;transport=tcp")
    assert a.matching_key() == b.matching_key()


def test_matching_key_differs_for_different_user_or_port():
    base = sip("sip:alice@atlanta.com")
    assert base.matching_key() != sip("sip:ALICE@atlanta.com").matching_key()
    assert base.matching_key() != sip("sip:alice@atlanta.com:5070").matching_key()


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "",
    "sip",
    "sip:",
    "1sip:host",
    "sip:@host",
    "sip:user@",
    "sip:user@host:",
    "sip:user@host:port",
    "sip:user@host:70000",
    "sip:user@host:1234567",
    "sip:user@host:\u00b2",            # a superscript digit: str.isdigit() says yes
    "sip:user@host:\u0661\u0662",      # Arabic-Indic digits
    "sip:user@[::1",
    "sip:user@[::1]x",
    "sip:user@[not:an:address]",
    "sip:user@[fe80::1%25eth0]",
    "sip:user@1.2.3",
    "sip:user@256.1.1.1",
    "sip:user@-host.com",
    "sip:us er@host",
    "sip:user@host;",
    "sip:user@host;a=",
    "sip:user@host;a=b c",
    "sip:user@host;=b",
    "sip:user@host?a",
    "sip:user@host?=b",
    "sip:user@host?a=<b>",
    "sip:<user@host>",
    "<sip:user@host>",
    'sip:"user"@host',
    "sip:user@host\t",
    "sip:user\x00@host",
    "sip:user@ho\x7fst",
    "sip:us%zzer@host",
    "sip:us\u00e9r@host",
    "tel:+1\r\n555",
])
def test_malformed_uri_raises_sip_syntax_error(text):
    with pytest.raises(SipSyntaxError):
        parse_uri(text)


def test_valid_host_accepts_names_ipv4_and_bracketed_ipv6():
    assert valid_host("example.com")
    assert valid_host("example.com.")
    assert valid_host("a-b.example")
    assert valid_host("192.0.2.1")
    assert valid_host("[2001:db8::1]")
    assert valid_host("[::ffff:192.0.2.1]")
    assert not valid_host("")
    assert not valid_host("2001:db8::1")
    assert not valid_host("[]")
    assert not valid_host("a_b.example")
    assert not valid_host("host\n")


def test_split_host_port_lower_cases_and_defaults_port_to_none():
    assert split_host_port("Host.Example.COM") == ("host.example.com", None)
    assert split_host_port("[::1]:5060") == ("[::1]", 5060)
    with pytest.raises(SipSyntaxError):
        split_host_port("host:99999")
