"""Parsing whole messages (RFC 3261 §7, §18.3), typed accessors, serialization, stream
framing for TCP/TLS (RFC 5626 §3.5.1 keep-alives) and error responses."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipSyntaxError
from gateway.sip.message import Request, Response
from gateway.sip.parser import ParseError, StreamFramer, parse_message
from gateway.sip.responses import build_error_response, build_response
from gateway.sip.uri import SipUri


def wire(*lines: str, body: bytes = b"") -> bytes:
    """A message from its start line and header lines (CRLF added), then the body."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


REGISTER_LINES = (
    "REGISTER sip:registrar.biloxi.com SIP/2.0",
    "Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.com>",
    "From: Bob <sip:bob@biloxi.com>;tag=456248",
    "Call-ID: 843817637684230@998sdasdh09",
    "CSeq: 1826 REGISTER",
    "Contact: <sip:bob@192.0.2.4>",
    "Expires: 7200",
    "Content-Length: 0",
)
REGISTER = wire(*REGISTER_LINES)


def request(data: bytes, **kwargs: bool) -> Request:
    message = parse_message(data, **kwargs)
    assert isinstance(message, Request)
    return message


def response(data: bytes, **kwargs: bool) -> Response:
    message = parse_message(data, **kwargs)
    assert isinstance(message, Response)
    return message


def replace_line(lines: tuple[str, ...], prefix: str, new: str | None) -> tuple[str, ...]:
    out = []
    for line in lines:
        if line.startswith(prefix):
            if new is not None:
                out.append(new)
        else:
            out.append(line)
    return tuple(out)


# --- start lines ----------------------------------------------------------------------------


def test_request_line_gives_method_and_uri():
    message = request(REGISTER)
    assert message.method == "REGISTER"
    assert isinstance(message.uri, SipUri) and message.uri.host == "registrar.biloxi.com"
    assert message.start_line() == "REGISTER sip:registrar.biloxi.com SIP/2.0"


def test_status_line_gives_code_and_reason():
    message = response(wire("SIP/2.0 180 Ringing", "Content-Length: 0"))
    assert (message.status, message.reason) == (180, "Ringing")


def test_reason_phrase_may_hold_spaces_and_utf8():
    message = response(wire("SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e", "l: 0"))
    assert message.reason == "= 2**3 * 5**2 \u043d\u043e"


def test_empty_reason_phrase_with_or_without_its_space():
    assert response(wire("SIP/2.0 100 ", "l: 0")).reason == ""
    assert response(wire("SIP/2.0 100", "l: 0")).reason == ""


def test_sip_version_is_case_insensitive_but_sent_upper_case():
    message = request(wire("OPTIONS sip:a@b.com sip/2.0", "l: 0"))
    assert message.start_line() == "OPTIONS sip:a@b.com SIP/2.0"


def test_unknown_method_with_token_characters_is_accepted():
    assert request(wire("RE%47IST%45R sip:a@b.com SIP/2.0", "l: 0")).method == "RE%47IST%45R"


def test_non_sip_request_uri_is_accepted_for_the_core_to_refuse():
    assert str(request(wire("OPTIONS tel:+1-555 SIP/2.0", "l: 0")).uri) == "tel:+1-555"


def test_sip_3_0_request_gets_505_with_headers_for_the_response():
    data = wire("OPTIONS sip:a@b.com SIP/3.0", "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1",
                "To: <sip:a@b.com>", "l: 0")
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status == 505 and info.value.is_request
    reply = build_error_response(info.value.headers, info.value.status, "Version Not Supported")
    assert reply is not None and reply.status == 505
    assert reply.header("via") == "SIP/2.0/UDP h.example.com;branch=z9hG4bK1"
    assert reply.to.tag  # a final response gets a To tag


