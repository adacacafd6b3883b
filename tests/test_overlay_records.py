"""Signed overlay records and the checks readers apply, without sockets."""

from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tls_certs import TestCA, domain_signer

from gateway.overlay.record import (
    Contact,
    RecordError,
    Signer,
    canonical,
    decode_bundle,
    encode_bundle,
    key_for,
    merge,
    open_record,
    self_certifying_user,
    sign_bytes,
    verify_record,
)
from gateway.overlay.storage import RecordStorage
from gateway.overlay.trust import MemoryPins, RecordTrust, fingerprint

# Made when the module is collected: live for longer than the whole suite runs.
CONTACT = [Contact("sip:bob@127.0.0.1:5090", 1.0, time.time() + 6 * 3600)]
ROUTE = "sip:127.0.0.1:5060;lr"


def signer_for(ca: TestCA, stem: str, domain: str) -> Signer:
    issued = ca.issue(stem, dns=[domain])
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    return Signer(key, x509.load_pem_x509_certificate(issued.cert.read_bytes()))


def one(data: bytes, aor: str = "sip:bob@b.example"):  # noqa: ANN201 - a Record
    """The record in ``data``, verified and opened as a reader of ``aor`` opens it."""
    opened = open_record(verify_record(json.loads(data)), aor)
    assert opened is not None
    return opened


def test_a_record_round_trips_and_a_tampered_one_is_refused() -> None:
    signer = Signer(ec.generate_private_key(ec.SECP256R1()), None)
    data = signer.sign("sip:bob@b.example", CONTACT, ROUTE, 600)
    record = one(data)
    assert record.aor == "sip:bob@b.example" and record.route == ROUTE
    assert record.signer == signer.signer_id and record.live(time.time())
    for field, value in (("box", json.loads(signer.sign("sip:eve@b.example", CONTACT, ROUTE,
                                                        600))["box"]),
                         ("dom", "c.example"), ("seq", record.seq + 1)):
        tampered = json.loads(data)
        tampered[field] = value
        with pytest.raises(RecordError, match="bad signature"):
            verify_record(tampered)
    assert decode_bundle(b"not json") == [] and decode_bundle(b'[{"v": 1}]') == []


def test_a_record_tells_a_storing_node_nothing_of_whom_it_is_for() -> None:
    signer = domain_signer("b.example")
    data = signer.sign("sip:bob@b.example", CONTACT, ROUTE, 600)
    # Neither the user, nor the contact, nor the route is in the clear.
    for secret in (b"bob", b"5090", b"127.0.0.1"):
        assert secret not in data
    sealed = verify_record(json.loads(data))
    assert (sealed.aor, sealed.contacts, sealed.route) == ("", (), "")
    assert sealed.domain == "b.example" and sealed.key == key_for("sip:bob@b.example")
    # Only a reader that knows the AoR opens it.
    assert open_record(sealed, "sip:carol@b.example") is None
    opened = open_record(sealed, "sip:bob@b.example")
    assert opened is not None and opened.route == ROUTE
    assert [(c.uri, c.expires) for c in opened.contacts] == [
        (CONTACT[0].uri, int(CONTACT[0].expires))]
    assert [r.aor for r in decode_bundle(encode_bundle([sealed]), "sip:bob@b.example")] == [
        "sip:bob@b.example"]
    assert decode_bundle(encode_bundle([sealed]), "sip:carol@b.example") == []
    # Another AoR's box under bob's id, signed anew by its forger: it does not open
    # as bob's (the id and domain are bound into the box).
    forger = domain_signer("b.example")
    carol = json.loads(forger.sign("sip:carol@b.example", CONTACT, ROUTE, 600))
    bob = json.loads(forger.sign("sip:bob@b.example", CONTACT, ROUTE, 600))
    carol["id"] = bob["id"]
    del carol["sig"]
    carol["sig"] = base64.b64encode(
        sign_bytes(forger.private_key, canonical(carol))).decode()
    assert open_record(verify_record(carol), "sip:bob@b.example") is None
    # Two AoRs never share a key; the same AoR always has the same one.
    assert key_for("sip:bob@b.example") != key_for("sip:bob@c.example")
    assert len({key_for(f"sip:u{i}@b.example") for i in range(100)}) == 100


