"""Load and validate the gateway's INI configuration into frozen dataclasses.

Every key has a default (see ``conf/gateway.ini``); a file only needs the keys it changes.
Any problem — unreadable file, unknown section or key, bad value — raises
:class:`ConfigError` whose message is one line naming the key.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class ConfigError(Exception):
    """A configuration problem a user can fix; ``str()`` is a one-line message."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to listen on."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        """True for an IPv6 literal such as ``::`` or ``::1``."""
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class GatewaySection:
    """``[gateway]``: identity, storage location and logging."""

    domains: tuple[str, ...]
    data_dir: str
    log_level: str


@dataclass(frozen=True, slots=True)
class SipSection:
    """``[sip]``: listeners, transport limits and transaction timers (seconds)."""

    listen_udp: tuple[ListenAddress, ...]
    listen_tcp: tuple[ListenAddress, ...]
    max_message_size: int
    max_tcp_connections: int
    tcp_idle_timeout: float
    force_rport: bool
    t1: float
    t2: float
    t4: float
    advertised_address: str = ""
    shutdown_grace: float = 5.0


@dataclass(frozen=True, slots=True)
class RegistrarSection:
    """``[registrar]``: RFC 3261 §10.3 limits."""

    min_expires: int
    max_expires: int
    default_expires: int
    max_contacts: int


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    """``[database]``: the SQL registry."""

    url: str
    auto_upgrade: bool
    sweep_interval: float
    sync_interval: float
    worker: str = "process"
    commit_interval: float = 0.005


@dataclass(frozen=True, slots=True)
class ProxySection:
    """``[proxy]``: target resolution and Timer C."""

    resolvers: tuple[str, ...] = ("local", "overlay", "upstream")
    timer_c: float = 180.0


@dataclass(frozen=True, slots=True)
class TlsSection:
    """``[tls]``: the TLS listener, its certificate and how peers are verified."""

    listen: tuple[ListenAddress, ...] = ()
    certificate: str = ""
    private_key: str = ""
    chain: str = ""
    ca_file: str = ""
    require_client_cert: bool = False
    min_version: str = "1.2"
    ciphers: str = ""


@dataclass(frozen=True, slots=True)
class AuthSection:
    """``[auth]``: digest authentication."""

    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    realm: str = ""
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    methods: frozenset[str] | None = None
    nonce_lifetime: float = 300.0
    max_failures: int = 10
    lockout: float = 300.0


