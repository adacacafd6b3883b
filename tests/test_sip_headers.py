"""Header names and typed header values (RFC 3261 §7.3, §20, §25.1; RFC 3581)."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import (
    COMPACT_FORMS,
    CSeq,
    canonical_name,
    header_key,
    is_token,
    parse_contact,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addr,
    parse_via,
    route_uri,
    split_list,
)
from gateway.sip.uri import AbsoluteUri, SipUri

# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("short", "key"), [
    ("i", "call-id"), ("m", "contact"), ("f", "from"), ("t", "to"), ("v", "via"),
    ("l", "content-length"), ("c", "content-type"), ("k", "supported"), ("s", "subject"),
    ("e", "content-encoding"), ("o", "event"),
])
def test_every_rfc3261_compact_form_expands_in_either_case(short, key):
    assert header_key(short) == key
    assert header_key(short.upper()) == key
    assert COMPACT_FORMS[short] == key


def test_header_names_are_case_insensitive():
    assert header_key("MaX-fOrWaRdS") == header_key("Max-Forwards") == "max-forwards"
    assert header_key("CALL-ID") == "call-id"


def test_unknown_header_names_are_only_lower_cased():
    assert header_key("X-Custom-Thing") == "x-custom-thing"
    assert header_key("C%6Fntact") == "c%6fntact"  # not an escape: an unknown header


def test_canonical_spelling_of_keys():
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("record-route") == "Record-Route"


def test_token_accepts_every_token_character_and_nothing_else():
    assert is_token("!interesting-Method0123456789_*+`.%indeed'~")
    for bad in ("", "a b", "a:b", "a,b", 'a"b', "a/b", "a\n", "\u00e9"):
        assert not is_token(bad), bad


# --- lists ----------------------------------------------------------------------------------


def test_split_list_splits_at_top_level_commas_only():
    value = '"Doe, John" <sip:j@a.com;x="a,b">;p="1,2" , <sip:k@b.com>,sip:c@d.com'
    assert split_list(value) == ['"Doe, John" <sip:j@a.com;x="a,b">;p="1,2"',
                                 "<sip:k@b.com>", "sip:c@d.com"]


def test_split_list_respects_escaped_quotes_inside_quoted_strings():
    value = r'"a \", b" <sip:a@b.com>, <sip:c@d.com>'
    assert split_list(value) == [r'"a \", b" <sip:a@b.com>', "<sip:c@d.com>"]


def test_split_list_of_empty_value_is_empty():
    assert split_list("") == []
    assert split_list("  ") == []


def test_split_list_rejects_empty_elements():
    for value in ("a,,b", "a,", ",a", "SIP/2.0/UDP h;;,;,,"):
        with pytest.raises(SipSyntaxError):
            split_list(value)


# --- name-addr / addr-spec ------------------------------------------------------------------


def test_name_addr_with_quoted_display_name():
    addr = parse_name_addr('"Alice Liddell" <sip:alice@atlanta.com>;tag=1928301774')
    assert addr.display == '"Alice Liddell"'
    assert addr.display_name == "Alice Liddell"
    assert isinstance(addr.uri, SipUri) and addr.uri.user == "alice"
    assert addr.tag == "1928301774"


def test_quoted_display_name_with_escaped_quotes_and_backslashes():
    # RFC 4475 wsinv: "J Rosenberg \\\"" is J Rosenberg, a backslash and a quote.
    addr = parse_name_addr(r'"J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert addr.display_name == 'J Rosenberg \\"'
    assert addr.tag == "98asjd8"
    addr = parse_name_addr(r'"Quoted string \"\"" <sip:jdrosen@example.com>')
    assert addr.display_name == 'Quoted string ""'


def test_quoted_display_name_may_hold_angle_brackets_commas_and_semicolons():
    addr = parse_name_addr('"<sip:evil@x>; a, b" <sip:real@example.net>;tag=7')
    assert isinstance(addr.uri, SipUri) and addr.uri.user == "real"
    assert addr.display_name == "<sip:evil@x>; a, b"
    assert addr.tag == "7"


def test_unquoted_display_name_of_several_tokens():
    addr = parse_name_addr("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>")
    assert addr.display == "token1~` token2'+_ token3*%!.-"


def test_display_name_may_touch_the_angle_bracket():
    # RFC 4475 §3.1.1.6 (lwsdisp): accepted although RFC 3261's grammar wants LWS.
    addr = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert addr.display == "caller" and addr.tag == "323"


def test_name_addr_without_display_name():
    addr = parse_name_addr("<sip:bob@biloxi.com>")
    assert addr.display is None and addr.display_name is None and addr.params == ()


def test_params_after_name_addr_belong_to_the_header_not_the_uri():
    addr = parse_name_addr("<sip:carol@chicago.com;transport=tcp>;expires=60;q=0.5")
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.params == (("transport", "tcp"),)
    assert addr.params == (("expires", "60"), ("q", "0.5"))


def test_params_after_addr_spec_belong_to_the_header():
    # RFC 3261 §20.10; RFC 4475 §3.3.12 (cparam01).
    addr = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam;expires=30")
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.params == ()
    assert addr.params == (("unknownparam", None), ("expires", "30"))
    assert addr.param("unknownparam") == ""
    assert addr.param("EXPIRES") == "30"


def test_header_param_with_quoted_value_holding_separators():
    addr = parse_name_addr('<sip:a@b.com>;+sip.instance="<urn:uuid:1;2,3>";reg-id=1')
    assert addr.param("+sip.instance") == '"<urn:uuid:1;2,3>"'
    assert addr.param("reg-id") == "1"


def test_header_param_with_escaped_quote_in_quoted_value():
    addr = parse_name_addr(r'<sip:a@b.com>;x="a\";b";y=2')
    assert addr.params == (("x", r'"a\";b"'), ("y", "2"))


def test_non_sip_uri_in_name_addr_and_addr_spec():
    assert isinstance(parse_name_addr("<http://www.example.com>;tag=3").uri, AbsoluteUri)
    assert isinstance(parse_name_addr("isbn:2983792873").uri, AbsoluteUri)


def test_name_addr_string_form_round_trips():
    for text in ('"Alice" <sip:alice@atlanta.com>;tag=88', "Bob Smith <sips:bob@b.com:5061>",
                 "<sip:c@d.com;lr>;x", r'"a \"q\"" <tel:+123>;p="v w"'):
        addr = parse_name_addr(text)
        assert parse_name_addr(str(addr)) == addr


@pytest.mark.parametrize("value", [
    "",
    '"Mr. J. User <sip:j.user@example.com>',          # quotbal: unterminated quote
    '"Joe" sip:joe@example.org',                      # quoted display without <>
    "Bell, Alexander <sip:a.g.bell@example.com>",     # baddn: non-token display
    '"Watson, Thomas" < sip:t.watson@example.org >',  # badaspec: LWS inside <>
    "<sip:a@b.com",                                    # missing >
    "<sip:a@b.com> junk",
    "<sip:a@b.com>;",                                  # empty parameter
    "<sip:a@b.com>;;;;",                               # badinv01
    "<sip:a@b.com>;tag=",
    '<sip:a@b.com>;x="open',
    '<sip:a@b.com>;x="a"b',
    "<sip:a@b.com>;x=a b",
    "<>",
    "<sip:a b@c.com>",
    "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct: ? needs <>
    "sip:a@b.com, sip:c@d.com",
    "sip a@b.com",
    "sip:a@b.com>",
    "a\"b <sip:a@b.com>",
])
def test_malformed_addresses_raise_sip_syntax_error(value):
    with pytest.raises(SipSyntaxError):
        parse_name_addr(value)


def test_contact_star_is_a_wildcard():
    assert parse_contact("*").is_wildcard
    assert parse_contact(" * ").address is None
    contact = parse_contact("<sip:a@b.com>;expires=0")
    assert not contact.is_wildcard and contact.address is not None


def test_route_uri_requires_a_sip_uri():
    assert route_uri("<sip:p1.example.com;lr>").host == "p1.example.com"
    with pytest.raises(SipSyntaxError):
        route_uri("<tel:+123>")


# --- Via ------------------------------------------------------------------------------------


def test_via_fields_and_parameters():
    via = parse_via("SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;"
                    "received=192.0.2.1")
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.rport == ""
    assert via.received == "192.0.2.1"
    assert via.sent_by == "pc33.atlanta.com:5066"


def test_via_without_port_defaults_sent_by_to_5060():
    via = parse_via("SIP/2.0/TCP Client.Biloxi.COM;branch=z9hG4bKx")
    assert via.port is None and via.host == "client.biloxi.com"
    assert via.sent_by == "client.biloxi.com:5060"


def test_via_with_lws_everywhere_as_in_rfc4475_wsinv():
    via = parse_via("SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")
    assert (via.transport, via.host, via.branch) == ("UDP", "192.168.255.111", "z9hG4bK30239")
    via = parse_via("SIP/2.0/TCP host.example.com : 5070 ;branch=z9hG4bK1")
    assert via.port == 5070


def test_via_ipv6_sent_by():
    via = parse_via("SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bKas3")
    assert (via.host, via.port) == ("[2001:db8::9:1]", 5061)


def test_via_transport_is_upper_cased_and_unknown_ones_allowed():
    assert parse_via("sip/2.0/udp h.example.com").transport == "UDP"
    assert parse_via("SIP/2.0/UNKNOWN t4.example.com").transport == "UNKNOWN"


def test_via_string_form_round_trips():
    via = parse_via("SIP/2.0/UDP  h.example.com:5060 ;branch=z9hG4bK1;rport;x=\"a b\"")
    assert str(via) == 'SIP/2.0/UDP h.example.com:5060;branch=z9hG4bK1;rport;x="a b"'
    assert parse_via(str(via)) == via


@pytest.mark.parametrize("value", [
    "",
    "SIP/2.0/UDP",
    "SIP/2.0 UDP host",
    "SIP/3.0/UDP host",
    "HTTP/2.0/UDP host",
    "SIP/2.0/UDP host;",
    "SIP/2.0/UDP host;;",
    "SIP/2.0/UDP host;branch",
    "SIP/2.0/UDP host;branch=",
    "SIP/2.0/UDP host;ttl=256",
    "SIP/2.0/UDP host;ttl=\u00b2",
    pytest.param("SIP/2.0/UDP host;ttl=" + "9" * 5000, id="ttl-5000-digits"),
    "SIP/2.0/UDP host;rport=abc",
    "SIP/2.0/UDP host;rport=70000",
    "SIP/2.0/UDP host:port",
    "SIP/2.0/UDP host:\u00b9",
    "SIP/2.0/UDP ho st",
    "SIP/2.0/UDP host junk",
    "SIP/2.0/UDP host,SIP/2.0/UDP other",
    "SIP/2.0/UDP [::1",
])
def test_malformed_via_raises_sip_syntax_error(value):
    with pytest.raises(SipSyntaxError):
        parse_via(value)


# --- CSeq and numbers -----------------------------------------------------------------------


def test_cseq_number_and_method():
    assert parse_cseq("4711 INVITE") == CSeq(4711, "INVITE")
    assert parse_cseq("0009   INVITE") == CSeq(9, "INVITE")  # leading zeros, wide LWS
    assert str(CSeq(1, "REGISTER")) == "1 REGISTER"


def test_cseq_number_must_stay_below_two_to_the_31():
    assert parse_cseq(f"{2**31 - 1} ACK").number == 2**31 - 1
    for number in (str(2**31), "36893488147419103232", "9" * 5000):
        with pytest.raises(SipSyntaxError):
            parse_cseq(f"{number} REGISTER")


@pytest.mark.parametrize("value", [
    "", "INVITE", "1", "1INVITE", "-1 INVITE", "1 INVITE extra", "1 IN/VITE", "\u0661 INVITE",
    "\u00b2 INVITE", "1.5 INVITE",
])
def test_malformed_cseq_raises_sip_syntax_error(value):
    with pytest.raises(SipSyntaxError):
        parse_cseq(value)


def test_delta_seconds_clamps_huge_values():
    assert parse_delta_seconds("3600", "Expires") == 3600
    assert parse_delta_seconds(" 0068 ", "Max-Forwards") == 68
    assert parse_delta_seconds("0" * 50 + "7", "Expires") == 7
    assert parse_delta_seconds("1" + "0" * 100, "Expires") == 2**32 - 1
    assert parse_delta_seconds("9" * 10000, "Expires") == 2**32 - 1  # past int()'s limit


@pytest.mark.parametrize("value", ["", "-1", "+1", "1.0", "one", "1 2", "\u00b2", "\u0663"])
def test_malformed_delta_seconds_raise_sip_syntax_error(value):
    with pytest.raises(SipSyntaxError):
        parse_delta_seconds(value, "Expires")
