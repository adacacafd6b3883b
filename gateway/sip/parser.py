"""Bytes → :class:`Request`/:class:`Response` (RFC 3261 §7), and stream framing for TCP/TLS.

The parser is strict about structure (start line, header syntax, Content-Length) and lazy
about header values: those are checked by the typed accessors when the core reads them.
"""

from __future__ import annotations

import re

from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import (
    COMPACT_FORMS,
    ContentLengthTooLarge,
    canonical_name,
    content_length,
    header_key,
    is_token,
)
from gateway.sip.message import Header, Request, Response
from gateway.sip.uri import SipUri, parse_uri

_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?",
                          re.IGNORECASE | re.ASCII | re.DOTALL)
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE | re.ASCII)
_FOLD = re.compile(r"\n[ \t]+")

# Header names as commonly written → lookup key, so the usual header lines need neither a
# token check nor case folding. Anything else takes the slow path in _parse_head.
_COMMON_KEYS = (
    "via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "expires",
    "content-length", "content-type", "route", "record-route", "path", "user-agent",
    "server", "supported", "require", "proxy-require", "allow", "accept", "authorization",
    "proxy-authorization", "www-authenticate", "proxy-authenticate", "date", "subject",
    "timestamp", "organization", "allow-events", "event", "unsupported", "warning",
)
_KNOWN_NAMES: dict[str, str] = {
    spelling: key
    for key in _COMMON_KEYS
    for spelling in (key, key.upper(), canonical_name(key))
} | {spelling: key for short, key in COMPACT_FORMS.items()
     for spelling in (short, short.upper())}

# The largest Content-Length worth converting: anything longer cannot match a body.


