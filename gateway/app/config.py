"""Load and validate the gateway's INI configuration into frozen dataclasses.

The keys, their defaults, parsers and documentation are defined once, in
:mod:`gateway.app.settings`; the section classes here only give the parsed values their
types (a test checks that their fields are exactly the settings' keys). A file only
needs the keys it changes. Any problem — unreadable file, unknown section or key, bad
value — raises :class:`ConfigError` whose message is one line naming the key.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.app.settings import BY_SECTION
from gateway.sip.address import ListenAddress, is_ip_literal


class ConfigError(Exception):
    """A configuration problem a user can fix; ``str()`` is a one-line message."""


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
    advertised_address: str
    external_address: tuple[str, int | None] | None
    local_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    shutdown_grace: float


@dataclass(frozen=True, slots=True)
class RegistrarSection:
    """``[registrar]``: RFC 3261 §10.3 limits."""

    min_expires: int
    nat_min_expires: int
    max_expires: int
    default_expires: int
    max_contacts: int
    flow_timer: int


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    """``[database]``: the SQL registry."""

    url: str
    auto_upgrade: bool
    sweep_interval: float
    sync_interval: float
    heartbeat_interval: float
    worker: str
    commit_interval: float


@dataclass(frozen=True, slots=True)
class SiteSection:
    """``[site]``: this gateway among several sharing one registry."""

    uri: str
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProxySection:
    """``[proxy]``: target resolution and Timer C."""

    resolvers: tuple[str, ...]
    timer_c: float


@dataclass(frozen=True, slots=True)
class TlsSection:
    """``[tls]``: the TLS listener, its certificate and how peers are verified."""

    listen: tuple[ListenAddress, ...]
    certificate: str
    private_key: str
    chain: str
    ca_file: str
    require_client_cert: bool
    min_version: str
    ciphers: str


@dataclass(frozen=True, slots=True)
class AuthSection:
    """``[auth]``: digest authentication."""

    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    realm: str
    algorithms: tuple[str, ...]
    multi_challenge_clients: tuple[str, ...]
    methods: frozenset[str] | None
    nonce_lifetime: float
    max_failures: int
    lockout: float


@dataclass(frozen=True, slots=True)
class OverlaySection:
    """``[overlay]``: the Kademlia node and how records are trusted."""

    enabled: bool
    listen: ListenAddress | None
    bootstrap: tuple[ListenAddress, ...]
    mode: str
    relay: int
    k: int
    alpha: int
    paths: int
    id_difficulty: int
    ids_per_address: int
    rpc_timeout: float
    trust: str
    dns_fingerprints: bool
    first_pin: str
    ca_file: str
    pins: tuple[tuple[str, str], ...]
    certificate: str
    private_key: str
    record_lifetime: float
    cache: float
    route: str
    publish_rate: float
    health_interval: float
    bootstrap_dns: tuple[str, ...]
    dns_servers: tuple[ListenAddress, ...]
    publish_dns: str
    publish_dns_server: ListenAddress | None
    publish_dns_zone: str
    publish_dns_key_file: str
    publish_dns_fingerprint: bool
    publish_dns_min_entries: int
    publish_dns_interval: float


@dataclass(frozen=True, slots=True)
class UpstreamSection:
    """``[upstream]``: a conventional SIP registrar/proxy next to the overlay."""

    uri: str
    domain: str
    register: bool
    username: str
    password: str
    expires: int


@dataclass(frozen=True, slots=True)
class StatusSection:
    """``[status]``: the HTTP status endpoint."""

    enabled: bool
    listen: ListenAddress | None


@dataclass(frozen=True, slots=True)
class LimitsSection:
    """``[limits]``: per-source request rate and overload control."""

    source_rate: float
    source_burst: float
    exempt_trusted: bool
    overload_delay: float
    overload_drop_delay: float
    overload_retry_after: int


@dataclass(frozen=True, slots=True)
class DnsSection:
    """``[dns]``: DNS for RFC 3263 server location."""

    servers: tuple[ListenAddress, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class WebSocketSection:
    """``[websocket]``: SIP over WebSocket listeners (RFC 7118)."""

    listen: tuple[ListenAddress, ...]
    listen_secure: tuple[ListenAddress, ...]
    allowed_origins: tuple[str, ...]
    keepalive: float
    page: bool
    jssip: str


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole validated configuration."""

    gateway: GatewaySection
    sip: SipSection
    registrar: RegistrarSection
    database: DatabaseSection
    proxy: ProxySection
    source: str | None
    tls: TlsSection
    auth: AuthSection
    overlay: OverlaySection
    upstream: UpstreamSection
    status: StatusSection
    limits: LimitsSection
    dns: DnsSection
    websocket: WebSocketSection
    site: SiteSection

    @property
    def data_dir(self) -> str:
        """Shortcut for ``gateway.data_dir``."""
        return self.gateway.data_dir