def test_ca_mode_accepts_only_certificates_for_the_domain(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    trust = RecordTrust("ca", ca_certificates=[ca.certificate])
    good = one(signer_for(ca, "b", "b.example").sign("sip:bob@b.example", CONTACT, ROUTE, 60))
    assert trust.check(good) is None
    wrong = one(signer_for(ca, "c", "c.example").sign("sip:bob@b.example", CONTACT, ROUTE, 60))
    assert "does not name b.example" in trust.check(wrong)
    rogue = TestCA(tmp_path / "rogue", "rogue CA")
    forged = one(signer_for(rogue, "b2", "b.example").sign("sip:bob@b.example", CONTACT,
                                                           ROUTE, 60))
    assert trust.check(forged) is not None


def test_tofu_pins_the_first_certificate_and_rejects_another_later(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    pins = MemoryPins()
    trust = RecordTrust("tofu", pin_store=pins, first_pin="replicas")
    first = signer_for(ca, "b1", "b.example")
    second = signer_for(ca, "b2", "b.example")
    assert trust.check(one(first.sign("sip:bob@b.example", CONTACT, ROUTE, 60))) is None
    assert pins.pins["b.example"] == fingerprint(first.certificate)
    assert "pinned to another" in trust.check(one(second.sign("sip:bob@b.example", CONTACT,
                                                              ROUTE, 60)))
    other_domain = signer_for(ca, "c", "c.example")
    assert "does not name b.example" in trust.check(
        one(other_domain.sign("sip:bob@b.example", CONTACT, ROUTE, 60)))


def test_by_default_a_domain_is_pinned_only_from_dns_or_by_an_administrator(
        tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    genuine = signer_for(ca, "b1", "b.example")
    forger = signer_for(ca, "b2", "b.example")
    record = one(genuine.sign("sip:bob@b.example", CONTACT, ROUTE, 60))
    pins = MemoryPins()
    trust = RecordTrust("tofu", pin_store=pins)  # first_pin = dns, the default
    refused = trust.check(record)
    assert refused is not None and "publishes no certificate fingerprint in DNS" in refused
    assert f"overlay pins pin b.example {fingerprint(genuine.certificate)}" in refused
    assert pins.get("b.example") is None  # nothing seen is pinned, whoever comes first
    # What the domain publishes in DNS decides, and is pinned.
    published = RecordTrust("tofu", pin_store=pins,
                            published=lambda d: frozenset({fingerprint(genuine.certificate)}))
    assert published.check(record) is None
    assert pins.get("b.example") == fingerprint(genuine.certificate)
    # Once pinned (from DNS before, or by p2psip-admin overlay pins pin), the pin holds
    # without DNS, and another certificate naming the domain is refused.
    assert trust.check(record) is None
    assert "pinned to another" in trust.check(
        one(forger.sign("sip:bob@b.example", CONTACT, ROUTE, 60)))


def test_pinned_mode_uses_configured_fingerprints(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    signer = signer_for(ca, "b", "b.example")
    record = one(signer.sign("sip:bob@b.example", CONTACT, ROUTE, 60))
    assert RecordTrust("pinned", pins={"b.example": {fingerprint(signer.certificate)}}
                       ).check(record) is None
    assert RecordTrust("pinned", pins={"b.example": {"00" * 32}}).check(record) is not None


def test_self_certifying_aors_need_no_certificate_but_only_for_their_own_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = Signer(key, None)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    aor = f"sip:{self_certifying_user(spki)}@overlay.example"
    trust = RecordTrust("ca")
    assert trust.check(one(signer.sign(aor, CONTACT, ROUTE, 60), aor)) is None
    assert "bare key" in trust.check(one(signer.sign("sip:bob@b.example", CONTACT, ROUTE, 60)))


def test_merge_keeps_the_newest_per_signer_and_tombstones_win() -> None:
    alice_gw = domain_signer("b.example")
    other_gw = domain_signer("b.example")
    old = one(alice_gw.sign("sip:bob@b.example", CONTACT, ROUTE, 600))
    other = one(other_gw.sign("sip:bob@b.example", CONTACT, "sip:127.0.0.2;lr", 600))
    new = one(alice_gw.sign("sip:bob@b.example", CONTACT, "sip:127.0.0.3;lr", 600))
    merged = merge([new, old, other])
    assert {r.route for r in merged} == {"sip:127.0.0.3;lr", "sip:127.0.0.2;lr"}
    tomb = one(alice_gw.sign("sip:bob@b.example", [], ROUTE, 0))
    merged = merge([old, tomb, other])
    assert [r for r in merged if r.signer == alice_gw.signer_id][0].is_tombstone
    # A replayed older record cannot displace the tombstone in storage either.
    storage = RecordStorage()
    key = key_for("sip:bob@b.example")
    storage[key] = encode_bundle([tomb])
    storage[key] = encode_bundle([old])
    assert [r.is_tombstone for r in storage.records(key)] == [True]
    storage[key] = b"garbage"
    assert len(storage.records(key)) == 1


def test_expired_records_disappear_from_storage() -> None:
    signer = domain_signer("b.example")
    now = [time.time()]
    storage = RecordStorage(clock=lambda: now[0])
    key = key_for("sip:bob@b.example")
    storage[key] = signer.sign("sip:bob@b.example", CONTACT, ROUTE, 60)
    assert storage.get(key) is not None
    now[0] += 61
    assert storage.get(key) is None and len(storage) == 0


def test_ca_mode_respects_certificate_validity(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    record = one(signer_for(ca, "b", "b.example").sign("sip:bob@b.example", CONTACT, ROUTE,
                                                       60))
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    trust = RecordTrust("ca", ca_certificates=[ca.certificate], clock=lambda: later)
    assert trust.check(record) is not None


def test_the_reader_rejects_a_replayed_older_record(tmp_path: Path) -> None:
    import socket

    from twisted.internet import reactor

    from gateway.app.config import defaults
    from gateway.app.wiring import overlay_settings
    from gateway.overlay.service import OverlayService

    ca = TestCA(tmp_path / "ca")
    publisher = signer_for(ca, "b", "b.example")
    own = Signer(ec.generate_private_key(ec.SECP256R1()), None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        service = OverlayService(overlay_settings(defaults()), sock, own,
                                 RecordTrust("ca", ca_certificates=[ca.certificate]), None,
                                 ROUTE, reactor)
        older = one(publisher.sign("sip:bob@b.example", CONTACT, "sip:127.0.0.7;lr", 600))
        newer = one(publisher.sign("sip:bob@b.example", CONTACT, ROUTE, 600))
        assert service._accept([newer], "sip:bob@b.example") == [newer]
        assert service._accept([older], "sip:bob@b.example") == []
        assert service.rejected == 1
        stranger = one(signer_for(ca, "c", "c.example").sign("sip:bob@b.example", CONTACT,
                                                             ROUTE, 600))
        assert service._accept([stranger], "sip:bob@b.example") == []
