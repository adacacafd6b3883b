"""Property-based tests of the message layer (hypothesis).

1. Generated requests and responses survive ``parse_message(m.serialize()) == m``.
2. ``StreamFramer`` yields the same items for any split of a concatenated stream.
3. No input makes the parser, the framer, a typed accessor or the response builders
   raise anything but :class:`ParseError` / :class:`SipSyntaxError` (``ValueError``
   subclasses the transports and the core turn into a 400 or a drop).
"""

from __future__ import annotations

import contextlib
import re
import string
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import (
    COMPACT_FORMS,
    header_key,
    parse_contact,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addr,
    parse_via,
    split_list,
)
from gateway.sip.message import Request, Response, SipMessage
from gateway.sip.parser import ParseError, StreamFramer, parse_message
from gateway.sip.responses import build_error_response, build_response
from gateway.sip.uri import SipUri, parse_uri

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"
PASSWORD_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,"
PARAM_CHARS = string.ascii_letters + string.digits + "-_.!~*'()[]/:&+$"
HEADER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()[]/:+$"

# --- strategies -----------------------------------------------------------------------------

escaped = st.integers(0, 255).map(lambda n: f"%{n:02X}")


def escaped_text(chars: str, min_size: int, max_size: int = 8) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(chars), escaped), min_size=min_size,
                    max_size=max_size).map("".join)


tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(lambda labels, top: ".".join([*labels, top]),
                      st.lists(label, max_size=3),
                      st.from_regex(r"[a-z](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True))
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.one_of(st.none(), st.integers(0, 65535))
uri_params = st.lists(st.tuples(escaped_text(PARAM_CHARS, 1),
                                st.one_of(st.none(), escaped_text(PARAM_CHARS, 1))),
                      max_size=3)
uri_headers = st.lists(st.tuples(escaped_text(HEADER_CHARS, 1), escaped_text(HEADER_CHARS, 0)),
                       max_size=2)


@st.composite
def sip_uri_texts(draw: st.DrawFn, with_headers: bool = True) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    userinfo = ""
    if draw(st.booleans()):
        userinfo = draw(escaped_text(USER_CHARS, 1))
        if draw(st.booleans()):
            userinfo += ":" + draw(escaped_text(PASSWORD_CHARS, 0))
        userinfo += "@"
    port = draw(ports)
    text = f"{scheme}:{userinfo}{draw(hosts)}" + ("" if port is None else f":{port}")
    text += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in draw(uri_params))
    if with_headers:
        pairs = draw(uri_headers)
        if pairs:
            text += "?" + "&".join(f"{k}={v}" for k, v in pairs)
    return text


request_uris = st.one_of(sip_uri_texts(with_headers=False),
                         st.from_regex(r"tel:\+[0-9]{1,12}", fullmatch=True),
                         st.from_regex(r"urn:[a-z]{1,8}:[a-z0-9.-]{1,12}", fullmatch=True))

methods = st.one_of(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER",
                                     "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO"]), tokens)

KNOWN_NAMES = ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Expires",
               "Route", "Record-Route", "Content-Type", "Supported", "Require", "Subject",
               "User-Agent", "Allow", "Accept", "Path", "Authorization", "Date"]
COMPACT = [short for short, key in COMPACT_FORMS.items() if key != "content-length"]


def spellings(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper()])


header_names = st.one_of(
    st.sampled_from(KNOWN_NAMES).flatmap(spellings),
    st.sampled_from(COMPACT).flatmap(spellings),
    tokens.filter(lambda name: header_key(name) != "content-length"),
)
# Any text that can stand on one header line: no CR, LF or NUL (Cc also drops other
# controls), no surrogates, no SP/HT at either end (the parser trims those).
header_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
                        | st.sampled_from(" \t,;:<>\"\\"), max_size=40
                        ).map(lambda text: text.strip(" \t"))
headers_lists = st.lists(st.tuples(header_names, header_values), max_size=10)
reasons = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20)
bodies = st.binary(max_size=120)
length_names = st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "l", "L"])


def with_length(headers: list[tuple[str, str]], body: bytes, name: str | None,
                ) -> list[tuple[str, str, str]]:
    lines = [(header_key(n), n, v) for n, v in headers]
    if name is not None:
        lines.append((header_key(name), name, str(len(body))))
    return lines


@st.composite
def messages(draw: st.DrawFn, need_length: bool = False) -> SipMessage:
    body = draw(bodies)
    name = draw(length_names) if need_length or draw(st.booleans()) else None
    headers = with_length(draw(headers_lists), body, name)
    if draw(st.booleans()):
        return Request(draw(methods), parse_uri(draw(request_uris)), headers, body)
    return Response(draw(st.integers(100, 699)), draw(reasons), headers, body)


# --- 1. round trips -------------------------------------------------------------------------


@SETTINGS
@given(sip_uri_texts())
def test_generated_sip_uri_round_trips_through_its_string_form(text):
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri


