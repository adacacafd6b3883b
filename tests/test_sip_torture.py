"""RFC 4475 torture tests against the message layer.

The messages live in ``tests/sip_torture/*.dat`` (reconstructions, see the README there)
written in the RFC's own conventions (§2): a LF ends a line and stands for CRLF,
``<allOneLine>`` joins the lines it encloses, ``<hex>..</hex>`` gives raw octets.

For every invalid message the expected outcome is stated: either ``parse_message`` raises
:class:`ParseError` for a request with the Via line available (the transport answers with
``build_error_response``), or the message parses and a typed accessor the core or the
registrar validates raises :class:`SipSyntaxError` (the core answers 400), or - for the
messages RFC 4475 calls only semantically wrong or "may be accepted" - what the message
layer hands the core and why that is right.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.server.core import validate_request
from gateway.sip.errors import SipSyntaxError
from gateway.sip.message import Request, Response
from gateway.sip.parser import ParseError, StreamFramer, parse_message
from gateway.sip.responses import build_error_response, build_response
from gateway.sip.uri import AbsoluteUri, SipUri

TORTURE_DIR = Path(__file__).parent / "sip_torture"

_ALL_ONE_LINE = re.compile(rb"<allOneLine>\n(.*?)\n</allOneLine>\n?", re.DOTALL)
_HEX = re.compile(rb"<hex>([0-9A-Fa-f]*)</hex>")


def decode_rfc4475(text: bytes) -> bytes:
    """Apply the RFC 4475 §2 conventions: join <allOneLine> blocks, LF → CRLF, <hex>."""
    text = _ALL_ONE_LINE.sub(lambda m: m.group(1).replace(b"\n", b"") + b"\n", text)
    text = text.replace(b"\n", b"\r\n")
    return _HEX.sub(lambda m: bytes.fromhex(m.group(1).decode("ascii")), text)


def load(name: str) -> bytes:
    return decode_rfc4475((TORTURE_DIR / f"{name}.dat").read_bytes())


def parse(name: str) -> Request | Response:
    return parse_message(load(name))


def core_validation_error(message: Request) -> SipSyntaxError | None:
    """The first error the core's own validation finds (the core answers it with 400),
    or None: :func:`gateway.server.core.validate_request` itself."""
    try:
        validate_request(message)
    except SipSyntaxError as exc:
        return exc
    return None


def typed_values(message: Request | Response) -> None:
    """Read every typed accessor the core and registrar use."""
    message.vias, message.from_, message.to, message.call_id  # noqa: B018
    message.cseq, message.max_forwards, message.contacts, message.expires  # noqa: B018
    message.routes, message.record_routes, message.content_length  # noqa: B018


# ============================================================================================
# §3.1.1 valid messages: each parses, and every typed accessor the core uses works.
# ============================================================================================

VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
         "semiuri", "transports", "mpart01", "unreason", "noreason"]


@pytest.mark.parametrize("name", VALID)
def test_valid_torture_message_parses_and_its_typed_headers_read(name):
    message = parse(name)
    typed_values(message)
    assert message.vias
    if isinstance(message, Request):
        assert core_validation_error(message) is None
        reply = build_response(message, 200)
        assert parse_message(reply.serialize()) == reply
    assert parse_message(message.serialize()) == message


@pytest.mark.parametrize("name", VALID)
def test_valid_torture_message_frames_on_a_stream(name):
    data = load(name)
    if name == "dblreq":  # the trailing INVITE noise is only ignorable in a datagram
        data = data[:data.index(b"\r\n\r\n") + 4]
    items = StreamFramer(65535).feed(data + data)
    assert items == [data, data]
    assert parse_message(items[0], framed=True) == parse_message(data)


def test_wsinv_short_tortuous_invite():
    m = parse("wsinv")
    assert isinstance(m, Request) and m.method == "INVITE"
    assert isinstance(m.uri, SipUri) and m.uri.param("unknownparam") == ""
    assert m.to.uri == SipUri("sip", "vivekg", None, "chair-dnrc.example.com", None)
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239")]
    assert m.header("subject") == ""
    assert m.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert str(m.routes[0].uri) == ("sip:services.example.com;lr;unknownwith=value;"
                                    "unknown-no-value")
    (contact,) = m.contacts
    assert contact.address is not None
    assert contact.address.display_name == 'Quoted string ""'
    assert contact.address.params == (("newparam", "newvalue"), ("secondparam", None),
                                      ("q", "0.33"))
    assert len(m.body) == m.content_length == 150


def test_intmeth_wide_range_of_valid_characters():
    m = parse("intmeth")
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    working = "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"
    assert m.from_.param("fromParam''~+*_!.-%") == f'"{working}"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.cseq.method == m.method and m.max_forwards == 255
    assert m.header("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01_escapes_are_kept_in_uris_and_decoded_in_the_aor():
    m = parse("esc01")
    assert isinstance(m, Request) and isinstance(m.uri, SipUri)
    assert m.uri.user == "sips%3Auser%40example.com" and m.uri.host == "example.net"
    assert isinstance(m.to.uri, SipUri) and m.to.uri.aor() == "sip:user@example.com"
    assert isinstance(m.from_.uri, SipUri)
    assert m.from_.uri.aor() == "sip:I have spaces@example.net"
    (contact,) = m.contacts
    assert contact.address is not None and isinstance(contact.address.uri, SipUri)
    assert contact.address.uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact i:
    assert m.header("content-type") == "application/sdp"  # compact c:


def test_escnull_registers_two_distinct_contacts_with_escaped_nul():
    m = parse("escnull")
    assert isinstance(m.to.uri, SipUri)
    assert m.to.uri.aor() == "sip:null-\x00-null@example.com"
    users = [c.address.uri.user for c in m.contacts
             if c.address is not None and isinstance(c.address.uri, SipUri)]
    assert users == ["%00", "%00%00"]
    assert m.content_length == 0  # L:0


def test_esc02_percent_is_not_an_escape_outside_uris():
    m = parse("esc02")
    assert isinstance(m, Request) and m.method == "RE%47IST%45R" != "REGISTER"
    assert m.cseq.method == m.method
    assert m.to.display_name == "%Z%45"
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    hosts = [c.address.uri.host for c in m.contacts if c.address is not None]
    assert hosts == ["host1.example.com", "host3.example.com"]
    assert m.header("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_touching_the_angle_bracket():
    m = parse("lwsdisp")
    assert m.from_.display == "caller" and m.from_.tag == "323"


def test_longreq_long_values_and_many_vias():
    m = parse("longreq")
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert m.vias[-1].received == "192.0.2.5"
    assert m.vias[-1].branch is not None and len(m.vias[-1].branch) > 200
    assert isinstance(m.to.uri, SipUri) and m.to.uri.port == 6000
    assert len(m.to.uri.params) == 3
    assert m.from_.tag is not None and len(m.from_.tag) == 153
    assert len(m.from_.params) == 3
    assert len(m.body) == 150


def test_dblreq_ignores_the_second_request_in_the_datagram():
    m = parse("dblreq")
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.body == b""
    assert b"INVITE" not in m.serialize()
    (contact,) = m.contacts
    assert contact.address is not None and contact.address.params == ()


def test_semiuri_user_part_holds_the_parameter():
    m = parse("semiuri")
    assert isinstance(m, Request) and isinstance(m.uri, SipUri)
    assert m.uri.user == "user;par=u%40example.net"
    assert m.uri.host == "example.com" and m.uri.params == ()
    assert m.header_values("accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag"]


def test_transports_via_with_every_transport_name():
    assert [v.transport for v in parse("transports").vias] == [
        "UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_with_nul_bytes_is_framed_by_content_length():
    m = parse("mpart01")
    assert m.content_length == len(m.body)
    assert b"\x00" in m.body
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert m.vias[0].rport == "" and m.vias[0].port == 5070
    assert m.routes[0].uri == SipUri("sip", None, None, "127.0.0.1", 5080)


def test_unreason_utf8_reason_phrase():
    m = parse("unreason")
    assert isinstance(m, Response) and m.status == 200
    assert m.reason.startswith("= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e")
    assert m.to.tag == "2229"


def test_noreason_empty_reason_phrase():
    m = parse("noreason")
    assert isinstance(m, Response) and (m.status, m.reason) == (100, "")


# ============================================================================================
# §3.1.2 invalid messages: expected outcome per message.
# ============================================================================================

# name: (outcome, detail, why)
#   "400-parse"    detail = ParseError reason fragment; answered via build_error_response
#   "505-parse"    same, with status 505
#   "400-accessor" detail = the accessor that raises SipSyntaxError; the core (or the
#                  registrar, for contacts) answers 400
#   "core-400"     parses cleanly; the core's own CSeq/method check answers 400
#   "accepted"     syntactically fine for the message layer (RFC 4475 allows accepting)
#   "drop"         a response: ParseError or accessor error, dropped without an answer
INVALID: dict[str, tuple[str, str, str]] = {
    "badinv01": ("400-accessor", "vias",
                 "';;,;,,' leaves empty Via elements and parameters; Contact ';;;;' too"),
    "clerr": ("400-parse", "larger than the body",
              "on UDP a Content-Length beyond the datagram is a 400 (§3.1.2.2)"),
    "ncl": ("400-parse", "bad Content-Length", "negative Content-Length (§3.1.2.3)"),
    "scalar02": ("400-accessor", "cseq",
                 "CSeq above 2**32-1 is the 400; Max-Forwards 300 also raises, Expires "
                 "and the Contact expires are clamped to 2**32-1"),
    "scalarlg": ("drop", "cseq", "a response: its CSeq accessor raises, the core drops it"),
    "quotbal": ("400-accessor", "to", "unterminated quoted display name in To"),
    "ltgtruri": ("400-parse", "bad Request-URI", "Request-URI enclosed in <>"),
    "lwsruri": ("400-parse", "bad request line", "LWS inside the Request-URI"),
    "lwsstart": ("400-parse", "bad request line",
                 "several SP between request-line elements: rejecting is acceptable"),
    "trws": ("400-parse", "bad request line",
             "SP after SIP/2.0 in the request line: rejecting is acceptable"),
    "escruri": ("400-parse", "headers in the Request-URI",
                "RFC 3261 §19.1.1 forbids URI headers in a Request-URI"),
    "baddate": ("accepted", "",
                "non-GMT Date: the gateway never reads Date, so it is ignored and kept "
                "verbatim (RFC 4475: reject only if the Date matters to processing)"),
    "regbadct": ("400-accessor", "contacts",
                 "addr-spec Contact with '?': must be name-addr; the registrar reads "
                 "contacts and the SipSyntaxError becomes a 400"),
    "badaspec": ("400-accessor", "to", "LWS inside <> around the To URI"),
    "baddn": ("400-accessor", "from_", "unquoted display names with a comma"),
    "badvers": ("505-parse", "version", "SIP/7.0 is answered 505 Version Not Supported"),
    "mismatch01": ("core-400", "",
                   "CSeq method INVITE vs OPTIONS: syntax is fine, the core's CSeq check "
                   "answers 400"),
    "mismatch02": ("core-400", "",
                   "unknown method NEWMETHOD with CSeq INVITE: the core's CSeq check "
                   "answers 400 (RFC 4475 allows 400; 501 would also do)"),
    "bigcode": ("drop", "bad status line", "status 4294967301: a response, dropped"),
    "badbranch": ("accepted", "",
                  "branch=z9hG4bK with nothing after the cookie is syntactically valid "
                  "(§3.2.1); the transaction layer decides"),
}


def _assert_parse_error(name: str, detail: str, status: int) -> None:
    with pytest.raises(ParseError) as info:
        parse(name)
    error = info.value
    assert detail.lower() in error.reason.lower()
    assert error.is_request and error.status == status
    assert any(key == "via" for key, _, _ in error.headers)
    reply = build_error_response(error.headers, error.status, "Bad Request")
    assert reply is not None and reply.status == status
    assert reply.header_values("via") and reply.to.tag
    assert parse_message(reply.serialize()) == reply


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_torture_message_has_its_documented_outcome(name):
    outcome, detail, _why = INVALID[name]
    if outcome == "400-parse":
        _assert_parse_error(name, detail, 400)
    elif outcome == "505-parse":
        _assert_parse_error(name, detail, 505)
    elif outcome == "400-accessor":
        message = parse(name)
        assert isinstance(message, Request)
        with pytest.raises(SipSyntaxError):
            getattr(message, detail)
        # The core can still answer: the raw Via, From, To … are copied into the 400.
        reply = build_response(message, 400, "Bad Request")
        assert [v for k, _, v in reply.headers if k == "via"] == [
            v for k, _, v in message.headers if k == "via"]
        assert parse_message(reply.serialize()) == reply
    elif outcome == "core-400":
        message = parse(name)
        assert isinstance(message, Request)
        typed_values(message)
        error = core_validation_error(message)
        assert error is not None and "CSeq method" in str(error)
    elif outcome == "accepted":
        message = parse(name)
        assert isinstance(message, Request)
        typed_values(message)
        assert core_validation_error(message) is None
    elif outcome == "drop":
        try:
            message = parse(name)
        except ParseError as error:
            assert not error.is_request and detail in error.reason
        else:
            assert isinstance(message, Response)
            with pytest.raises(SipSyntaxError):
                getattr(message, detail)
    else:  # pragma: no cover
        raise AssertionError(outcome)


def test_scalar02_every_out_of_range_scalar():
    m = parse("scalar02")
    for accessor in ("cseq", "max_forwards"):
        with pytest.raises(SipSyntaxError):
            getattr(m, accessor)
    assert m.expires == 2**32 - 1
    (contact,) = m.contacts
    assert contact.address is not None and contact.address.param("expires") == "280297596632815"


def test_badinv01_contact_with_empty_parameters_is_refused_too():
    with pytest.raises(SipSyntaxError):
        parse("badinv01").contacts  # noqa: B018


def test_baddate_keeps_the_date_verbatim():
    assert parse("baddate").header("date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_badbranch_branch_is_just_the_magic_cookie():
    assert parse("badbranch").vias[0].branch == "z9hG4bK"


def test_badvers_answer_copies_the_sip_7_via():
    with pytest.raises(ParseError) as info:
        parse("badvers")
    reply = build_error_response(info.value.headers, 505, "Version Not Supported")
    assert reply is not None
    assert reply.header("via") == "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw"


# ============================================================================================
# §3.3 application-layer semantics (the ones the message layer has a say in).
# ============================================================================================


def test_insuf_missing_required_headers_raise_for_the_core_400():
    m = parse("insuf")
    assert isinstance(m, Request)
    error = core_validation_error(m)
    assert error is not None and "missing" in str(error)
    for accessor in ("from_", "to", "call_id"):
        with pytest.raises(SipSyntaxError, match="missing"):
            getattr(m, accessor)
    assert m.max_forwards is None


@pytest.mark.parametrize(("name", "scheme"), [("unkscm", "nobodyknowsthisscheme"),
                                              ("novelsc", "soap.beep")])
def test_unknown_request_uri_scheme_parses_for_the_core_to_answer_416(name, scheme):
    m = parse(name)
    assert isinstance(m, Request) and isinstance(m.uri, AbsoluteUri)
    assert m.uri.scheme == scheme
    assert core_validation_error(m) is None


def test_unksm2_unknown_schemes_in_to_from_and_contact():
    m = parse("unksm2")
    assert isinstance(m.to.uri, AbsoluteUri) and m.to.uri.scheme == "isbn"
    assert isinstance(m.from_.uri, AbsoluteUri) and m.from_.tag == "3234233"
    (contact,) = m.contacts
    assert contact.address is not None and str(contact.address.uri) == "name:John_Smith"


def test_bext01_option_tags_are_readable():
    m = parse("bext01")
    assert m.option_tags("require") == ["nothingsupportsthis", "nothingsupportsthiseither"]
    assert m.option_tags("proxy-require") == ["noproxiessupportthis",
                                              "nordoanyproxiessupportthis"]


def test_multi01_repeated_single_value_headers_raise():
    m = parse("multi01")
    assert isinstance(m, Request)
    for accessor in ("from_", "to", "call_id", "cseq", "max_forwards"):
        with pytest.raises(SipSyntaxError, match="more than one"):
            getattr(m, accessor)
    assert len(m.contacts) == 2  # Contact is a list header: two values are fine
    assert core_validation_error(m) is not None


def test_mcl01_conflicting_content_lengths_are_a_400():
    _assert_parse_error("mcl01", "conflicting", 400)


def test_bcast_broadcast_via_in_a_response_parses():
    m = parse("bcast")
    assert isinstance(m, Response)
    assert [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero_reads_as_zero():
    assert parse("zeromf").max_forwards == 0


def test_cparam01_addr_spec_parameter_belongs_to_the_contact():
    (contact,) = parse("cparam01").contacts
    assert contact.address is not None
    assert contact.address.param("unknownparam") == ""
    assert isinstance(contact.address.uri, SipUri) and contact.address.uri.params == ()


def test_cparam02_name_addr_parameter_belongs_to_the_uri():
    (contact,) = parse("cparam02").contacts
    assert contact.address is not None and contact.address.params == ()
    assert isinstance(contact.address.uri, SipUri)
    assert contact.address.uri.param("unknownparam") == ""


def test_regescrt_escaped_route_header_inside_a_name_addr_contact():
    (contact,) = parse("regescrt").contacts
    assert contact.address is not None and isinstance(contact.address.uri, SipUri)
    assert contact.address.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_inv2543_rfc2543_request_without_branch_max_forwards_or_length():
    m = parse("inv2543")
    assert isinstance(m, Request)
    assert m.vias[0].branch is None
    assert m.max_forwards is None and m.content_length is None
    assert m.body.startswith(b"v=0\r\n") and m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert m.to.param("user") == "phone"  # addr-spec: the parameter is the header's
    assert core_validation_error(m) is None


# ============================================================================================


def test_every_torture_file_is_covered():
    section_33 = {"insuf", "unkscm", "novelsc", "unksm2", "bext01", "multi01", "mcl01",
                  "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "inv2543"}
    files = {path.stem for path in TORTURE_DIR.glob("*.dat")}
    assert files == set(VALID) | set(INVALID) | section_33
    assert (TORTURE_DIR / "README.md").is_file()
