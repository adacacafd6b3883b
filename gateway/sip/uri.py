"""SIP and SIPS URIs (RFC 3261 §19.1) and other absolute URIs found in SIP headers."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from gateway.sip.errors import SipSyntaxError

_HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?", re.ASCII)
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", re.ASCII)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)
# Characters allowed in the user part, escaped sequences checked separately.
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+", re.ASCII)
_PASSWORD = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*", re.ASCII)
_PARAM = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+", re.ASCII)
# The whole ``name=value&...`` text of URI headers (hnv-unreserved, unreserved, escaped).
_HEADERS_TEXT = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$&=]|%[0-9A-Fa-f]{2})*", re.ASCII)


def valid_host(host: str) -> bool:
    """Whether ``host`` is a hostname, IPv4 address or bracketed IPv6 reference."""
    if _IPV4.fullmatch(host):
        return all(int(part) <= 255 for part in host.split("."))
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.fullmatch(host)) and not host.replace(".", "").isdigit()


def is_ascii_digits(text: str) -> bool:
    """Whether ``text`` is a non-empty run of ASCII digits (``str.isdigit`` also accepts
    superscripts and other scripts' digits, which ``int`` then rejects or misreads)."""
    return text.isascii() and text.isdigit()


def bracketed(host: str) -> str:
    """``host`` as written in a URI, Via or ``host:port``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@lru_cache(maxsize=4096)  # the same few hosts recur in every message: parse them once
def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets); the host is lower-cased and validated."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipSyntaxError(f"unterminated IPv6 reference in {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1:]
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not is_ascii_digits(rest[1:]) or len(rest) > 6:
            raise SipSyntaxError(f"bad port in {text[:60]!r}")
        port = int(rest[1:])
        if port > 65535:
            raise SipSyntaxError(f"port out of range in {text[:60]!r}")
    host = host.lower()
    if not valid_host(host):
        raise SipSyntaxError(f"bad host {host[:60]!r}")
    return host, port


Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, what: str) -> Params:
    """Parse ``;a=b;c`` style parameters (the leading ``;`` already removed)."""
    params = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name or not _PARAM.fullmatch(name):
            raise SipSyntaxError(f"bad {what} parameter {item[:40]!r}")
        if sep:
            value = value.strip()
            if not _PARAM.fullmatch(value):
                raise SipSyntaxError(f"bad {what} parameter value {item[:40]!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


def param_lookup(params: Params, name: str) -> str | None:
    """Value of the first parameter called ``name`` (case-insensitive); '' if valueless."""
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return "" if value is None else value
    return None


def format_params(params: Params) -> str:
    """Inverse of :func:`parse_params`, with the leading ``;``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. ``host`` is lower-case (IPv6 kept in brackets)."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += ":" + self.password
            userinfo += "@"
        port = f":{self.port}" if self.port is not None else ""
        text = f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}"
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return text

    def param(self, name: str) -> str | None:
        """The URI parameter ``name`` ('' for a valueless one, None when absent)."""
        return param_lookup(self.params, name)

    @property
    def secure(self) -> bool:
        """True for ``sips:``."""
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased."""
        value = self.param("transport")
        return value.lower() if value else None

    def aor(self) -> str:
        """The canonical address-of-record: ``sip:user@host``, scheme and params dropped,
        the user part unescaped, the host lower-case (RFC 3261 §10.3 step 5)."""
        user = unquote(self.user) if self.user is not None else ""
        return f"sip:{user}@{self.host}" if user else f"sip:{self.host}"

    def matching_key(self) -> str:
        """A string equal for URIs that RFC 3261 §19.1.4 treats as equivalent (close
        enough for binding comparison: escapes decoded, host and scheme case folded,
        parameters compared case-insensitively and independent of order)."""
        user = unquote(self.user) if self.user is not None else ""
        params = ";".join(sorted(f"{k.lower()}={(v or '').lower()}" for k, v in self.params))
        return f"{self.scheme}:{user}@{self.host}:{self.port or ''};{params}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A non-SIP absolute URI (``tel:``, ``mailto:``, ``urn:`` …), kept as text."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def param(self, name: str) -> str | None:
        """Non-SIP URIs expose no parameters here."""
        return None

    @property
    def secure(self) -> bool:
        """Never a SIPS URI."""
        return False


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI; ``sip``/``sips`` URIs fully, others only by scheme.

    URIs are ASCII (RFC 3261 §25.1: anything else is %-escaped) and never contain
    whitespace, control characters, ``<``, ``>`` or ``"``.
    """
    scheme, sep, rest = text.partition(":")
    if not sep or not rest or not _SCHEME.fullmatch(scheme):
        raise SipSyntaxError(f"bad URI {text[:60]!r}")
    if (not text.isascii() or not text.isprintable() or " " in text or "<" in text
            or ">" in text or '"' in text):
        raise SipSyntaxError(f"bad character in URI {text[:60]!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return AbsoluteUri(scheme, rest)
    return _parse_sip_uri(scheme, rest, text)


def _parse_sip_uri(scheme: str, rest: str, text: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, pw = userinfo.partition(":")
        if not user or not _USER.fullmatch(user):
            raise SipSyntaxError(f"bad user part in URI {text[:60]!r}")
        if colon:
            if not _PASSWORD.fullmatch(pw):
                raise SipSyntaxError(f"bad password in URI {text[:60]!r}")
            password = pw
    headers: tuple[tuple[str, str], ...] = ()
    rest, qmark, header_text = rest.partition("?")
    if qmark:
        if not _HEADERS_TEXT.fullmatch(header_text):
            raise SipSyntaxError(f"bad URI headers in {text[:60]!r}")
        pairs = []
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or "?" in name:
                raise SipSyntaxError(f"bad URI header {item[:40]!r}")
            pairs.append((name, value))
        headers = tuple(pairs)
    hostport, semi, param_text = rest.partition(";")
    host, port = split_host_port(hostport)
    params: Params = ()
    if semi:
        params = parse_params(param_text, "URI")
    return SipUri(scheme, user, password, host, port, params, headers)
