"""Start-up work that can fail because of the user's set-up — config, data dir, schema
upgrade, TLS material, binding the listen sockets — done before the reactor runs, so
each failure is one line naming the setting and a non-zero exit."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import psutil
from cryptography import x509

from gateway.app.config import ConfigError, GatewayConfig, load_config
from gateway.app.secret import load_secret
from gateway.app.wiring import tls_settings
from gateway.log import set_log_level
from gateway.registry.store import LocationStore, RegistryUnavailable
from gateway.server.routing import available_resolvers
from gateway.sip.address import ListenAddress, is_ip_literal
from gateway.sip.tls import (
    TlsContexts,
    TlsMaterial,
    TlsSetupError,
    load_certificate,
    load_material,
)
from gateway.sip.transport import ListenError, bind_socket


class StartupError(Exception):
    """A set-up problem; ``str()`` is the one-line message shown to the user."""


@dataclass
class Prepared:
    """Everything :func:`prepare` opened."""

    config: GatewayConfig
    store: LocationStore
    sockets: list[tuple[str, socket.socket]] = field(default_factory=list)
    tls: TlsContexts | None = None
    secret: bytes = b""
    material: TlsMaterial | None = None
    #: What overlay records are signed with when it is not ``material``
    #: (``overlay.certificate``: the site's certificate).
    signing: TlsMaterial | None = None
    overlay_socket: socket.socket | None = None
    overlay_ca: list[Any] = field(default_factory=list)
    status_socket: socket.socket | None = None


def prepare(config_path: str | None, overrides: dict[str, str]) -> Prepared:
    """Load the config, create the data dir, upgrade the schema and bind the sockets."""
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    set_log_level(config.gateway.log_level)
    installed = available_resolvers()
    for name in config.proxy.resolvers:
        if name not in installed:
            raise StartupError(f"proxy.resolvers: unknown resolver {name!r} (installed: "
                               f"{', '.join(sorted(installed))})")
    try:
        os.makedirs(config.data_dir, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"gateway.data_dir: cannot create {config.data_dir}: "
                           f"{exc.strerror}") from None
    try:
        store = LocationStore(config.database.url)
    except RegistryUnavailable as exc:
        raise StartupError(f"database.url: {_first_line(exc)}") from None
    try:
        if config.database.auto_upgrade:
            store.upgrade_schema()
        elif not store.schema_is_current():
            raise StartupError("database schema is not current and database.auto_upgrade is "
                               "off: run `p2psip-admin db upgrade`")
    except StartupError:
        store.close()
        raise
    except Exception as exc:
        store.close()
        raise StartupError(f"database.url: cannot open the registry: {_first_line(exc)}"
                           ) from None
    store.close()  # no connection may cross a daemon fork; the worker thread reconnects
    prepared = Prepared(config, store)
    try:
        prepared.secret = load_secret(config.data_dir)
        secure_listeners = config.tls.listen or config.websocket.listen_secure
        if secure_listeners or config.overlay.enabled:
            prepared.material = _tls_material(config)
        if secure_listeners:
            assert prepared.material is not None
            prepared.tls = TlsContexts(tls_settings(config), prepared.material)
        if config.overlay.enabled and config.overlay.certificate:
            prepared.signing = load_certificate(config.overlay.certificate,
                                                config.overlay.private_key, "overlay")
        if config.overlay.enabled and config.overlay.ca_file:
            prepared.overlay_ca = certificates(config.overlay.ca_file, "overlay.ca_file")
    except (OSError, TlsSetupError) as exc:
        raise StartupError(str(exc)) from None
    try:
        for key, kind, addresses in (("sip.listen_udp", "udp", config.sip.listen_udp),
                                     ("sip.listen_tcp", "tcp", config.sip.listen_tcp),
                                     ("tls.listen", "tls", config.tls.listen),
                                     ("websocket.listen", "ws", config.websocket.listen),
                                     ("websocket.listen_secure", "wss",
                                      config.websocket.listen_secure)):
            for address in addresses:
                prepared.sockets.append((kind, _bind(key, kind, address)))
        if config.overlay.enabled and config.overlay.listen is not None:
            prepared.overlay_socket = _bind("overlay.listen", "udp", config.overlay.listen)
        if config.status.enabled and config.status.listen is not None:
            prepared.status_socket = _bind("status.listen", "tcp", config.status.listen)
    except ListenError as exc:
        for _, sock in prepared.sockets:
            sock.close()
        if prepared.overlay_socket is not None:
            prepared.overlay_socket.close()
        raise StartupError(str(exc)) from None
    return prepared


def _bind(key: str, kind: str, address: ListenAddress) -> socket.socket:
    """``bind_socket`` whose error names the setting (``sip.listen_udp: cannot ...``)."""
    try:
        return bind_socket(kind, address)
    except ListenError as exc:
        raise ListenError(f"{key}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tls_material(config: GatewayConfig) -> TlsMaterial:
    """The configured or the generated certificate (named for the configured domains
    first, then this host's names and addresses): for TLS and for signing overlay
    records."""
    names: list[str] = []
    addresses: list[str] = ["127.0.0.1", "::1"]
    for name in (*config.gateway.domains, socket.getfqdn(), socket.gethostname()):
        name = name.lower().rstrip(".")
        target = addresses if is_ip_literal(name) else names
        if name and name != "localhost" and name not in target:
            target.append(name)
    names.append("localhost")  # last: never the common name when there is another
    secure = (*config.tls.listen, *config.websocket.listen_secure)
    hosts = [a.host for a in secure if a.host not in ("0.0.0.0", "::")]
    if config.sip.advertised_address:
        hosts.append(config.sip.advertised_address)
    if config.sip.external_address is not None:
        hosts.append(config.sip.external_address[0])
    if len(hosts) < len(secure) or not hosts:
        with contextlib.suppress(OSError):
            hosts.append(socket.gethostbyname(socket.gethostname()))  # what we advertise
    addresses += [h for h in hosts if h not in addresses]
    return load_material(tls_settings(config), config.data_dir, names, addresses)



def machine_addresses() -> list[str]:
    """Every IP address of this machine's interfaces (what "this gateway" means in a
    URI, besides the names)."""
    addresses = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(entry.address.split("%", 1)[0])
    return addresses


def machine_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets of this machine's interfaces (hosts on them are on our LAN)."""
    found = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6) and entry.netmask:
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.ip_network(
                        f"{entry.address.split('%', 1)[0]}/{entry.netmask}", strict=False))
    return found


def certificates(path: str, key: str) -> list[Any]:
    try:
        with open(path, "rb") as handle:
            certificates = x509.load_pem_x509_certificates(handle.read())
    except OSError as exc:
        raise TlsSetupError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise TlsSetupError(f"{key}: no PEM certificate in {path}") from None
    return certificates


