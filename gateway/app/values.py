"""Value parsers for settings: each takes the raw text of an INI value (or a
command-line override) and returns the value, or raises ValueError with a short reason
(the loader prefixes the key). ``kind`` names what a parser accepts, for the docs."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.sip.address import ListenAddress, is_ip_literal

P = TypeVar("P", bound=Callable[..., Any])


def kind(description: str) -> Callable[[P], P]:
    """Label a parser with what it accepts (shown in the config reference)."""

    def label(parse: P) -> P:
        parse.kind = description  # type: ignore[attr-defined]
        return parse

    return label


def kind_of(parse: Callable[[str], Any]) -> str:
    """What ``parse`` accepts, as its ``kind`` label says."""
    return getattr(parse, "kind", "text")


@kind("text")
def plain(raw: str) -> str:
    return raw.strip()


@kind("yes/no")
def yes_no(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes/no, got {raw.strip()!r}")


def int_range(low: int, high: int) -> Callable[[str], int]:
    @kind(f"integer {low}..{high}")
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw.strip()!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    @kind(f"number {low:g}..{high:g}")
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw.strip()!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{value:g} is outside {low:g}..{high:g}")
        return value

    return parse


def choice(*choices: str) -> Callable[[str], str]:
    @kind(" | ".join(choices))
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw.strip()!r}")
        return value

    return parse


def split_items(raw: str) -> list[str]:
    return [item.strip() for item in raw.replace("\n", ",").split(",") if item.strip()]


@kind("domain names")
def domains(raw: str) -> tuple[str, ...]:
    domains = []
    for item in split_items(raw):
        name = item.lower().rstrip(".")
        labels = name.split(".")
        if not all(label and len(label) <= 63 and label.replace("-", "").isalnum()
                   for label in labels) and not is_ip_literal(name):
            raise ValueError(f"{item!r} is not a domain name")
        domains.append(name)
    return tuple(domains)


def parse_listen_address(item: str, default_port: int = 5060) -> ListenAddress:
    """Parse ``host:port``, ``[v6]:port``, ``host`` or ``[v6]`` (``default_port`` when
    omitted)."""
    item = item.strip()
    port = default_port
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{item!r} is not [address]:port")
            port = int_range(0, 65535)(rest[1:])
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
        port = int_range(0, 65535)(port_text)
    else:
        host = item
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return ListenAddress(host, port)


@kind("IP address")
def advertised(raw: str) -> str:
    value = raw.strip()
    if value:
        try:
            ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
    return value.strip("[]")


@kind("IP address, optionally :port")
def external_address(raw: str) -> tuple[str, int | None] | None:
    value = raw.strip()
    if not value:
        return None
    host, port = value, None
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise ValueError(f"{value!r}: no closing ]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r} is not [IPv6]:port")
            port = _port(rest[1:], value)
    elif value.count(":") == 1:
        host, text = value.split(":")
        port = _port(text, value)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        raise ValueError(f"{value!r} cannot be reached from beyond a NAT")
    return str(address), port


def _port(text: str, value: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    return int(text)


@kind("resolver names")
def resolvers(raw: str) -> tuple[str, ...]:
    """Resolver names in order; whether each is installed is checked at start-up."""
    names = tuple(item.lower() for item in split_items(raw))
    if not names:
        raise ValueError("at least one resolver is needed (e.g. local)")
    if len(set(names)) != len(names):
        raise ValueError("a resolver is named twice")
    return names


@kind("host:port list (port 5060 when omitted)")
def listen(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item) for item in split_items(raw))


@kind("host:port list (port 5061 when omitted)")
def listen_tls(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 5061) for item in split_items(raw))


@kind("host:port list (port 80 when omitted)")
def listen_ws(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 80) for item in split_items(raw))


@kind("host:port list (port 443 when omitted)")
def listen_wss(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 443) for item in split_items(raw))


@kind("origins (scheme://host[:port]) or *")
def origins(raw: str) -> tuple[str, ...]:
    items = split_items(raw)
    if "*" in items:
        return ("*",)
    for item in items:
        scheme, _, rest = item.partition("://")
        if scheme.lower() not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"{item!r} is not an origin like https://phone.example.com")
    return tuple(item.lower() for item in items)


@kind("host:port (port 6084 when omitted)")
def one_listen(raw: str) -> ListenAddress | None:
    return _one_address(raw, 6084)


def _one_address(raw: str, default_port: int) -> ListenAddress | None:
    items = split_items(raw)
    if len(items) > 1:
        raise ValueError("one address only (host:port)")
    return parse_listen_address(items[0], default_port) if items else None


@kind("host:port list (port 6084 when omitted)")
def peers(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 6084) for item in split_items(raw))


@kind("domain name")
def one_domain(raw: str) -> str:
    names = domains(raw)
    if len(names) > 1:
        raise ValueError("one domain only")
    return names[0] if names else ""


@kind("host:port (port 53 when omitted)")
def dns_server(raw: str) -> ListenAddress | None:
    return _one_address(raw, 53)


@kind("host:port list (port 53 when omitted)")
def dns_servers(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 53) for item in split_items(raw))


@kind("domain=SHA-256 fingerprint list")
def pins(raw: str) -> tuple[tuple[str, str], ...]:
    pins = []
    for item in split_items(raw):
        domain, sep, fingerprint = item.partition("=")
        hex_digits = fingerprint.replace(":", "").strip().lower()
        if not sep or not domain.strip() or len(hex_digits) != 64 or any(
                c not in "0123456789abcdef" for c in hex_digits):
            raise ValueError(f"{item!r} is not domain=SHA-256 fingerprint")
        pins.append((domain.strip().lower(), hex_digits))
    return tuple(pins)


@kind("SIP URI")
def sip_uri(raw: str) -> str:
    value = raw.strip()
    if value and not value.lower().startswith(("sip:", "sips:")):
        raise ValueError(f"{value!r} is not a sip: URI")
    return value


@kind("SIP URI")
def upstream_uri(raw: str) -> str:
    # An IP address, or a name located by DNS (RFC 3263; the dns resolver must be on).
    return sip_uri(raw)


@kind("sips: URI (or sip: with transport=tls)")
def site_uri(raw: str) -> str:
    value = sip_uri(raw)
    if value and not (value.lower().startswith("sips:")
                      or "transport=tls" in value.lower().replace(" ", "")):
        raise ValueError(f"{value!r}: the gateways of a site talk over TLS (a sips: URI, "
                         "or sip: with ;transport=tls)")
    return value


@kind("file path")
def path(raw: str) -> str:
    value = raw.strip()
    return os.path.abspath(os.path.expanduser(value)) if value else ""


@kind("IP networks")
def networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in split_items(raw):
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


@kind("text")
def realm(raw: str) -> str:
    value = raw.strip()
    if any(ch in value for ch in '"\\\r\n') or not value.isprintable():
        raise ValueError(f"{value!r} may not contain quotes, backslashes or control "
                         "characters")
    return value


@kind("algorithm names")
def algorithms(raw: str) -> tuple[str, ...]:
    names = []
    for item in split_items(raw):
        name = item.upper()
        if name not in ("SHA-256", "MD5"):
            raise ValueError(f"unsupported algorithm {item!r} (SHA-256, MD5)")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("at least one algorithm is needed (SHA-256, MD5)")
    return tuple(names)


@kind("User-Agent substrings or *")
def user_agents(raw: str) -> tuple[str, ...]:
    """Case-insensitive substrings of User-Agent headers; ``("*",)`` matches every client."""
    items = split_items(raw)
    if "*" in items:
        return ("*",)
    for item in items:
        if not item.isprintable():
            raise ValueError(f"{item!r} contains control characters")
    return tuple(item.lower() for item in items)


@kind("SIP methods or *")
def methods(raw: str) -> frozenset[str] | None:
    listed = split_items(raw)
    if listed == ["*"]:
        return None
    names = set()
    for item in listed:
        if item == "*" or not item.isalpha():
            raise ValueError(f"{item!r} is not a SIP method (or use * alone)")
        names.add(item.upper())
    return frozenset(names)


@kind("host:port (port 9060 when omitted)")
def status_listen(raw: str) -> ListenAddress:
    return parse_listen_address(raw.strip(), 9060)
