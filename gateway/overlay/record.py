"""Signed registration records: the values this gateway stores in the DHT.

A record says where an address-of-record can be reached, signed by its publisher::

    {"v": 1, "aor": "sip:bob@b.example",
     "contacts": [{"uri": "sip:bob@192.0.2.7:5060", "q": 1.0, "expires": 1795969999}],
     "route": "sip:198.51.100.2:5060;lr",      # where to send requests for the AoR
     "seq": 1795969000123, "issued": 1795969000, "expires": 1795972600,
     "cert": "<base64 DER X.509>"   (or "key": "<base64 DER SubjectPublicKeyInfo>"),
     "rollover": {...}              (optional: the previous certificate's word for this
                                     one, see gateway/overlay/rollover.py),
     "sig": "<base64 signature over the canonical JSON of every other field>"}

Canonical JSON: keys sorted, no spaces, UTF-8. ``seq`` grows with every record a
publisher issues for an AoR (milliseconds, strictly increasing). A record with no
contacts and ``expires == issued`` is a tombstone: the publisher withdrew the AoR.

A DHT value is a *bundle*: the JSON list of the records of one AoR, at most one per
signer (the SHA-256 of the certificate or key). Bundles merge record by record, the
highest ``seq`` per signer winning, so several publishers of one AoR coexist.
docs/overlay.md describes the format for other implementations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

VERSION = 1
MAX_BUNDLE_BYTES = 7000  # rpcudp refuses requests over 8 KiB
MAX_CONTACTS = 10


class RecordError(Exception):
    """A record or bundle that is malformed or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact of a record."""

    uri: str
    q: float
    expires: float


@dataclass(frozen=True)
class Record:
    """A record whose signature verified (or that we signed); ``raw`` is its JSON object.
    The certificate and key are parsed only when asked for (trust checks), so a node
    storing many records keeps little more than their JSON."""

    aor: str
    contacts: tuple[Contact, ...]
    route: str
    seq: int
    issued: float
    expires: float
    signer: str  # SHA-256 hex of the certificate (or key) DER
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_tombstone(self) -> bool:
        """The publisher withdrew the AoR."""
        return not self.contacts and self.expires <= self.issued

    def live(self, now: float) -> bool:
        """Not expired and not a tombstone."""
        return not self.is_tombstone and self.expires > now

    @cached_property
    def certificate(self) -> x509.Certificate | None:
        """The signer's certificate (None for a bare-key record)."""
        if "cert" not in self.raw:
            return None
        return x509.load_der_x509_certificate(base64.b64decode(self.raw["cert"]))

    @cached_property
    def public_key_der(self) -> bytes:
        """The signer's SubjectPublicKeyInfo, DER."""
        if "cert" in self.raw:
            assert self.certificate is not None
            key = self.certificate.public_key()
        else:
            key = serialization.load_der_public_key(base64.b64decode(self.raw["key"]))
        return key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)


def key_for(aor: str) -> bytes:
    """The DHT key of an AoR: SHA-1 of its canonical form (kademlia's ``digest``)."""
    return hashlib.sha1(aor.encode()).digest()