class ParseError(SipSyntaxError):
    """A message that cannot be parsed.

    ``headers`` holds the header lines read before the problem (if the head could be
    split into lines at all) and ``is_request`` whether the start line looked like a
    request, so the caller can still answer ``400`` (or ``505``) when Via and friends
    are there. ``status`` is the response code to use.
    """

    def __init__(self, reason: str, *, headers: list[Header] | None = None,
                 is_request: bool = False, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or []
        self.is_request = is_request
        self.status = status

    @property
    def response_reason(self) -> str:
        """The reason phrase of the response answering it: ``Bad Request (why)``."""
        base = "Version Not Supported" if self.status == 505 else "Bad Request"
        return f"{base} ({self.reason})"


def _split_head(data: bytes, framed: bool) -> tuple[bytes, bytes, bool]:
    """(head, body, whether a blank line ended the head). Datagrams may use bare LF line
    ends (RFC 3261 §7.5 tolerance); streams were framed on CRLFCRLF."""
    end = data.find(b"\r\n\r\n")
    if not framed:
        lf_end = data.find(b"\n\n", 0, end if end >= 0 else len(data))
        if lf_end >= 0:
            head_end = lf_end - 1 if lf_end and data[lf_end - 1] == 13 else lf_end
            return data[:head_end], data[lf_end + 2:], True
    if end >= 0:
        return data[:end], data[end + 4:], True
    if data.endswith(b"\r\n"):  # no blank line, but whole lines: a lenient end of head
        return data[:-2], b"", True
    return data, b"", False


def _parse_head(head: str) -> tuple[str, list[Header], list[str], str | None]:
    """Start line, header lines (unfolded, names validated), Content-Length values and
    the first problem found (None when the head is well formed). Lines after a bad one
    are still collected so that a 400 can copy Via, From, To, Call-ID and CSeq."""
    problem: str | None = None
    if "\r" in head:
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            problem = "bare CR in the message head"
    if "\x00" in head and head.count("\x00") != head.count("\\\x00"):
        problem = problem or "NUL byte in the message head"  # only a quoted-pair may hold NUL
    start, newline, rest = head.partition("\n")
    headers: list[Header] = []
    lengths: list[str] = []
    if not newline:
        return start, headers, lengths, problem
    if rest[:1] in (" ", "\t"):
        problem = problem or "whitespace before the first header line"
    if "\n " in rest or "\n\t" in rest:
        rest = _FOLD.sub(" ", rest)
    append = headers.append
    for line in rest.split("\n"):
        name, colon, value = line.partition(":")
        key = _KNOWN_NAMES.get(name)
        if key is None or not colon:
            name = name.rstrip(" \t")
            key = _KNOWN_NAMES.get(name)
            if key is None:
                if not colon or not is_token(name):
                    problem = problem or f"bad header line {line[:40]!r}"
                    continue
                key = header_key(name)
            elif not colon:
                problem = problem or f"bad header line {line[:40]!r}"
                continue
        value = value.strip(" \t")
        if key == "content-length":
            lengths.append(value)
        append((key, name, value))
    return start, headers, lengths, problem


def _clean(headers: list[Header]) -> list[Header]:
    """Header lines safe to copy into an error response (no NUL, no bare CR)."""
    return [h for h in headers if "\x00" not in h[2] and "\r" not in h[2]]


def parse_message(data: bytes, *, framed: bool = False) -> Request | Response:
    """Parse one whole message.

    With ``framed`` (TCP/TLS) the caller has already cut the message by Content-Length;
    for datagrams a missing Content-Length means "the rest of the datagram" and extra
    bytes beyond it are discarded (RFC 3261 §18.3).
    """
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore CRLFs before the start line
    head_bytes, body, complete = _split_head(data, framed)
    head = head_bytes.decode("utf-8", "surrogateescape")
    start, headers, lengths, problem = _parse_head(head)
    is_request = start[:4].upper() != "SIP/"
    if not complete:
        problem = "no blank line after the headers"
    if problem is not None:
        raise ParseError(problem, headers=_clean(headers), is_request=is_request)

    if is_request:
        parts = start.split(" ")
        if len(parts) != 3:
            raise ParseError("bad request line", headers=headers, is_request=True)
        method, uri_text, version = parts
        if not is_token(method):
            raise ParseError("bad method in request line", headers=headers, is_request=True)
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":  # §7.1: case-insensitive
            status = 505 if _VERSION.fullmatch(version) else 400
            raise ParseError("SIP version not supported" if status == 505
                             else "bad SIP version", headers=headers, is_request=True,
                             status=status)
        try:
            uri = parse_uri(uri_text)
        except SipSyntaxError as exc:
            raise ParseError(f"bad Request-URI: {exc}", headers=headers,
                             is_request=True) from None
        if isinstance(uri, SipUri) and uri.headers:  # RFC 3261 §19.1.1, RFC 4475 §3.1.2.11
            raise ParseError("headers in the Request-URI", headers=headers, is_request=True)
    else:
        match = _STATUS_LINE.fullmatch(start)
        if not match:
            raise ParseError("bad status line", headers=headers)

    if lengths:
        try:
            length = content_length(lengths)
        except ContentLengthTooLarge:
            raise ParseError("Content-Length larger than the body", headers=headers,
                             is_request=is_request) from None
        except SipSyntaxError as exc:
            raise ParseError(str(exc), headers=headers, is_request=is_request) from None
        if length > len(body):
            raise ParseError("Content-Length larger than the body", headers=headers,
                             is_request=is_request)
        if length < len(body):
            body = body[:length]
    elif framed and body:
        raise ParseError("missing Content-Length", headers=headers, is_request=is_request)

    if is_request:
        return Request(method, uri, headers, body)
    return Response(int(match.group(1)), match.group(2) or "", headers, body)


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages (by Content-Length) and keep-alives.

    Feed bytes with :meth:`feed`; it returns a list of items, each either ``b"\\r\\n\\r\\n"``
    (a keep-alive ping to answer with CRLF, RFC 5626 §3.5.1) or one complete message's
    bytes. A framing problem raises :class:`ParseError`: the connection cannot be
    resynchronised and must be closed.
    """

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._scanned = 0  # bytes at the buffer's start known to hold no CRLFCRLF
        self._need: int | None = None  # size of the message at the buffer's start, if known

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete items now available."""
        buffer = self._buffer
        buffer += data
        items: list[bytes] = []
        while buffer:
            if self._need is None:
                if buffer.startswith(b"\r\n"):
                    self._scanned = 0
                    if buffer.startswith(b"\r\n\r\n"):
                        items.append(b"\r\n\r\n")
                        del buffer[:4]
                        continue
                    if len(buffer) < 4 and b"\r\n\r\n".startswith(buffer):
                        break  # maybe the start of a ping
                    del buffer[:2]  # a lone CRLF (pong or stray line end)
                    continue
                end = buffer.find(b"\r\n\r\n", max(self._scanned - 3, 0))
                if end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > self.max_message_size:
                        raise ParseError("message headers too large")
                    break
                total = end + 4 + _content_length(buffer, end)
                if total > self.max_message_size:
                    raise ParseError("message too large")
                self._need = total
            if len(buffer) < self._need:
                break
            items.append(bytes(buffer[:self._need]))
            del buffer[:self._need]
            self._need = None
            self._scanned = 0
        return items


_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(?:\r\n[ \t]+)?([^\r\n]*)",
                             re.IGNORECASE)


def _content_length(buffer: bytearray, end: int) -> int:
    values = [v.strip(b" \t").decode("latin-1")
              for v in _CONTENT_LENGTH.findall(buffer, 0, end)]
    if not values:
        raise ParseError("missing Content-Length on a stream transport")
    try:
        return content_length(values)
    except ContentLengthTooLarge:
        raise ParseError("message too large") from None
    except SipSyntaxError as exc:
        raise ParseError(str(exc)) from None
