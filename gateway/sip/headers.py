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

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact form expanded."""
    key = name.lower()
    return COMPACT_FORMS.get(key, key)


def canonical_name(key: str) -> str:
    """The conventional spelling of a header key (``call-id`` → ``Call-ID``)."""
    return CANONICAL_NAMES.get(key) or "-".join(part.capitalize() for part in key.split("-"))


def is_token(text: str) -> bool:
    """RFC 3261 ``token``."""
    return bool(_TOKEN.match(text))


def split_list(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and ``<>``."""
    if "," not in value:
        stripped = value.strip()
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
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    if any(not item for item in items):
        raise SipSyntaxError("empty element in header list")
    return items


def _split_params(text: str) -> tuple[str, str]:
    """Split ``value;params`` at the first ``;`` outside quotes."""
    quoted = False
    for index, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            return text[:index], text[index + 1:]
    return text, ""


def _parse_header_params(text: str, what: str) -> Params:
    """Header parameters may carry quoted-string values (unlike URI parameters)."""
    params = []
    for item in _split_quoted(text, ";"):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not name or not is_token(name):
            raise SipSyntaxError(f"bad {what} parameter {item.strip()!r}")
        if sep and not value:
            raise SipSyntaxError(f"empty {what} parameter value {name!r}")
        if sep and value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                raise SipSyntaxError(f"unterminated quoted {what} parameter {name!r}")
        elif sep and not re.match(r"^[A-Za-z0-9\-.!%*_+`'~\[\]:]+$", value):
            raise SipSyntaxError(f"bad {what} parameter value {item.strip()!r}")
        params.append((name, value if sep else None))
    return tuple(params)


def _split_quoted(text: str, sep: str) -> list[str]:
    parts, quoted, start = [], False, 0
    for index, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:index])
            start = index + 1
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

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20)."""
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        display = value[:lt].strip()
        if display.count('"') % 2:
            raise SipSyntaxError("unterminated quoted display name")
        if (display and not display.startswith('"')
                and not all(is_token(word) for word in display.split())):
            raise SipSyntaxError(f"bad display name {display!r}")
        gt = value.find(">", lt)
        if gt < 0:
            raise SipSyntaxError("missing '>' after URI")
        uri = parse_uri(value[lt + 1: gt].strip())
        rest = value[gt + 1:].strip()
        if rest and not rest.startswith(";"):
            raise SipSyntaxError(f"unexpected text after URI: {rest[:20]!r}")
        params = _parse_header_params(rest[1:], "header") if rest else ()
        return NameAddr(uri, display or None, params)
    if '"' in value:
        raise SipSyntaxError("quoted display name without <URI>")
    uri_text, param_text = _split_params(value)
    uri_text = uri_text.strip()
    if " " in uri_text or "," in uri_text:
        raise SipSyntaxError(f"bad addr-spec {uri_text!r}")
    params = _parse_header_params(param_text, "header") if param_text else ()
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


_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+(?:\s*:\s*\d+)?)"
                  r"\s*(?:;(.*))?$", re.IGNORECASE | re.DOTALL)


def parse_via(value: str) -> Via:
    """Parse one Via hop."""
    match = _VIA.match(value.strip())
    if not match:
        raise SipSyntaxError(f"bad Via {value.strip()[:40]!r}")
    transport, sent_by, param_text = match.groups()
    host, port = split_host_port(re.sub(r"\s+", "", sent_by))
    params = _parse_header_params(param_text, "Via") if param_text else ()
    for name, val in params:
        if name.lower() == "branch" and not val:
            raise SipSyntaxError("empty Via branch")
        if name.lower() == "ttl" and (not val or not val.isdigit() or int(val) > 255):
            raise SipSyntaxError("bad Via ttl")
    return Via(transport.upper(), host, port, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """Parse ``number method`` (number below 2**31, RFC 3261 §8.1.1.5)."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
        raise SipSyntaxError(f"bad CSeq {value.strip()[:40]!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipSyntaxError("CSeq number too large")
    return CSeq(number, parts[1])


def parse_delta_seconds(value: str, what: str) -> int:
    """Parse delta-seconds, clamping huge values to 2**32-1 (RFC 3261 §20.19)."""
    text = value.strip()
    if not text.isdigit():
        raise SipSyntaxError(f"bad {what} {text[:20]!r}")
    return min(int(text), 2**32 - 1)


def route_uri(value: str) -> SipUri:
    """The URI of a Route/Record-Route/Path value; it must be a SIP(S) URI in <>."""
    addr = parse_name_addr(value)
    if not isinstance(addr.uri, SipUri):
        raise SipSyntaxError("route is not a SIP URI")
    return addr.uri
