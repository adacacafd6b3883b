"""Header names and the typed header values of RFC 3261 §20 (Via, name-addr, CSeq …)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import SipSyntaxError
from gateway.sip.uri import (
    Params,
    SipUri,
    Uri,
    format_params,
    is_ascii_digits,
    param_lookup,
    parse_uri,
    split_host_port,
)

COMPACT_FORMS = {
    "i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via",
    "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
    "e": "content-encoding", "o": "event", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "u": "allow-events", "a": "accept-contact",
    "j": "reject-contact", "d": "request-disposition", "y": "identity", "n": "identity-info",
}

CANONICAL_NAMES = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); others are one value.
LIST_HEADERS = frozenset({
    "via", "contact", "route", "record-route", "path", "service-route", "allow",
    "supported", "require", "proxy-require", "unsupported", "accept", "accept-encoding",
    "accept-language", "content-encoding", "in-reply-to", "alert-info", "call-info",
    "error-info", "allow-events", "reason", "warning", "security-client",
    "security-server", "security-verify",
})

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+", re.ASCII)
# gen-value of a header parameter when it is not a quoted string: token / host.
_GEN_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+", re.ASCII)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact form expanded."""
    key = name.lower()
    return COMPACT_FORMS.get(key, key)


def canonical_name(key: str) -> str:
    """The conventional spelling of a header key (``call-id`` → ``Call-ID``)."""
    return CANONICAL_NAMES.get(key) or "-".join(part.capitalize() for part in key.split("-"))


def is_token(text: str) -> bool:
    """RFC 3261 ``token``."""
    return _TOKEN.fullmatch(text) is not None


def _quoted_end(text: str, start: int) -> int:
    """The index just past the quoted-string that opens at ``text[start]`` (a ``"``);
    quoted-pairs (``\\x``) are skipped. Raises when the closing quote is missing."""
    index = start + 1
    quote = text.find('"', index)
    while quote >= 0:
        backslash = text.find("\\", index, quote)
        if backslash < 0:
            return quote + 1
        index = backslash + 2  # the escaped character, whatever it is, is skipped
        if index > quote:
            quote = text.find('"', index)
    raise SipSyntaxError("unterminated quoted string")


def unquote_string(text: str) -> str:
    """The content of a quoted-string (``"a \\"b\\""`` → ``a "b"``); other text unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _UNESCAPE.sub(r"\1", text[1:-1])
    return text


def split_list(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and ``<>``."""
    if "," not in value:
        stripped = value.strip(" \t")
        return [stripped] if stripped else []
    items: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for index, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth:
                depth -= 1
        elif ch == "," and depth == 0:
            items.append(value[start:index].strip(" \t"))
            start = index + 1
    items.append(value[start:].strip(" \t"))
    if any(not item for item in items):
        raise SipSyntaxError("empty element in header list")
    return items


def _parse_header_params(text: str, what: str) -> Params:
    """Header parameters may carry quoted-string values (unlike URI parameters)."""
    params = []
    for item in _split_quoted(text, ";"):
        name, sep, value = item.partition("=")
        name = name.strip(" \t")
        if not name or not is_token(name):
            raise SipSyntaxError(f"bad {what} parameter {item.strip()[:40]!r}")
        if not sep:
            params.append((name, None))
            continue
        value = value.strip(" \t")
        if not value:
            raise SipSyntaxError(f"empty {what} parameter value {name[:40]!r}")
        if value[0] == '"':
            if _quoted_end(value, 0) != len(value):
                raise SipSyntaxError(f"bad quoted {what} parameter {name[:40]!r}")
        elif not _GEN_VALUE.fullmatch(value):
            raise SipSyntaxError(f"bad {what} parameter value {item.strip()[:40]!r}")
        params.append((name, value))
    return tuple(params)


