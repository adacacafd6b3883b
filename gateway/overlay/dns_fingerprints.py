"""The certificate fingerprints a domain publishes in DNS for its overlay records.

A domain that runs gateways says which certificates sign its records with TXT records
at ``_p2psip-cert.<domain>``, one ``sha256=<hex>`` (the SHA-256 of the DER certificate,
as ``p2psip-admin overlay status`` shows it) per certificate; a gateway with
``overlay.publish_dns`` keeps its own there (:class:`FingerprintPublisher`). Under
``overlay.trust = tofu`` a reader asks before it judges a domain's records: when the
domain publishes fingerprints, only those certificates (or one they endorsed by a
roll-over statement) may sign for it, whatever was pinned before and whatever the
replicas say; when it publishes none, trust on first use with the replicas'
agreement decides, as before.

Why TXT and not TLSA (RFC 6698): the certificate that signs overlay records is not
necessarily the one a TLS server presents at a port (TLSA's ``_port._proto`` names), and
a TXT record is what the gateway already keeps up to date by RFC 2136 for bootstrap.
Without DNSSEC the answer is as trustworthy as the path to the resolver: this defends
against hostile *overlay* nodes, which cannot change what a domain's DNS says.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from gateway.log import get_logger
from gateway.overlay.trust import domain_of, is_self_certifying
from gateway.sip.address import is_ip_literal
from gateway.sip.dns import DnsAnswer, DnsClient

log = get_logger("gateway.overlay.dns_cert")
T = TypeVar("T")

LABEL = "_p2psip-cert"
_ENTRY = re.compile(r"sha256=([0-9a-fA-F:]{64,95})")


def owner_name(domain: str) -> str:
    """Where ``domain``'s fingerprints are: ``_p2psip-cert.<domain>``."""
    return f"{LABEL}.{domain.rstrip('.')}"


def parse_fingerprints(strings: Iterable[bytes | str]) -> frozenset[str]:
    """The ``sha256=…`` entries of TXT strings (lower-case hex, colons dropped); other
    text is ignored, so a TXT record may hold several entries and comments."""
    found = set()
    for raw in strings:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        for match in _ENTRY.finditer(text):
            value = match.group(1).replace(":", "").lower()
            if len(value) == 64:
                found.add(value)
    return frozenset(found)


def entry(fingerprint: str) -> str:
    """The TXT string that publishes ``fingerprint``."""
    return f"sha256={fingerprint}"


class DomainFingerprints:
    """Looks ``_p2psip-cert.<domain>`` up (cached for the records' TTL by the DNS
    client, failures for a few seconds) and answers from that cache at once."""

    def __init__(self, client: DnsClient) -> None:
        self.client = client

    async def fetch(self, domain: str) -> frozenset[str]:
        """The fingerprints ``domain`` publishes (empty: none, or DNS did not answer)."""
        if is_ip_literal(domain):
            return frozenset()
        answer = await self.client.query(owner_name(domain), "TXT")
        if answer.error and answer.error not in ("NXDOMAIN", "no records"):
            log.info("overlay: no certificate fingerprints for {domain} from DNS: {error}",
                     domain=domain, error=answer.error)
        return _listed(answer)

    def get(self, domain: str) -> frozenset[str]:
        """What the last answer still in the cache says (empty when none is)."""
        if is_ip_literal(domain):
            return frozenset()
        answer = self.client.cached(owner_name(domain), "TXT")
        return _listed(answer) if answer is not None else frozenset()

    async def during(self, aor: str, lookup: Awaitable[T]) -> T:
        """Await ``lookup`` (of ``aor`` in the overlay) while the fingerprints of the
        AoR's domain are read, so that :meth:`get` has them when its records are
        judged; a self-certifying AoR needs none."""
        fetch = (None if is_self_certifying(aor)
                 else asyncio.ensure_future(self.fetch(domain_of(aor))))
        try:
            return await lookup
        finally:
            if fetch is not None:
                await fetch  # bounded by the DNS client's timeout; never raises


def _listed(answer: DnsAnswer) -> frozenset[str]:
    return parse_fingerprints(s for record in answer.records for s in record.strings)