def canonical(obj: dict[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys, compact, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signer:
    """Signs records with one private key and its certificate (or bare public key)."""

    def __init__(self, private_key: Any, certificate: x509.Certificate | None,
                 rollover: dict[str, str] | None = None) -> None:
        """``rollover``: a statement by the previous certificate, added to every record."""
        self.private_key = private_key
        self.certificate = certificate
        self.rollover = rollover
        if certificate is not None:
            self._identity = ("cert", certificate.public_bytes(serialization.Encoding.DER))
        else:
            self._identity = ("key", private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.signer_id = hashlib.sha256(self._identity[1]).hexdigest()
        # One string shared by every record we sign (a certificate is ~700 characters).
        self._identity_text = base64.b64encode(self._identity[1]).decode("ascii")
        self._last_seq = 0

    def next_seq(self) -> int:
        """A sequence number above every one issued before (milliseconds)."""
        self._last_seq = max(self._last_seq + 1, time.time_ns() // 1_000_000)
        return self._last_seq

    def sign(self, aor: str, contacts: list[Contact], route: str, lifetime: float,
             now: float | None = None) -> bytes:
        """A signed record (JSON bytes); ``lifetime`` 0 makes a tombstone."""
        return canonical(self.sign_record(aor, contacts, route, lifetime, now).raw)

    def sign_record(self, aor: str, contacts: list[Contact], route: str, lifetime: float,
                    now: float | None = None) -> Record:
        """:meth:`sign` as a :class:`Record` (no need to verify what we just signed)."""
        now = time.time() if now is None else now
        obj: dict[str, Any] = {
            "v": VERSION, "aor": aor, "route": route, "seq": self.next_seq(),
            "contacts": [{"uri": c.uri, "q": c.q, "expires": int(c.expires)}
                         for c in contacts[:MAX_CONTACTS]],
            "issued": int(now), "expires": int(now + lifetime) if contacts else int(now),
            self._identity[0]: self._identity_text,
        }
        if self.rollover is not None:
            obj["rollover"] = self.rollover
        obj["sig"] = base64.b64encode(sign_bytes(self.private_key, canonical(obj))).decode("ascii")
        return Record(aor, tuple(Contact(c["uri"], float(c["q"]), float(c["expires"]))
                                 for c in obj["contacts"]), route, obj["seq"],
                      float(obj["issued"]), float(obj["expires"]), self.signer_id, obj)


def sign_bytes(key: Any, data: bytes) -> bytes:
    """``data`` signed with ``key`` (ECDSA P-256/SHA-256, RSA PKCS#1 v1.5, Ed25519)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise RecordError(f"cannot sign with a {type(key).__name__}")


def verify_bytes(public_key: Any, signature: bytes, data: bytes) -> None:
    """Raise :class:`RecordError` unless ``signature`` is ``public_key``'s over ``data``."""
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            raise RecordError(f"unsupported key type {type(public_key).__name__}")
    except InvalidSignature:
        raise RecordError("bad signature") from None


#: Records already verified, by their canonical JSON: the same record reaches a node
#: many times (stores, lookups, read repair), and an ECDSA check costs ~100 µs.
_VERIFIED: OrderedDict[bytes, Record] = OrderedDict()
_VERIFIED_MAX = 20_000


def verify_record(obj: Any) -> Record:
    """Check one record object's shape and signature (not whom it speaks for: that is
    :mod:`gateway.overlay.trust`'s job)."""
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise RecordError("not a version 1 record")
    try:
        key = canonical(obj)
    except (TypeError, ValueError):
        raise RecordError("record is not JSON data") from None
    known = _VERIFIED.get(key)
    if known is not None:
        _VERIFIED.move_to_end(key)
        return known
    record = _verify_record(obj)
    _VERIFIED[key] = record
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return record


def _verify_record(obj: dict[str, Any]) -> Record:
    try:
        aor, route, seq = str(obj["aor"]), str(obj["route"]), int(obj["seq"])
        issued, expires = float(obj["issued"]), float(obj["expires"])
        contacts = tuple(Contact(str(c["uri"]), float(c["q"]), float(c["expires"]))
                         for c in obj["contacts"])
        signature = base64.b64decode(obj["sig"], validate=True)
        if "cert" in obj:
            der = base64.b64decode(obj["cert"], validate=True)
            public_key = x509.load_der_x509_certificate(der).public_key()
        else:
            der = base64.b64decode(obj["key"], validate=True)
            public_key = serialization.load_der_public_key(der)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed record: {exc}") from None
    if len(contacts) > MAX_CONTACTS:
        raise RecordError("too many contacts")
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    verify_bytes(public_key, signature, canonical(unsigned))
    return Record(aor, contacts, route, seq, issued, expires, hashlib.sha256(der).hexdigest(),
                  obj)


def decode_bundle(value: Any) -> list[Record]:
    """The records of a DHT value whose signatures verify (others are skipped); a
    single record is accepted as a bundle of one."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if not isinstance(value, bytes | bytearray) or len(value) > 64 * 1024:
        return []
    try:
        parsed = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return []
    items = parsed if isinstance(parsed, list) else [parsed]
    records = []
    for item in items[:64]:
        try:
            records.append(verify_record(item))
        except RecordError:
            continue
    return records


def merge(records: list[Record], now: float | None = None,
          keep_tombstones: float = 3600.0) -> list[Record]:
    """One record per (AoR, signer): the highest ``seq``. Expired records go; a
    tombstone is kept ``keep_tombstones`` seconds so older copies cannot come back."""
    now = time.time() if now is None else now
    best: dict[tuple[str, str], Record] = {}
    for record in records:
        key = (record.aor, record.signer)
        if key not in best or record.seq > best[key].seq:
            best[key] = record
    kept = []
    for record in best.values():
        if record.is_tombstone:
            if record.issued + keep_tombstones > now:
                kept.append(record)
        elif record.expires > now:
            kept.append(record)
    return sorted(kept, key=lambda r: (r.aor, r.signer))


def encode_bundle(records: list[Record]) -> bytes:
    """The DHT value for these records, in their order (cut from the end to fit: a
    storing node lists the signers that came first first, so a flood of newer signers
    cannot push them out)."""
    objs = [r.raw for r in records]
    while objs:
        data = canonical_list(objs)
        if len(data) <= MAX_BUNDLE_BYTES:
            return data
        objs = objs[:-1]
    return b"[]"


def canonical_list(objs: list[dict[str, Any]]) -> bytes:
    """Canonical JSON of a list of records."""
    return json.dumps(objs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def self_certifying_user(public_key_der: bytes) -> str:
    """The user part of a self-certifying AoR for this public key (SubjectPublicKeyInfo
    DER): ``p`` and 32 base32 characters of its SHA-256."""
    digest = hashlib.sha256(public_key_der).digest()
    return "p" + base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:32]