@dataclass(frozen=True, slots=True)
class OverlaySection:
    """``[overlay]``: the Kademlia node and how records are trusted."""

    enabled: bool = True
    listen: ListenAddress | None = None
    bootstrap: tuple[ListenAddress, ...] = ()
    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 1.0
    trust: str = "tofu"
    ca_file: str = ""
    pins: tuple[tuple[str, str], ...] = ()
    record_lifetime: float = 3600.0
    cache: float = 5.0
    route: str = ""
    publish_rate: float = 1000.0
    health_interval: float = 10.0
    bootstrap_dns: tuple[str, ...] = ()
    dns_servers: tuple[ListenAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamSection:
    """``[upstream]``: a conventional SIP registrar/proxy next to the overlay."""

    uri: str = ""
    domain: str = ""
    register: bool = True
    username: str = ""
    password: str = ""
    expires: int = 600


@dataclass(frozen=True, slots=True)
class StatusSection:
    """``[status]``: the HTTP status endpoint."""

    enabled: bool = False
    listen: ListenAddress | None = None


@dataclass(frozen=True, slots=True)
class LimitsSection:
    """``[limits]``: per-source request rate."""

    source_rate: float = 200.0
    source_burst: float = 400.0
    exempt_trusted: bool = True


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole validated configuration."""

    gateway: GatewaySection
    sip: SipSection
    registrar: RegistrarSection
    database: DatabaseSection
    proxy: ProxySection = ProxySection()
    source: str | None = None
    tls: TlsSection = TlsSection()
    auth: AuthSection = AuthSection()
    overlay: OverlaySection = OverlaySection()
    upstream: UpstreamSection = UpstreamSection()
    status: StatusSection = StatusSection()
    limits: LimitsSection = LimitsSection()

    @property
    def data_dir(self) -> str:
        """Shortcut for ``gateway.data_dir``."""
        return self.gateway.data_dir


# --- value parsers: each takes the raw string and returns the value or raises ValueError ---


def _text(raw: str) -> str:
    return raw.strip()


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes/no, got {raw.strip()!r}")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw.strip()!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw.strip()!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{value:g} is outside {low:g}..{high:g}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw.strip()!r}")
        return value

    return parse


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.replace("\n", ",").split(",") if item.strip()]


def _domains(raw: str) -> tuple[str, ...]:
    domains = []
    for item in _items(raw):
        name = item.lower().rstrip(".")
        labels = name.split(".")
        if not all(label and len(label) <= 63 and label.replace("-", "").isalnum()
                   for label in labels) and not is_ip_literal(name):
            raise ValueError(f"{item!r} is not a domain name")
        domains.append(name)
    return tuple(domains)


def is_ip_literal(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (IPv6 possibly in brackets)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


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
            port = _int_range(0, 65535)(rest[1:])
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
        port = _int_range(0, 65535)(port_text)
    else:
        host = item
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return ListenAddress(host, port)


def _advertised(raw: str) -> str:
    value = raw.strip()
    if value:
        try:
            ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
    return value.strip("[]")


def _resolvers(raw: str) -> tuple[str, ...]:
    """Resolver names in order; whether each is installed is checked at start-up."""
    names = tuple(item.lower() for item in _items(raw))
    if not names:
        raise ValueError("at least one resolver is needed (e.g. local)")
    if len(set(names)) != len(names):
        raise ValueError("a resolver is named twice")
    return names


def _listen(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item) for item in _items(raw))


def _listen_tls(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 5061) for item in _items(raw))


def _one_listen(raw: str) -> ListenAddress | None:
    items = _items(raw)
    if len(items) > 1:
        raise ValueError("one address only (host:port)")
    return parse_listen_address(items[0], 6084) if items else None


def _peers(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 6084) for item in _items(raw))


def _dns_servers(raw: str) -> tuple[ListenAddress, ...]:
    return tuple(parse_listen_address(item, 53) for item in _items(raw))


def _pins(raw: str) -> tuple[tuple[str, str], ...]:
    pins = []
    for item in _items(raw):
        domain, sep, fingerprint = item.partition("=")
        hex_digits = fingerprint.replace(":", "").strip().lower()
        if not sep or not domain.strip() or len(hex_digits) != 64 or any(
                c not in "0123456789abcdef" for c in hex_digits):
            raise ValueError(f"{item!r} is not domain=SHA-256 fingerprint")
        pins.append((domain.strip().lower(), hex_digits))
    return tuple(pins)


def _sip_uri(raw: str) -> str:
    value = raw.strip()
    if value and not value.lower().startswith(("sip:", "sips:")):
        raise ValueError(f"{value!r} is not a sip: URI")
    return value


def _upstream_uri(raw: str) -> str:
    value = _sip_uri(raw)
    if value:
        host = value.split(":", 1)[1].split(";", 1)[0].rsplit("@", 1)[-1]
        host = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0][1:]
        if not is_ip_literal(host) and host.lower() != "localhost":
            raise ValueError(f"{value!r}: the host must be an IP address (DNS resolution "
                             "of the upstream server is not supported yet)")
    return value


def _path(raw: str) -> str:
    value = raw.strip()
    return os.path.abspath(os.path.expanduser(value)) if value else ""


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _items(raw):
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _realm(raw: str) -> str:
    value = raw.strip()
    if any(ch in value for ch in '"\\\r\n') or not value.isprintable():
        raise ValueError(f"{value!r} may not contain quotes, backslashes or control "
                         "characters")
    return value


def _algorithms(raw: str) -> tuple[str, ...]:
    names = []
    for item in _items(raw):
        name = item.upper()
        if name not in ("SHA-256", "MD5"):
            raise ValueError(f"unsupported algorithm {item!r} (SHA-256, MD5)")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("at least one algorithm is needed (SHA-256, MD5)")
    return tuple(names)


def _methods(raw: str) -> frozenset[str] | None:
    items = _items(raw)
    if items == ["*"]:
        return None
    methods = set()
    for item in items:
        if item == "*" or not item.isalpha():
            raise ValueError(f"{item!r} is not a SIP method (or use * alone)")
        methods.add(item.upper())
    return frozenset(methods)


# section -> key -> (default, parser). conf/gateway.ini documents the same keys.
_SCHEMA: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "gateway": {
        "domains": ("", _domains),
        "data_dir": ("data", _text),
        "log_level": ("info", _choice(*LOG_LEVELS)),
    },
    "sip": {
        "listen_udp": ("0.0.0.0:5060, [::]:5060", _listen),
        "listen_tcp": ("0.0.0.0:5060, [::]:5060", _listen),
        "max_message_size": ("65535", _int_range(1024, 1048576)),
        "max_tcp_connections": ("4096", _int_range(1, 1000000)),
        "tcp_idle_timeout": ("600", _seconds(1, 86400)),
        "force_rport": ("yes", _bool),
        "t1": ("0.5", _seconds(0.01, 60)),
        "t2": ("4", _seconds(0.01, 600)),
        "t4": ("5", _seconds(0.01, 600)),
        "advertised_address": ("", _advertised),
        "shutdown_grace": ("5", _seconds(0, 600)),
    },
    "proxy": {
        "resolvers": ("local, overlay, upstream", _resolvers),
        "timer_c": ("180", _seconds(1, 86400)),
    },
    "tls": {
        "listen": ("0.0.0.0:5061, [::]:5061", _listen_tls),
        "certificate": ("", _path),
        "private_key": ("", _path),
        "chain": ("", _path),
        "ca_file": ("", _path),
        "require_client_cert": ("no", _bool),
        "min_version": ("1.2", _choice("1.2", "1.3")),
        "ciphers": ("", _text),
    },
    "auth": {
        "trusted_networks": ("127.0.0.0/8, ::1", _networks),
        "realm": ("", _realm),
        "algorithms": ("SHA-256, MD5", _algorithms),
        "methods": ("*", _methods),
        "nonce_lifetime": ("300", _seconds(10, 86400)),
        "max_failures": ("10", _int_range(1, 100000)),
        "lockout": ("300", _seconds(0, 86400)),
    },
    "overlay": {
        "enabled": ("yes", _bool),
        "listen": ("0.0.0.0:6084", _one_listen),
        "bootstrap": ("", _peers),
        "k": ("20", _int_range(2, 100)),
        "alpha": ("3", _int_range(1, 20)),
        "rpc_timeout": ("1", _seconds(0.05, 30)),
        "trust": ("tofu", _choice("tofu", "ca", "pinned")),
        "ca_file": ("", _path),
        "pins": ("", _pins),
        "record_lifetime": ("3600", _seconds(60, 86400)),
        "cache": ("5", _seconds(0, 3600)),
        "route": ("", _sip_uri),
        "publish_rate": ("1000", _seconds(1, 1000000)),
        "health_interval": ("10", _seconds(0.1, 3600)),
        "bootstrap_dns": ("", _domains),
        "dns_servers": ("", _dns_servers),
    },
    "upstream": {
        "uri": ("", _upstream_uri),
        "domain": ("", _text),
        "register": ("yes", _bool),
        "username": ("", _text),
        "password": ("", _text),
        "expires": ("600", _int_range(60, 86400)),
    },
    "status": {
        "enabled": ("no", _bool),
        "listen": ("127.0.0.1:9060", lambda raw: parse_listen_address(raw.strip(), 9060)),
    },
    "limits": {
        "source_rate": ("200", _seconds(0, 1000000)),
        "source_burst": ("400", _seconds(1, 1000000)),
        "exempt_trusted": ("yes", _bool),
    },
    "registrar": {
        "min_expires": ("60", _int_range(0, 2**31 - 1)),
        "max_expires": ("3600", _int_range(1, 2**31 - 1)),
        "default_expires": ("3600", _int_range(1, 2**31 - 1)),
        "max_contacts": ("10", _int_range(1, 1000)),
    },
    "database": {
        "url": ("", _text),
        "auto_upgrade": ("yes", _bool),
        "sweep_interval": ("30", _seconds(0.1, 86400)),
        "sync_interval": ("2", _seconds(0.1, 86400)),
        "worker": ("process", _choice("process", "thread")),
        "commit_interval": ("0.005", _seconds(0, 1)),
    },
}


def load_config(path: str | None = None, overrides: Mapping[str, str] | None = None,
                ) -> GatewayConfig:
    """Read ``path`` (or only the defaults when None) and apply ``overrides``.

    ``overrides`` maps ``"section.key"`` (or a bare ``"data_dir"``) to a raw string value,
    as given on the command line. Raises :class:`ConfigError` on any problem.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       default_section="__no_defaults__")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            first_line = str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid INI: {first_line}") from None

    raw: dict[str, dict[str, str]] = {
        section: {key: default for key, (default, _) in keys.items()}
        for section, keys in _SCHEMA.items()
    }
    for section in parser.sections():
        if section not in _SCHEMA:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        for key, value in parser.items(section):
            if key not in _SCHEMA[section]:
                raise ConfigError(f"unknown key {section}.{key}")
            raw[section][key] = value
    for name, value in (overrides or {}).items():
        section, _, key = name.rpartition(".")
        section = section or "gateway"
        if key not in _SCHEMA.get(section, {}):
            raise ConfigError(f"unknown key {section}.{key}")
        raw[section][key] = value

    values: dict[str, dict[str, Any]] = {}
    for section, keys in _SCHEMA.items():
        values[section] = {}
        for key, (_, parse) in keys.items():
            try:
                values[section][key] = parse(raw[section][key])
            except ValueError as exc:
                raise ConfigError(f"{section}.{key}: {exc}") from None

    gateway = GatewaySection(**values["gateway"])
    if not gateway.data_dir:
        raise ConfigError("gateway.data_dir: must not be empty")
    gateway = GatewaySection(gateway.domains, os.path.abspath(os.path.expanduser(
        gateway.data_dir)), gateway.log_level)
    sip = SipSection(**values["sip"])
    tls = TlsSection(**values["tls"])
    if not sip.listen_udp and not sip.listen_tcp and not tls.listen:
        raise ConfigError("sip.listen_udp: no listener at all (set sip.listen_udp, "
                          "sip.listen_tcp or tls.listen)")
    if tls.private_key and not tls.certificate:
        raise ConfigError("tls.certificate: must be set when tls.private_key is")
    if tls.chain and not tls.certificate:
        raise ConfigError("tls.certificate: must be set when tls.chain is")
    registrar = RegistrarSection(**values["registrar"])
    if registrar.min_expires > registrar.max_expires:
        raise ConfigError("registrar.min_expires: larger than registrar.max_expires")
    if not registrar.min_expires <= registrar.default_expires <= registrar.max_expires:
        raise ConfigError("registrar.default_expires: must lie between min_expires and "
                          "max_expires")
    database = DatabaseSection(**values["database"])
    if not database.url:
        path_part = os.path.join(gateway.data_dir, "registry.sqlite3")
        database = dataclasses.replace(database, url=f"sqlite:///{path_part}")
    elif "://" not in database.url:
        raise ConfigError(f"database.url: {database.url!r} is not an SQLAlchemy URL "
                          "(e.g. postgresql+psycopg://user@host/db)")
    proxy = ProxySection(**values["proxy"])
    auth = AuthSection(**values["auth"])
    overlay = OverlaySection(**values["overlay"])
    if overlay.enabled and overlay.listen is None:
        raise ConfigError("overlay.listen: needed when overlay.enabled is on")
    if overlay.enabled and overlay.trust == "ca" and not overlay.ca_file:
        raise ConfigError("overlay.ca_file: needed when overlay.trust is ca")
    upstream = UpstreamSection(**values["upstream"])
    return GatewayConfig(gateway, sip, registrar, database, proxy, path, tls, auth, overlay,
                         upstream, StatusSection(**values["status"]),
                         LimitsSection(**values["limits"]))