@pytest.mark.parametrize("start", [
    "INVITE  sip:a@b.com SIP/2.0",        # two spaces (RFC 4475 lwsstart)
    "INVITE sip:a@b.com SIP/2.0  ",       # trailing spaces (RFC 4475 trws)
    "INVITE sip:a@b.com; lr SIP/2.0",     # LWS in the URI (RFC 4475 lwsruri)
    "INVITE <sip:a@b.com> SIP/2.0",       # <> around the URI (RFC 4475 ltgtruri)
    "INVITE sip:a@b.com?Route=x SIP/2.0",  # headers in the Request-URI (RFC 4475 escruri)
    "INVITE sip:a@b.com",
    "INVITE",
    "IN/VITE sip:a@b.com SIP/2.0",
    "INVITE sip:a@b.com HTTP/1.1",
    "INVITE sip:a@b.com SIP/2",
])
def test_bad_request_line_gives_400_with_the_parsed_headers(start):
    data = wire(start, "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1", "l: 0")
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.is_request and info.value.status == 400
    assert [k for k, _, _ in info.value.headers] == ["via", "content-length"]


@pytest.mark.parametrize("start", [
    "SIP/2.0 4294967301 better not break the receiver",  # RFC 4475 bigcode
    "SIP/2.0 700 Too Big", "SIP/2.0 099 Small", "SIP/2.0 20 OK", "SIP/2.0 2000 OK",
    "SIP/3.0 200 OK", "SIP/2.0200 OK",
])
def test_bad_status_line_is_a_parse_error_not_answered(start):
    with pytest.raises(ParseError) as info:
        parse_message(wire(start, "l: 0"))
    assert not info.value.is_request


def test_crlfs_before_the_start_line_are_ignored():
    assert request(b"\r\n\r\n" + REGISTER) == request(REGISTER)


# --- headers --------------------------------------------------------------------------------


def test_compact_and_long_names_are_the_same_header():
    message = request(wire(
        "INVITE sip:a@b.com SIP/2.0", "v: SIP/2.0/UDP h1.example.com;branch=z9hG4bK1",
        "Via: SIP/2.0/UDP h2.example.com;branch=z9hG4bK2", "f: <sip:x@y.com>;tag=1",
        "t: <sip:a@b.com>", "i: abc@h1", "m: <sip:x@h1.example.com>", "c: application/sdp",
        "k: path", "s: hello", "e: gzip", "o: presence", "l: 0"))
    assert [v.host for v in message.vias] == ["h1.example.com", "h2.example.com"]
    assert message.from_.tag == "1"
    assert message.to.uri == message.uri
    assert message.call_id == "abc@h1"
    assert len(message.contacts) == 1
    assert message.header("Content-Type") == "application/sdp"
    assert message.option_tags("Supported") == ["path"]
    assert message.header("subject") == "hello"
    assert message.header("content-encoding") == "gzip"
    assert message.header("Event") == "presence"
    assert message.content_length == 0


def test_header_lookup_ignores_case_and_keeps_the_written_name():
    message = request(wire("OPTIONS sip:a@b.com SIP/2.0", "MaX-fOrWaRdS: 0068", "l: 0"))
    assert message.max_forwards == 68
    assert message.header("max-forwards") == "0068"
    assert message.headers[0] == ("max-forwards", "MaX-fOrWaRdS", "0068")


def test_whitespace_around_the_colon_is_allowed():
    message = request(wire("OPTIONS sip:a@b.com SIP/2.0", "Call-ID  :   x@y  ", "l :0"))
    assert message.call_id == "x@y"
    assert message.headers[0][1] == "Call-ID"


def test_folded_header_lines_are_unfolded_with_space_or_tab():
    message = request(wire(
        "OPTIONS sip:a@b.com SIP/2.0",
        "Subject: first",
        " second",
        "\tthird",
        "cseq: 0009",
        "  OPTIONS",
        "Route:",
        " <sip:p1.example.com;lr>",
        "l: 0"))
    assert message.header("subject") == "first second third"
    assert message.cseq.number == 9 and message.cseq.method == "OPTIONS"
    assert message.routes[0].uri == SipUri("sip", None, None, "p1.example.com", None,
                                           (("lr", None),))


