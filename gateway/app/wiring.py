"""The configuration translated into the lower layers' own value types: each layer
knows its settings only as the small frozen dataclass it defines, never the config."""

from __future__ import annotations

from gateway.app.config import GatewayConfig
from gateway.overlay.dns_publisher import PublishSettings, TsigKey
from gateway.overlay.identity import NodeIdentity
from gateway.overlay.record import Signer
from gateway.overlay.rollover import previous_fingerprint
from gateway.overlay.service import OverlaySettings
from gateway.server.authenticator import AuthPolicy
from gateway.server.registrar import RegistrarPolicy
from gateway.server.upstream import UpstreamSettings
from gateway.sip.tls import TlsSettings


def tls_settings(config: GatewayConfig) -> TlsSettings:
    """The SIP stack's TLS settings from ``[tls]``."""
    tls = config.tls
    return TlsSettings(tls.certificate, tls.private_key, tls.chain, tls.ca_file,
                       tls.require_client_cert, tls.min_version, tls.ciphers,
                       config.site.peers)


def overlay_settings(config: GatewayConfig, identity: NodeIdentity | None = None,
                     own_addresses: frozenset[str] = frozenset(),
                     relay_offer: str = "") -> OverlaySettings:
    """The overlay service's settings from ``[overlay]``; ``identity``: the saved one;
    ``own_addresses``: this machine's; ``relay_offer``: where NATed gateways open relay
    flows to this one ("" for none)."""
    overlay = config.overlay
    external = config.sip.external_address
    return OverlaySettings(
        bootstrap=tuple((a.host, a.port) for a in overlay.bootstrap), k=overlay.k,
        alpha=overlay.alpha, rpc_timeout=overlay.rpc_timeout,
        record_lifetime=overlay.record_lifetime, cache_seconds=overlay.cache,
        negative_cache_seconds=min(overlay.cache, 2.0),
        health_interval=overlay.health_interval, publish_rate=overlay.publish_rate,
        identity=identity, mode=overlay.mode, paths=overlay.paths,
        id_difficulty=overlay.id_difficulty, ids_per_address=overlay.ids_per_address,
        external_host=external[0] if external is not None else None,
        own_addresses=own_addresses, relay_offer=relay_offer)


def auth_policy(config: GatewayConfig) -> AuthPolicy:
    """The authentication policy from ``[auth]``."""
    auth = config.auth
    return AuthPolicy(auth.trusted_networks, auth.realm, auth.algorithms, auth.methods,
                      auth.nonce_lifetime, auth.max_failures, auth.lockout,
                      auth.multi_challenge_clients)


def registrar_policy(config: GatewayConfig) -> RegistrarPolicy:
    """The registrar's limits from ``[registrar]``."""
    registrar = config.registrar
    return RegistrarPolicy(registrar.min_expires, registrar.max_expires,
                           registrar.default_expires, registrar.max_contacts,
                           registrar.nat_min_expires, registrar.flow_timer)


def upstream_settings(config: GatewayConfig) -> UpstreamSettings | None:
    """The upstream server from ``[upstream]``, None when no ``uri`` is set."""
    up = config.upstream
    if not up.uri:
        return None
    return UpstreamSettings(up.uri, up.domain, up.register, up.username, up.password,
                            up.expires)


def publish_settings(config: GatewayConfig, signer: Signer | None = None,
                     ) -> PublishSettings | None:
    """The overlay's DNS self-publication from ``[overlay] publish_dns*`` (None: off);
    with ``signer`` and ``publish_dns_fingerprint``, also its certificate fingerprint
    for every ``gateway.domains`` entry inside the zone."""
    overlay = config.overlay
    if not overlay.publish_dns or overlay.publish_dns_server is None:
        return None
    server = overlay.publish_dns_server
    zone = (overlay.publish_dns_zone or overlay.publish_dns).rstrip(".").lower()
    fingerprint, previous, domains = "", "", ()
    if signer is not None and overlay.publish_dns_fingerprint:
        fingerprint, previous = signer.signer_id, previous_fingerprint(signer)
        domains = tuple(d for d in config.gateway.domains
                        if d.lower() == zone or d.lower().endswith("." + zone))
    return PublishSettings(overlay.publish_dns, zone, (server.host, server.port),
                           TsigKey.from_file(overlay.publish_dns_key_file),
                           min_entries=overlay.publish_dns_min_entries,
                           interval=overlay.publish_dns_interval,
                           fingerprint=fingerprint, previous_fingerprint=previous,
                           fingerprint_domains=domains)