def defaults() -> GatewayConfig:
    """The configuration with every key at its default."""
    return load_config(None)


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
        section: {key: setting.default for key, setting in keys.items()}
        for section, keys in BY_SECTION.items()
    }
    for section in parser.sections():
        if section not in BY_SECTION:
            raise ConfigError(f"unknown section [{section}] (known: "
                              f"{', '.join(BY_SECTION)})")
        for key, value in parser.items(section):
            if key not in BY_SECTION[section]:
                raise ConfigError(f"unknown key {section}.{key}")
            raw[section][key] = value
    for name, value in (overrides or {}).items():
        section, _, key = name.rpartition(".")
        section = section or "gateway"
        if key not in BY_SECTION.get(section, {}):
            raise ConfigError(f"unknown key {section}.{key}")
        raw[section][key] = value

    values: dict[str, dict[str, Any]] = {}
    for section, keys in BY_SECTION.items():
        values[section] = {}
        for key, setting in keys.items():
            try:
                values[section][key] = setting.parse(raw[section][key])
            except ValueError as exc:
                raise ConfigError(f"{section}.{key}: {exc}") from None

    gateway = GatewaySection(**values["gateway"])
    if not gateway.data_dir:
        raise ConfigError("gateway.data_dir: must not be empty")
    gateway = GatewaySection(gateway.domains, os.path.abspath(os.path.expanduser(
        gateway.data_dir)), gateway.log_level)
    sip = SipSection(**values["sip"])
    tls = TlsSection(**values["tls"])
    websocket = WebSocketSection(**values["websocket"])
    if websocket.page:
        if not (websocket.listen or websocket.listen_secure):
            raise ConfigError("websocket.page: needs websocket.listen or "
                              "websocket.listen_secure")
        if not websocket.jssip or not os.path.isfile(websocket.jssip):
            raise ConfigError("websocket.jssip: the JsSIP bundle the page loads is "
                              f"missing ({websocket.jssip or 'not set'}; build it with "
                              "npm ci && npm run build in web/)")
    if not (sip.listen_udp or sip.listen_tcp or tls.listen or websocket.listen
            or websocket.listen_secure):
        raise ConfigError("sip.listen_udp: no listener at all (set sip.listen_udp, "
                          "sip.listen_tcp, tls.listen or a websocket listener)")
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
    if overlay.private_key and not overlay.certificate:
        raise ConfigError("overlay.certificate: must be set when overlay.private_key is")
    if overlay.enabled and overlay.trust == "ca" and not overlay.ca_file:
        raise ConfigError("overlay.ca_file: needed when overlay.trust is ca")
    if overlay.publish_dns:
        if overlay.publish_dns_server is None:
            raise ConfigError("overlay.publish_dns_server: needed when overlay.publish_dns "
                              "is set")
        if not overlay.publish_dns_key_file:
            raise ConfigError("overlay.publish_dns_key_file: needed when "
                              "overlay.publish_dns is set")
        from gateway.overlay.dns_publisher import TsigKey, TsigKeyError

        try:
            TsigKey.from_file(overlay.publish_dns_key_file).keyring()
        except TsigKeyError as exc:
            raise ConfigError(f"overlay.publish_dns_key_file: {exc}") from None
    upstream = UpstreamSection(**values["upstream"])
    if upstream.uri and "dns" not in proxy.resolvers and not _ip_or_localhost_host(
            upstream.uri):
        raise ConfigError(f"upstream.uri: {upstream.uri!r} names a host, which needs DNS: "
                          "add dns to proxy.resolvers (or give an IP address)")
    site = SiteSection(**values["site"])
    if site.uri and not tls.listen:
        raise ConfigError("site.uri: the site's gateways reach this one over TLS; set "
                          "tls.listen")
    if site.uri and "dns" not in proxy.resolvers and not _ip_or_localhost_host(site.uri):
        raise ConfigError(f"site.uri: {site.uri!r} names a host, which needs DNS: add dns "
                          "to proxy.resolvers (or give an IP address)")
    if site.peers and not tls.listen:
        raise ConfigError("site.peers: the site's gateways are known by their TLS "
                          "certificates; set tls.listen")
    return GatewayConfig(gateway, sip, registrar, database, proxy, path, tls, auth, overlay,
                         upstream, StatusSection(**values["status"]),
                         LimitsSection(**values["limits"]), DnsSection(**values["dns"]),
                         websocket, site)


def _ip_or_localhost_host(uri: str) -> bool:
    """Whether a SIP URI's host is an IP address or localhost (no DNS needed)."""
    host = uri.split(":", 1)[1].split(";", 1)[0].rsplit("@", 1)[-1]
    host = host.split("]")[0][1:] if host.startswith("[") else host.rsplit(":", 1)[0]
    return host.lower() == "localhost" or is_ip_literal(host)