def test_folding_with_bare_lf_line_ends_on_udp():
    data = b"OPTIONS sip:a@b.com SIP/2.0\nSubject: a\n b\nl: 0\n\n"
    assert request(data).header("subject") == "a b"


def test_whitespace_before_the_first_header_is_an_error():
    with pytest.raises(ParseError):
        parse_message(wire("OPTIONS sip:a@b.com SIP/2.0", " Via: SIP/2.0/UDP h", "l: 0"))


def test_empty_header_value_is_kept():
    message = request(wire("OPTIONS sip:a@b.com SIP/2.0", "s :", "l: 0"))
    assert message.header("subject") == ""
    assert message.has_header("Subject")


def test_list_values_in_one_line_and_across_lines_keep_their_order():
    message = request(wire(
        "INVITE sip:a@b.com SIP/2.0",
        "Via: SIP/2.0/UDP h1.example.com;branch=z9hG4bK1, SIP/2.0/TCP h2.example.com",
        "Record-Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>",
        "Contact: \"A, B\" <sip:a@h1.example.com>, <sip:b@h2.example.com>;q=0.5",
        "Route: <sip:p1.example.com;lr>",
        "Via: SIP/2.0/UDP h3.example.com",
        "Route: <sip:p2.example.com;lr>,<sip:p3.example.com;lr>",
        "Contact: sip:c@h3.example.com;expires=60",
        "Record-Route: <sip:r3.example.com;lr>",
        "l: 0"))
    assert [v.host for v in message.vias] == ["h1.example.com", "h2.example.com",
                                              "h3.example.com"]
    assert [r.uri.host for r in message.routes] == ["p1.example.com", "p2.example.com",
                                                    "p3.example.com"]
    assert [r.uri.host for r in message.record_routes] == ["r1.example.com", "r2.example.com",
                                                           "r3.example.com"]
    contacts = [c.address for c in message.contacts]
    assert [a.uri.user for a in contacts if a] == ["a", "b", "c"]
    assert contacts[0] is not None and contacts[0].display_name == "A, B"
    assert contacts[2] is not None and contacts[2].param("expires") == "60"
    assert message.header_values("route") == ["<sip:p1.example.com;lr>",
                                              "<sip:p2.example.com;lr>",
                                              "<sip:p3.example.com;lr>"]


def test_contact_star():
    message = request(wire(*REGISTER_LINES[:-3], "Contact: *", "Expires: 0", "l: 0"))
    assert [c.is_wildcard for c in message.contacts] == [True]
    assert message.expires == 0


def test_absent_optional_headers_read_as_none_or_empty():
    message = request(wire("OPTIONS sip:a@b.com SIP/2.0"))
    assert message.expires is None and message.max_forwards is None
    assert message.content_length is None
    assert message.contacts == [] and message.vias == [] and message.routes == []
    assert message.header("x-nothing") is None and message.header_values("accept") == []


@pytest.mark.parametrize(("accessor", "key"), [
    ("from_", "From"), ("to", "To"), ("call_id", "Call-ID"), ("cseq", "CSeq"),
])
def test_missing_required_header_raises_sip_syntax_error(accessor, key):
    message = request(wire(*replace_line(REGISTER_LINES, key + ":", None)))
    with pytest.raises(SipSyntaxError, match="missing"):
        getattr(message, accessor)


