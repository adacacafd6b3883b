"""Signed registration records: the values this gateway stores in the DHT.

A record says where an address-of-record can be reached, signed by its publisher. What
it says is sealed: only a reader that knows the AoR can open it (storing nodes cannot
harvest who is registered where), yet every node can check the signature::

    {"v": 2, "dom": "b.example",               # the AoR's domain, in clear
     "id": "<base64 of SHA-256('p2psip-aor-id:' + AoR)[:16]>",
     "box": "<base64 of a 12-byte nonce + AES-256-GCM of the canonical JSON
              {"aor": …, "contacts": [{"uri", "q", "expires"}], "route": …}
              under SHA-256('p2psip-box:' + AoR), with 'p2psip-box2:' + dom + ':' + id
              as associated data>",
     "seq": 1795969000123, "issued": 1795969000, "expires": 1795972600,
     "cert": "<base64 DER X.509>"   (or "key": "<base64 DER SubjectPublicKeyInfo>"),
     "rollover": {...}              (optional: the previous certificate's word for this
                                     one, see gateway/overlay/rollover.py),
     "sig": "<base64 signature over the canonical JSON of every other field>"}

The DHT key is SHA-1('p2psip-key2:' + dom + ':' + id): a storing node checks that a
record belongs under the key it is stored at and that its certificate names ``dom``
(or, for a self-certifying AoR, that the key it is signed with derives the AoR), without
learning the AoR. Knowing an AoR, anyone can find and open its records, as in OpenDHT.

Canonical JSON: keys sorted, no spaces, UTF-8. ``seq`` grows with every record a
publisher issues for an AoR (milliseconds, strictly increasing). A record whose
``expires == issued`` is a tombstone: the publisher withdrew the AoR.

A DHT value is a *bundle*: the JSON list of the records of one key, at most one per
signer (the SHA-256 of the certificate or key). Bundles merge record by record, the
highest ``seq`` per signer winning, so several publishers of one AoR coexist.
docs/overlay.md describes the format for other implementations.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 2
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
    As a storing node sees it, it is *sealed*: ``aor`` is "", no contacts, no route;
    :func:`open_record` fills them in for a reader that knows the AoR. The certificate
    and key are parsed only when asked for (trust checks), so a node storing many
    records keeps little more than their JSON."""

    aor: str
    contacts: tuple[Contact, ...]
    route: str
    seq: int
    issued: float
    expires: float
    signer: str  # SHA-256 hex of the certificate (or key) DER
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def domain(self) -> str:
        """The AoR's domain (in clear)."""
        return str(self.raw["dom"])

    @property
    def subject(self) -> str:
        """Which AoR the record is about, as a storing node can tell: id and domain."""
        return f"{self.raw['id']}@{self.raw['dom']}"

    @property
    def key(self) -> bytes:
        """The DHT key the record belongs under."""
        return key_of(self.domain, base64.b64decode(self.raw["id"]))

    @property
    def is_opened(self) -> bool:
        """Whether the sealed part was read (the reader knew the AoR)."""
        return bool(self.aor)

    @property
    def is_tombstone(self) -> bool:
        """The publisher withdrew the AoR."""
        return self.expires <= self.issued

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


def domain_part(aor: str) -> str:
    """The host of ``sip:user@host`` (lower case)."""
    return aor.rsplit("@", 1)[-1].lower()


def aor_id(aor: str) -> bytes:
    """What a storing node knows of an AoR: 16 bytes of a hash of it."""
    return hashlib.sha256(b"p2psip-aor-id:" + aor.encode()).digest()[:16]


def key_of(domain: str, identifier: bytes) -> bytes:
    """The DHT key of an AoR's records from its domain and :func:`aor_id`."""
    return hashlib.sha1(b"p2psip-key2:" + domain.encode() + b":"
                        + base64.b64encode(identifier)).digest()


def key_for(aor: str) -> bytes:
    """The DHT key of an AoR (20 bytes, like kademlia's ``digest``)."""
    return key_of(domain_part(aor), aor_id(aor))


def _box_key(aor: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"p2psip-box:" + aor.encode()).digest())


def _box_aad(domain: str, identifier_b64: str) -> bytes:
    return f"p2psip-box2:{domain}:{identifier_b64}".encode()