@SETTINGS
@given(messages())
def test_generated_message_round_trips_through_serialize_and_parse(message):
    data = message.serialize()
    assert parse_message(data) == message
    if message.content_length is not None or not message.body:
        assert parse_message(data, framed=True) == message


@SETTINGS
@given(st.builds(lambda display, uri, params: (display, uri, params),
                 st.one_of(st.none(), tokens, st.text(st.characters(
                     codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=12).map(
                     lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')),
                 sip_uri_texts(),
                 st.lists(st.tuples(tokens, st.one_of(st.none(), tokens)), max_size=3)))
def test_generated_name_addr_round_trips(parts):
    display, uri, params = parts
    text = (f"{display} " if display else "") + f"<{uri}>" + "".join(
        f";{k}" if v is None else f";{k}={v}" for k, v in params)
    addr = parse_name_addr(text)
    assert str(addr.uri) == uri
    assert addr.params == tuple(params)
    assert parse_name_addr(str(addr)) == addr


@SETTINGS
@given(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]), hosts, ports,
       st.lists(st.tuples(tokens, st.one_of(st.none(), tokens)), max_size=3))
def test_generated_via_round_trips(transport, host, port, params):
    params = [(k, v) for k, v in params if k.lower() not in ("branch", "ttl", "rport")]
    via = parse_via(f"SIP/2.0/{transport} {host}" + ("" if port is None else f":{port}")
                    + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params))
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port,
                                                              tuple(params))
    assert parse_via(str(via)) == via