@pytest.mark.parametrize(("accessor", "line"), [
    ("from_", "From: <sip:other@biloxi.com>;tag=9"),
    ("to", "t: <sip:other@biloxi.com>"),
    ("call_id", "i: other-call-id"),
    ("cseq", "CSeq: 1827 REGISTER"),
    ("max_forwards", "Max-Forwards: 69"),
    ("expires", "Expires: 60"),
])
def test_repeated_single_value_header_raises_sip_syntax_error(accessor, line):
    # RFC 4475 §3.3.8 (multi01): a second CSeq, Call-ID, To, From … is a 400.
    message = request(wire(*REGISTER_LINES[:-1], line, "Content-Length: 0"))
    with pytest.raises(SipSyntaxError, match="more than one"):
        getattr(message, accessor)


@pytest.mark.parametrize(("accessor", "line"), [
    ("cseq", "CSeq: 1826"),
    ("cseq", "CSeq: 2147483648 REGISTER"),
    ("cseq", "CSeq: x REGISTER"),
    ("max_forwards", "Max-Forwards: 256"),
    ("max_forwards", "Max-Forwards: -1"),
    ("max_forwards", "Max-Forwards: seventy"),
    ("expires", "Expires: soon"),
    ("expires", "Expires: -5"),
    ("expires", "Expires: Thu, 01 Dec 1994 16:00:00 GMT"),
    ("call_id", "Call-ID: has space"),
    ("call_id", "Call-ID:"),
    ("call_id", "Call-ID: bell\x07"),
    ("call_id", "Call-ID: caf\u00e9"),
    ("from_", "From: Bell, Alexander <sip:a@b.com>;tag=1"),
    ("to", "To: <sip:bob@biloxi.com"),
    ("contacts", "Contact: <sip:bob@192.0.2.4>;;"),
    ("vias", "Via: SIP/2.0/UDP h;;,;,,"),
])
def test_malformed_typed_header_raises_sip_syntax_error(accessor, line):
    prefix = line.split(":")[0] + ":"
    message = request(wire(*replace_line(REGISTER_LINES, prefix, line)))
    with pytest.raises(SipSyntaxError):
        getattr(message, accessor)


def test_huge_expires_is_clamped_and_huge_max_forwards_refused():
    message = request(wire(*replace_line(REGISTER_LINES, "Expires:", "Expires: 1" + "0" * 99)))
    assert message.expires == 2**32 - 1
    message = request(wire(*replace_line(REGISTER_LINES, "Max-Forwards:",
                                         "Max-Forwards: " + "9" * 6000)))
    with pytest.raises(SipSyntaxError):
        message.max_forwards  # noqa: B018


def test_typed_values_are_cached_until_headers_change():
    message = request(REGISTER)
    assert message.vias is message.vias
    message.replace_first_value("via", "SIP/2.0/TCP new.example.com;branch=z9hG4bKnew")
    assert message.vias[0].host == "new.example.com"
    message.set_header("Expires", "60")
    assert message.expires == 60


def test_replace_first_value_splits_a_multi_value_line():
    message = request(wire("OPTIONS sip:a@b.com SIP/2.0",
                           "Via: SIP/2.0/UDP a.example.com, SIP/2.0/UDP b.example.com", "l: 0"))
    message.replace_first_value("via", "SIP/2.0/UDP a.example.com;received=192.0.2.1")
    assert message.header_values("via") == ["SIP/2.0/UDP a.example.com;received=192.0.2.1",
                                            "SIP/2.0/UDP b.example.com"]


def test_unknown_headers_are_preserved_verbatim_and_in_order():
    lines = ("OPTIONS sip:a@b.com SIP/2.0", "X-First: 1", "NewFangledHeader:   newfangled value",
             "UnknownHeaderWithUnusualValue: ;;,,;;,;", "Via: SIP/2.0/UDP h.example.com",
             "extensionHeader-!.%*+_`'~: \ufeff\u5927\u505c\u96fb", "C%6Fntact: <sip:x@y.com>",
             "l: 0")
    message = request(wire(*lines))
    assert [(n, v) for _, n, v in message.headers] == [
        ("X-First", "1"), ("NewFangledHeader", "newfangled value"),
        ("UnknownHeaderWithUnusualValue", ";;,,;;,;"), ("Via", "SIP/2.0/UDP h.example.com"),
        ("extensionHeader-!.%*+_`'~", "\ufeff\u5927\u505c\u96fb"),
        ("C%6Fntact", "<sip:x@y.com>"), ("l", "0")]
    assert message.contacts == []  # C%6Fntact is not Contact