def _split_quoted(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """``text.split(sep)``, except inside quoted-strings."""
    if '"' not in text:
        return text.split(sep, maxsplit)
    parts: list[str] = []
    start = index = 0
    length = len(text)
    while index < length:
        ch = text[index]
        if ch == '"':
            index = _quoted_end(text, index)
            continue
        if ch == sep and len(parts) != maxsplit:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``["Display"] <uri>;params`` or ``uri;params`` (From, To, Contact, Route …)."""

    uri: Uri
    display: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To)."""
        return param_lookup(self.params, "tag")

    def param(self, name: str) -> str | None:
        """A header parameter ('' when valueless, None when absent)."""
        return param_lookup(self.params, name)

    @property
    def display_name(self) -> str | None:
        """The display name as text: quotes removed and quoted-pairs unescaped."""
        return None if self.display is None else unquote_string(self.display)

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20).

    In the addr-spec form (no ``<>``) everything after the first ``;`` is a header
    parameter, and the URI may not contain ``,``, ``?`` or ``;`` (§20).
    """
    value = value.strip(" \t")
    if not value:
        raise SipSyntaxError("empty address")
    if value[0] == '"':
        display = value[:_quoted_end(value, 0)]
        lt = len(display)
        while lt < len(value) and value[lt] in " \t":
            lt += 1
        if lt >= len(value) or value[lt] != "<":
            raise SipSyntaxError("quoted display name without <URI>")
    else:
        lt = value.find("<")
        if lt < 0:
            return _parse_addr_spec(value)
        display = value[:lt].rstrip(" \t")
        if display and not all(is_token(word) for word in display.replace("\t", " ").split(" ")
                               if word):
            raise SipSyntaxError(f"bad display name {display[:40]!r}")
    gt = value.find(">", lt)
    if gt < 0:
        raise SipSyntaxError("missing '>' after URI")
    uri_text = value[lt + 1: gt]
    if not uri_text or uri_text[0] in " \t" or uri_text[-1] in " \t":
        raise SipSyntaxError("whitespace inside <URI>")
    uri = parse_uri(uri_text)
    rest = value[gt + 1:].lstrip(" \t")
    params: Params = ()
    if rest:
        if rest[0] != ";":
            raise SipSyntaxError(f"unexpected text after URI: {rest[:20]!r}")
        params = _parse_header_params(rest[1:], "header")
    return NameAddr(uri, display or None, params)


def _parse_addr_spec(value: str) -> NameAddr:
    uri_text, semi, param_text = value.partition(";")
    uri_text = uri_text.rstrip(" \t")
    if "," in uri_text or "?" in uri_text:
        raise SipSyntaxError(f"a URI with ',' or '?' must be enclosed in <>: {uri_text[:40]!r}")
    if '"' in uri_text or ">" in uri_text:
        raise SipSyntaxError(f"bad addr-spec {uri_text[:40]!r}")
    params = _parse_header_params(param_text, "header") if semi else ()
    return NameAddr(parse_uri(uri_text), None, params)


@dataclass(frozen=True, slots=True)
class Contact:
    """One Contact value, or the wildcard ``*``."""

    address: NameAddr | None  # None means '*'

    @property
    def is_wildcard(self) -> bool:
        """``Contact: *``."""
        return self.address is None


def parse_contact(value: str) -> Contact:
    """Parse one Contact element (``*`` allowed)."""
    if value.strip() == "*":
        return Contact(None)
    return Contact(parse_name_addr(value))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via hop (RFC 3261 §20.42, RFC 3581)."""

    transport: str
    host: str
    port: int | None
    params: Params

    def param(self, name: str) -> str | None:
        """A Via parameter ('' when valueless, None when absent)."""
        return param_lookup(self.params, name)

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter."""
        return self.param("received")

    @property
    def rport(self) -> str | None:
        """The ``rport`` parameter ('' when present without a value)."""
        return self.param("rport")

    @property
    def sent_by(self) -> str:
        """``host:port`` as used in transaction matching."""
        return f"{self.host}:{self.port or 5060}"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA = re.compile(r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
                  r"([^;\s]+(?:[ \t]*:[ \t]*[0-9]+)?)[ \t]*(?:;(.*))?",
                  re.IGNORECASE | re.DOTALL | re.ASCII)


def parse_via(value: str) -> Via:
    """Parse one Via hop."""
    match = _VIA.fullmatch(value.strip(" \t"))
    if not match:
        raise SipSyntaxError(f"bad Via {value.strip()[:40]!r}")
    transport, sent_by, param_text = match.groups()
    if " " in sent_by or "\t" in sent_by:
        sent_by = sent_by.replace(" ", "").replace("\t", "")
    host, port = split_host_port(sent_by)
    params = _parse_header_params(param_text, "Via") if param_text is not None else ()
    for name, val in params:
        lname = name.lower()
        if lname == "branch" and not val:
            raise SipSyntaxError("empty Via branch")
        if lname == "ttl" and (not val or not is_ascii_digits(val) or len(val) > 3
                               or int(val) > 255):
            raise SipSyntaxError("bad Via ttl")
        if lname == "rport" and val and (not is_ascii_digits(val) or len(val) > 5
                                         or int(val) > 65535):
            raise SipSyntaxError("bad Via rport")
    return Via(transport.upper(), host, port, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ = re.compile(r"[ \t]*([0-9]+)[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*", re.ASCII)


def parse_cseq(value: str) -> CSeq:
    """Parse ``number method`` (number below 2**31, RFC 3261 §8.1.1.5)."""
    match = _CSEQ.fullmatch(value)
    if not match:
        raise SipSyntaxError(f"bad CSeq {value.strip()[:40]!r}")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 10 or int(digits) >= 2**31:
        raise SipSyntaxError("CSeq number too large")
    return CSeq(int(digits), match.group(2))


def parse_delta_seconds(value: str, what: str) -> int:
    """Parse delta-seconds, clamping huge values to 2**32-1 (RFC 3261 §20.19)."""
    text = value.strip(" \t")
    if not is_ascii_digits(text):
        raise SipSyntaxError(f"bad {what} {text[:20]!r}")
    digits = text.lstrip("0")
    if len(digits) > 10:  # also keeps int() away from its 4300-digit limit
        return 2**32 - 1
    return min(int(digits or "0"), 2**32 - 1)


def route_uri(value: str) -> SipUri:
    """The URI of a Route/Record-Route/Path value; it must be a SIP(S) URI in <>."""
    addr = parse_name_addr(value)
    if not isinstance(addr.uri, SipUri):
        raise SipSyntaxError("route is not a SIP URI")
    return addr.uri


#: More digits than any Content-Length of a message this stack accepts can have.
MAX_LENGTH_DIGITS = 12


class ContentLengthTooLarge(SipSyntaxError):
    """A Content-Length with more digits than any message may have."""


def content_length(values: list[str]) -> int:
    """The body length that the Content-Length values of one message give (RFC 3261
    §20.14: 1*DIGIT); the one parser of it, for datagrams and for stream framing alike.
    Raises :class:`SipSyntaxError` for a value that is not digits or values that
    disagree."""
    length = -1
    for text in values:
        if not is_ascii_digits(text):
            raise SipSyntaxError("bad Content-Length")
        digits = text.lstrip("0") or "0"
        if len(digits) > MAX_LENGTH_DIGITS:
            raise ContentLengthTooLarge("Content-Length too large")
        number = int(digits)
        if length >= 0 and number != length:
            raise SipSyntaxError("conflicting Content-Length headers")
        length = number
    return length
