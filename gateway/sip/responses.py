"""Building responses to requests (RFC 3261 §8.2.6) and answering unparseable ones."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from gateway import __version__
from gateway.sip.headers import header_key
from gateway.sip.message import Header, Request, Response

SERVER = f"p2psip-gateway/{__version__}"

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 429: "Provide Referrer Identity",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_COPIED = ("via", "from", "to", "call-id", "cseq")


class _RandomTags:
    """Tags from the OS's cryptographic random source (RFC 3261 §19.3 wants at least 32
    random bits), read 4 KiB at a time: one ``getrandom`` call per ~680 tags instead of
    one per response."""

    TAG_BYTES = 6

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def next(self) -> str:
        offset = self._offset
        if offset + self.TAG_BYTES > len(self._pool):
            self._pool, offset = secrets.token_bytes(4096), 0
        self._offset = offset + self.TAG_BYTES
        return self._pool[offset:offset + self.TAG_BYTES].hex()


_tags = _RandomTags()


def new_tag() -> str:
    """A fresh random From/To tag (48 random bits, hex)."""
    return _tags.next()


def build_response(request: Request, status: int, reason: str | None = None,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                   to_tag: str | None = None) -> Response:
    """A response to ``request``: Via, From, To, Call-ID and CSeq copied (RFC 3261 §8.2.6.2),
    a To tag added to final responses that lack one, then ``headers`` and Content-Length.
    """
    return _response_from_headers(request.headers, status, reason, headers, body, to_tag)


def build_error_response(request_headers: list[Header], status: int, reason: str,
                         ) -> Response | None:
    """A response from the raw header lines of a request that failed to parse, or None
    when no Via line survived (then there is no way to address a response)."""
    if not any(key == "via" for key, _, _ in request_headers):
        return None
    return _response_from_headers(request_headers, status, reason, (), b"", None)


def _response_from_headers(request_headers: Iterable[Header], status: int,
                           reason: str | None, extra: Iterable[tuple[str, str]], body: bytes,
                           to_tag: str | None) -> Response:
    copied: list[Header] = []
    for key, name, value in request_headers:
        if key in _COPIED:
            if key == "to" and status > 100 and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag or new_tag()}"
            copied.append((key, name, value))
    for name, value in extra:
        copied.append((header_key(name), name, value))
    copied.append(("server", "Server", SERVER))
    copied.append(("content-length", "Content-Length", str(len(body))))
    phrase = reason or REASON_PHRASES.get(status, "Unknown")
    return Response(status, phrase, copied, body)