def test_invalid_utf8_in_an_unknown_header_survives_re_serialization():
    data = b"OPTIONS sip:a@b.com SIP/2.0\r\nX-Raw: \xff\xfe\x80ok\r\nl: 0\r\n\r\n"
    assert request(data).serialize() == data


def test_re_serialization_reproduces_a_plainly_written_message():
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    data = wire("INVITE sip:bob@biloxi.com SIP/2.0",
                "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
                "To: Bob <sip:bob@biloxi.com>", "From: Alice <sip:alice@atlanta.com>;tag=1928",
                "Call-ID: a84b4c76e66710@pc33.atlanta.com", "CSeq: 314159 INVITE",
                "X-Unknown: keep ; me ,, as is", "Content-Type: application/sdp",
                f"Content-Length: {len(body)}", body=body)
    message = request(data)
    assert message.serialize() == data
    assert parse_message(message.serialize()) == message


def test_re_serialization_of_folded_and_spaced_headers_is_equivalent():
    data = b"OPTIONS sip:a@b.com SIP/2.0\r\nSubject : a\r\n b\r\nl:0\r\n\r\n"
    message = request(data)
    assert message.serialize() == b"OPTIONS sip:a@b.com SIP/2.0\r\nSubject: a b\r\nl: 0\r\n\r\n"
    assert parse_message(message.serialize()) == message


# --- NUL, CR and broken lines ---------------------------------------------------------------


def test_nul_byte_in_a_header_is_a_parse_error_answered_without_that_header():
    data = wire("OPTIONS sip:a@b.com SIP/2.0", "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1",
                "Subject: a\x00b", "l: 0")
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.is_request
    assert [k for k, _, _ in info.value.headers] == ["via", "content-length"]


def test_escaped_nul_inside_a_quoted_display_name_is_accepted():
    # RFC 4475 §3.1.1.2 (intmeth): quoted-pair may escape NUL.
    data = wire("OPTIONS sip:a@b.com SIP/2.0", 'To: "NUL:\\\x00 end" <sip:a@b.com>', "l: 0")
    assert request(data).to.display_name == "NUL:\x00 end"


def test_nul_bytes_in_the_body_are_fine():
    body = b"\x00\x01\x00\r\n\r\n\x00"
    message = request(wire("MESSAGE sip:a@b.com SIP/2.0", f"l: {len(body)}", body=body))
    assert message.body == body


def test_bare_cr_in_the_head_is_a_parse_error():
    data = b"OPTIONS sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/UDP h\rX: 1\r\nl: 0\r\n\r\n"
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.headers == [("content-length", "l", "0")]


@pytest.mark.parametrize("line", ["no colon here", ": no name", "bad name: x", "Via"])
def test_bad_header_line_is_a_parse_error_keeping_the_good_lines(line):
    data = wire("OPTIONS sip:a@b.com SIP/2.0", line, "Via: SIP/2.0/UDP h.example.com", "l: 0")
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.is_request
    assert [k for k, _, _ in info.value.headers] == ["via", "content-length"]
    assert build_error_response(info.value.headers, 400, "Bad Request") is not None


def test_message_without_blank_line_is_a_parse_error():
    with pytest.raises(ParseError) as info:
        parse_message(b"OPTIONS sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com\r\nl: 0")
    assert info.value.is_request and info.value.headers[0][0] == "via"


def test_message_ending_after_the_last_header_line_is_accepted_on_udp():
    assert request(b"OPTIONS sip:a@b.com SIP/2.0\r\nl: 0\r\n").header("l") == "0"


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"\x00", b"garbage"])
def test_empty_or_garbage_datagrams_are_parse_errors(data):
    with pytest.raises(ParseError):
        parse_message(data)