def seal(aor: str, contacts: list[dict[str, Any]], route: str) -> dict[str, str]:
    """The ``dom``, ``id`` and ``box`` fields of a record for ``aor``."""
    domain, identifier = domain_part(aor), base64.b64encode(aor_id(aor)).decode("ascii")
    nonce = os.urandom(12)
    plain = canonical({"aor": aor, "contacts": contacts, "route": route})
    box = nonce + _box_key(aor).encrypt(nonce, plain, _box_aad(domain, identifier))
    return {"dom": domain, "id": identifier, "box": base64.b64encode(box).decode("ascii")}


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
        listed = [{"uri": c.uri, "q": c.q, "expires": int(c.expires)}
                  for c in contacts[:MAX_CONTACTS]]
        obj: dict[str, Any] = {
            "v": VERSION, **seal(aor, listed, route), "seq": self.next_seq(),
            "issued": int(now), "expires": int(now + lifetime) if contacts else int(now),
            self._identity[0]: self._identity_text,
        }
        if self.rollover is not None:
            obj["rollover"] = self.rollover
        obj["sig"] = base64.b64encode(sign_bytes(self.private_key, canonical(obj))).decode("ascii")
        return Record(aor, tuple(Contact(c["uri"], float(c["q"]), float(c["expires"]))
                                 for c in listed), route, obj["seq"],
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
    :mod:`gateway.overlay.trust`'s job); the record comes back sealed."""
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise RecordError(f"not a version {VERSION} record")
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
        seq, issued, expires = int(obj["seq"]), float(obj["issued"]), float(obj["expires"])
        if not isinstance(obj["dom"], str) or not obj["dom"]:
            raise ValueError("no domain")
        if len(base64.b64decode(obj["id"], validate=True)) != 16:
            raise ValueError("id is not 16 bytes")
        if len(base64.b64decode(obj["box"], validate=True)) < 28:
            raise ValueError("box too short")
        signature = base64.b64decode(obj["sig"], validate=True)
        if "cert" in obj:
            der = base64.b64decode(obj["cert"], validate=True)
            public_key = x509.load_der_x509_certificate(der).public_key()
        else:
            der = base64.b64decode(obj["key"], validate=True)
            public_key = serialization.load_der_public_key(der)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed record: {exc}") from None
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    verify_bytes(public_key, signature, canonical(unsigned))
    return Record("", (), "", seq, issued, expires, hashlib.sha256(der).hexdigest(), obj)


#: Records already opened, by (signature, AoR): a reader meets the same record on
#: several replicas and in every lookup.
_OPENED: OrderedDict[tuple[str, str], Record] = OrderedDict()


def open_record(record: Record, aor: str) -> Record | None:
    """``record`` with its sealed part read, when it is a record of ``aor`` (None when
    it is not, or its box does not open: another AoR's, or tampered with)."""
    if record.is_opened:
        return record if record.aor == aor else None
    raw = record.raw
    identifier = base64.b64encode(aor_id(aor)).decode("ascii")
    if raw["dom"] != domain_part(aor) or raw["id"] != identifier:
        return None
    cache_key = (raw["sig"], aor)
    known = _OPENED.get(cache_key)
    if known is not None:
        _OPENED.move_to_end(cache_key)
        return known
    box = base64.b64decode(raw["box"])
    try:
        plain = json.loads(_box_key(aor).decrypt(box[:12], box[12:],
                                                 _box_aad(raw["dom"], identifier)))
        if plain["aor"] != aor:
            return None
        contacts = tuple(Contact(str(c["uri"]), float(c["q"]), float(c["expires"]))
                         for c in plain["contacts"])
        route = str(plain["route"])
    except (InvalidTag, ValueError, KeyError, TypeError):
        return None
    if len(contacts) > MAX_CONTACTS:
        return None
    opened = dataclasses.replace(record, aor=aor, contacts=contacts, route=route)
    _OPENED[cache_key] = opened
    if len(_OPENED) > _VERIFIED_MAX:
        _OPENED.popitem(last=False)
    return opened


def decode_bundle(value: Any, aor: str | None = None) -> list[Record]:
    """The records of a DHT value whose signatures verify (others are skipped), sealed;
    with ``aor``, only the records of that AoR, opened. A single record is accepted as
    a bundle of one."""
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
            record = verify_record(item)
        except RecordError:
            continue
        if aor is not None:
            record = open_record(record, aor)  # type: ignore[assignment]
            if record is None:
                continue
        records.append(record)
    return records


def merge(records: list[Record], now: float | None = None,
          keep_tombstones: float = 3600.0) -> list[Record]:
    """One record per (subject, signer): the highest ``seq``. Expired records go; a
    tombstone is kept ``keep_tombstones`` seconds so older copies cannot come back."""
    now = time.time() if now is None else now
    best: dict[tuple[str, str], Record] = {}
    for record in records:
        key = (record.subject, record.signer)
        if key not in best or record.seq > best[key].seq:
            best[key] = record
    kept = []
    for record in best.values():
        if record.is_tombstone:
            if record.issued + keep_tombstones > now:
                kept.append(record)
        elif record.expires > now:
            kept.append(record)
    return sorted(kept, key=lambda r: (r.subject, r.signer))


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
