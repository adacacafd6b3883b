"""SIP requests and responses: ordered raw headers plus lazily parsed typed accessors.

Headers are kept exactly as received (order, spelling, compact names, unknown headers), so
a message re-serializes to what came in (folded lines are unfolded). Typed accessors parse
on first use and cache; they raise :class:`SipSyntaxError` for a malformed value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import (
    LIST_HEADERS,
    Contact,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    content_length,
    header_key,
    parse_contact,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addr,
    parse_via,
    split_list,
)
from gateway.sip.uri import Uri

Header = tuple[str, str, str]  # (lookup key, name as written, value)


class SipMessage:
    """Common part of requests and responses."""

    __slots__ = ("headers", "body", "_cache")

    def __init__(self, headers: Iterable[Header] = (), body: bytes = b"") -> None:
        self.headers: list[Header] = list(headers)
        self.body = body
        self._cache: dict[str, Any] = {}

    # --- raw access -----------------------------------------------------------------------

    def header(self, name: str) -> str | None:
        """The raw value of the first header line called ``name`` (any spelling)."""
        key = header_key(name)
        for k, _, value in self.headers:
            if k == key:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """All values of ``name`` across repeated lines, list headers split at commas."""
        key = header_key(name)
        values: list[str] = []
        for k, _, value in self.headers:
            if k == key:
                if key in LIST_HEADERS:
                    values.extend(split_list(value))
                else:
                    values.append(value.strip())
        return values

    def has_header(self, name: str) -> bool:
        """Whether at least one line of ``name`` is present."""
        key = header_key(name)
        return any(k == key for k, _, _ in self.headers)

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Append (or, with ``first``, prepend) a header line."""
        key = header_key(name)
        entry = (key, canonical_name(key) if name.islower() else name, value)
        if first:
            self.headers.insert(0, entry)
        else:
            self.headers.append(entry)
        self._cache.clear()

    def insert_header(self, index: int, name: str, value: str) -> None:
        """Insert a header line at position ``index`` of :attr:`headers`."""
        key = header_key(name)
        self.headers.insert(index, (key, canonical_name(key) if name.islower() else name,
                                    value))
        self._cache.clear()

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line (added at the end when absent)."""
        key = header_key(name)
        for index, (k, written, _) in enumerate(self.headers):
            if k == key:
                self.headers[index] = (k, written, value)
                self.headers[index + 1:] = [h for h in self.headers[index + 1:] if h[0] != key]
                self._cache.clear()
                return
        self.add_header(name, value)

    def replace_first_value(self, name: str, value: str) -> None:
        """Replace the first value of list header ``name`` (e.g. the top Via); a first line
        holding several comma-separated values is split into one line per value."""
        key = header_key(name)
        for index, (k, written, line) in enumerate(self.headers):
            if k == key:
                rest = split_list(line)[1:]
                self.headers[index:index + 1] = [(k, written, v) for v in [value, *rest]]
                self._cache.clear()
                return
        raise KeyError(name)

    def replace_top_via(self, via: Via) -> None:
        """Replace the top Via hop by ``via`` (e.g. with ``received``/``rport`` added),
        keeping every other parsed header cached."""
        vias = self.vias
        cache = dict(self._cache)
        self.replace_first_value("via", str(via))
        self._cache = cache
        self._cache["via"] = [via, *vias[1:]]

    def remove_header(self, name: str) -> None:
        """Remove every line of ``name``."""
        key = header_key(name)
        self.headers = [h for h in self.headers if h[0] != key]
        self._cache.clear()

    def remove_values(self, name: str, drop: Callable[[str], bool]) -> None:
        """Remove the lines of ``name`` whose value ``drop`` says to."""
        key = header_key(name)
        kept = [h for h in self.headers if h[0] != key or not drop(h[2])]
        if len(kept) != len(self.headers):
            self.headers = kept
            self._cache.clear()

    def _cached(self, name: str, compute: Any) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = compute()
            return value

    # --- typed accessors ------------------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        """Every Via hop, topmost first."""
        return self._cached("via", lambda: [parse_via(v) for v in self.header_values("via")])

    @property
    def top_via(self) -> Via:
        """The topmost Via hop alone (the others are not parsed); raises when absent."""
        def compute() -> Via:
            if "via" in self._cache:
                vias = self._cache["via"]
                if not vias:
                    raise SipSyntaxError("missing Via header")
                return vias[0]
            for key, _, value in self.headers:
                if key == "via":
                    first = value if "," not in value else split_list(value)[0]
                    return parse_via(first)
            raise SipSyntaxError("missing Via header")
        return self._cached("top-via", compute)

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return self._cached("from", lambda: parse_name_addr(self._required("from")))

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return self._cached("to", lambda: parse_name_addr(self._required("to")))

    @property
    def call_id(self) -> str:
        """The Call-ID value (printable ASCII without whitespace, RFC 3261 §25.1)."""
        def compute() -> str:
            value = self._required("call-id")
            if not value or not value.isascii() or not value.isprintable() or " " in value:
                raise SipSyntaxError("bad Call-ID")
            return value
        return self._cached("call-id", compute)

    @property
    def cseq(self) -> CSeq:
        """The CSeq header."""
        return self._cached("cseq", lambda: parse_cseq(self._required("cseq")))

    @property
    def contacts(self) -> list[Contact]:
        """Every Contact value (``*`` as a wildcard element)."""
        return self._cached("contact",
                            lambda: [parse_contact(v) for v in self.header_values("contact")])

    @property
    def expires(self) -> int | None:
        """The Expires header in seconds, None when absent."""
        def compute() -> int | None:
            value = self._single("expires")
            return None if value is None else parse_delta_seconds(value, "Expires")
        return self._cached("expires", compute)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, None when absent."""
        def compute() -> int | None:
            value = self._single("max-forwards")
            if value is None:
                return None
            number = parse_delta_seconds(value, "Max-Forwards")
            if number > 255:
                raise SipSyntaxError("Max-Forwards above 255")
            return number
        return self._cached("max-forwards", compute)

    @property
    def routes(self) -> list[NameAddr]:
        """Route values, in order."""
        return self._cached("route",
                            lambda: [parse_name_addr(v) for v in self.header_values("route")])

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values, in order."""
        return self._cached(
            "record-route",
            lambda: [parse_name_addr(v) for v in self.header_values("record-route")])

    @property
    def content_length(self) -> int | None:
        """The Content-Length header, None when absent."""
        values = self.header_values("content-length")
        return content_length(values) if values else None

    def option_tags(self, name: str) -> list[str]:
        """Option tags of Require/Supported/Proxy-Require, lower-case."""
        return [tag.lower() for tag in self.header_values(name)]

    def _required(self, key: str) -> str:
        value = self._single(key)
        if value is None:
            raise SipSyntaxError(f"missing {canonical_name(key)} header")
        return value

    def _single(self, key: str) -> str | None:
        """The value of a header that may appear at most once (RFC 3261 §7.3.1), None
        when absent; a repeated one is an error (RFC 4475 §3.3.8)."""
        found: str | None = None
        for k, _, value in self.headers:
            if k == key:
                if found is not None:
                    raise SipSyntaxError(f"more than one {canonical_name(key)} header")
                found = value
        return found

    # --- serialization --------------------------------------------------------------------

    def start_line(self) -> str:
        """The request line or status line."""
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The wire form (headers exactly as held, followed by the body)."""
        lines = [self.start_line()]
        lines.extend(f"{name}: {value}" for _, name, value in self.headers)
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SipMessage)
        return (self.start_line() == other.start_line()
                and [(n, v) for _, n, v in self.headers] == [(n, v) for _, n, v in other.headers]
                and self.body == other.body)

    __hash__ = None  # type: ignore[assignment]


class Request(SipMessage):
    """A SIP request."""

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: Uri, headers: Iterable[Header] = (),
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        """``METHOD uri SIP/2.0``."""
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(SipMessage):
    """A SIP response."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str, headers: Iterable[Header] = (),
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        """``SIP/2.0 code reason``."""
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
