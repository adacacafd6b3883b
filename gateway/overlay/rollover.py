"""Certificate roll-over: a gateway's new certificate announced by its old one.

With ``overlay.trust = tofu`` every peer pins the certificate that first signed a
domain's records; a gateway whose certificate changes (the self-signed one renewed
after a domain was added, a new CA-issued one) would be refused by all of them. So the
gateway remembers the certificate it signed with (``<data_dir>/overlay-signer/``) and,
when it starts with another one, keeps the old pair as ``previous`` and adds to every
record a *roll-over statement*: the old certificate and the old key's signature over
the new certificate's fingerprint::

    "rollover": {"cert": "<base64 DER of the old certificate>",
                 "sig": "<base64 signature by the old key over
                          'p2psip-rollover:' + new fingerprint (hex)>"}

The statement is inside the record, so the new key's signature covers it too. A peer
that pinned the old certificate accepts the new one when the statement verifies and
re-pins (gateway/overlay/trust.py). The statement goes out as long as the previous pair
is there; remove ``overlay-signer/previous.*`` once every peer has re-pinned. A
gateway that lost its old key (reinstalled) cannot prove anything: its peers re-pin by
hand (``p2psip-admin overlay pins forget|pin``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.log import get_logger
from gateway.overlay.record import RecordError, sign_bytes, verify_bytes

log = get_logger("gateway.overlay.rollover")

FIELD = "rollover"
SIGNER_DIR = "overlay-signer"
_PREFIX = b"p2psip-rollover:"


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def statement(old_key: Any, old_certificate: x509.Certificate, new_fingerprint: str,
              ) -> dict[str, str]:
    """The old key's word that ``new_fingerprint`` succeeds ``old_certificate``."""
    signature = sign_bytes(old_key, _PREFIX + new_fingerprint.encode("ascii"))
    der = old_certificate.public_bytes(serialization.Encoding.DER)
    return {"cert": base64.b64encode(der).decode("ascii"),
            "sig": base64.b64encode(signature).decode("ascii")}


def endorsing_certificate(obj: Any, new_fingerprint: str) -> x509.Certificate | None:
    """The old certificate of a valid statement for ``new_fingerprint``, else None."""
    if not isinstance(obj, dict):
        return None
    try:
        old = x509.load_der_x509_certificate(base64.b64decode(obj["cert"], validate=True))
        signature = base64.b64decode(obj["sig"], validate=True)
        verify_bytes(old.public_key(), signature, _PREFIX + new_fingerprint.encode("ascii"))
    except (KeyError, TypeError, ValueError, RecordError):
        return None
    return old


def previous_fingerprint(signer: Any) -> str:
    """The fingerprint of the certificate ``signer`` (a :class:`~gateway.overlay.record.
    Signer`) rolled over from, "" when it announces no roll-over."""
    statement_obj = getattr(signer, "rollover", None)
    if not isinstance(statement_obj, dict) or "cert" not in statement_obj:
        return ""
    return hashlib.sha256(base64.b64decode(statement_obj["cert"])).hexdigest()


def remember_signer(data_dir: str, key: Any, certificate: x509.Certificate,
                    ) -> dict[str, str] | None:
    """Record the pair this gateway signs with; the roll-over statement to publish when
    it signed with another certificate before (None when not, or when that cannot be
    read or written: the gateway then runs without one, and says so)."""
    directory = Path(data_dir) / SIGNER_DIR
    current_cert, current_key = directory / "current.crt", directory / "current.key"
    previous_cert, previous_key = directory / "previous.crt", directory / "previous.key"
    new_fingerprint = _fingerprint(certificate)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        known = _load(current_cert, current_key)
        if known is None or _fingerprint(known[1]) != new_fingerprint:
            if known is not None:
                os.replace(current_cert, previous_cert)
                os.replace(current_key, previous_key)
                log.warn("overlay: the signing certificate changed ({old} → {new}); records "
                         "carry a roll-over statement signed by the old key",
                         old=_fingerprint(known[1])[:16], new=new_fingerprint[:16])
            _write(current_key, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            current_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        previous = _load(previous_cert, previous_key)
    except OSError as exc:
        log.warn("overlay: cannot keep the signing certificate in {dir} ({error}): a later "
                 "certificate change cannot be announced to the peers",
                 dir=str(directory), error=exc.strerror or str(exc))
        return None
    if previous is None or _fingerprint(previous[1]) == new_fingerprint:
        return None
    return statement(previous[0], previous[1], new_fingerprint)


def _load(cert_path: Path, key_path: Path) -> tuple[Any, x509.Certificate] | None:
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return None
    return key, certificate


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