# --- 2. stream framing ----------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A stream of messages with CRLFCRLF pings between them and an occasional lone
    CRLF pong just before a message, and the items a framer should return for it."""
    data, items = b"", []
    for message in draw(st.lists(messages(need_length=True), min_size=1, max_size=4)):
        if draw(st.booleans()):
            data += b"\r\n"  # a pong: dropped
        wire = message.serialize()
        data += wire
        items.append(wire)
        for _ in range(draw(st.integers(0, 2))):
            data += b"\r\n\r\n"
            items.append(b"\r\n\r\n")
    return data, items


@SETTINGS
@given(streams(), st.data())
def test_framer_gives_the_same_items_for_any_split(stream, data):
    wire, expected = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    framer = StreamFramer(65535)
    items: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        items.extend(framer.feed(wire[start:end]))
    assert items == expected
    assert StreamFramer(65535).feed(wire) == expected
    for item in items:
        if item != b"\r\n\r\n":
            assert parse_message(item, framed=True).serialize() == item


def test_framer_byte_by_byte_matches_one_feed():
    message = Request("OPTIONS", parse_uri("sip:a@b.com"),
                      [("content-length", "l", "3")], b"abc").serialize()
    wire = b"\r\n\r\n" + message + b"\r\n" + message + b"\r\n\r\n"
    framer = StreamFramer(65535)
    items = [item for byte in wire for item in framer.feed(bytes([byte]))]
    assert items == StreamFramer(65535).feed(wire) == [b"\r\n\r\n", message, message,
                                                       b"\r\n\r\n"]


# --- 3. nothing but ParseError / SipSyntaxError ---------------------------------------------

TORTURE_DIR = Path(__file__).parent / "sip_torture"


def _decode_rfc4475(text: bytes) -> bytes:
    """The RFC 4475 §2 conventions (as in test_sip_torture.decode_rfc4475)."""
    text = re.sub(rb"<allOneLine>\n(.*?)\n</allOneLine>\n?",
                  lambda m: m.group(1).replace(b"\n", b"") + b"\n", text, flags=re.DOTALL)
    text = text.replace(b"\n", b"\r\n")
    return re.sub(rb"<hex>([0-9A-Fa-f]*)</hex>", lambda m: bytes.fromhex(m.group(1).decode()),
                  text)


SEEDS = [_decode_rfc4475(path.read_bytes()) for path in sorted(TORTURE_DIR.glob("*.dat"))]
SPECIALS = [b"\r", b"\n", b"\r\n", b"\x00", b":", b"<", b">", b'"', b",", b";", b"\\",
            b" ", b"\t", b"\r\n ", b"\r\n\r\n", b"%", b"@", b"\xff", b"\xc2\xb2", b"9" * 12]


def _touch_address(addr) -> None:
    if addr is None:
        return
    str(addr)
    addr.param("tag"), addr.param("expires"), addr.display_name  # noqa: B018
    if isinstance(addr.uri, SipUri):
        addr.uri.aor(), addr.uri.matching_key(), addr.uri.transport  # noqa: B018


def exercise_message(message: Request | Response, depth: int = 0) -> None:
    """Read everything the core and the registrar may read; only SipSyntaxError may
    come out of the typed accessors. A parsed message must also re-parse to itself."""
    def attempt(read):
        try:
            return read()
        except SipSyntaxError:
            return None

    for via in attempt(lambda: message.vias) or []:
        str(via), via.sent_by, via.branch, via.rport, via.received  # noqa: B018
    _touch_address(attempt(lambda: message.from_))
    _touch_address(attempt(lambda: message.to))
    for contact in attempt(lambda: message.contacts) or []:
        _touch_address(contact.address)
    for addr in (attempt(lambda: message.routes) or []) + (
            attempt(lambda: message.record_routes) or []):
        _touch_address(addr)
    for name in ("call_id", "cseq", "max_forwards", "expires", "content_length"):
        attempt(lambda name=name: getattr(message, name))
    for key in {key for key, _, _ in message.headers}:
        attempt(lambda key=key: message.header_values(key))
    attempt(lambda: message.option_tags("require"))
    assert parse_message(message.serialize()) == message
    if isinstance(message, Request) and depth == 0:
        reply = build_response(message, 400, "Bad Request")
        exercise_bytes(reply.serialize(), depth + 1)


def exercise_bytes(data: bytes, depth: int = 0) -> None:
    for framed in (False, True):
        try:
            message = parse_message(data, framed=framed)
        except ParseError as error:
            assert isinstance(error, SipSyntaxError) and error.status in (400, 505)
            if error.is_request:
                reply = build_error_response(error.headers, error.status, "Bad Request")
                if reply is not None:
                    assert parse_message(reply.serialize()) == reply
            continue
        exercise_message(message, depth)
    framer = StreamFramer(4096)
    try:
        items = framer.feed(data) + framer.feed(data)
    except ParseError:
        return
    for item in items:
        if item != b"\r\n\r\n":
            with contextlib.suppress(ParseError):
                exercise_message(parse_message(item, framed=True), depth)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_parse_errors(data):
    exercise_bytes(data)


@SETTINGS
@given(st.lists(st.sampled_from(SPECIALS) | st.text(max_size=12).map(str.encode)
                | st.sampled_from([b"INVITE sip:a@b.com SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n",
                                   b"Via: ", b"Contact: ", b"To: ", b"l: ", b"CSeq: "]),
                max_size=25).map(b"".join))
def test_random_sip_like_fragments_only_raise_parse_errors(data):
    exercise_bytes(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS) | messages().map(lambda m: m.serialize())))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if operation == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.sampled_from(SPECIALS))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 8))]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_valid_messages_only_raise_parse_errors(data):
    exercise_bytes(data)


sip_text = st.lists(st.sampled_from(["sip:", "sips:", "tel:", "<", ">", '"', "\\", ";", ",", "=",
                                     "?", "&", "@", ":", "[", "]", "%", "%4", " ", "\t", "*",
                                     "SIP/2.0/UDP ", "tag", "1", "a", "example.com", "::1",
                                     "\u00b2", "\u0661", "\x00", "9" * 12])
                    | st.text(max_size=4), max_size=20).map("".join)


@SETTINGS
@given(sip_text)
def test_header_value_parsers_only_raise_sip_syntax_error(text):
    for parse in (parse_uri, parse_name_addr, parse_contact, parse_via, parse_cseq, split_list,
                  lambda t: parse_delta_seconds(t, "Expires")):
        try:
            value = parse(text)
        except SipSyntaxError:
            continue
        if isinstance(value, SipUri):
            assert parse_uri(str(value)) == value
            value.aor(), value.matching_key()  # noqa: B018
        elif parse is parse_name_addr:
            assert parse_name_addr(str(value)) == value
        elif parse is parse_via:
            assert parse_via(str(value)) == value


def test_every_torture_seed_is_exercised():
    assert len(SEEDS) >= 40
    for data in SEEDS:
        exercise_bytes(data)


def test_pathological_long_inputs_parse_in_linear_time():
    n = 60_000
    cases = [
        b"OPTIONS sip:" + b"a" * n + b"! SIP/2.0\r\n\r\n",
        b"OPTIONS sip:" + b"a-" * (n // 2) + b"! SIP/2.0\r\n\r\n",
        b"OPTIONS sip:" + b"a." * (n // 2) + b"-.com SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/UDP " + b"a:1" * (n // 3) + b" x\r\n\r\n",
        b"OPTIONS sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/UDP" + b" " * n + b"h x\r\n\r\n",
        b"OPTIONS sip:a@b.com SIP/2.0\r\nTo: " + b'"\\' * (n // 2) + b"\r\n\r\n",
        b"OPTIONS sip:a@b.com SIP/2.0\r\nTo: \"" + b"\\" * n + b'x" <sip:a@b>\r\n\r\n',
        b"OPTIONS sip:a@b.com SIP/2.0\r\nContact: " + b"<sip:a@b>," * (n // 10) + b"\r\n\r\n",
        b"OPTIONS sip:a@b.com SIP/2.0\r\nX: " + b"\r\n " * (n // 3) + b"\r\n\r\n",
        b"OPTIONS sip:a@b.com SIP/2.0\r\n" + b"X: y\r\n" * (n // 6) + b"\r\n",
    ]
    for data in cases:
        started = time.perf_counter()
        exercise_bytes(data)
        assert time.perf_counter() - started < 2.0, data[:60]
