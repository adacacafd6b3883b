"""Bytes → :class:`Request`/:class:`Response` (RFC 3261 §7), and stream framing for TCP/TLS.

The parser is strict about structure (start line, header syntax, Content-Length) and lazy
about header values: those are checked by the typed accessors when the core reads them.
"""

from __future__ import annotations

import re

from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import header_key, is_token
from gateway.sip.message import Header, Request, Response
from gateway.sip.uri import parse_uri

_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ([^\r\n]*)$")
_VERSION = re.compile(r"^SIP/\d+\.\d+$", re.IGNORECASE)
_FOLD = re.compile(r"\r?\n[ \t]+")


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


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4:]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2:]
    if data.endswith(b"\r\n"):
        return data[:-2], b""
    raise ParseError("no blank line after the headers")


def parse_message(data: bytes, *, framed: bool = False) -> Request | Response:
    """Parse one whole message.

    With ``framed`` (TCP/TLS) the caller has already cut the message by Content-Length;
    for datagrams a missing Content-Length means "the rest of the datagram" and extra
    bytes beyond it are discarded (RFC 3261 §18.3).
    """
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore CRLFs before the start line
    head_bytes, body = _split_head(data)
    head = head_bytes.decode("utf-8", "surrogateescape")
    if "\x00" in head:
        raise ParseError("NUL byte in headers")
    lines = _FOLD.sub(" ", head).replace("\r\n", "\n").split("\n")
    start = lines[0]
    is_request = not start.startswith("SIP/")
    headers: list[Header] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not is_token(name):
            raise ParseError(f"bad header line {line[:40]!r}", headers=headers,
                             is_request=is_request)
        headers.append((header_key(name), name, value.strip(" \t")))

    length_values = {v.strip() for k, _, v in headers if k == "content-length"}
    if len(length_values) > 1:
        raise ParseError("conflicting Content-Length headers", headers=headers,
                         is_request=is_request)
    if length_values:
        text = length_values.pop()
        if not text.isdigit():
            raise ParseError("bad Content-Length", headers=headers, is_request=is_request)
        length = int(text)
        if length > len(body):
            raise ParseError("Content-Length larger than the body", headers=headers,
                             is_request=is_request)
        body = body[:length]
    elif framed and body:
        raise ParseError("missing Content-Length", headers=headers, is_request=is_request)

    if not is_request:
        match = _STATUS_LINE.match(start)
        if not match:
            raise ParseError("bad status line", headers=headers)
        return Response(int(match.group(1)), match.group(2), headers, body)

    parts = start.split(" ")
    if len(parts) != 3:
        raise ParseError("bad request line", headers=headers, is_request=True)
    method, uri_text, version = parts
    if not is_token(method):
        raise ParseError("bad method in request line", headers=headers, is_request=True)
    if version != "SIP/2.0":
        status = 505 if _VERSION.match(version) else 400
        raise ParseError("SIP version not supported" if status == 505 else "bad SIP version",
                         headers=headers, is_request=True, status=status)
    try:
        uri = parse_uri(uri_text)
    except SipSyntaxError as exc:
        raise ParseError(f"bad Request-URI: {exc}", headers=headers, is_request=True) from None
    return Request(method, uri, headers, body)


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

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete items now available."""
        self._buffer += data
        items: list[bytes] = []
        buffer = self._buffer
        while buffer:
            if buffer.startswith(b"\r\n"):
                if buffer.startswith(b"\r\n\r\n"):
                    items.append(b"\r\n\r\n")
                    del buffer[:4]
                    continue
                if len(buffer) < 4 and b"\r\n\r\n".startswith(bytes(buffer)):
                    break  # maybe the start of a ping
                del buffer[:2]  # a lone CRLF (pong or stray line end)
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self.max_message_size:
                    raise ParseError("message headers too large")
                break
            length = _content_length(bytes(buffer[:end]))
            total = end + 4 + length
            if total > self.max_message_size:
                raise ParseError("message too large")
            if len(buffer) < total:
                break
            items.append(bytes(buffer[:total]))
            del buffer[:total]
        return items


_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def _content_length(head: bytes) -> int:
    values = {v.strip() for v in _CONTENT_LENGTH.findall(head)}
    if not values:
        raise ParseError("missing Content-Length on a stream transport")
    if len(values) > 1:
        raise ParseError("conflicting Content-Length headers")
    text = values.pop()
    if not text.isdigit():
        raise ParseError("bad Content-Length")
    return int(text)