# --- Content-Length -------------------------------------------------------------------------


def test_udp_without_content_length_takes_the_rest_of_the_datagram():
    message = request(wire("MESSAGE sip:a@b.com SIP/2.0", body=b"hello\r\n"))
    assert message.body == b"hello\r\n"
    assert message.content_length is None


def test_udp_content_length_smaller_than_the_body_truncates_it():
    # RFC 3261 §18.3: octets beyond Content-Length are discarded (RFC 4475 dblreq).
    message = request(wire("MESSAGE sip:a@b.com SIP/2.0", "Content-Length: 5",
                           body=b"helloINVITE sip:x SIP/2.0\r\n"))
    assert message.body == b"hello"


def test_content_length_larger_than_the_body_is_a_parse_error():
    with pytest.raises(ParseError) as info:
        parse_message(wire("MESSAGE sip:a@b.com SIP/2.0", "Via: SIP/2.0/UDP h",
                           "Content-Length: 9999", body=b"short"))
    assert info.value.is_request and info.value.headers[0][0] == "via"


def test_conflicting_content_lengths_are_a_parse_error():
    with pytest.raises(ParseError, match="conflicting"):
        parse_message(wire("MESSAGE sip:a@b.com SIP/2.0", "Content-Length: 3", "l: 5",
                           body=b"hello"))


def test_repeated_equal_content_lengths_are_accepted():
    message = request(wire("MESSAGE sip:a@b.com SIP/2.0", "Content-Length: 5", "l: 005",
                           body=b"hello"))
    assert message.body == b"hello"


@pytest.mark.parametrize("value", ["-999", "five", "", "1.0", "+5", "\u00b2", "\u0665",
                                   pytest.param("1" * 5000, id="5000-digits")])
def test_malformed_content_length_is_a_parse_error(value):
    with pytest.raises(ParseError):
        parse_message(wire("MESSAGE sip:a@b.com SIP/2.0", f"Content-Length: {value}",
                           body=b"hello"))


def test_framed_message_with_a_body_needs_content_length():
    with pytest.raises(ParseError, match="missing Content-Length"):
        parse_message(wire("MESSAGE sip:a@b.com SIP/2.0", body=b"hello"), framed=True)
    assert request(wire("OPTIONS sip:a@b.com SIP/2.0"), framed=True).body == b""


def test_content_length_accessor_reads_the_header():
    assert request(wire("MESSAGE sip:a@b.com SIP/2.0", "l: 5", body=b"hello")).content_length == 5


# --- stream framing -------------------------------------------------------------------------


def msg(n: int, body: bytes = b"") -> bytes:
    return wire(f"OPTIONS sip:u{n}@example.com SIP/2.0", f"Content-Length: {len(body)}",
                body=body)


def test_framer_yields_several_messages_from_one_feed():
    data = msg(1) + msg(2, b"body\r\n\r\nwith blank line") + msg(3)
    assert StreamFramer(65535).feed(data) == [msg(1), msg(2, b"body\r\n\r\nwith blank line"),
                                              msg(3)]


def test_framer_assembles_a_message_from_one_byte_feeds():
    data = msg(1, b"x" * 100) + msg(2)
    framer = StreamFramer(65535)
    items = [item for byte in data for item in framer.feed(bytes([byte]))]
    assert items == [msg(1, b"x" * 100), msg(2)]


def test_framer_reports_crlfcrlf_keep_alives_and_drops_lone_crlf():
    framer = StreamFramer(65535)
    assert framer.feed(b"\r\n\r\n") == [b"\r\n\r\n"]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [b"\r\n\r\n"]  # a ping split across two reads
    assert framer.feed(b"\r\n" + msg(1) + b"\r\n\r\n" + msg(2)) == [msg(1), b"\r\n\r\n", msg(2)]


