"""A gateway's certificate changes without breaking its peers' pins: the gateway keeps
the pair it signed with, and once it signs with another one its records carry the old
key's word for the new certificate (gateway/overlay/rollover.py); a peer that pinned the
old certificate follows that word and re-pins, and nothing else moves a pin."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tls_certs import TestCA

from gateway.overlay.record import Contact, Signer, verify_record
from gateway.overlay.rollover import endorsing_certificate, remember_signer
from gateway.overlay.trust import MemoryPins, RecordTrust, fingerprint

# Made when the module is collected: live for longer than the whole suite runs.
CONTACTS = [Contact("sip:bob@127.0.0.1:5090", 1.0, time.time() + 6 * 3600)]
ROUTE = "sip:127.0.0.1:5060;lr"
AOR = "sip:bob@b.example"


def pair(ca: TestCA, stem: str, domain: str = "b.example") -> tuple[object, x509.Certificate]:
    issued = ca.issue(stem, dns=[domain])
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(issued.cert.read_bytes())


def published(signer: Signer):  # noqa: ANN201 - a Record, as a peer decodes it
    return verify_record(json.loads(signer.sign(AOR, CONTACTS, ROUTE, 600)))


def test_the_signer_is_remembered_and_a_change_gives_a_statement(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca", "test CA")
    old_key, old_cert = pair(ca, "old")
    new_key, new_cert = pair(ca, "new")
    data_dir = str(tmp_path / "data")
    assert remember_signer(data_dir, old_key, old_cert) is None  # first start
    assert remember_signer(data_dir, old_key, old_cert) is None  # same certificate
    statement = remember_signer(data_dir, new_key, new_cert)  # the certificate changed
    assert statement is not None
    assert endorsing_certificate(statement, fingerprint(new_cert)) == old_cert
    again = remember_signer(data_dir, new_key, new_cert)  # kept on restarts
    assert again is not None and endorsing_certificate(again, fingerprint(new_cert)) == old_cert
    # The statement speaks for the new certificate only, and only untouched.
    assert endorsing_certificate(statement, fingerprint(old_cert)) is None
    assert endorsing_certificate(statement | {"sig": statement["cert"][:88]},
                                 fingerprint(new_cert)) is None
    assert endorsing_certificate({"cert": "x"}, fingerprint(new_cert)) is None


def test_a_peer_follows_a_roll_over_announced_by_the_pinned_certificate(
        tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca", "test CA")
    old_key, old_cert = pair(ca, "old")
    new_key, new_cert = pair(ca, "new")
    pins = MemoryPins()
    trust = RecordTrust("tofu", pin_store=pins)
    pins.pin("b.example", fingerprint(old_cert))  # as p2psip-admin overlay pins pin does
    assert trust.check(published(Signer(old_key, old_cert))) is None
    # A new certificate without a word from the old one is refused, with the way out.
    refused = trust.check(published(Signer(new_key, new_cert)))
    assert refused is not None and "overlay pins forget b.example" in refused
    statement = remember_signer(str(tmp_path / "d"), old_key, old_cert) or remember_signer(
        str(tmp_path / "d"), new_key, new_cert)
    assert statement is not None
    assert trust.check(published(Signer(new_key, new_cert, statement))) is None
    assert pins.get("b.example") == fingerprint(new_cert)
    # Now the old certificate is the stranger.
    assert trust.check(published(Signer(old_key, old_cert))) is not None


def test_a_statement_does_not_help_anyone_else(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca", "test CA")
    old_key, old_cert = pair(ca, "old")
    new_key, new_cert = pair(ca, "new")
    rogue_key, rogue_cert = pair(ca, "rogue")
    pins = MemoryPins()
    trust = RecordTrust("tofu", pin_store=pins)
    pins.pin("b.example", fingerprint(old_cert))
    assert trust.check(published(Signer(old_key, old_cert))) is None
    data_dir = str(tmp_path / "d")
    remember_signer(data_dir, old_key, old_cert)
    genuine = remember_signer(data_dir, new_key, new_cert)
    assert genuine is not None
    # The genuine statement copied into a rogue record: it names another fingerprint.
    assert trust.check(published(Signer(rogue_key, rogue_cert, genuine))) is not None
    # A statement from a certificate that is not the pinned one.
    other_dir = str(tmp_path / "other")
    remember_signer(other_dir, new_key, new_cert)
    by_stranger = remember_signer(other_dir, rogue_key, rogue_cert)
    assert trust.check(published(Signer(rogue_key, rogue_cert, by_stranger))) is not None
    assert pins.get("b.example") == fingerprint(old_cert)
