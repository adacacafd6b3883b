"""Whom a record may speak for: the signer must be entitled to the AoR's domain.

- A self-certifying AoR (user part derived from the signer's public key, see
  :func:`gateway.overlay.record.self_certifying_user`) is entitled by construction.
- Otherwise the record carries an X.509 certificate, and ``overlay.trust`` decides:

  ``ca``      the certificate chains to ``overlay.ca_file`` and names the domain
              (cryptography's X.509 verifier: chain, validity, name);
  ``tofu``    the certificate names the domain (service-identity) and is one the domain
              publishes in DNS (``_p2psip-cert.<domain>``,
              :mod:`gateway.overlay.dns_fingerprints`), or, when it publishes none, the
              one pinned for it (``overlay_pins`` in the registry). A domain gets its
              first pin from DNS or an administrator (``first_pin = dns``, the
              default), or also from the replicas' agreement
              (``first_pin = replicas``, :mod:`gateway.overlay.acceptance`);
  ``pinned``  the certificate's SHA-256 fingerprint is one configured for the domain.

A gateway always trusts its own signature.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from service_identity import VerificationError as NameMismatch
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from gateway.overlay.record import Record, domain_part, key_for, self_certifying_user
from gateway.overlay.rollover import FIELD as ROLLOVER_FIELD
from gateway.overlay.rollover import endorsing_certificate

TRUST_MODES = ("ca", "tofu", "pinned")
#: How a ``tofu`` reader pins a domain it has not pinned yet.
FIRST_PIN_RULES = ("dns", "replicas")


class PinStore(Protocol):
    """Where TOFU pins live (:class:`gateway.overlay.pins.PinDirectory`)."""

    def get(self, domain: str) -> str | None:
        """The pinned fingerprint of ``domain``."""

    def pin(self, domain: str, fingerprint: str) -> None:
        """Remember ``fingerprint`` for ``domain`` (first sight)."""

    def repin(self, domain: str, fingerprint: str) -> None:
        """Replace the pin of ``domain`` (a roll-over its pinned certificate announced)."""


class MemoryPins:
    """TOFU pins kept in memory only (``p2psip-peer``, tests)."""

    def __init__(self) -> None:
        self.pins: dict[str, str] = {}

    def get(self, domain: str) -> str | None:
        """The pinned fingerprint of ``domain``."""
        return self.pins.get(domain)

    def pin(self, domain: str, fingerprint: str) -> None:
        """Pin on first sight."""
        self.pins.setdefault(domain, fingerprint)

    def repin(self, domain: str, fingerprint: str) -> None:
        """Replace the pin."""
        self.pins[domain] = fingerprint


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex without separators."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:…`` or ``abcd…`` → lower-case hex."""
    return text.replace(":", "").strip().lower()


#: The host of ``sip:user@host``.
domain_of = domain_part


def user_of(aor: str) -> str:
    """The user part of ``sip:user@host``."""
    rest = aor.split(":", 1)[-1]
    return rest.rsplit("@", 1)[0] if "@" in rest else ""


#: How far in the future a record's ``issued`` may be (clocks differ a little).
MAX_CLOCK_SKEW = 120.0
#: The longest a record may claim to live (``overlay.record_lifetime`` at most).
MAX_RECORD_LIFETIME = 86400.0
#: The shape of a self-certifying user part: ``p`` and 32 base32 characters.
_SELF_CERTIFYING = re.compile(r"p[a-z2-7]{32}")


def is_self_certifying(aor: str) -> bool:
    """Whether ``aor``'s user part has the self-certifying form: then only the key it
    is derived from may sign for it."""
    return _SELF_CERTIFYING.fullmatch(user_of(aor)) is not None


_ENTITLED: OrderedDict[tuple[str, str], str | None] = OrderedDict()


def entitlement(record: Record, now: float | None = None) -> str | None:
    """What any node can check of a record's right to its AoR, with no pins and no
    configuration (storing nodes drop records that fail it): a self-certifying AoR is
    signed by its own key (a storing node, which cannot open the record, knows only
    that a bare key signs its own AoR; readers check the rest); any other AoR by a
    certificate naming its domain, within its validity; ``issued`` is not in the future
    beyond :data:`MAX_CLOCK_SKEW`; the record does not claim to live longer than
    :data:`MAX_RECORD_LIFETIME`. None when it passes, else why not."""
    now = time.time() if now is None else now
    if record.issued > now + MAX_CLOCK_SKEW:
        return "issued in the future"
    if record.expires - record.issued > MAX_RECORD_LIFETIME:
        return "claims to live longer than a record may"
    if record.is_opened and is_self_certifying(record.aor):
        if user_of(record.aor) == self_certifying_user(record.public_key_der):
            return None
        return "a self-certifying AoR may only be signed by its own key"
    if record.certificate is None:
        # Sealed, the AoR is unknown; the key's own self-certifying AoR has a known id.
        own = f"sip:{self_certifying_user(record.public_key_der)}@{record.domain}"
        if record.is_opened and record.aor == own or record.key == key_for(own):
            return None
        return "a bare key may only sign its own self-certifying AoR"
    cache_key = (record.signer, record.domain)
    if cache_key in _ENTITLED:
        _ENTITLED.move_to_end(cache_key)
        reason = _ENTITLED[cache_key]
    else:
        reason = _names_domain(record.certificate, cache_key[1])
        _ENTITLED[cache_key] = reason
        if len(_ENTITLED) > 20_000:
            _ENTITLED.popitem(last=False)
    if reason is not None:
        return reason
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    certificate = record.certificate
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        return "certificate outside its validity period"
    return None