def test_framer_waits_for_the_body():
    framer = StreamFramer(65535)
    data = msg(1, b"0123456789")
    assert framer.feed(data[:-3]) == []
    assert framer.feed(data[-3:]) == [data]


def test_framer_reads_compact_and_folded_content_length():
    framer = StreamFramer(65535)
    a = b"OPTIONS sip:a@b.com SIP/2.0\r\nl : 3\r\n\r\nabc"
    b = b"OPTIONS sip:a@b.com SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nxy"
    assert framer.feed(a + b) == [a, b]
    assert request(b, framed=True).body == b"xy"


def test_framer_oversize_headers_raise_parse_error():
    framer = StreamFramer(1000)
    with pytest.raises(ParseError, match="too large"):
        framer.feed(b"OPTIONS sip:a@b.com SIP/2.0\r\nX: " + b"a" * 2000)


def test_framer_oversize_content_length_raises_parse_error():
    with pytest.raises(ParseError, match="too large"):
        StreamFramer(1000).feed(wire("OPTIONS sip:a@b.com SIP/2.0", "Content-Length: 5000"))
    with pytest.raises(ParseError):
        StreamFramer(1000).feed(wire("OPTIONS sip:a@b.com SIP/2.0", "l: " + "9" * 5000))


def test_framer_missing_content_length_raises_parse_error():
    with pytest.raises(ParseError, match="missing Content-Length"):
        StreamFramer(65535).feed(wire("OPTIONS sip:a@b.com SIP/2.0", "Via: SIP/2.0/TCP h"))


@pytest.mark.parametrize("value", [b"-1", b"five", b"\xc2\xb2", b"1 2"])
def test_framer_bad_content_length_raises_parse_error(value):
    with pytest.raises(ParseError):
        StreamFramer(65535).feed(b"OPTIONS sip:a@b.com SIP/2.0\r\nl: " + value + b"\r\n\r\n")


def test_framer_conflicting_content_lengths_raise_parse_error():
    with pytest.raises(ParseError, match="conflicting"):
        StreamFramer(65535).feed(wire("OPTIONS sip:a@b.com SIP/2.0", "l: 1", "l: 2",
                                      body=b"ab"))


# --- responses ------------------------------------------------------------------------------


def test_build_response_copies_the_dialog_headers_and_adds_a_to_tag():
    req = request(REGISTER)
    reply = build_response(req, 200, headers=[("Contact", "<sip:bob@192.0.2.4>;expires=7200")])
    assert (reply.status, reply.reason) == (200, "OK")
    assert reply.header_values("via") == req.header_values("via")
    assert reply.call_id == req.call_id and reply.cseq == req.cseq
    assert reply.from_ == req.from_
    assert reply.to.uri == req.to.uri and reply.to.tag
    assert reply.content_length == 0
    assert parse_message(reply.serialize()) == reply


def test_provisional_100_gets_no_to_tag_and_existing_tags_are_kept():
    req = request(REGISTER)
    assert build_response(req, 100).to.tag is None
    tagged = request(wire(*replace_line(REGISTER_LINES, "To:", "To: <sip:bob@biloxi.com>;tag=x")))
    assert build_response(tagged, 486).to.tag == "x"


def test_build_error_response_needs_a_via():
    assert build_error_response([("to", "To", "<sip:a@b.com>")], 400, "Bad Request") is None


def test_top_via_parses_only_the_first_hop_and_agrees_with_vias() -> None:
    message = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa, "
        b"SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bKb\r\nVia: garbage\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert message.top_via.branch == "z9hG4bKa" and message.top_via.port == 5070
    with pytest.raises(SipSyntaxError):
        message.vias  # noqa: B018 - the third hop is malformed; top_via never read it
    empty = parse_message(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(SipSyntaxError):
        empty.top_via  # noqa: B018