def _names_domain(certificate: x509.Certificate, domain: str) -> str | None:
    try:
        try:
            verify_certificate_ip_address(certificate, domain.strip("[]"))
        except ValueError:
            verify_certificate_hostname(certificate, domain)
    except NameMismatch:
        return f"certificate does not name {domain}"
    return None


class RecordTrust:
    """Decides whether a verified record's signer is entitled to its AoR."""

    def __init__(self, mode: str, *, ca_certificates: list[x509.Certificate] | None = None,
                 pins: dict[str, set[str]] | None = None, pin_store: PinStore | None = None,
                 own_signer: str = "",
                 clock: Callable[[], datetime.datetime] | None = None,
                 published: Callable[[str], frozenset[str]] | None = None,
                 first_pin: str = "dns") -> None:
        """``published``: the fingerprints a domain publishes in DNS, as far as already
        known (:meth:`gateway.overlay.dns_fingerprints.DomainFingerprints.get`); under
        ``tofu`` they outrank pins and first sight. ``first_pin``: ``dns`` pins a domain
        only from its DNS (or an administrator's pin); ``replicas`` also pins on first
        sight (the caller weighs the replicas first)."""
        if mode not in TRUST_MODES:
            raise ValueError(f"unknown trust mode {mode!r}")
        if first_pin not in FIRST_PIN_RULES:
            raise ValueError(f"unknown first-pin rule {first_pin!r}")
        self.mode = mode
        self.first_pin = first_pin
        self.ca_certificates = ca_certificates or []
        self.pins = {d.lower(): {normalize_fingerprint(f) for f in fps}
                     for d, fps in (pins or {}).items()}
        self.pin_store = pin_store
        self.own_signer = own_signer
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.published = published

    def published_for(self, domain: str) -> frozenset[str]:
        """The fingerprints ``domain`` publishes in DNS and that decide for it (tofu
        only; empty: none)."""
        if self.mode != "tofu" or self.published is None:
            return frozenset()
        return self.published(domain)

    def check(self, record: Record, commit: bool = True) -> str | None:
        """None when the signer may speak for ``record.aor``, else why not. Without
        ``commit`` nothing is pinned (a lookup asking whether a record is worth ending
        on, before the reader has seen them all)."""
        if record.signer == self.own_signer and self.own_signer:
            return None
        reason = entitlement(record, self.clock().timestamp())
        if reason is not None or is_self_certifying(record.aor):
            return reason
        certificate = record.certificate
        assert certificate is not None  # entitlement() refuses bare keys here
        domain = record.domain
        if self.mode == "ca":
            return self._check_ca(certificate, domain)
        if self.mode == "pinned":
            if fingerprint(certificate) in self.pins.get(domain, set()):
                return None
            return f"certificate is not pinned for {domain}"
        return self._check_tofu(certificate, domain, record.raw.get(ROLLOVER_FIELD), commit)

    def _check_ca(self, certificate: x509.Certificate, domain: str) -> str | None:
        if not self.ca_certificates:
            return "no CA certificates configured (overlay.ca_file)"
        try:
            subject: verification.DNSName | verification.IPAddress
            try:
                subject = verification.IPAddress(ipaddress.ip_address(domain.strip("[]")))
            except ValueError:
                subject = verification.DNSName(domain)
            verifier = (verification.PolicyBuilder()
                        .store(verification.Store(self.ca_certificates))
                        .time(self.clock()).build_server_verifier(subject))
            verifier.verify(certificate, [])
        except (verification.VerificationError, ValueError) as exc:
            return f"certificate not valid for {domain}: {exc}"
        return None

    def _check_tofu(self, certificate: x509.Certificate, domain: str,
                    record_rollover: object = None, commit: bool = True) -> str | None:
        # entitlement() has checked the name and the validity period.
        seen = fingerprint(certificate)
        published = self.published_for(domain)
        if published:
            return self._check_published(seen, domain, published, record_rollover, commit)
        pinned = self.pin_store.get(domain) if self.pin_store is not None else None
        if pinned is None:
            if self.first_pin == "dns":
                return (f"{domain} is not pinned and publishes no certificate fingerprint "
                        f"in DNS (_p2psip-cert.{domain}): publish one there "
                        f"(overlay.publish_dns) or pin it (p2psip-admin overlay pins pin "
                        f"{domain} {seen})")
            if commit and self.pin_store is not None:
                self.pin_store.pin(domain, seen)
            return None
        if pinned != seen:
            old = endorsing_certificate(record_rollover, seen)
            if old is not None and fingerprint(old) == pinned:
                # The pinned certificate itself announced this one: follow the roll.
                if commit:
                    self.pin_store.repin(domain, seen)
                return None
            return (f"{domain} is pinned to another certificate ({pinned[:16]}…, this one "
                    f"is {seen[:16]}…): if {domain} really changed its certificate, "
                    f"p2psip-admin overlay pins forget {domain}")
        return None

    def _check_published(self, seen: str, domain: str, published: frozenset[str],
                         record_rollover: object, commit: bool) -> str | None:
        """The domain's DNS names the certificates that sign for it: ``seen`` must be
        one of them, or be endorsed by one (a roll-over the DNS has not caught up with).
        The pin follows, so the domain stays protected if its DNS entry goes."""
        if seen not in published:
            old = endorsing_certificate(record_rollover, seen)
            if old is None or fingerprint(old) not in published:
                return (f"certificate {seen[:16]}… is not one {domain} publishes in DNS "
                        f"(_p2psip-cert.{domain})")
        if commit and self.pin_store is not None and self.pin_store.get(domain) != seen:
            self.pin_store.repin(domain, seen)
        return None
